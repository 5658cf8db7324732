"""Per-gene feature tables joined into one gene x feature matrix.

Two kinds of table:
- regulator tables (`--features`): binding of each regulator to each gene (TF ChIP-seq peaks in
  the promoter, miRNA target scores, a user's RBP peaks, ...). A gene a table does not list has
  no binding there (0): the published tables drop genes without a site. Attribution asks what
  each of these columns contributes against "no binding".
- structure tables (`--structure`): gene-level covariates (lengths, exon count, GC content). A
  gene a table does not list gets the training median; attribution measures them against
  their median, so that "a typical gene" is the reference, not a gene of length 0.

Regulators bound to fewer than `min_genes` modelled genes are dropped (the paper used only
regulators that bind at least 30 genes), as are columns that do not vary.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nofone.errors import InputError
from nofone.regulators.genes import GeneAnnotation, key_rows
from nofone.regulators.tables import read_numeric_table

log = logging.getLogger(__name__)

REGULATOR = "regulator"
STRUCTURE = "structure"
#: The paper kept regulators that bind promoters or RNAs of at least 30 genes.
MIN_GENES_BOUND = 30


@dataclass
class FeatureTable:
    """One table on canonical genes: values [genes, features] with each feature's kind and source."""

    path: Path
    kind: str
    gene_ids: np.ndarray
    gene_names: np.ndarray
    names: list[str]
    values: np.ndarray
    notes: dict = field(default_factory=dict)

    @property
    def source(self) -> str:
        name = self.path.name
        for suffix in (".gz", ".tsv", ".csv", ".txt", ".parquet", ".pq"):
            name = name.removesuffix(suffix)
        return name


def read_feature_table(path: str | Path, kind: str, annotation: GeneAnnotation | None) -> FeatureTable:
    """Read one feature table and place its rows on canonical gene ids."""
    table = read_numeric_table(path, "feature table")
    keyed = key_rows(table.keys, table.values, annotation, f"feature table {table.path}",
                     table.row_word, table.first_row)
    values = table.values[keyed.rows]
    if kind == REGULATOR and (values < 0).any():
        i, j = (int(v[0]) for v in np.nonzero(values < 0))
        raise InputError(f"feature table {table.path}, gene {keyed.gene_ids[i]}, column {table.columns[j]!r}: "
                         f"negative binding {values[i, j]:g} (regulator features count or score binding; "
                         "give signed covariates with --structure)")
    notes = {"rows": len(table.keys), "genes": len(keyed.gene_ids), "unmapped_rows": keyed.n_unmapped,
             "identical_duplicate_rows": keyed.n_identical_duplicates}
    return FeatureTable(table.path, kind, keyed.gene_ids, keyed.gene_names, list(table.columns), values, notes)


@dataclass
class FeatureMatrix:
    """Genes x features, with what the model needs to know about every column."""

    gene_ids: np.ndarray
    gene_names: np.ndarray
    names: list[str]
    kinds: list[str]
    sources: list[str]
    values: np.ndarray  # float64 [genes, features], raw (unscaled)
    tables: list[dict] = field(default_factory=list)

    @property
    def n_features(self) -> int:
        return len(self.names)

    def regulator_mask(self) -> np.ndarray:
        return np.array([k == REGULATOR for k in self.kinds])

    def select_genes(self, index: np.ndarray) -> FeatureMatrix:
        return FeatureMatrix(self.gene_ids[index], self.gene_names[index], self.names, self.kinds,
                             self.sources, self.values[index], self.tables)

    def select_features(self, keep: np.ndarray) -> FeatureMatrix:
        keep = np.asarray(keep, dtype=bool)
        pick = [i for i in range(self.n_features) if keep[i]]
        return FeatureMatrix(self.gene_ids, self.gene_names, [self.names[i] for i in pick],
                             [self.kinds[i] for i in pick], [self.sources[i] for i in pick],
                             self.values[:, keep], self.tables)


def join_tables(tables: list[FeatureTable]) -> FeatureMatrix:
    """The union of the tables' genes; a gene missing from a regulator table has no binding
    there (0), one missing from a structure table is NaN until `fill_structure` sets the
    training median. Feature names must be unique over all tables."""
    if not tables:
        raise InputError("give at least one feature table (--features)")
    seen: dict[str, Path] = {}
    for table in tables:
        for name in table.names:
            if name in seen:
                raise InputError(f"feature {name!r} is in both {seen[name]} and {table.path}; rename one column")
            seen[name] = table.path
    genes: dict[str, str] = {}
    for table in tables:
        for gene, name in zip(table.gene_ids, table.gene_names):
            if not genes.get(gene):
                genes[gene] = name
    gene_ids = np.array(list(genes), dtype=object)
    position = {g: i for i, g in enumerate(gene_ids)}
    blocks = []
    for table in tables:
        block = np.full((len(gene_ids), len(table.names)), 0.0 if table.kind == REGULATOR else np.nan)
        block[[position[g] for g in table.gene_ids]] = table.values
        blocks.append(block)
    names = [n for t in tables for n in t.names]
    return FeatureMatrix(
        gene_ids, np.array([genes[g] for g in gene_ids], dtype=object), names,
        [t.kind for t in tables for _ in t.names], [t.source for t in tables for _ in t.names],
        np.hstack(blocks), [{"path": str(t.path), "kind": t.kind, "features": len(t.names), **t.notes} for t in tables],
    )


def fill_structure(features: FeatureMatrix, training: np.ndarray) -> np.ndarray:
    """Set genes missing from a structure table to that feature's median over the training genes;
    returns the medians (NaN for regulator columns)."""
    medians = np.full(features.n_features, np.nan)
    for j, kind in enumerate(features.kinds):
        if kind != STRUCTURE:
            continue
        column = features.values[:, j]
        known = column[training][~np.isnan(column[training])]
        if len(known) == 0:
            raise InputError(f"structure feature {features.names[j]!r} has no value for any training gene")
        medians[j] = float(np.median(known))
        column[np.isnan(column)] = medians[j]
    return medians


def informative_features(features: FeatureMatrix, min_genes: int) -> tuple[np.ndarray, dict[str, list[str]]]:
    """Which columns to keep: regulators bound to at least `min_genes` genes, columns that vary."""
    values = features.values
    bound = (values > 0).sum(0)
    constant = np.nanmax(values, 0) == np.nanmin(values, 0)
    sparse = features.regulator_mask() & (bound < min_genes)
    keep = ~(sparse | constant)
    dropped = {"bound_to_too_few_genes": [n for n, s in zip(features.names, sparse) if s],
               "constant": [n for n, c, s in zip(features.names, constant, sparse) if c and not s]}
    if not (keep & features.regulator_mask()).any():
        raise InputError(f"no regulator binds at least {min_genes} of the {len(features.gene_ids)} modelled genes "
                         "(lower --min-genes-bound, or check that the tables share gene ids with the targets)")
    return keep, dropped
