"""The numbers the report shows, computed in nofone.evaluate and nofone.stats (the report's
sections only format them): calls per group, tissue x component association, the NLL AUROC,
the comparison of two enrichment rankings, latent projections and the cohort contrast maths."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from nofone.evaluate.association import component_tissues, components_of_tested, long_counts, own_tissue_agreement
from nofone.evaluate.calls import (
    calls_per_group,
    largest_changes,
    negative_control_calls,
    samples_per_group,
    top_calls,
)
from nofone.evaluate.enrichment_agreement import compare_rankings, lookup, sort_terms
from nofone.evaluate.ood import finite_auroc, nll_by_group
from nofone.stats.contrast import contrast_weights, group_means, posterior_interval, replicate_interval
from nofone.stats.projection import pca_plane, principal_plane


def _summary() -> pd.DataFrame:
    return pd.DataFrame({"sample_id": ["a1", "a2", "a3", "h1", "h2"],
                         "group": ["case", "case", "case", "held-out normal", "held-out normal"],
                         "tissue": ["lung", "lung", None, "lung", "colon"],
                         "n_up": [4, 0, 10, 1, 0], "n_down": [1, 2, 0, 0, 0]}).assign(
        n_de=lambda f: f["n_up"] + f["n_down"])


def test_calls_per_group_and_negative_controls():
    rows = calls_per_group(_summary(), ["held-out normal", "case"])
    assert [r["group"] for r in rows] == ["held-out normal", "case"]  # in the order given
    normal, case = rows
    assert (normal["samples"], normal["mean_de"], normal["median_de"], normal["max_de"]) == (2, 0.5, 0.5, 1)
    assert (case["samples"], case["mean_de"], case["median_de"], case["max_de"]) == (3, pytest.approx(17 / 3), 5, 10)
    assert (case["mean_up"], case["mean_down"]) == (pytest.approx(14 / 3), 1.0)
    controls = negative_control_calls(_summary(), ["held-out normal", "normal"])
    assert controls == {"groups": ["held-out normal"], "samples": 2, "mean_de_genes": 0.5, "median_de_genes": 0.5,
                        "total_up": 1, "total_down": 0}
    assert negative_control_calls(_summary(), ["normal"]) is None


def test_samples_per_group_by_tissue():
    long = samples_per_group(_summary(), ["held-out normal", "case"])
    assert long.to_dict("list") == {"group": ["held-out normal", "held-out normal", "case", "case"],
                                    "tissue": ["colon", "lung", "", "lung"], "samples": [1, 1, 1, 2]}
    no_tissue = samples_per_group(_summary().drop(columns="tissue"), ["case", "held-out normal"])
    assert no_tissue.to_dict("list") == {"group": ["case", "held-out normal"], "tissue": ["", ""], "samples": [3, 2]}


def test_top_calls_labels_and_order():
    table = pd.DataFrame({"gene_id": ["g1", "g2", "g3", "g4", "g5"],
                          "q_value": [0.001, 0.001, 0.001, 0.02, np.nan],
                          "log2_fold_change": [1.0, -3.0, 2.0, 5.0, 4.0]})
    top = top_calls(table, q_threshold=0.01, lfc_threshold=1.0, n=4)
    # by q, then the larger |log2FC| first, then gene id; untested genes (NaN q) last
    assert top["gene_id"].tolist() == ["g2", "g3", "g1", "g4"]
    # |log2FC| must exceed the threshold and q lie below it to be a call
    assert dict(zip(top["gene_id"], top["call"])) == {"g2": "down", "g3": "up", "g1": "", "g4": ""}
    assert "_abs" not in top


def test_largest_changes_puts_nan_last():
    table = pd.DataFrame({"gene_id": ["b", "a", "c", "d"], "log2_fold_change": [-2.0, 2.0, np.nan, 0.5]})
    assert largest_changes(table, 3)["gene_id"].tolist() == ["a", "b", "d"]  # a tie is broken by the gene id
    assert largest_changes(table, 10)["gene_id"].tolist() == ["a", "b", "d", "c"]


def test_component_tissues_orders_a_diagonal():
    tissue = pd.Series(["a", "a", "a", "a", "a", "b", "b", "b"])
    component = pd.Series([0, 0, 0, 2, 2, 2, 1, 1])
    found = component_tissues(tissue, component)
    # components grouped by majority tissue (a: 0 and 2, b: 1), the purer one first
    assert list(found.counts.columns) == [0, 2, 1] and list(found.counts.index) == ["a", "b"]
    assert found.counts.to_numpy().tolist() == [[3, 2, 0], [0, 1, 2]]
    np.testing.assert_allclose(found.percent.sum(axis=0), 100)
    assert found.majority.to_dict() == {0: "a", 1: "b", 2: "a"}
    assert found.purity == pytest.approx(7 / 8)
    long = found.long()
    assert long["samples"].sum() == 8 and (long["samples"] > 0).all() and len(long) == 4
    assert long.loc[(long["tissue"] == "a") & (long["component"] == 2), "percent_of_component"].item() == \
        pytest.approx(200 / 3)


def test_tested_components_and_agreement():
    majority = pd.Series({0: "a", 2: "a", 1: "b"})
    tissue = pd.Series(["b", "a", "a", "b", "a"])
    group = pd.Series(["case", "case", "normal", "normal", "case"])
    component = pd.Series([1, 0, 5, 0, 2])
    counts, percent = components_of_tested(tissue, group, component, [0, 2, 1], ["normal", "case"])
    assert list(counts.index) == ["a · normal", "a · case", "b · normal", "b · case"]
    assert list(counts.columns) == [0, 2, 1, 5]  # the training order first, then components new here
    np.testing.assert_allclose(percent.sum(axis=1), 100)
    assert long_counts(counts)["samples"].sum() == 5
    rows = own_tissue_agreement(tissue, group, component, majority, ["normal", "case"])
    assert rows == [{"group": "normal", "samples": 2, "in a component of their tissue": 0, "fraction": 0.0},
                    {"group": "case", "samples": 3, "in a component of their tissue": 3, "fraction": 1.0}]


def test_nll_by_group_and_its_auroc():
    values = {"training": np.array([0.5, 0.6]), "held-out normal": np.array([1.0, 2.0, np.nan]),
              "case": np.array([3.0, 4.0, np.inf, np.nan])}
    rows = {r["group"]: r for r in nll_by_group(values, "held-out normal")}
    assert rows["held-out normal"]["auroc_vs_reference"] is None
    assert rows["case"]["auroc_vs_reference"] == 1.0  # inf and NaN are left out, not counted
    assert rows["training"]["auroc_vs_reference"] == 0.0 and rows["training"]["median_nll_per_gene"] == 0.55
    assert all(r["auroc_vs_reference"] is None for r in nll_by_group(values, None))
    assert finite_auroc(np.array([1.0, 2.0]), np.array([1.0, 2.0])) == 0.5
    assert np.isnan(finite_auroc(np.array([np.nan]), np.array([1.0])))


def test_compare_rankings():
    frame = pd.DataFrame({
        "ranking": ["deseq2", "nbvae", "nbvae", "nbvae", "deseq2", "other"],
        "term": ["T2", "T1", "T2", "T3", "T4", "T1"],
        "fdr_q_value": [0.01, 0.001, 0.04, 0.5, 0.2, 0.3],
        "p_value": [0.001, 0.0001, 0.004, 0.05, 0.02, 0.03],
        "nes": [2.0, 1.5, -1.2, 0.3, 0.9, 1.0]})
    ordered = sort_terms(frame, "fdr_q_value")
    found = compare_rankings(ordered, "fdr_q_value", "prerank", k=2)
    assert found.rankings == ["nbvae", "deseq2", "other"]  # the known rankings first
    assert found.significant == {"nbvae": {"T1", "T2"}, "deseq2": {"T2"}, "other": set()}
    # the 2 best of each ranking (T1, T2; T2, T4; T1), by their best q over all rankings
    assert found.chosen == ["T1", "T2", "T4"]
    nbvae = found.summary["nbvae"]
    assert nbvae["tested"] == 3 and nbvae["fdr_below_0.05"] == 2
    assert nbvae["top_terms"][0] == {"term": "T1", "fdr_q_value": 0.001, "nes": 1.5}
    assert lookup(found.by_term["deseq2"], "nes", ["T1", "T2"])[1] == 2.0
    assert np.isnan(lookup(found.by_term["deseq2"], "nes", ["T1"])[0])
    assert "nes" not in compare_rankings(ordered, "fdr_q_value", "ora", k=2).summary["nbvae"]["top_terms"][0]


def test_principal_plane_matches_pca_and_is_oriented():
    from sklearn.decomposition import PCA

    z = np.random.default_rng(1).normal(size=(40, 5)) * [3.0, 2.0, 1.0, 0.5, 0.1]
    coords, explained = principal_plane(z)
    reference = PCA(n_components=2).fit(z)
    np.testing.assert_allclose(np.abs(coords), np.abs(reference.transform(z)), atol=1e-10)
    np.testing.assert_allclose(explained, reference.explained_variance_ratio_)
    assert (coords[np.abs(coords).argmax(0), [0, 1]] > 0).all()  # each component's largest coordinate positive
    flat, none = principal_plane(z[:, :1])
    assert none is None and flat.shape == (40, 2) and (flat[:, 1] == 0).all()
    train_xy, tested_xy, ratios = pca_plane(z, z[:3])
    np.testing.assert_allclose(tested_xy, train_xy[:3])
    np.testing.assert_allclose(ratios, reference.explained_variance_ratio_)
    one_xy, _, one = pca_plane(z[:, :1])
    assert one_xy.shape == (40, 2) and len(one) == 1


def test_group_means_and_the_posterior_interval():
    labels = np.array(["t", "t", "c", "t", "c", "c"], dtype=object)
    cells = np.array(["x", "x", "x", "y", "y", "y"], dtype=object)
    _, table = contrast_weights(labels, cells, "t", "c")
    y = np.arange(12.0).reshape(6, 2)
    level, reference = group_means(y, labels, cells, table, "t", "c")
    np.testing.assert_allclose(level, (y[[0, 1]].mean(0) + y[3]) / 2)
    np.testing.assert_allclose(reference, (y[2] + y[[4, 5]].mean(0)) / 2)
    draws = np.random.default_rng(0).normal(size=(400, 3))
    low, high = posterior_interval(draws)
    np.testing.assert_array_equal(low, np.quantile(draws, 0.025, axis=0))
    np.testing.assert_array_equal(high, np.quantile(draws, 0.975, axis=0))


def test_replicate_interval_covers_the_true_contrast():
    """Two cells with 3 and 4 samples per group, 4,000 genes of unit noise: the 95% t interval
    covers the true contrast of every gene about 95% of the time; df = samples - groups."""
    rng = np.random.default_rng(0)
    labels = np.array(["t"] * 3 + ["c"] * 3 + ["t"] * 4 + ["c"] * 4, dtype=object)
    cells = np.array(["x"] * 6 + ["y"] * 8, dtype=object)
    weights, table = contrast_weights(labels, cells, "t", "c")
    n_genes = 4000
    truth = rng.normal(0, 2, n_genes)
    base = rng.normal(5, 1, n_genes)
    y = base + np.where(labels == "t", 1.0, 0.0)[:, None] * truth + rng.normal(0, 1, (len(labels), n_genes))
    low, high, se, df = replicate_interval(y, labels, cells, table, "t", "c", np.zeros(n_genes))
    assert df == 14 - 4
    np.testing.assert_allclose((low + high) / 2, weights @ y)
    assert np.median(se) == pytest.approx(np.sqrt((1 / 3 + 1 / 3 + 1 / 4 + 1 / 4) / 4), rel=0.1)
    coverage = np.mean((low <= truth) & (truth <= high))
    assert 0.93 < coverage < 0.97, coverage
    # latent variance widens it; without replicates there is no interval
    wider = replicate_interval(y, labels, cells, table, "t", "c", np.full(n_genes, 1.0))[2]
    assert (wider > se).all()
    single = np.array(["t", "c"], dtype=object)
    nan = replicate_interval(y[:2], single, np.array(["x", "x"], dtype=object),
                             contrast_weights(single, ["x", "x"], "t", "c")[1], "t", "c", np.zeros(n_genes))
    assert nan[3] == 0 and np.isnan(nan[0]).all()
