"""The out-of-distribution score by group: median count NLL per gene and its AUROC against a
reference group (held-out normals), as the report shows them."""

from __future__ import annotations

import numpy as np

from nofone.evaluate.metrics import auroc


def finite_auroc(scores: np.ndarray, reference: np.ndarray) -> float:
    """AUROC of `scores` against `reference` over their finite values (NaN when either has none)."""
    scores, reference = np.asarray(scores, float), np.asarray(reference, float)
    return auroc(scores[np.isfinite(scores)], reference[np.isfinite(reference)])


def nll_by_group(values: dict[str, np.ndarray], reference: str | None) -> list[dict]:
    """One row per group: group, samples, median_nll_per_gene and auroc_vs_reference (None for
    the reference itself and when there is no reference)."""
    rows = []
    for group, v in values.items():
        row = {"group": group, "samples": len(v), "median_nll_per_gene": float(np.median(v)),
               "auroc_vs_reference": None}
        if reference is not None and group != reference:
            row["auroc_vs_reference"] = finite_auroc(v, values[reference])
        rows.append(row)
    return rows
