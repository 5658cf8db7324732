"""Gene keys of regulator tables: Ensembl ids or symbols, mapped through an annotation, and the
chromosome of every gene (the test split holds out chromosome 1; permutations stay within a
chromosome).

Every table (features, targets) names its genes in its first column. With an annotation, symbols
and versioned ids become unversioned Ensembl ids (`nofone.io.gene_ids.map_gene_ids`); without
one, the keys are taken as they are and the tables must agree on them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from nofone.errors import InputError
from nofone.io.gene_ids import ANNOTATION_ALIASES, Annotation, map_gene_ids, read_named_table, strip_version


@dataclass
class GeneAnnotation:
    """An annotation for mapping keys, with the chromosome of each Ensembl id."""

    annotation: Annotation
    chromosome: pd.Series  # index: Ensembl id; values: chromosome without a "chr" prefix

    @classmethod
    def read(cls, path: str | Path) -> GeneAnnotation:
        path = Path(path)
        annotation = Annotation.read(path)
        table, lower = read_named_table(path, "annotation")
        column = next((lower[a] for a in ANNOTATION_ALIASES["chromosome"] if a in lower), None)
        if column is None:
            raise InputError(f"annotation {path}: no chromosome column (looked for "
                             f"{', '.join(ANNOTATION_ALIASES['chromosome'])}); the test split needs it")
        ensembl = next(lower[a] for a in ANNOTATION_ALIASES["ensembl"] if a in lower)
        ids = table[ensembl].map(lambda v: strip_version(v.strip()))
        chromosome = table[column].str.strip().str.removeprefix("chr")
        keep = ~ids.duplicated()
        return cls(annotation, pd.Series(chromosome[keep].to_numpy(), index=ids[keep].to_numpy()))

    def chromosomes_of(self, gene_ids: list[str] | np.ndarray) -> np.ndarray:
        return self.chromosome.reindex(list(gene_ids)).fillna("").to_numpy(dtype=object)


@dataclass
class KeyedRows:
    """Rows of a table placed on genes: `rows[i]` is the table row of gene `gene_ids[i]`."""

    gene_ids: np.ndarray  # canonical ids, unique
    gene_names: np.ndarray
    rows: np.ndarray  # int, row positions in the table
    n_unmapped: int
    n_identical_duplicates: int


def key_rows(keys: np.ndarray, values: np.ndarray, annotation: GeneAnnotation | None, where: str,
             row_word: str = "line", first_row: int = 2) -> KeyedRows:
    """Map a table's first column to canonical gene ids and resolve duplicate genes.

    Rows whose key the annotation cannot place are dropped (counted). Several rows on one gene
    are one gene when their values are identical (real tables repeat a gene under two names of
    one gene); different values on one gene are an error naming the gene and the rows, since
    choosing one would silently change the answer. Rows are named as `row_word` numbers
    counted from `first_row` (text tables: the line in the file, header = line 1).
    """
    keys = np.array([str(k).strip() for k in keys], dtype=object)
    mapping = map_gene_ids({"gene": keys}, annotation.annotation if annotation else None)
    canonical = mapping.canonical
    if annotation is not None:
        symbols = annotation.annotation.ensembl
        names = np.array([symbols.get(c) or (k if mapping.kind == "symbol" else "")
                          for c, k in zip(canonical, keys)], dtype=object)
    else:
        names = keys.copy() if mapping.kind == "symbol" else np.array([""] * len(keys), dtype=object)
    placed = np.flatnonzero(canonical != "")
    if len(placed) == 0:
        raise InputError(f"{where}: none of its {len(keys)} gene keys could be placed (keys look like "
                         f"{list(keys[:3])}); give --annotation to map symbols or ids")
    order = pd.Series(canonical[placed]).groupby(canonical[placed], sort=False).indices
    first_rows, identical = [], 0
    for gene, positions in order.items():
        rows = placed[positions]
        if len(rows) > 1:
            block = values[rows]
            same = np.all((block == block[0]) | (np.isnan(block) & np.isnan(block[0])))
            if not same:
                lines = ", ".join(str(r + first_row) for r in rows[:5])
                raise InputError(f"{where}: gene {gene} appears on several rows with different values "
                                 f"({row_word}s {lines}: keys {sorted(set(keys[rows]))}); keep one row per gene")
            identical += len(rows) - 1
        first_rows.append(rows[0])
    rows = np.array(first_rows, dtype=np.int64)
    return KeyedRows(canonical[rows], names[rows], rows, len(keys) - len(placed), identical)
