"""`nofone filter`: edgeR filterByExpr (group-aware), optionally protein-coding genes only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import typer

from nofone import __version__
from nofone.cli.common import echo, handle_errors
from nofone.errors import InputError
from nofone.io.atomic import staged_outdir, write_json_atomic
from nofone.io.dataset import DEFAULT_CHUNK_SIZE, Dataset, copy_subset
from nofone.io.gene_ids import Annotation
from nofone.stats.filter_by_expr import FilterParams, filter_by_expr_streamed, min_sample_size


def group_labels(samples: pd.DataFrame, columns: list[str]) -> np.ndarray | None:
    """One label per sample: the interaction of the named sample columns (None: no groups)."""
    names = [c.strip() for spec in columns for c in spec.split(",") if c.strip()]
    if not names:
        return None
    unknown = [c for c in names if c not in samples.columns]
    if unknown:
        raise InputError(f"group column(s) {unknown} not in the sample table (have {list(samples.columns)})")
    values = samples[names].astype("string").fillna("NA")
    return values.agg(":".join, axis=1).to_numpy(dtype=str)


@handle_errors
def filter_command(
    input: Path = typer.Option(..., "--input", "-i", help="Dataset folder from `nofone ingest`."),
    outdir: Path = typer.Option(..., "--outdir", "-o", help="Output dataset folder (kept genes), with gene_filter.tsv and filter_report.json."),
    group: list[str] = typer.Option([], "--group", help="Sample column(s) defining groups (repeat or comma-separate for an interaction, e.g. CellType,Status)."),
    protein_coding: bool = typer.Option(False, "--protein-coding", help="Keep only protein-coding genes (biotype from the dataset or --annotation)."),
    annotation: Path | None = typer.Option(None, help="Annotation TSV with Ensembl ids and biotypes (for --protein-coding)."),
    min_count: float = typer.Option(10.0, help="edgeR min.count."),
    min_total_count: float = typer.Option(15.0, help="edgeR min.total.count."),
    large_n: int = typer.Option(10, help="edgeR large.n."),
    min_prop: float = typer.Option(0.7, help="edgeR min.prop."),
    chunk_size: int = typer.Option(DEFAULT_CHUNK_SIZE, min=1, help="Samples per chunk; bounds memory."),
) -> None:
    """Drop lowly expressed genes exactly as edgeR::filterByExpr does.

    Example: nofone filter --input data/ --outdir filtered/ --group tissue --protein-coding
    """
    data = Dataset(input)
    params = FilterParams(min_count, min_total_count, large_n, min_prop)
    labels = group_labels(data.samples, group)
    library = np.zeros(data.n_samples)
    position = {s: i for i, s in enumerate(data.sample_ids)}
    for chunk in data.iter_chunks(chunk_size):
        library[[position[s] for s in chunk.sample_ids]] = chunk.counts.sum(axis=1)
    if (library <= 0).any():
        empty = [s for s, lib in zip(data.sample_ids, library) if lib <= 0][:5]
        raise InputError(f"{input}: samples with no counts at all: {empty}")
    expressed = filter_by_expr_streamed(
        (c.counts for c in data.iter_chunks(chunk_size)), library, labels, params
    )
    biotype_ok = np.ones(data.n_genes, dtype=bool)
    if protein_coding:
        biotypes = data.genes["biotype"].astype("string")
        if annotation is not None:
            biotypes = pd.Series(Annotation.read(annotation).biotype_of(data.gene_ids), dtype="string")
        if biotypes.isna().all():
            raise InputError("--protein-coding needs biotypes: the dataset has none, give --annotation")
        biotype_ok = (biotypes.fillna("") == "protein_coding").to_numpy()
    keep = expressed & biotype_ok
    if not keep.any():
        raise InputError("no gene passes the filter")
    table = pd.DataFrame({"gene_id": data.gene_ids, "gene_name": data.genes["gene_name"],
                          "expressed": expressed, "protein_coding": biotype_ok, "keep": keep})
    with staged_outdir(outdir) as stage:
        copy_subset(data, stage, gene_index=np.flatnonzero(keep), chunk_size=chunk_size)
        table.to_csv(stage / "gene_filter.tsv", sep="\t", index=False)
        write_json_atomic(stage / "filter_report.json", {
            "nofone_version": __version__,
            "input": str(Path(input).resolve()),
            "params": vars(params) | {"group": group, "protein_coding": protein_coding},
            "n_samples": data.n_samples,
            "n_genes_in": data.n_genes,
            "n_genes_kept": int(keep.sum()),
            "n_dropped_low_expression": int((~expressed).sum()),
            "n_dropped_not_protein_coding": int((expressed & ~biotype_ok).sum()),
            "min_sample_size": min_sample_size(labels, data.n_samples, params),
            "cpm_cutoff": params.min_count / float(np.median(library)) * 1e6,
            "median_library_size": float(np.median(library)),
        })
    echo(f"kept {int(keep.sum())} of {data.n_genes} genes ({outdir})")


def register(app: typer.Typer) -> None:
    app.command("filter")(filter_command)
