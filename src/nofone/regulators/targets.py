"""What the network learns to predict, per gene: tissue DE, the DE prior, or any gene x target table.

- `tissue-de` (the paper's main task) from a nofone dataset with a `tissue` column: each
  tissue's log2 mean normalised expression (counts per million, + 0.25 as the paper added to
  TPM) minus the gene's median over the tissues, one output per tissue, plus that median as a
  last output (`median_expression`). Only normal samples are used when the dataset has a
  `condition` column (another column and value can be named). Genes below `min_cpm` in every
  tissue are left out (the paper kept genes above 2 TPM in at least one tissue).
- `de-prior` (the paper's "frequently DE genes"): Crow et al. 2019's DE prior rank (0-1) as its
  logit, infinite values set to +-10 as in the paper; genes at rank >= 0.9 are the positives of
  the AUROC.
- a table: genes in the first column, one numeric column per target; empty cells are allowed
  (that gene is left out of that target's loss and scores).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nofone.errors import InputError
from nofone.io.dataset import Dataset
from nofone.progress import progress
from nofone.regulators.genes import GeneAnnotation, key_rows
from nofone.regulators.tables import read_numeric_table

log = logging.getLogger(__name__)

TISSUE_DE = "tissue-de"
DE_PRIOR = "de-prior"
MEDIAN_EXPRESSION = "median_expression"
DE_PRIOR_TARGET = "de_prior_logit"
#: The paper's positives for the DE prior AUROC: genes at DE prior rank 0.9 or above.
DE_PRIOR_POSITIVE_RANK = 0.9
PSEUDO_CPM = 0.25


@dataclass
class Targets:
    gene_ids: np.ndarray
    gene_names: np.ndarray
    names: list[str]
    values: np.ndarray  # float64 [genes, targets]; NaN = no value
    kind: str
    source: str
    #: target name -> value at or above which a gene is a positive (scored by AUROC as well)
    positive_threshold: dict[str, float] = field(default_factory=dict)
    notes: dict = field(default_factory=dict)


def read_targets(kind: str, source: Path | None, annotation: GeneAnnotation | None,
                 min_cpm: float = 1.0, normals: tuple[str, str] = ("condition", "normal")) -> Targets:
    """`kind` is tissue-de or de-prior (read from `source`), or the path of a gene x target table."""
    if kind == TISSUE_DE:
        if source is None:
            raise InputError("--targets tissue-de needs --input: a nofone dataset with a tissue column")
        return tissue_de(source, annotation, min_cpm, normals)
    if kind == DE_PRIOR:
        if source is None:
            raise InputError("--targets de-prior needs --input: the DE prior table (Gene_Name, DE_Prior_Rank)")
        return de_prior(source, annotation)
    if not Path(kind).is_file():
        raise InputError(f"--targets {kind}: no such table (give {TISSUE_DE}, {DE_PRIOR} or a genes x targets table)")
    if source is not None:
        raise InputError(f"--input is only for --targets {TISSUE_DE} or {DE_PRIOR}; the table {kind} is the targets")
    return target_table(Path(kind), annotation)


def tissue_de(dataset_dir: Path, annotation: GeneAnnotation | None, min_cpm: float = 1.0,
              normals: tuple[str, str] = ("condition", "normal")) -> Targets:
    """`normals`: the sample column and value that mark normal samples (all samples are used
    when the dataset has no such column)."""
    data = Dataset(dataset_dir)
    samples = data.samples
    if "tissue" not in samples.columns:
        raise InputError(f"{dataset_dir}: samples.parquet has no tissue column (columns: {list(samples.columns)})")
    use = np.ones(len(samples), dtype=bool)
    condition, normal = normals
    if condition in samples.columns:
        use = samples[condition].astype(str).str.lower().eq(normal.lower()).to_numpy()
        if not use.any():
            raise InputError(f"{dataset_dir}: no sample has {condition} {normal!r} "
                             "(tissue DE is computed from normals)")
    tissue_of = dict(zip(samples["sample_id"].astype(str), samples["tissue"].astype(str)))
    chosen = samples["sample_id"].astype(str)[use].tolist()
    tissues = sorted({tissue_of[s] for s in chosen})
    if len(tissues) < 2:
        raise InputError(f"{dataset_dir}: tissue DE needs at least 2 tissues among the normals (found {tissues})")
    column = {t: i for i, t in enumerate(tissues)}
    sums = np.zeros((len(tissues), data.n_genes))
    n = np.zeros((len(tissues), data.n_genes))
    with progress("tissue expression", len(chosen)) as advance:
        for chunk in data.iter_chunks(sample_ids=chosen):
            measured = chunk.measured_mask()
            counts = np.where(measured, chunk.counts, 0).astype(np.float64)
            library = counts.sum(1, keepdims=True)
            if (library <= 0).any():
                empty = chunk.sample_ids[int(np.flatnonzero(library[:, 0] <= 0)[0])]
                raise InputError(f"{dataset_dir}: sample {empty} has no counts")
            cpm = counts / library * 1e6
            rows = np.array([column[tissue_of[s]] for s in chunk.sample_ids])
            np.add.at(sums, rows, cpm)
            np.add.at(n, rows, measured)
            advance(len(chunk))
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_cpm = sums / n
    expressed = (np.nan_to_num(mean_cpm) >= min_cpm).any(0)
    log_expression = np.log2(mean_cpm[:, expressed] + PSEUDO_CPM).T  # [genes, tissues]
    median = np.nanmedian(log_expression, 1, keepdims=True)
    values = np.hstack([log_expression - median, median])
    keyed = key_rows(data.genes["gene_id"].astype(str).to_numpy()[expressed], values, annotation,
                     f"{dataset_dir}/genes.parquet", "row", 1)
    counts_per_tissue = {t: int(sum(tissue_of[s] == t for s in chosen)) for t in tissues}
    return Targets(keyed.gene_ids, keyed.gene_names, [*tissues, MEDIAN_EXPRESSION], values[keyed.rows],
                   TISSUE_DE, str(dataset_dir),
                   notes={"samples_per_tissue": counts_per_tissue, "genes_expressed": int(expressed.sum()),
                          "genes_in_dataset": data.n_genes, "min_cpm": min_cpm})


def de_prior(path: Path, annotation: GeneAnnotation | None) -> Targets:
    table = read_numeric_table(path, "DE prior table", select=("Gene_Name", ["DE_Prior_Rank"]))
    rank = table.values[:, 0]
    if ((rank < 0) | (rank > 1)).any():
        i = int(np.flatnonzero((rank < 0) | (rank > 1))[0])
        raise InputError(f"DE prior table {path}, line {i + 2}: DE_Prior_Rank {rank[i]:g} is outside 0-1")
    with np.errstate(divide="ignore"):
        logit = np.log(rank) - np.log1p(-rank)
    logit = np.clip(np.nan_to_num(logit, posinf=10.0, neginf=-10.0), -10.0, 10.0)[:, None]
    keyed = key_rows(table.keys, logit, annotation, f"DE prior table {path}")
    threshold = float(np.log(DE_PRIOR_POSITIVE_RANK) - np.log1p(-DE_PRIOR_POSITIVE_RANK))
    return Targets(keyed.gene_ids, keyed.gene_names, [DE_PRIOR_TARGET], logit[keyed.rows], DE_PRIOR, str(path),
                   positive_threshold={DE_PRIOR_TARGET: threshold},
                   notes={"rows": len(table.keys), "unmapped_rows": keyed.n_unmapped})


def target_table(path: Path, annotation: GeneAnnotation | None) -> Targets:
    table = read_numeric_table(path, "target table", allow_missing=True)
    keyed = key_rows(table.keys, table.values, annotation, f"target table {table.path}",
                     table.row_word, table.first_row)
    return Targets(keyed.gene_ids, keyed.gene_names, list(table.columns), table.values[keyed.rows], "table",
                   str(path), notes={"rows": len(table.keys), "unmapped_rows": keyed.n_unmapped})
