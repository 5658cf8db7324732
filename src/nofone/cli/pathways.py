"""`nofone pathways`: per sample and gene set, a test of the set's genes' joint deviation."""

from __future__ import annotations

from pathlib import Path

import typer

from nofone.cli.common import echo, handle_errors
from nofone.stats.gene_set_test import MIN_GENES, NEIGHBOURS, WEIGHTINGS


@handle_errors
def pathways_command(
    de: Path = typer.Option(..., "--de", "-d", help="Folder of `nofone de` (or the pipeline's cohort/) with de.parquet."),
    gene_sets: Path = typer.Option(..., "--gene-sets", "-g", help="GMT file (gzip allowed); symbols or gene ids."),
    model: Path = typer.Option(..., "--model", "-m", help="The model the de output was made with (its local null)."),
    outdir: Path = typer.Option(..., "--outdir", "-o", help="Output: pathways.parquet, summary.tsv, samples/<id>.tsv."),
    symbol_maps: list[Path] = typer.Option([], "--symbol-map", help="TSV mapping gene ids or names to the GMT's symbols (repeatable, applied in sequence; docs/cohort_de.md)."),
    q_threshold: float = typer.Option(0.01, help="q-value (BH across the sets of a sample) cut-off for a call."),
    min_genes: int = typer.Option(MIN_GENES, min=2, help="Skip sets with fewer of their genes in the model."),
    neighbours: int = typer.Option(NEIGHBOURS, "--neighbours", min=2, help="Nearest calibration normals that bound the null's spread per sample."),
    weighting: str = typer.Option("equal", help=f"Gene weights in the set mean: {', '.join(WEIGHTINGS)}."),
    tsv: bool = typer.Option(True, "--tsv/--no-tsv", help="Also write one TSV per sample."),
) -> None:
    """Test every gene set of every sample against the healthy variation of normals the model
    never trained on (docs/pathways.md).

    Example: nofone pathways --de de/ --gene-sets h.all.v7.0.symbols.gmt --model model/ --outdir pathways/
    """
    if weighting not in WEIGHTINGS:
        raise typer.BadParameter(f"use one of {', '.join(WEIGHTINGS)}", param_hint="--weighting")
    from nofone.stats.gene_set_test import SetTestOptions
    from nofone.steps.pathways import PathwayOptions, pathways

    options = PathwayOptions(q_threshold=q_threshold, min_genes=min_genes, write_tsv=tsv, symbol_maps=list(symbol_maps),
                             test=SetTestOptions(k=neighbours, weighting=weighting))
    summary = pathways(de, gene_sets, model, outdir, options)
    echo(f"tested {int(summary['n_sets_tested'].max())} gene sets in {len(summary)} samples: median "
         f"{summary['n_called'].median():g} called per sample (q < {q_threshold}) -> {outdir}")


def register(app: typer.Typer) -> None:
    app.command("pathways")(pathways_command)
