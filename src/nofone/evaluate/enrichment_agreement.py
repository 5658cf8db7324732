"""How the gene-set enrichment of two rankings (the NB-VAE's and DESeq2's) compares, from one
enrichment table of `nofone cohort-de` (columns ranking, term, a q-value, p_value, nes)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

#: Rankings listed first, in this order; any other ranking follows, sorted.
KNOWN_RANKINGS = ("nbvae", "deseq2")
FDR = 0.05


@dataclass
class RankingComparison:
    rankings: list[str]
    by_term: dict[str, pd.DataFrame]   # per ranking, its rows indexed by term (first row per term)
    significant: dict[str, set[str]]   # per ranking, the terms with q < FDR
    summary: dict                      # per ranking: tested, fdr_below_0.05, top_terms (5 best)
    chosen: list[str]                  # the k best terms of each ranking, ordered by their best q


def sort_terms(frame: pd.DataFrame, q: str) -> pd.DataFrame:
    """By ranking, then q-value, p-value and term (stable)."""
    return frame.sort_values(["ranking", q, "p_value" if "p_value" in frame else q, "term"], kind="stable")


def compare_rankings(ordered: pd.DataFrame, q: str, method: str, k: int) -> RankingComparison:
    """`ordered`: an enrichment table in `sort_terms` order; `q`: its q-value column; `method`:
    prerank (the top terms carry their NES) or ora; `k`: terms taken from each ranking."""
    rankings = [r for r in KNOWN_RANKINGS if (ordered["ranking"] == r).any()]
    rankings += sorted(set(ordered["ranking"].astype(str)) - set(rankings))
    significant: dict[str, set[str]] = {}
    summary: dict = {}
    by_term: dict[str, pd.DataFrame] = {}
    for ranking in rankings:
        rows = ordered[ordered["ranking"].astype(str) == ranking]
        significant[ranking] = set(rows.loc[rows[q] < FDR, "term"].astype(str))
        by_term[ranking] = rows.assign(term=rows["term"].astype(str)).drop_duplicates("term").set_index("term")
        top = rows.head(5)
        summary[ranking] = {
            "tested": len(rows), "fdr_below_0.05": len(significant[ranking]),
            "top_terms": [{"term": str(t), q: float(v), **({"nes": float(e)} if method == "prerank" else {})}
                          for t, v, e in zip(top["term"], top[q], top.get("nes", [None] * len(top)))]}
    chosen = list(dict.fromkeys(t for r in rankings for t in by_term[r].index[:k]))
    best = {t: min(float(by_term[r].at[t, q]) if t in by_term[r].index else np.inf for r in rankings)
            for t in chosen}
    chosen.sort(key=lambda t: (best[t], t))
    return RankingComparison(rankings, by_term, significant, summary, chosen)


def lookup(rows: pd.DataFrame, column: str, terms: list[str]) -> list:
    """rows[column] of each term (rows indexed by term); NaN where a term or the column is missing."""
    return [rows.at[t, column] if t in rows.index and column in rows else np.nan for t in terms]
