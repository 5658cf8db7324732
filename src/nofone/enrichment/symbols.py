"""Gene ids -> the symbols a GMT file uses.

A symbol map is a tab- or comma-separated file (gzip allowed) with a header, in one of two
layouts:

- an annotation with a `symbol` column and `entrez` and/or Ensembl (`ensgene`, `ensembl`,
  `gene_id`) columns, e.g. annotables' `grcm38.tsv.gz`: each Entrez and Ensembl id maps to its
  symbol. annotables has one row per Ensembl x Entrez pair, so an id can appear on several
  rows: it gets its most frequent symbol (ties: the first in the file);
- any two columns: the first is the key (one of our gene ids or gene names, or the symbol an
  earlier map produced), the second the target symbol (e.g. mouse_symbol -> human_symbol). A
  key listed more than once keeps its first target (one-to-many orthologs: the first row wins).

Maps apply in sequence (`to_symbols(..., maps=[entrez_to_mouse, mouse_to_human])`): the first
looks up each gene's id, then its name; each later one looks up the previous result. Without
maps, a gene's symbol is its name from the dataset (or its id when it has none). `uppercase`
upper-cases the result: mouse and human symbols of one-to-one orthologs mostly differ only in
case (Csn2 / CSN2), so upper-casing mouse symbols against a human GMT is a common
approximation; it misses renamed and one-to-many orthologs, for which a real ortholog map is
better.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from nofone.errors import InputError
from nofone.io.gene_ids import read_named_table

ID_COLUMNS = ("entrez", "entrezid", "entrez_id", "entrez_gene_id", "ensgene", "ensembl", "ensembl_gene_id",
              "gene_id")
SYMBOL_COLUMNS = ("symbol", "gene_symbol", "hgnc_symbol", "mgi_symbol")
_EMPTY = {"", "NA", "nan", "NaN", "None"}


def read_symbol_map(path: str | os.PathLike[str]) -> dict[str, str]:
    """Read a symbol map (see the module docstring); keys and values are stripped strings."""
    path = Path(path)
    table, lower = read_named_table(path, "symbol map")
    if table.shape[1] < 2:
        raise InputError(f"symbol map {path}: needs at least two columns (key, symbol) with a header; "
                         f"found {list(table.columns)}")
    symbol = next((lower[c] for c in SYMBOL_COLUMNS if c in lower), None)
    ids = [lower[c] for c in ID_COLUMNS if c in lower]
    mapping: dict[str, str] = {}
    if symbol is not None and ids:
        for column in ids:
            votes: dict[str, Counter] = {}
            for key, value in zip(table[column].str.strip(), table[symbol].str.strip()):
                if key in _EMPTY or value in _EMPTY:
                    continue
                key = key.removesuffix(".0") if key.replace(".", "", 1).isdigit() else key
                votes.setdefault(key, Counter())[value] += 1
            for key, counter in votes.items():
                mapping.setdefault(key, counter.most_common(1)[0][0])  # most_common keeps insertion order on ties
    else:
        key_col, value_col = table.columns[0], table.columns[1]
        for key, value in zip(table[key_col].str.strip(), table[value_col].str.strip()):
            if key in _EMPTY or value in _EMPTY:
                continue
            mapping.setdefault(key, value)
    if not mapping:
        raise InputError(f"symbol map {path}: no usable rows")
    return mapping


def to_symbols(gene_ids: Sequence[str], gene_names: Sequence[str] | None = None,
               maps: Sequence[dict[str, str]] = (), uppercase: bool = False) -> list[str | None]:
    """The GMT symbol of each gene (None where a map has no entry)."""
    names = list(gene_names) if gene_names is not None else [""] * len(gene_ids)
    out: list[str | None] = []
    for gene_id, name in zip(gene_ids, names):
        name = "" if name is None or str(name) in _EMPTY else str(name)
        if not maps:
            value: str | None = name or str(gene_id)
        else:
            value = maps[0].get(str(gene_id)) or (maps[0].get(name) if name else None)
            for later in maps[1:]:
                if value is None:
                    break
                value = later.get(value)
        if value is not None and uppercase:
            value = value.upper()
        out.append(value)
    return out
