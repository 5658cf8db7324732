"""The filter step: edgeR filterByExpr (group-aware) and an optional protein-coding filter."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from nofone import __version__
from nofone.errors import InputError
from nofone.io.atomic import check_outdir, staged_outdir, write_json_atomic
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


def filter_dataset(input: Path, outdir: Path, *, group: list[str], protein_coding: bool = False,
                   annotation: Path | list[Path] | None = None, condition: str | None = None,
                   condition_column: str = "condition", chunk_size: int = DEFAULT_CHUNK_SIZE,
                   params: FilterParams = FilterParams()) -> dict:
    """The filter step as a function (used by `nofone run`); returns the report."""
    check_outdir(outdir)
    data = Dataset(input)
    samples = data.samples
    if condition is not None:
        if condition_column not in samples.columns:
            raise InputError(f"{input}: no '{condition_column}' column to select {condition!r} samples")
        samples = samples[samples[condition_column] == condition]
        if samples.empty:
            raise InputError(f"{input}: no sample has {condition_column} {condition!r}")
    ids = samples["sample_id"].tolist()
    labels = group_labels(samples, group)
    library = np.zeros(len(ids))
    position = {s: i for i, s in enumerate(ids)}
    for chunk in data.iter_chunks(chunk_size, sample_ids=ids):
        library[[position[s] for s in chunk.sample_ids]] = chunk.counts.sum(axis=1)
    if (library <= 0).any():
        empty = [s for s, lib in zip(ids, library) if lib <= 0][:5]
        raise InputError(f"{input}: samples with no counts at all: {empty}")
    expressed = filter_by_expr_streamed(
        (c.counts for c in data.iter_chunks(chunk_size, sample_ids=ids)), library, labels, params
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
    report = {
            "nofone_version": __version__,
            "input": str(Path(input).resolve()),
            "params": vars(params) | {"group": group, "protein_coding": protein_coding,
                                      "condition": condition},
            "n_samples": data.n_samples,
            "n_samples_used": len(ids),
            "n_genes_in": data.n_genes,
            "n_genes_kept": int(keep.sum()),
            "n_dropped_low_expression": int((~expressed).sum()),
            "n_dropped_not_protein_coding": int((expressed & ~biotype_ok).sum()),
            "min_sample_size": min_sample_size(labels, len(ids), params),
            "cpm_cutoff": params.min_count / float(np.median(library)) * 1e6,
            "median_library_size": float(np.median(library)),
    }
    with staged_outdir(outdir) as stage:
        copy_subset(data, stage, gene_index=np.flatnonzero(keep), chunk_size=chunk_size)
        table.to_csv(stage / "gene_filter.tsv", sep="\t", index=False)
        write_json_atomic(stage / "filter_report.json", report)
    return report
