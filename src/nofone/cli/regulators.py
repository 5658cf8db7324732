"""`nofone regulators train` and `nofone explain`: which regulators explain a DE profile (DEcode)."""

from __future__ import annotations

from pathlib import Path

import typer

from nofone.cli.common import echo, handle_errors

regulators_app = typer.Typer(help="Regulator models (DEcode): train on gene x feature tables.", no_args_is_help=True)


def comma_separated(values: list[Path]) -> list[Path]:
    """Repeated options, each possibly comma-separated: --features a.tsv --features b.tsv,c.tsv."""
    return [Path(part) for value in values for part in str(value).split(",") if part]


@regulators_app.command("train")
@handle_errors
def train_command(
    features: list[Path] = typer.Option(..., "--features", "-f", help="Regulator table(s): genes (Ensembl id or symbol) x regulators, TSV/CSV(.gz) or Parquet; repeatable or comma-separated. A gene a table omits has no binding there."),
    targets: str = typer.Option(..., help="tissue-de (from --input, a dataset with a tissue column), de-prior (--input: the DE prior table) or a genes x targets table."),
    outdir: Path = typer.Option(..., "--outdir", "-o", help="Output: the regulator model, performance.tsv, attribution.tsv, history.tsv, train_report.json."),
    structure: list[Path] = typer.Option([], "--structure", help="Gene-structure table(s) (lengths, GC, ...): covariates measured against their median; repeatable."),
    input: Path | None = typer.Option(None, "--input", "-i", help="The source of tissue-de (a nofone dataset) or de-prior (a table)."),
    annotation: Path | None = typer.Option(None, help="Gene annotation (Ensembl id, symbol, chromosome): maps keys and gives the chromosomes of the split."),
    seeds: int = typer.Option(10, min=1, help="Training runs; the one with the best validation loss is used."),
    max_epochs: int = typer.Option(100, min=1, help="Epochs at most (early stopping after --patience without improvement)."),
    patience: int = typer.Option(10, min=1, help="Epochs without a better validation loss before stopping."),
    min_genes_bound: int = typer.Option(30, min=1, help="Drop regulators bound to fewer modelled genes."),
    min_cpm: float = typer.Option(1.0, min=0.0, help="tissue-de: keep genes with at least this mean CPM in some tissue."),
    baselines: bool = typer.Option(True, "--baselines/--no-baselines", help="Also fit ridge and boosted trees on the same split."),
    seed: int = typer.Option(0, help="First training seed."),
) -> None:
    """Train DEcode's network to predict per-gene targets from regulator binding.

    Example: nofone regulators train --features tf.tsv.gz --features mirna.tsv.gz --structure structure.tsv.gz --targets tissue-de --input data/ --annotation ensembl.tsv.gz --outdir regulators/
    """
    from nofone.regulators.network import NetworkConfig
    from nofone.regulators.train import TrainOptions, train_regulators

    options = TrainOptions(
        features=comma_separated(features), targets=targets, structure=comma_separated(structure), input=input, annotation=annotation,
        network=NetworkConfig(seeds=seeds, max_epochs=max_epochs, patience=patience), min_genes_bound=min_genes_bound,
        min_cpm=min_cpm, baselines=baselines, seed=seed,
    )
    report = train_regulators(outdir, options)
    perf = report["performance"]
    line = (f"{report['genes']['n']} genes ({report['genes']['test']} test), {report['features']['n_regulators']} "
            f"regulators; mean test Spearman DEcode {perf['decode']['mean_spearman']:.3f}")
    for method in ("ridge", "boosted_trees"):
        if method in perf:
            line += f", {method.replace('_', ' ')} {perf[method]['mean_spearman']:.3f}"
    echo(f"{line} -> {outdir}")


@handle_errors
def explain_command(
    regulators: Path = typer.Option(..., help="A regulator model from `nofone regulators train`."),
    de: Path = typer.Option(..., help="Output of `nofone de` (a folder with de.parquet, or one sample's TSV)."),
    outdir: Path = typer.Option(..., "--outdir", "-o", help="Output: regulators/<sample>.tsv, knockouts/<sample>.tsv, summary.tsv, cohort.tsv, regulators.parquet, explain_report.json."),
    samples: list[str] = typer.Option([], "--sample", help="Explain only this sample (repeatable; default: all)."),
    q_threshold: float = typer.Option(0.05, min=0.0, max=1.0, help="q-value below which a regulator counts as significant."),
    knockout_top: int = typer.Option(10, min=0, help="Regulators per sample with a per-gene knockout table."),
    features_only: bool = typer.Option(False, "--features-only", help="Fit a linear head on the features alone, without the model's trunk."),
    stability: bool = typer.Option(False, "--stability", help="Refit on every seed's trunk and report how stable the ranking is (slower)."),
    checks: bool = typer.Option(True, "--checks/--no-checks", help="Check DeepLIFT's completeness and its agreement with Integrated Gradients per sample."),
) -> None:
    """Rank the regulators behind each sample's DE profile, with q-values and in-silico knockouts.

    Example: nofone explain --regulators regulators/ --de de/ --outdir explain/
    """
    from nofone.regulators.explain import ExplainOptions
    from nofone.regulators.explain_step import explain

    options = ExplainOptions(q_threshold=q_threshold, knockout_top=knockout_top, use_trunk=not features_only,
                             stability=stability, checks=checks)
    report = explain(regulators, de, outdir, options, list(samples) or None)
    explained = [s["heldout_spearman"] for s in report["samples"]]
    significant = [s["n_significant"] for s in report["samples"]]
    echo(f"{report['n_samples']} samples: held-out Spearman median {sorted(explained)[len(explained) // 2]:.3f}, "
         f"significant regulators per sample median {sorted(significant)[len(significant) // 2]} -> {outdir}")


def register(app: typer.Typer) -> None:
    app.add_typer(regulators_app, name="regulators")
    app.command("explain")(explain_command)
