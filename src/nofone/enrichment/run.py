"""GSEA preranked and over-representation analysis through gseapy, offline.

Both take gene sets as a dict (from `read_gmt`), never a library name, so gseapy has nothing to
download; ORA is always given its background as a list for the same reason. Results come back
with our column names and a `ranking` column naming the ranking they belong to.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from nofone.errors import InputError

log = logging.getLogger(__name__)
METHODS = ("prerank", "ora")
PRERANK_COLUMNS = ["ranking", "term", "es", "nes", "p_value", "fdr_q_value", "fwer_p_value", "n_genes",
                   "leading_edge"]
ORA_COLUMNS = ["ranking", "term", "overlap", "p_value", "q_value", "odds_ratio", "genes"]


def _gseapy():
    try:
        import gseapy
    except ImportError:
        raise InputError("pathway enrichment needs gseapy, which is not installed: pip install gseapy") from None
    logging.getLogger("gseapy").setLevel(logging.WARNING)
    return gseapy


def ranking_by_symbol(scores: pd.Series, symbols: Sequence[str | None]) -> pd.Series:
    """Scores re-indexed by symbol, sorted decreasingly: genes without a symbol or a finite score
    are dropped; of genes sharing a symbol, the one with the largest |score| is kept."""
    table = pd.DataFrame({"symbol": list(symbols), "score": np.asarray(scores, dtype=float)})
    table = table[table["symbol"].notna() & (table["symbol"] != "") & np.isfinite(table["score"])]
    table = table.assign(size=table["score"].abs()).sort_values("size", ascending=False, kind="stable")
    table = table.drop_duplicates("symbol", keep="first")
    return table.set_index("symbol")["score"].sort_values(ascending=False, kind="stable")


def prerank(ranking: pd.Series, gene_sets: Mapping[str, list[str]], *, permutations: int = 1000, seed: int = 0,
            min_size: int = 15, max_size: int = 500, threads: int = 1, name: str = "ranking") -> pd.DataFrame:
    """GSEA preranked of `ranking` (scores indexed by symbol) against `gene_sets`."""
    gp = _gseapy()
    ranking = ranking[np.isfinite(ranking.to_numpy(dtype=float))]
    if len(ranking) < 2:
        raise InputError(f"{name}: fewer than 2 genes with a symbol and a finite score to rank")
    if _n_testable(set(ranking.index), gene_sets, min_size, max_size) == 0:
        log.warning("%s: no gene set has %d-%d genes among the %d ranked symbols (do the symbols match the GMT's?)",
                    name, min_size, max_size, len(ranking))
        return pd.DataFrame(columns=PRERANK_COLUMNS)
    frame = pd.DataFrame({"gene": ranking.index.astype(str), "score": ranking.to_numpy(dtype=float)})
    result = gp.prerank(rnk=frame, gene_sets=dict(gene_sets), outdir=None, permutation_num=permutations,
                        seed=seed, min_size=min_size, max_size=max_size, threads=threads, no_plot=True,
                        verbose=False)
    res = result.res2d
    if res is None or len(res) == 0:
        return pd.DataFrame(columns=PRERANK_COLUMNS)
    out = pd.DataFrame({
        "ranking": name,
        "term": res["Term"].astype(str),
        "es": pd.to_numeric(res["ES"]),
        "nes": pd.to_numeric(res["NES"]),
        "p_value": pd.to_numeric(res["NOM p-val"]),
        "fdr_q_value": pd.to_numeric(res["FDR q-val"]),
        "fwer_p_value": pd.to_numeric(res["FWER p-val"]),
        "n_genes": [int(str(t).split("/")[1]) for t in res["Tag %"]],  # "leading edge / set size"
        "leading_edge": res["Lead_genes"].astype(str),
    })
    return out.sort_values(["fdr_q_value", "p_value", "term"], kind="stable").reset_index(drop=True)


def over_representation(genes: Sequence[str], background: Sequence[str], gene_sets: Mapping[str, list[str]], *,
                        name: str = "ranking", min_size: int = 1) -> pd.DataFrame:
    """Hypergeometric test of `genes` (e.g. the significant ones) within `background`."""
    gp = _gseapy()
    background = sorted(set(background))
    genes = sorted(set(genes) & set(background))
    sets = {k: [g for g in v if g in set(background)] for k, v in gene_sets.items()}
    sets = {k: v for k, v in sets.items() if len(v) >= min_size}
    if not genes or not sets:
        return pd.DataFrame(columns=ORA_COLUMNS)
    result = gp.enrich(gene_list=genes, gene_sets=sets, background=background, outdir=None, no_plot=True,
                       verbose=False)
    res = getattr(result, "res2d", None)
    if res is None or len(res) == 0:
        return pd.DataFrame(columns=ORA_COLUMNS)
    out = pd.DataFrame({
        "ranking": name,
        "term": res["Term"].astype(str),
        "overlap": res["Overlap"].astype(str),
        "p_value": pd.to_numeric(res["P-value"]),
        "q_value": pd.to_numeric(res["Adjusted P-value"]),
        "odds_ratio": pd.to_numeric(res["Odds Ratio"]),
        "genes": res["Genes"].astype(str),
    })
    return out.sort_values(["q_value", "p_value", "term"], kind="stable").reset_index(drop=True)


def run_enrichment(method: str, rankings: Mapping[str, pd.Series], gene_sets: Mapping[str, list[str]], *,
                   selected: Mapping[str, Sequence[str]] | None = None, permutations: int = 1000, seed: int = 0,
                   min_size: int = 15, max_size: int = 500, threads: int = 1) -> pd.DataFrame:
    """One table for several rankings (`rankings`: name -> scores indexed by symbol).

    `prerank` ranks each; `ora` tests `selected[name]` against that ranking's symbols.
    """
    if method not in METHODS:
        raise InputError(f"unknown enrichment method {method!r}; use one of {', '.join(METHODS)}")
    tables = []
    for name, ranking in rankings.items():
        if method == "prerank":
            tables.append(prerank(ranking, gene_sets, permutations=permutations, seed=seed, min_size=min_size,
                                  max_size=max_size, threads=threads, name=name))
        else:
            chosen = (selected or {}).get(name, [])
            tables.append(over_representation(chosen, list(ranking.index), gene_sets, name=name,
                                              min_size=min_size))
    tables = [t for t in tables if len(t)]
    columns = PRERANK_COLUMNS if method == "prerank" else ORA_COLUMNS
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=columns)


def _n_testable(symbols: set[str], gene_sets: Mapping[str, list[str]], min_size: int, max_size: int) -> int:
    return sum(min_size <= len(symbols.intersection(v)) <= max_size for v in gene_sets.values())
