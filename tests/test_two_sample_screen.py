"""MMD and the classifier two-sample test behave as tests (same distribution: p roughly uniform,
AUROC near 0.5; shifted: detected), and the gene-set screen finds a set that separates the
groups and not a random one."""

from __future__ import annotations

import numpy as np
import pytest

from nofone.errors import InputError
from nofone.evaluate.gene_set_screen import ScreenOptions, expression_matrix, plot_screen, screen_gene_sets
from nofone.evaluate.two_sample import c2st_auroc, classifier_scores, fit_classifier, mmd_test


def test_mmd_p_values_are_roughly_uniform_under_the_null_and_small_under_a_shift():
    rng = np.random.default_rng(0)
    null_p = [mmd_test(rng.normal(size=(30, 5)), rng.normal(size=(30, 5)), permutations=99, seed=s)["p_value"]
              for s in range(30)]
    assert 0.25 < np.mean(null_p) < 0.75
    assert np.mean(np.array(null_p) < 0.1) <= 0.25
    shifted = mmd_test(rng.normal(size=(30, 5)), rng.normal(0.8, 1, size=(30, 5)), permutations=199)
    assert shifted["p_value"] < 0.01 and shifted["mmd2"] > 0
    fixed = mmd_test(rng.normal(size=(10, 16)), rng.normal(size=(10, 16)), gamma=1 / 16, permutations=9)
    assert fixed["gamma"] == 1 / 16
    with pytest.raises(ValueError):
        mmd_test(np.zeros((1, 3)), np.zeros((5, 3)))


def test_c2st_auroc_is_near_half_for_alike_sets_and_high_for_different_ones():
    rng = np.random.default_rng(1)
    same = [c2st_auroc(rng.normal(size=(60, 30)), rng.normal(size=(60, 30)), seed=s) for s in range(5)]
    assert abs(np.mean(same) - 0.5) < 0.1
    assert c2st_auroc(rng.normal(size=(60, 30)), rng.normal(0.6, 1, size=(60, 30))) > 0.85


def test_classifier_scores_report_balanced_accuracy():
    rng = np.random.default_rng(2)
    labels = np.r_[["tumour"] * 80, ["normal"] * 20]
    x = rng.normal(size=(100, 4))
    model = fit_classifier(x, labels, "linear_svm")
    scores = classifier_scores(model, x, labels)
    always = classifier_scores(type("Always", (), {"predict": lambda self, v: np.full(len(v), "tumour")})(), x, labels)
    assert always == {"accuracy": 0.8, "balanced_accuracy": 0.5}
    assert 0 <= scores["balanced_accuracy"] <= 1


def _grouped(n=60, genes=200, informative=10, seed=3):
    rng = np.random.default_rng(seed)
    labels = np.r_[["normal"] * (n // 2), ["tumour"] * (n - n // 2)]
    mean = np.exp(rng.uniform(2, 6, genes))
    shift = np.ones(genes)
    shift[:informative] = 6.0
    means = np.where((labels == "tumour")[:, None], mean * shift, mean)
    counts = rng.negative_binomial(10, 10 / (10 + means))
    return counts, labels


def test_gene_set_screen_finds_the_informative_set(tmp_path):
    counts, labels = _grouped()
    values = expression_matrix(counts)
    assert np.allclose(values.mean(0), 0, atol=1e-8)
    sets = {"informative": np.arange(10), "random": np.arange(100, 110)}
    table, random = screen_gene_sets(values, labels, sets, ScreenOptions(n_random=40, embeddings=("pca",)))
    table = table.set_index("gene_set")
    assert table.loc["informative", "p_pca"] < 0.05 and table.loc["informative", "z_pca"] > 3
    assert table.loc["random", "p_pca"] > 0.05
    assert random[("pca", 10)].shape == (40,)  # shared by both sets of size 10
    plot_screen(table.reset_index(), tmp_path / "screen.png", ("pca",))
    assert (tmp_path / "screen.png").stat().st_size > 0
    with pytest.raises(InputError, match="two sample groups"):
        screen_gene_sets(values, np.array(["a"] * len(labels)), sets)


@pytest.mark.slow
def test_gene_set_screen_in_umap():
    counts, labels = _grouped(n=100)
    table, _ = screen_gene_sets(expression_matrix(counts), labels, {"informative": np.arange(10)},
                                ScreenOptions(n_random=5, embeddings=("umap",)))
    assert table.loc[0, "silhouette_umap"] > table.loc[0, "random_mean_umap"]
