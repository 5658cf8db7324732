"""`nofone cohort-de`: generative differential expression between two groups of a cohort (NB-VAE)."""

from __future__ import annotations

from pathlib import Path

import typer

from nofone.cli.common import echo, handle_errors

ENRICHMENT_METHODS = ("prerank", "ora")


@handle_errors
def cohort_de_command(
    input: Path = typer.Option(..., "--input", "-i", help="Dataset folder (every sample is used)."),
    outdir: Path = typer.Option(..., "--outdir", "-o", help="Output: cohort_de.tsv, cohort_de_report.json, latent.png, latent.tsv, model/."),
    group: str = typer.Option(..., help="Sample column holding the groups to compare (e.g. Status)."),
    contrast: str = typer.Option(..., help="LEVEL,REFERENCE of --group: log2 fold changes are LEVEL over REFERENCE (e.g. lactate,virgin)."),
    covariates: list[str] = typer.Option([], "--covariate", help="Sample column to compare within, e.g. cell type (repeatable; docs/cohort_de.md)."),
    latent_dim: int | None = typer.Option(None, min=1, help="Latent dimensions of the NB-VAE (default 10, or the config's; 2 plots the latent directly)."),
    samples: int = typer.Option(200, min=10, help="Posterior draws per sample for the credible interval."),
    seed: int = typer.Option(0, help="Seed of the training and of the posterior draws."),
    config: str | None = typer.Option(None, help="NB-VAE preset (default) or a JSON file of settings."),
    epochs: int | None = typer.Option(None, min=1, help="Override the number of training epochs."),
    min_total_count: int = typer.Option(10, min=0, help="Model only genes with at least this many counts over the cohort."),
    deseq2: bool = typer.Option(True, "--deseq2/--no-deseq2", help="Also run DESeq2 (pydeseq2, ~ covariates + group) and compare."),
    alpha: float = typer.Option(0.05, min=0.0, max=1.0, help="DESeq2's significance level (independent filtering, padj calls)."),
    color_by: str | None = typer.Option(None, help="Sample column that colours latent.png (default: --group)."),
    gene_sets: Path | None = typer.Option(None, help="Local GMT file: enrichment of both rankings -> enrichment_<method>.tsv (needs gseapy; docs/cohort_de.md)."),
    symbol_maps: list[Path] = typer.Option([], "--symbol-map", help="TSV mapping gene ids or names to the GMT's symbols (repeatable, applied in sequence; docs/cohort_de.md)."),
    uppercase_symbols: bool = typer.Option(False, "--uppercase-symbols", help="Upper-case the symbols (approximates mouse -> human orthologs for a human GMT)."),
    enrichment_method: str = typer.Option("prerank", help=f"Enrichment method: {', '.join(ENRICHMENT_METHODS)} (docs/cohort_de.md)."),
    permutations: int = typer.Option(1000, min=10, help="prerank: gene-set permutations."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
) -> None:
    """Train an NB-VAE on a whole cohort and estimate generative log2 fold changes between two groups.

    Example: nofone cohort-de --input data/ --outdir cohort_de/ --group Status --contrast lactate,virgin --covariate CellType
    """
    if enrichment_method not in ENRICHMENT_METHODS:
        raise typer.BadParameter(f"use one of {', '.join(ENRICHMENT_METHODS)}", param_hint="--enrichment-method")
    from nofone.steps.cohort_de import CohortDEOptions, cohort_de, parse_contrast

    level, reference = parse_contrast(contrast)
    options = CohortDEOptions(
        group=group, level=level, reference=reference, covariates=list(covariates), config=config,
        latent_dim=latent_dim, epochs=epochs, samples=samples, seed=seed, min_total_count=min_total_count,
        deseq2=deseq2, alpha=alpha, color_by=color_by, gene_sets=gene_sets, symbol_maps=list(symbol_maps),
        uppercase_symbols=uppercase_symbols, enrichment_method=enrichment_method, permutations=permutations,
        device=device,
    )
    report = cohort_de(input, outdir, options)
    line = (f"{report['genes']['n_modelled']} genes, {report['samples']['n']} samples: {level} vs {reference} "
            f"in {report['seconds']} s")
    comparison = report.get("deseq2")
    if comparison and "pearson" in comparison:
        line += f"; vs DESeq2 Pearson {comparison['pearson']:.3f}, Spearman {comparison['spearman']:.3f}"
    echo(f"{line} -> {outdir}")


def register(app: typer.Typer) -> None:
    app.command("cohort-de")(cohort_de_command)
