"""Per-sample model error: its estimate, and the NB-lognormal test built on it."""

from __future__ import annotations

import numpy as np
import pytest

from nofone.stats.model_error import equal_tail_midp_lognormal, min_pvalue_down_lognormal, sample_model_error
from nofone.stats.nb_tests import equal_tail_midp


@pytest.fixture(scope="module")
def genes():
    rng = np.random.default_rng(0)
    return rng, rng.lognormal(5, 1.5, (200, 2000)), rng.lognormal(2, 0.7, 2000)


def draw(rng, mean, r, sd=0.0):
    e = np.exp(rng.normal(0, sd, mean.shape)) if sd else 1.0
    return rng.negative_binomial(r, r / (r + mean * e))


def test_a_perfectly_modelled_sample_is_rarely_widened(genes):
    rng, mean, r = genes
    s2 = sample_model_error(draw(rng, mean, r), mean, r)
    assert (s2 > 0).mean() <= 0.1
    assert np.sqrt(s2.max()) < 0.25


def test_the_error_of_a_badly_modelled_sample_is_recovered(genes):
    rng, mean, r = genes
    s = np.sqrt(sample_model_error(draw(rng, mean, r, sd=0.3), mean, r))
    assert np.median(s) == pytest.approx(0.3, abs=0.03)


def test_zero_error_is_the_plain_exact_test(genes):
    rng, mean, r = genes
    x = draw(rng, mean[:3], r)
    np.testing.assert_allclose(equal_tail_midp_lognormal(x, mean[:3], r, np.zeros(3)), equal_tail_midp(x, mean[:3], r))


def test_mixture_pvalues_match_monte_carlo():
    rng = np.random.default_rng(1)
    m, r, s = 300.0, 10.0, 0.3
    xs = rng.negative_binomial(r, r / (r + m * np.exp(rng.normal(0, s, 1_000_000))))
    for x in (60, 120, 300, 700):
        lower = (xs < x).mean() + 0.5 * (xs == x).mean()
        upper = (xs > x).mean() + 0.5 * (xs == x).mean()
        expected = min(1.0, 2 * min(lower, upper))
        ours = equal_tail_midp_lognormal(np.array([[x]]), np.array([[m]]), np.array([r]), np.array([s * s]))[0, 0]
        assert ours == pytest.approx(expected, rel=0.05, abs=2e-4), x


def test_log_symmetric_errors_give_balanced_up_and_down_calls(genes):
    rng, mean, r = genes
    x = draw(rng, mean, r, sd=0.4)
    s2 = sample_model_error(x, mean, r)
    p = equal_tail_midp_lognormal(x, mean, r, s2)
    up = ((p < 0.01) & (x > mean)).sum()
    down = ((p < 0.01) & (x < mean)).sum()
    assert (p < 0.01).mean() < 0.02, "with its model error accounted for, a sample calls few genes"
    assert 0.5 < (up + 1) / (down + 1) < 2.0
    # without it, the same sample calls many
    assert (equal_tail_midp(x, mean, r) < 0.01).mean() > 0.05


def test_down_calls_flag_and_few_genes(genes):
    _, _, r = genes
    low = np.full((1, 5), 2.0)
    assert (min_pvalue_down_lognormal(low, r[:5], np.array([0.1])) > 0.01).all()
    assert sample_model_error(np.ones((1, 10)), np.ones((1, 10)), np.ones(10)).tolist() == [0.0]
