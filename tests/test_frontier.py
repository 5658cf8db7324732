"""The frontier's arithmetic (`nofone.evaluate.frontier`): false calls per normal, spike-in
recall and precision, and the tumour positive control, against counts made by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from nofone.evaluate.frontier import de_matrices, frontier, frontier_of_matrices, positive_control
from nofone.stats.nulls import Null
from nofone.stats.outlier_null import OutlierNull

G = 400


def _matrices(rng, n: int, effect: np.ndarray | None = None) -> dict[str, np.ndarray]:
    mean = np.full((n, G), 200.0)
    r = np.full((n, G), 50.0)
    true = mean * (1.0 if effect is None else 2.0 ** effect)
    return {"count": rng.negative_binomial(r, r / (r + true)).astype(float), "normal_mean": mean, "dispersion": r}


def test_planted_changes_are_found_and_normals_stay_quiet():
    rng = np.random.default_rng(0)
    normals = _matrices(rng, 10)
    effect = np.zeros((6, G))
    effect[:, :20] = np.where(np.arange(20) % 2, 3.0, -3.0)  # 8-fold, up and down
    effect[3:, :20] /= 3.0  # the last three: 2-fold
    spiked = _matrices(rng, 6, effect)
    lfc = np.array([3.0] * 3 + [1.0] * 3)
    table = frontier_of_matrices([Null("nb"), Null("outlier", outlier=OutlierNull(0.05, 2.0))], normals, spiked,
                                 effect != 0, lfc, qs=(0.01, 0.1), default="outlier")
    nb = table[(table["null"] == "nb") & (table["nominal_q"] == 0.01)].set_index("spike_lfc")
    assert nb.loc[3.0, "recall"] == 1.0 and nb.loc[3.0, "precision"] > 0.9
    assert nb["false_calls_per_normal"].iloc[0] < 0.5
    wide = table[(table["null"] == "outlier") & (table["nominal_q"] == 0.01)].set_index("spike_lfc")
    assert wide.loc[1.0, "recall"] <= nb.loc[1.0, "recall"]  # the mixture needs larger changes
    assert table.loc[table["default"], "null"].unique().tolist() == ["outlier"]
    assert len(table) == 2 * 2 * 2  # nulls x q x fold changes


def test_de_rows_and_matrices_give_the_same_frontier():
    rng = np.random.default_rng(1)
    m = _matrices(rng, 4)
    genes = [f"g{j}" for j in range(G)]
    rows = pd.DataFrame({"sample_id": np.repeat([f"s{i}" for i in range(4)], G), "gene_id": genes * 4,
                         "count": m["count"].ravel(), "normal_mean": m["normal_mean"].ravel(),
                         "dispersion": m["dispersion"].ravel()})
    ids, back = de_matrices(rows.sample(frac=1.0, random_state=0), genes)
    order = np.argsort(ids)
    np.testing.assert_array_equal(back["count"][order], m["count"])
    a = frontier([Null("nb")], rows, genes)
    b = frontier_of_matrices([Null("nb")], m, None, None, None)
    pd.testing.assert_frame_equal(a, b)


def test_positive_control_counts_directions_and_strong_genes():
    rng = np.random.default_rng(2)
    effect = np.zeros((5, G))
    effect[:, :10] = 3.0  # what the cohort calls strongly up
    effect[:, 10:20] = -2.0  # called down by the cohort, not strong
    effect[:, 20:25] = 3.0  # changed in the tumours, but the cohort did not call them
    tumours = _matrices(rng, 5, effect)
    sign = np.zeros(G)
    sign[:10], sign[10:20] = 1, -1
    strong = np.zeros(G, dtype=bool)
    strong[:10] = True
    out = positive_control([Null("nb")], tumours, sign, strong, qs=(0.01,)).iloc[0]
    assert out["recall"] == 1.0
    assert out["calls_per_tumour"] == pytest.approx(25, abs=1)
    assert out["precision"] == pytest.approx(20 / 25, abs=0.05)
