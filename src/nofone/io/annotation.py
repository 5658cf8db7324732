"""Gene annotations: what maps a count file's symbols and Entrez ids to Ensembl genes.

Two kinds of table are read, recognised by their columns, and any number may be combined
(`ingest --annotation A --annotation B`):

- an **Ensembl table**, one Ensembl gene per row with its own symbol and optionally biotype,
  chromosome and Entrez id (Ensembl BioMart, annotables, nofone simulate's genes.tsv);
- a **gene table** with previous symbols and aliases, one gene per row (the NCBI Gene table of
  org.Hs.eg.db: `entrez`, `symbol`, `ensembl_ids` (several allowed), `aliases`; HGNC's
  `alias_symbol`/`prev_symbol` columns are read the same way).

Lookups, each giving candidate Ensembl ids: by Entrez id (every table's cross-references); by
current symbol (the Ensembl tables' own gene names first, since the symbol of an Ensembl row is
that gene's name; a gene table's cross-references for symbols no Ensembl table knows); by
previous symbol or alias (gene tables), only for an alias that names exactly one gene and is
nobody's current symbol: an alias of several genes is never guessed (`ambiguous_aliases`). Where
several candidates remain and exactly one lies on a primary chromosome (the others are copies
on alternate haplotypes), that one is taken.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from nofone.errors import InputError
from nofone.io.paths import check_text

ANNOTATION_ALIASES = {
    "ensembl": ("ensgene", "gene_id", "ensembl_gene_id", "ensembl", "gene stable id", "ensembl_id",
                "ensembl_ids"),
    "symbol": ("symbol", "gene_name", "hgnc_symbol", "external_gene_name", "gene name",
               "mgi_symbol", "gene_symbol"),
    "entrez": ("entrez", "entrezgene", "entrezgene_id", "entrez_id", "entrez_gene_id",
               "ncbi gene (formerly entrezgene) id", "entrezgeneid"),
    "biotype": ("biotype", "gene_biotype", "gene_type", "gene type"),
    "chromosome": ("chr", "chrom", "chromosome", "chromosome_name", "seqname", "chromosome/scaffold name"),
}
#: Columns of previous symbols and aliases (all of them are read).
ALIAS_COLUMNS = ("aliases", "alias", "synonyms", "alias_symbol", "prev_symbol", "previous_symbols",
                 "gene synonym")
#: Symbols that name several Ensembl genes usually do so through alternate-haplotype copies;
#: the one on a primary chromosome is the gene a count matrix means.
PRIMARY_CHROMOSOMES = {str(i) for i in range(1, 23)} | {"X", "Y", "MT", "M"}
_LIST_SEPARATORS = re.compile(r"[,|;]")
_ENSEMBL = re.compile(r"^(ENS[A-Z]*[GT]\d{6,})(?:\.\d+)?(_PAR_Y)?$")


def strip_version(gene_id: str) -> str:
    """`ENSG00000223972.5` -> `ENSG00000223972`; `ENSG00000002586.20_PAR_Y` keeps `_PAR_Y`."""
    match = _ENSEMBL.match(gene_id)
    if not match:
        return gene_id
    return match.group(1) + (match.group(2) or "")


def clean_entrez(value: str) -> str:
    """An Entrez id as text: `'  388730'` and `'388730.0'` -> `'388730'`; `'0'`, `'NA'` -> `''`."""
    value = value.strip()
    if value.endswith(".0"):
        value = value[:-2]
    return "" if value in {"", "0", "NA", "na", "nan"} else value


def read_named_table(path: Path, what: str) -> tuple[pd.DataFrame, dict[str, str]]:
    """A TSV or CSV (by its suffixes; optionally gzipped) with a header, every cell as text, and
    its columns by lower-cased name: how annotations and symbol maps are read."""
    compression = check_text(path, what)
    sep = "," if ".csv" in path.suffixes else "\t"
    try:
        table = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, compression=compression)
    except Exception as exc:
        text = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise InputError(f"{what} {path}: cannot be read ({text})") from None
    return table, {str(c).strip().lower(): c for c in table.columns}


@dataclass
class Annotation:
    """Gene annotation: Ensembl ids with symbols, Entrez ids, aliases and biotypes where known."""

    paths: list[Path]
    ensembl: pd.Series  # index: ensembl id; values: symbol (may be empty)
    biotype: pd.Series  # index: ensembl id; values: biotype (may be empty)
    by_symbol: dict[str, list[str]]
    by_entrez: dict[str, list[str]]
    by_alias: dict[str, list[str]] = field(default_factory=dict)
    #: alias -> the current symbols of the genes it names (two or more): never used to map
    ambiguous_aliases: dict[str, list[str]] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return self.paths[0]

    @classmethod
    def read(cls, paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> Annotation:
        """Read one or several annotation tables (TSV/CSV, optionally gzipped; columns by name)."""
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        tables = [_read_table(Path(p)) for p in paths]
        if not tables:
            raise InputError("no annotation file given")
        return _combine([Path(p) for p in paths], tables)

    def symbol_of(self, ids: list[str]) -> list[str | None]:
        return [(self.ensembl.get(i) or None) for i in ids]

    def biotype_of(self, ids: list[str]) -> list[str | None]:
        return [(self.biotype.get(i) or None) for i in ids]


@dataclass
class _Table:
    """One annotation file, one gene per row; list columns split."""

    path: Path
    ensembl: list[list[str]]
    symbol: list[str]
    entrez: list[str]
    aliases: list[list[str]] | None  # None: the file has no alias column (an Ensembl table)
    biotype: list[str]
    chromosome: list[str] | None


def _read_table(path: Path) -> _Table:
    table, lower = read_named_table(path, "annotation")
    found = {role: next((lower[a] for a in names if a in lower), None) for role, names in ANNOTATION_ALIASES.items()}
    alias_columns = [lower[a] for a in ALIAS_COLUMNS if a in lower]
    if found["ensembl"] is None:
        raise InputError(
            f"annotation {path}: no Ensembl id column (looked for "
            f"{', '.join(ANNOTATION_ALIASES['ensembl'])}); found {list(table.columns)}"
        )

    def column(role: str) -> list[str]:
        name = found[role]
        return [v.strip() for v in table[name]] if name else [""] * len(table)

    ensembl = [[strip_version(e.strip()) for e in _LIST_SEPARATORS.split(v) if e.strip()]
               for v in table[found["ensembl"]]]
    aliases = None
    if alias_columns:
        aliases = [[a.strip() for cell in cells for a in _LIST_SEPARATORS.split(cell) if a.strip()]
                   for cells in zip(*(table[c] for c in alias_columns))]
    chromosome = [c.removeprefix("chr") for c in column("chromosome")] if found["chromosome"] else None
    return _Table(path, ensembl, column("symbol"), [clean_entrez(z) for z in column("entrez")], aliases,
                  column("biotype"), chromosome)


def _combine(paths: list[Path], tables: list[_Table]) -> Annotation:
    symbol_of: dict[str, str] = {}
    biotype_of: dict[str, str] = {}
    primary: set[str] = set()
    known_chromosomes = False
    own_symbols: dict[str, set[str]] = defaultdict(set)  # Ensembl tables: a row's symbol names it
    xref_symbols: dict[str, set[str]] = defaultdict(set)  # gene tables: symbol -> its Ensembl xrefs
    by_entrez: dict[str, set[str]] = defaultdict(set)
    alias_genes: dict[str, set[str]] = defaultdict(set)  # alias -> gene keys
    gene_symbol: dict[str, str] = {}
    gene_ensembl: dict[str, list[str]] = {}
    # Ensembl tables first: their own names are what Ensembl ids are called
    for t in sorted(tables, key=lambda t: t.aliases is not None):
        for i, ids in enumerate(t.ensembl):
            symbol, entrez = t.symbol[i], t.entrez[i]
            for e in ids:
                if symbol:
                    symbol_of.setdefault(e, symbol)
                if t.biotype[i]:
                    biotype_of.setdefault(e, t.biotype[i])
                if t.chromosome is not None and t.chromosome[i] in PRIMARY_CHROMOSOMES:
                    primary.add(e)
                if entrez:
                    by_entrez[entrez].add(e)
                if symbol:
                    (xref_symbols if t.aliases is not None else own_symbols)[symbol].add(e)
            known_chromosomes |= t.chromosome is not None
            if t.aliases is not None:
                key = entrez or (ids[0] if ids else f"symbol:{symbol}")
                gene_symbol.setdefault(key, symbol)
                gene_ensembl.setdefault(key, ids)
                for alias in t.aliases[i]:
                    if alias != symbol:
                        alias_genes[alias].add(key)
    if not known_chromosomes:
        primary = set(symbol_of) | {e for ids in by_entrez.values() for e in ids}
    current = set(own_symbols) | set(xref_symbols)
    by_symbol = {s: _prefer_primary(v, primary) for s, v in xref_symbols.items()}
    by_symbol |= {s: _prefer_primary(v, primary) for s, v in own_symbols.items()}
    by_alias: dict[str, list[str]] = {}
    ambiguous: dict[str, list[str]] = {}
    for alias, genes in alias_genes.items():
        if alias in current:
            continue  # a current symbol is looked up as one; an old name of another gene loses
        if len(genes) == 1:
            ids = gene_ensembl[next(iter(genes))]
            if ids:
                by_alias[alias] = _prefer_primary(set(ids), primary)
        else:
            ambiguous[alias] = sorted(gene_symbol[g] or g for g in genes)
    ensembl_ids = list(dict.fromkeys([*symbol_of, *biotype_of, *primary]))
    return Annotation(
        paths=paths,
        ensembl=pd.Series([symbol_of.get(e, "") for e in ensembl_ids], index=ensembl_ids, dtype=object),
        biotype=pd.Series([biotype_of.get(e, "") for e in ensembl_ids], index=ensembl_ids, dtype=object),
        by_symbol=by_symbol,
        by_entrez={k: _prefer_primary(v, primary) for k, v in by_entrez.items()},
        by_alias=by_alias,
        ambiguous_aliases=ambiguous,
    )


def _prefer_primary(candidates: Iterable[str], primary: set[str]) -> list[str]:
    """All candidates, unless exactly one lies on a primary chromosome: then that one."""
    candidates = sorted(set(candidates))
    on_primary = [c for c in candidates if c in primary]
    return on_primary if len(on_primary) == 1 else candidates
