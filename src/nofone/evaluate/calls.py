"""Counting and ranking the DE calls of a run, per group and per sample, as the report shows them.

Inputs are the tables `nofone de` writes (summary.tsv with a `group` column added by the
report's reader, de.parquet rows); nothing here reads files or formats text.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd


def samples_per_group(tested: pd.DataFrame, order: Sequence[str]) -> pd.DataFrame:
    """Tested samples per (group, tissue): group, tissue ('' where none), samples; groups in
    `order`, tissues sorted within each."""
    tissue = tested["tissue"] if "tissue" in tested else pd.Series("", index=tested.index)
    long = (pd.DataFrame({"group": tested["group"], "tissue": tissue.fillna("").astype(str)})
            .value_counts().rename("samples").reset_index())
    long["_order"] = long["group"].map({g: i for i, g in enumerate(order)})
    return long.sort_values(["_order", "tissue"]).drop(columns="_order").reset_index(drop=True)


def calls_per_group(summary: pd.DataFrame, order: Sequence[str]) -> list[dict]:
    """DE genes per sample of each group (in `order`), one row each: samples, mean and median DE
    genes, mean up and down calls, the most DE genes of one sample."""
    rows = []
    for group in order:
        g = summary[summary["group"] == group]
        rows.append({"group": group, "samples": len(g), "mean_de": g["n_de"].mean(),
                     "median_de": g["n_de"].median(), "mean_up": g["n_up"].mean(),
                     "mean_down": g["n_down"].mean(), "max_de": int(g["n_de"].max())})
    return rows


def negative_control_calls(summary: pd.DataFrame, groups: Iterable[str]) -> dict | None:
    """The calls in the samples of the negative-control `groups` (every one a false call):
    samples, mean and median DE genes per sample, up and down calls in all; None without any."""
    controls = summary[summary["group"].isin(list(groups))]
    if not len(controls):
        return None
    return {"groups": sorted(set(controls["group"])), "samples": len(controls),
            "mean_de_genes": float(controls["n_de"].mean()), "median_de_genes": float(controls["n_de"].median()),
            "total_up": int(controls["n_up"].sum()), "total_down": int(controls["n_down"].sum())}


def top_calls(table: pd.DataFrame, q_threshold: float, lfc_threshold: float, n: int) -> pd.DataFrame:
    """One sample's `n` most significant genes (q-value, then the NB's q-value where there is one,
    then |log2FC|, then gene id), with a `call` column: up, down (q < q_threshold and |log2FC| >
    lfc_threshold) or '', and de's tier (abnormal, candidate) as `tier` where the table has it."""
    t = table.rename(columns={"call": "tier"})
    called = (t["q_value"] < q_threshold) & (t["log2_fold_change"].abs() > lfc_threshold)
    t["call"] = np.where(called, np.where(t["log2_fold_change"] > 0, "up", "down"), "")
    t["_abs"] = -t["log2_fold_change"].abs()
    order = ["q_value", *(["q_value_nb"] if "q_value_nb" in t else []), "_abs", "gene_id"]
    return t.sort_values(order).head(n).drop(columns="_abs")


def largest_changes(table: pd.DataFrame, n: int, column: str = "log2_fold_change") -> pd.DataFrame:
    """The `n` genes of largest |`column`| (ties by gene id; NaN last)."""
    ranked = table.assign(_abs=-table[column].abs()).sort_values(
        ["_abs", "gene_id"], kind="stable", na_position="last").drop(columns="_abs")
    return ranked.head(n)
