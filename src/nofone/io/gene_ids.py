"""Gene identifiers: Ensembl version stripping, id-type detection, mapping through an annotation.

Models are keyed by Ensembl gene ids without versions. Count files come keyed by versioned
Ensembl ids, symbols or Entrez ids; this module turns each row into one canonical id and says
which rows it could not place (unmapped) or could place in several (ambiguous).
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from nofone.errors import InputError

_ENSEMBL = re.compile(r"^(ENS[A-Z]*[GT]\d{6,})(?:\.\d+)?(_PAR_Y)?$")
_ENTREZ = re.compile(r"^\d+$")

ANNOTATION_ALIASES = {
    "ensembl": ("ensgene", "gene_id", "ensembl_gene_id", "ensembl", "gene stable id", "ensembl_id"),
    "symbol": ("symbol", "gene_name", "hgnc_symbol", "external_gene_name", "gene name",
               "mgi_symbol", "gene_symbol"),
    "entrez": ("entrez", "entrezgene", "entrezgene_id", "entrez_id", "entrez_gene_id",
               "ncbi gene (formerly entrezgene) id", "entrezgeneid"),
    "biotype": ("biotype", "gene_biotype", "gene_type", "gene type"),
    "chromosome": ("chr", "chrom", "chromosome", "chromosome_name", "seqname", "chromosome/scaffold name"),
}
#: Symbols that name several Ensembl genes usually do so through alternate-haplotype copies;
#: the one on a primary chromosome is the gene a count matrix means.
PRIMARY_CHROMOSOMES = {str(i) for i in range(1, 23)} | {"X", "Y", "MT", "M"}


def strip_version(gene_id: str) -> str:
    """`ENSG00000223972.5` -> `ENSG00000223972`; `ENSG00000002586.20_PAR_Y` keeps `_PAR_Y`."""
    match = _ENSEMBL.match(gene_id)
    if not match:
        return gene_id
    return match.group(1) + (match.group(2) or "")


def id_kind(values: np.ndarray | list[str]) -> str:
    """Classify a column of ids as 'ensembl', 'entrez' or 'symbol' by majority vote."""
    sample = [str(v).strip() for v in list(values)[:2000] if str(v).strip()]
    if not sample:
        return "symbol"
    n_ens = sum(bool(_ENSEMBL.match(v)) for v in sample)
    n_ent = sum(bool(_ENTREZ.match(v)) for v in sample)
    if n_ens >= 0.5 * len(sample):
        return "ensembl"
    if n_ent >= 0.5 * len(sample):
        return "entrez"
    return "symbol"


def read_named_table(path: Path, what: str) -> tuple[pd.DataFrame, dict[str, str]]:
    """A TSV or CSV (by its suffixes; optionally gzipped) with a header, every cell as text, and
    its columns by lower-cased name: how annotations and symbol maps are read."""
    if not path.is_file():
        raise InputError(f"{what} {path} does not exist")
    sep = "," if ".csv" in path.suffixes else "\t"
    try:
        table = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
    except Exception as exc:
        raise InputError(f"{what} {path}: cannot be read ({exc})") from None
    return table, {c.strip().lower(): c for c in table.columns}


@dataclass
class Annotation:
    """Gene annotation: Ensembl ids with symbols, Entrez ids and biotypes where available."""

    path: Path
    ensembl: pd.Series  # index: ensembl id; values: symbol (may be empty)
    biotype: pd.Series  # index: ensembl id; values: biotype (may be empty)
    by_symbol: dict[str, list[str]]
    by_entrez: dict[str, list[str]]

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> Annotation:
        """Read a TSV/CSV (optionally gzipped) annotation; columns are recognised by name."""
        path = Path(path)
        table, lower = read_named_table(path, "annotation")
        found = {
            role: next((lower[a] for a in aliases if a in lower), None)
            for role, aliases in ANNOTATION_ALIASES.items()
        }
        if found["ensembl"] is None:
            raise InputError(
                f"annotation {path}: no Ensembl id column (looked for "
                f"{', '.join(ANNOTATION_ALIASES['ensembl'])}); found {list(table.columns)}"
            )
        ens = table[found["ensembl"]].map(lambda v: strip_version(v.strip()))
        symbols = table[found["symbol"]].str.strip() if found["symbol"] else pd.Series("", index=table.index)
        biotypes = table[found["biotype"]].str.strip() if found["biotype"] else pd.Series("", index=table.index)
        primary = set(ens)
        if found["chromosome"]:
            chrom = table[found["chromosome"]].str.strip().str.removeprefix("chr")
            primary = set(ens[chrom.isin(PRIMARY_CHROMOSOMES)])
        by_symbol: dict[str, set[str]] = defaultdict(set)
        by_entrez: dict[str, set[str]] = defaultdict(set)
        for e, s in zip(ens, symbols):
            if e and s:
                by_symbol[s].add(e)
        if found["entrez"]:
            for e, z in zip(ens, table[found["entrez"]].str.strip()):
                if e and z and z.upper() != "NA":
                    by_entrez[_clean_entrez(z)].add(e)
        first = ~ens.duplicated()
        return cls(
            path=path,
            ensembl=pd.Series(symbols[first].to_numpy(), index=ens[first].to_numpy()),
            biotype=pd.Series(biotypes[first].to_numpy(), index=ens[first].to_numpy()),
            by_symbol={k: _prefer_primary(v, primary) for k, v in by_symbol.items()},
            by_entrez={k: _prefer_primary(v, primary) for k, v in by_entrez.items()},
        )

    def symbol_of(self, ids: list[str]) -> list[str | None]:
        return [(self.ensembl.get(i) or None) for i in ids]

    def biotype_of(self, ids: list[str]) -> list[str | None]:
        return [(self.biotype.get(i) or None) for i in ids]


def _prefer_primary(candidates: set[str], primary: set[str]) -> list[str]:
    """All candidates, unless exactly one lies on a primary chromosome: then that one."""
    on_primary = [c for c in candidates if c in primary]
    return on_primary if len(on_primary) == 1 else sorted(candidates)


def _clean_entrez(value: str) -> str:
    value = value.strip()
    return value[:-2] if value.endswith(".0") else value


@dataclass
class GeneMapping:
    """Per input row: its canonical id ('' when dropped) and a display name."""

    canonical: np.ndarray  # str, '' = dropped
    names: np.ndarray  # str, '' = unknown
    kind: str  # id kind of the primary column
    unmapped: list[str] = field(default_factory=list)
    ambiguous: dict[str, list[str]] = field(default_factory=dict)


def map_gene_ids(id_columns: dict[str, np.ndarray], annotation: Annotation | None) -> GeneMapping:
    """Map the rows of a count file to canonical gene ids.

    `id_columns` are the file's identifier columns in file order (the first is the primary id).
    Ensembl ids lose their version. Without an annotation, the primary id is kept as it is.
    With one, rows are mapped to Ensembl: Ensembl columns directly, then Entrez (if the
    annotation has Entrez ids), then symbols, taking the first unique hit per row.
    """
    names_in_order = list(id_columns)
    columns = {k: np.array([str(v).strip() for v in vals], dtype=object) for k, vals in id_columns.items()}
    kinds = {k: id_kind(v) for k, v in columns.items()}
    primary = names_in_order[0]
    n = len(columns[primary])
    symbol_col = next((k for k in names_in_order if kinds[k] == "symbol"), None)
    names = columns[symbol_col] if symbol_col else np.array([""] * n, dtype=object)

    ensembl_cols = [k for k in names_in_order if kinds[k] == "ensembl"]
    if annotation is None:
        if kinds[primary] == "ensembl":
            canonical = np.array([strip_version(v) for v in columns[primary]], dtype=object)
        elif kinds[primary] == "entrez":
            canonical = np.array([_clean_entrez(v) for v in columns[primary]], dtype=object)
        else:
            canonical = columns[primary].copy()
        empty = [i for i in range(n) if not canonical[i]]
        return GeneMapping(canonical, names, kinds[primary], unmapped=[f"row {i + 1}" for i in empty])

    canonical = np.array([""] * n, dtype=object)
    unmapped: list[str] = []
    ambiguous: dict[str, list[str]] = {}
    order = ensembl_cols + [k for k in names_in_order if kinds[k] == "entrez"] + (
        [symbol_col] if symbol_col else []
    )
    for i in range(n):
        hits: list[str] = []
        for column in order:
            value = columns[column][i]
            if not value:
                continue
            kind = kinds[column]
            if kind == "ensembl":
                hits = [strip_version(value)]
            elif kind == "entrez":
                hits = annotation.by_entrez.get(_clean_entrez(value), [])
            else:
                hits = annotation.by_symbol.get(value, [])
            if len(hits) == 1:
                break
        label = columns[primary][i] or f"row {i + 1}"
        if len(hits) == 1:
            canonical[i] = hits[0]
        elif not hits:
            unmapped.append(label)
        else:
            ambiguous[label] = hits
    if not symbol_col:
        names = np.array([s or "" for s in annotation.symbol_of(list(canonical))], dtype=object)
    return GeneMapping(canonical, names, kinds[primary], unmapped, ambiguous)


def read_gene_list(path: str | os.PathLike[str]) -> list[str]:
    """Genes to keep, in order: one id per line, or a table whose first column is `gene_id`.

    Versions are stripped. Duplicates are an error (a model's gene list has none).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"gene list {path} does not exist")
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    if lines and lines[0].split("\t")[0].split(",")[0].lower() in {"gene_id", "gene", "ensgene"}:
        lines = lines[1:]
    genes = [strip_version(re.split(r"[\t,]", ln)[0].strip()) for ln in lines]
    if not genes:
        raise InputError(f"gene list {path} is empty")
    seen: set[str] = set()
    dups = [g for g in genes if g in seen or seen.add(g)]
    if dups:
        raise InputError(f"gene list {path}: duplicate gene ids {sorted(set(dups))[:10]}")
    return genes
