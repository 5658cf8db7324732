"""`nofone filter`: edgeR filterByExpr (group-aware), optionally protein-coding genes only."""

from __future__ import annotations

from pathlib import Path

import typer

from nofone.choices import DEFAULT_CHUNK_SIZE
from nofone.cli.common import echo, handle_errors


@handle_errors
def filter_command(
    input: Path = typer.Option(..., "--input", "-i", help="Dataset folder from `nofone ingest`."),
    outdir: Path = typer.Option(..., "--outdir", "-o", help="Output dataset folder (kept genes), with gene_filter.tsv and filter_report.json."),
    group: list[str] = typer.Option([], "--group", help="Sample column(s) defining groups (repeat or comma-separate for an interaction, e.g. CellType,Status)."),
    protein_coding: bool = typer.Option(False, "--protein-coding", help="Keep only protein-coding genes (biotype from the dataset or --annotation)."),
    annotation: list[Path] | None = typer.Option(None, help="Annotation TSV with Ensembl ids and biotypes (for --protein-coding); repeatable."),
    min_count: float = typer.Option(10.0, help="edgeR min.count."),
    min_total_count: float = typer.Option(15.0, help="edgeR min.total.count."),
    large_n: int = typer.Option(10, help="edgeR large.n."),
    min_prop: float = typer.Option(0.7, help="edgeR min.prop."),
    condition: str | None = typer.Option(None, help="Compute the mask from the samples whose 'condition' is this value (e.g. normal); all samples are kept."),
    chunk_size: int = typer.Option(DEFAULT_CHUNK_SIZE, min=1, help="Samples per chunk; bounds memory."),
) -> None:
    """Drop lowly expressed genes exactly as edgeR::filterByExpr does.

    Example: nofone filter --input data/ --outdir filtered/ --group tissue --protein-coding
    """
    from nofone.stats.filter_by_expr import FilterParams
    from nofone.steps.filter import filter_dataset

    summary = filter_dataset(input, outdir, group=group, protein_coding=protein_coding,
                             annotation=annotation or None, condition=condition, chunk_size=chunk_size,
                             params=FilterParams(min_count, min_total_count, large_n, min_prop))
    echo(f"kept {summary['n_genes_kept']} of {summary['n_genes_in']} genes ({outdir})")


def register(app: typer.Typer) -> None:
    app.command("filter")(filter_command)
