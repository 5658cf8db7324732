"""GMT gene-set files: one set per line, `name <TAB> description <TAB> gene <TAB> gene ...`."""

from __future__ import annotations

import gzip
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from nofone.errors import InputError


def read_gmt(path: str | os.PathLike[str]) -> dict[str, list[str]]:
    """{set name: unique genes in file order}; errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"gene-set file {path} does not exist")
    opener = gzip.open if path.suffix == ".gz" else open
    sets: dict[str, list[str]] = {}
    try:
        with opener(path, "rt") as handle:
            for number, line in enumerate(handle, start=1):
                line = line.rstrip("\r\n")
                if not line.strip() or line.startswith("#"):
                    continue
                fields = line.split("\t")
                if len(fields) < 3:
                    raise InputError(f"{path}, line {number}: a GMT line needs a name, a description and genes "
                                     "separated by tabs")
                name = fields[0].strip()
                if not name:
                    raise InputError(f"{path}, line {number}: empty gene-set name")
                if name in sets:
                    raise InputError(f"{path}, line {number}: gene set {name!r} appears twice")
                genes = list(dict.fromkeys(g.strip() for g in fields[2:] if g.strip()))
                if genes:
                    sets[name] = genes
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not a text GMT file ({exc})") from None
    if not sets:
        raise InputError(f"{path}: no gene sets found (expected GMT lines: name, description, genes)")
    return sets


def match_gene_sets(gene_sets: dict[str, Sequence[str]], gene_ids: Sequence[str], gene_names: Sequence[str],
                    min_size: int) -> dict[str, np.ndarray]:
    """{set: sorted indices into the gene table} matching members by gene id or gene name
    (case-insensitive; ids win); sets with fewer than `min_size` matched genes are left out."""
    lookup: dict[str, int] = {}
    for i, name in enumerate(gene_names):
        if name is not None and str(name) not in ("", "nan", "<NA>"):
            lookup.setdefault(str(name).upper(), i)
    for i, gid in enumerate(gene_ids):
        lookup[str(gid).upper()] = i
    out = {}
    for name, members in gene_sets.items():
        index = np.array(sorted({lookup[g.upper()] for g in members if g.upper() in lookup}), dtype=np.int64)
        if index.size >= min_size:
            out[name] = index
    if not out:
        raise InputError(f"no gene set has {min_size} or more of the {len(gene_ids)} genes (matched by gene id or "
                         "name)")
    return out
