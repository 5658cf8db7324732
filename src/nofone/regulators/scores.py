"""Scores of predicted against observed targets on the held-out genes: Spearman per target (the
paper's figure), Pearson, and the AUROC for targets with positives (the DE prior's top decile)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import roc_auc_score


def score_predictions(observed: np.ndarray, predictions: dict[str, np.ndarray], names: list[str],
                      positive_threshold: dict[str, float]) -> pd.DataFrame:
    """One row per target and method: n genes, Spearman, Pearson, AUROC (NaN where not scored)."""
    rows = []
    for t, name in enumerate(names):
        known = ~np.isnan(observed[:, t])
        y = observed[known, t]
        for method, prediction in predictions.items():
            p = prediction[known, t]
            row = {"target": name, "method": method, "n_genes": int(known.sum()),
                   "spearman": _safe(spearmanr, p, y), "pearson": _safe(pearsonr, p, y), "auroc": np.nan}
            if name in positive_threshold:
                labels = y >= positive_threshold[name]
                if 0 < labels.sum() < len(labels):
                    row["auroc"] = float(roc_auc_score(labels, p))
            rows.append(row)
    return pd.DataFrame(rows)


def _safe(function, a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 3 or np.std(a) == 0 or np.std(b) == 0:
        return float("nan")
    return float(function(a, b).statistic)


def wide(scores: pd.DataFrame, column: str = "spearman") -> pd.DataFrame:
    """Targets as rows, methods as columns."""
    return scores.pivot(index="target", columns="method", values=column).reindex(scores["target"].unique())
