"""Gene identifiers: Ensembl version stripping, id-type detection, mapping through an annotation.

Models are keyed by Ensembl gene ids without versions. Count files come keyed by versioned
Ensembl ids, symbols or Entrez ids; this module turns each row into one canonical id and says
which rows it could not place (unmapped) or could place in several (ambiguous), and by which
rule it placed the others. The rule is documented in docs/input.md.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nofone.errors import InputError
from nofone.io.annotation import (  # noqa: F401  (re-exported: the annotation was read here before)
    ANNOTATION_ALIASES,
    PRIMARY_CHROMOSOMES,
    Annotation,
    clean_entrez,
    read_named_table,
    strip_version,
)
from nofone.io.paths import read_text

_ENSEMBL = re.compile(r"^(ENS[A-Z]*[GT]\d{6,})(?:\.\d+)?(_PAR_Y)?$")
_ENTREZ = re.compile(r"^\d+$")
#: How a row found its Ensembl id, in the order the rules are tried.
RULES = ("ensembl", "entrez", "symbol", "alias", "shared_entrez")


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


@dataclass
class GeneMapping:
    """Per input row: its canonical id ('' when dropped), a display name and the rule that mapped it."""

    canonical: np.ndarray  # str, '' = dropped
    names: np.ndarray  # str, '' = unknown
    kind: str  # id kind of the primary column
    unmapped: list[str] = field(default_factory=list)
    ambiguous: dict[str, list[str]] = field(default_factory=dict)
    mapped_by: dict[str, int] = field(default_factory=dict)  # rule -> rows
    #: ids of the primary column that are not of its kind (kept as they are, no annotation)
    mixed: list[str] = field(default_factory=list)


def map_gene_ids(id_columns: dict[str, np.ndarray], annotation: Annotation | None) -> GeneMapping:
    """Map the rows of a count file to canonical gene ids.

    `id_columns` are the file's identifier columns in file order (the first is the primary id).
    Ensembl ids lose their version. Without an annotation, the primary id is kept as it is.
    With one, each row takes the first rule that gives exactly one Ensembl gene: its Ensembl id;
    its Entrez id; its current symbol; its previous symbol or alias (an alias of one gene only);
    and last an Entrez id that the file gives to several rows (it does not tell them apart, so
    their own symbols go first). A value that is not an Ensembl id in an Ensembl column is
    looked up as a symbol.
    """
    names_in_order = list(id_columns)
    columns = {k: np.array([str(v).strip() for v in vals], dtype=object) for k, vals in id_columns.items()}
    kinds = {k: id_kind(v) for k, v in columns.items()}
    primary = names_in_order[0]
    n = len(columns[primary])
    symbol_col = next((k for k in names_in_order if kinds[k] == "symbol"), None)
    names = columns[symbol_col] if symbol_col else np.array([""] * n, dtype=object)
    if annotation is None:
        return _keep_primary(columns[primary], kinds[primary], names)

    ensembl_cols = [k for k in names_in_order if kinds[k] == "ensembl"]
    entrez_cols = [k for k in names_in_order if kinds[k] == "entrez"]
    entrez = {k: np.array([clean_entrez(v) for v in columns[k]], dtype=object) for k in entrez_cols}
    shared = {k: {v for v, c in Counter(entrez[k]).items() if v and c > 1} for k in entrez_cols}
    canonical = np.array([""] * n, dtype=object)
    rule_counts: Counter[str] = Counter()
    unmapped: list[str] = []
    ambiguous: dict[str, list[str]] = {}
    for i in range(n):
        lookups: list[tuple[str, list[str]]] = []
        for column in ensembl_cols:
            value = columns[column][i]
            if _ENSEMBL.match(value):
                lookups.append(("ensembl", [strip_version(value)]))
            elif value:
                lookups += _by_symbol(annotation, value)
        later = []
        for column in entrez_cols:
            value = entrez[column][i]
            if value:
                hit = annotation.by_entrez.get(value, [])
                if value in shared[column]:
                    later.append(("shared_entrez", hit))
                else:
                    lookups.append(("entrez", hit))
        if symbol_col and columns[symbol_col][i]:
            lookups += _by_symbol(annotation, columns[symbol_col][i])
        lookups += later
        found = next(((rule, hits[0]) for rule, hits in lookups if len(hits) == 1), None)
        label = next((columns[c][i] for c in names_in_order if columns[c][i]), f"row {i + 1}")
        if found is not None:
            canonical[i] = found[1]
            rule_counts[found[0]] += 1
            continue
        several = next((hits for _, hits in lookups if len(hits) > 1), None)
        alias_of = annotation.ambiguous_aliases.get(columns[symbol_col][i]) if symbol_col else None
        if several is not None:
            ambiguous[label] = several
        elif alias_of:
            ambiguous[label] = [f"alias of {', '.join(alias_of[:5])}"]
        else:
            unmapped.append(label)
    if not symbol_col:
        names = np.array([s or "" for s in annotation.symbol_of(list(canonical))], dtype=object)
    mapped_by = {rule: rule_counts[rule] for rule in RULES if rule_counts[rule]}
    return GeneMapping(canonical, names, kinds[primary], unmapped, ambiguous, mapped_by)


def _by_symbol(annotation: Annotation, value: str) -> list[tuple[str, list[str]]]:
    return [("symbol", annotation.by_symbol.get(value, [])), ("alias", annotation.by_alias.get(value, []))]


def _keep_primary(values: np.ndarray, kind: str, names: np.ndarray) -> GeneMapping:
    """No annotation: the primary id as it is (Ensembl without version), and the ids that are
    not of the column's kind, for a warning."""
    if kind == "ensembl":
        canonical = np.array([strip_version(v) for v in values], dtype=object)
        mixed = [v for v in values if v and not _ENSEMBL.match(v)]
    elif kind == "entrez":
        canonical = np.array([clean_entrez(v) for v in values], dtype=object)
        mixed = [v for v in values if v and not _ENTREZ.match(v)]
    else:
        canonical = values.copy()
        mixed = [v for v in values if _ENSEMBL.match(v)]
    empty = [f"row {i + 1}" for i in range(len(values)) if not canonical[i]]
    return GeneMapping(canonical, names, kind, unmapped=empty, mapped_by={"as_given": len(values) - len(empty)},
                       mixed=mixed)


def read_gene_list(path: str | os.PathLike[str]) -> list[str]:
    """Genes to keep, in order: one id per line, or a table whose first column is `gene_id`.

    Versions are stripped. Duplicates are an error (a model's gene list has none).
    """
    path = Path(path)
    lines = [ln.strip() for ln in read_text(path, "gene list").splitlines()]
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
