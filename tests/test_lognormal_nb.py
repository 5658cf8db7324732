"""Tails of the NB with a log-normal mean (`nofone.stats.lognormal_nb`) against dense numerical
integration over the log-normal factor, from the bulk down to 1e-280."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import special, stats

from nofone.stats.lognormal_nb import midp_tails
from nofone.stats.nb_tests import equal_tail_midp

_Z = np.linspace(-38.0, 38.0, 30_001)
_LOG_PHI = -0.5 * _Z**2 - 0.5 * np.log(2 * np.pi) + np.log(_Z[1] - _Z[0])


def _reference(x: float, m: float, r: float, sd: float) -> float:
    """The small side's mid-p (upper where x >= m), summed over a fine grid of Z in log space
    with scipy's NB (or Poisson for r = inf) at every point."""
    mu = m * np.exp(sd * _Z)
    dist = stats.poisson(mu) if np.isinf(r) else stats.nbinom(r, r / (r + mu))
    half = np.log(0.5) + dist.logpmf(x)
    lower = np.logaddexp(dist.logcdf(x - 1), half) if x > 0 else half
    side = np.logaddexp(dist.logsf(x), half) if x >= m else lower
    return float(np.exp(special.logsumexp(side + _LOG_PHI)))


def _cases(n: int, seed: int) -> list[tuple[float, float, float, float]]:
    """Means 0.1 to 60,000, sizes 0.02 to 3,000, log-sds 0.2 to 2.5, counts from the bulk to far
    tails on both sides (drawn with a log-sd three times the tested one) and zeros."""
    rng = np.random.default_rng(seed)
    m = np.exp(rng.uniform(-2, 11, n))
    r = np.exp(rng.uniform(-4, 8, n))
    sd = rng.uniform(0.2, 2.5, n)
    mu = m * np.exp(sd * rng.normal(0, 3, n))
    x = rng.negative_binomial(r, r / (r + mu)).astype(float)
    x[rng.uniform(size=n) < 0.1] = 0
    return list(zip(x, m, r, sd, strict=True))


NARROW = [  # narrow NBs, where fixed quadrature nodes over the factor fail
    (60_000, 5000.0, 50.0, 1.0), (300, 5000.0, 50.0, 1.0), (1000, 10.0, 3000.0, 0.3),
    (200, 10.0, 300.0, 0.84), (0, 50_000.0, 300.0, 0.3), (40, 2.0, 3000.0, 2.0),
]


def test_tails_match_dense_integration():
    cases = _cases(250, seed=5) + NARROW
    x, m, r, sd = (np.array(c, dtype=float) for c in zip(*cases, strict=True))
    lower, upper = midp_tails(x, m, r, sd)
    got = np.where(x >= m, upper, lower)
    expected = np.array([_reference(*c) for c in cases])
    assert np.all(np.isfinite(got))
    use = expected > 1e-280
    rel = np.abs(got - expected) / expected
    tails = use & (expected < 0.01)
    assert tails.sum() > 60 and (expected[use] < 1e-100).any()
    assert rel[tails].max() < 1e-3, cases[int(np.argmax(np.where(tails, rel, 0)))]
    assert rel[use].max() < 1e-2, cases[int(np.argmax(np.where(use, rel, 0)))]
    np.testing.assert_allclose(lower + upper, 1.0, rtol=0, atol=1e-12)


@pytest.mark.parametrize("r", [np.inf, 1e7])
def test_poisson_limit_and_huge_sizes(r):
    cases = [(x, m, r, 0.8) for m in (0.5, 20.0, 3000.0) for x in (0, 1, int(m), int(3 * m) + 5, int(30 * m) + 20)]
    x, m, rr, sd = (np.array(c, dtype=float) for c in zip(*cases, strict=True))
    lower, upper = midp_tails(x, m, rr, sd)
    got = np.where(x >= m, upper, lower)
    expected = np.array([_reference(xi, mi, np.inf, si) for xi, mi, _, si in cases])
    np.testing.assert_allclose(got, expected, rtol=2e-3)


def test_no_spread_is_the_plain_nb_and_degenerate_inputs():
    rng = np.random.default_rng(1)
    m = np.exp(rng.normal(3, 2, 400))
    r = np.exp(rng.normal(1, 1, 400))
    x = rng.negative_binomial(r, r / (r + m * 3.0)).astype(float)
    lower, upper = midp_tails(x, m, r, 0.0)
    np.testing.assert_allclose(np.minimum(1, 2 * np.minimum(lower, upper)), equal_tail_midp(x, m, r), rtol=1e-12)
    lower, upper = midp_tails(np.array([0.0, 3.0, np.nan, 2.0]), np.array([0.0, 0.0, 5.0, np.nan]), 2.0, 0.5)
    np.testing.assert_array_equal(upper[:2], [0.5, 0.0])  # mean 0: the point mass at 0
    np.testing.assert_array_equal(lower[:2], [0.5, 1.0])
    assert np.isnan(upper[2:]).all() and np.isnan(lower[2:]).all()


def test_wider_spread_makes_extremes_less_surprising():
    x, m, r = np.array([0.0, 400.0]), np.array([50.0, 50.0]), np.array([20.0, 20.0])
    narrow, wide = midp_tails(x, m, r, 0.3), midp_tails(x, m, r, 1.0)
    assert wide[0][0] > narrow[0][0] > 0 and wide[1][1] > narrow[1][1] > 0
