"""The sensitivity frontier: for every null a model has and several q thresholds, the false calls
per never-trained normal beside the recall and precision of planted changes.

Why: a null buys specificity with sensitivity; a report that shows one point hides the trade.
Every null is applied to the same `de` rows (count, NB mean and dispersion of the closest
normal), so the curves differ by the null alone. docs/null.md shows the atlas's frontier.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from nofone.stats.model_error import sample_model_error
from nofone.stats.multiple_testing import bh_adjust
from nofone.stats.nb_tests import log2_fold_change
from nofone.stats.nulls import Null

FRONTIER_QS = (0.001, 0.01, 0.05, 0.1)
FRONTIER_FILE = "frontier.tsv"


def de_matrices(table: pd.DataFrame, gene_ids: list[str]) -> tuple[list[str], dict[str, np.ndarray]]:
    """Samples and [N, G] matrices (count, normal_mean, dispersion) in the model's gene order, NaN
    where a gene was not tested, from `de` rows."""
    samples = list(dict.fromkeys(table["sample_id"]))
    out = {}
    for column in ("count", "normal_mean", "dispersion"):
        wide = table.pivot(index="sample_id", columns="gene_id", values=column)
        out[column] = wide.reindex(index=samples, columns=gene_ids).to_numpy(dtype=np.float64)
    return samples, out


def calls_under(null: Null, matrices: dict[str, np.ndarray], q: Iterable[float],
                lfc_threshold: float) -> dict[float, np.ndarray]:
    """For each q: the [N, G] calls (q-value under `null` below q and |log2 FC| above the threshold)."""
    x, mean, r = matrices["count"], matrices["normal_mean"], matrices["dispersion"]
    tested = np.isfinite(x) & np.isfinite(mean) & (mean > 0) & np.isfinite(r)
    xs, ms, rs = np.where(tested, x, 0.0), np.where(tested, mean, 1.0), np.where(tested, r, 1.0)
    s2 = sample_model_error(xs, ms, rs, tested) if null.name == "model-error" else None
    chunk = null.for_chunk(xs, ms, rs, s2)
    p = np.where(tested, chunk.pvalues(slice(None)), np.nan)
    qv = bh_adjust(p, axis=1)
    big = np.abs(log2_fold_change(xs, ms)) > lfc_threshold
    with np.errstate(invalid="ignore"):
        return {level: (qv < level) & big & tested for level in q}


def frontier(nulls: list[Null], normals: pd.DataFrame, gene_ids: list[str], spiked: pd.DataFrame | None = None,
             truth: pd.DataFrame | None = None, qs: Iterable[float] = FRONTIER_QS, lfc_threshold: float = 1.0,
             default: str | None = None) -> pd.DataFrame:
    """One row per (null, q, planted fold change): false calls per normal (`normals`: de rows of
    never-trained normals) and, with `spiked` (de rows of spiked normals) and `truth` (sample_id,
    gene_id, spike_lfc of every planted change), recall and precision of the planted changes."""
    _, normal_m = de_matrices(normals, gene_ids)
    if spiked is None or truth is None:
        return frontier_of_matrices(nulls, normal_m, None, None, None, qs, lfc_threshold, default)
    spiked_ids, spiked_m = de_matrices(spiked, gene_ids)
    row = {s: i for i, s in enumerate(spiked_ids)}
    col = {g: j for j, g in enumerate(gene_ids)}
    planted = np.zeros(spiked_m["count"].shape, dtype=bool)
    keep = truth[truth["sample_id"].isin(row) & truth["gene_id"].isin(col)]
    planted[keep["sample_id"].map(row).to_numpy(), keep["gene_id"].map(col).to_numpy()] = True
    lfcs = truth.drop_duplicates("sample_id").set_index("sample_id")["spike_lfc"].reindex(spiked_ids).to_numpy()
    return frontier_of_matrices(nulls, normal_m, spiked_m, planted, lfcs, qs, lfc_threshold, default)


def frontier_of_matrices(nulls: list[Null], normals: dict[str, np.ndarray], spiked: dict[str, np.ndarray] | None,
                         planted: np.ndarray | None, spike_lfc: np.ndarray | None,
                         qs: Iterable[float] = FRONTIER_QS, lfc_threshold: float = 1.0,
                         default: str | None = None) -> pd.DataFrame:
    """`frontier` on matrices (`de_matrices`): `planted` [S, G] marks the planted changes of the
    spiked samples, `spike_lfc` [S] their |log2 fold change|."""
    qs = tuple(qs)
    rows = []
    for null in nulls:
        normal_calls = calls_under(null, normals, qs, lfc_threshold)
        spiked_calls = calls_under(null, spiked, qs, lfc_threshold) if planted is not None else None
        for q in qs:
            base = {"null": null.name, "default": null.name == default, "nominal_q": q,
                    "false_calls_per_normal": float(normal_calls[q].sum(1).mean()),
                    "normals_with_a_call": float((normal_calls[q].sum(1) > 0).mean())}
            if spiked_calls is None:
                rows.append(base | {"spike_lfc": np.nan, "recall": np.nan, "precision": np.nan})
                continue
            for lfc in sorted(set(spike_lfc.tolist())):
                here = spike_lfc == lfc
                called, truth_here = spiked_calls[q][here], planted[here]
                tp = int((called & truth_here).sum())
                n_called = int(called.sum())
                rows.append(base | {"spike_lfc": lfc, "recall": tp / max(int(truth_here.sum()), 1),
                                    "precision": tp / n_called if n_called else np.nan})
    return pd.DataFrame(rows)


def positive_control(nulls: list[Null], tumours: dict[str, np.ndarray], sign: np.ndarray, strong: np.ndarray,
                     qs: Iterable[float] = FRONTIER_QS, lfc_threshold: float = 1.0,
                     default: str | None = None) -> pd.DataFrame:
    """Tumours against a cohort analysis of other tumours: per (null, q) the mean calls per tumour,
    their precision (the share whose direction the cohort calls, `sign` [G] in -1/0/+1) and the
    recall of the cohort's strongest genes (`strong` [G])."""
    qs = tuple(qs)
    lfc = log2_fold_change(np.nan_to_num(tumours["count"]), np.nan_to_num(tumours["normal_mean"], nan=1.0))
    rows = []
    for null in nulls:
        calls = calls_under(null, tumours, qs, lfc_threshold)
        for q in qs:
            c = calls[q]
            agree = c & (np.sign(lfc) == sign[None, :]) & (sign[None, :] != 0)
            n = c.sum(1)
            with np.errstate(invalid="ignore", divide="ignore"):
                precision = np.where(n > 0, agree.sum(1) / n, np.nan)
            rows.append({"null": null.name, "default": null.name == default, "nominal_q": q,
                         "calls_per_tumour": float(n.mean()),
                         "precision": float(np.nanmean(precision)) if np.isfinite(precision).any() else np.nan,
                         "recall": float(((c & strong[None, :]).sum(1) / max(int(strong.sum()), 1)).mean())})
    return pd.DataFrame(rows)
