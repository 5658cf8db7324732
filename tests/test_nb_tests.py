"""Per-gene NB tests: exactness against brute force, calibration, bulkDGD parity, BH, edge cases."""

from __future__ import annotations

import mpmath
import numpy as np
import pytest
from scipy import stats

from nofone.stats.bulkdgd_reference import bulkdgd_exact_pvalue
from nofone.stats.multiple_testing import bh_adjust
from nofone.stats.nb_tests import (
    TESTS,
    TIE_RTOL,
    can_call_down,
    density_pvalue,
    equal_tail_midp,
    log2_fold_change,
    min_pvalue_down,
    nb_logpmf,
)

RULES = sorted(TESTS)


def _scipy_nb(m: float, r: float) -> stats.rv_discrete:
    return stats.nbinom(r, r / (r + m))


def _brute_force(x: float, m: float, r: float, rule: str) -> float:
    """Sum scipy's pmf over every count 0..K, K far enough that the rest is negligible.

    K covers all but 1e-17 of the mass and, past x, runs on until the geometric bound on the
    remaining terms is below 1e-14 of pmf(x), so even p-values of 1e-300 are summed completely.
    """
    dist = _scipy_nb(m, r)
    q = m / (m + r)
    lx = dist.logpmf(x)
    k_max = int(max(2 * x + 20, dist.isf(1e-17) + 20))
    while True:
        ratio = q * max((k_max + r) / (k_max + 1.0), 1.0)  # bounds pmf(k+1)/pmf(k) beyond k_max
        rest = np.exp(dist.logpmf(k_max)) * ratio / (1.0 - ratio)
        if rest < 1e-14 * np.exp(lx) or rest < 1e-300:
            break
        k_max *= 2
    assert k_max < 5_000_000, "test case too heavy for brute force"
    k = np.arange(k_max + 1, dtype=np.float64)
    lpmf = dist.logpmf(k)
    pmf = np.exp(lpmf)
    if rule == "density":
        return min(1.0, float(pmf[lpmf <= lx + np.log1p(TIE_RTOL)].sum()))
    half = 0.5 * np.exp(lx)
    lower, upper = pmf[k < x].sum() + half, pmf[k > x].sum() + half
    return min(1.0, 2.0 * float(min(lower, upper)))


def _random_cases(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, m, r) with m in [1e-3, 1e5], r in [0.05, 1e3] (log-uniform), x from 0 to far tails.

    Pairs whose 1 - 1e-17 quantile is beyond 2e6 (tiny r with huge m) are redrawn, only so the
    brute force stays fast; far-tail x come from quantiles up to 1 - 1e-12 and beyond.
    """
    rng = np.random.default_rng(seed)
    xs, ms, rs = [], [], []
    while len(xs) < n:
        m = 10 ** rng.uniform(-3, 5)
        r = 10 ** rng.uniform(np.log10(0.05), 3)
        dist = _scipy_nb(m, r)
        if dist.isf(1e-17) > 2e6:
            continue
        kind = len(xs) % 6
        if kind == 0:
            x = 0.0
        elif kind == 1:
            x = dist.ppf(rng.uniform())
        elif kind == 2:
            x = dist.ppf(10 ** rng.uniform(-9, -2))  # lower tail
        elif kind == 3:
            x = dist.isf(10 ** rng.uniform(-12, -2))  # upper tail
        elif kind == 4:
            x = np.floor(dist.isf(1e-12) * rng.uniform(1.0, 3.0))  # far upper tail
        else:
            x = float(rng.integers(0, 40))
        xs.append(float(x))
        ms.append(m)
        rs.append(r)
    return np.array(xs), np.array(ms), np.array(rs)


# ------------------------------------------------------------------------------------------
# (a) exactness
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rule", RULES)
def test_exact_against_brute_force(rule: str) -> None:
    x, m, r = _random_cases(180, seed=11)
    got = TESTS[rule](x, m, r)
    want = np.array([_brute_force(*case, rule) for case in zip(x, m, r, strict=True)])
    abs_err = np.abs(got - want)
    assert np.all(abs_err <= 1e-10), abs_err.max()
    tiny = want < 1e-3
    assert tiny.sum() > 20
    rel_err = abs_err[tiny] / want[tiny]
    assert np.all((rel_err <= 1e-8) | (want[tiny] == 0)), rel_err.max()


@pytest.mark.parametrize("rule", RULES)
def test_far_tail_pvalues_do_not_underflow(rule: str) -> None:
    # m = 10, r = 50: x = 480 has p ~ 1e-300, still representable, so it must not read 0.
    x = np.array([150.0, 300.0, 480.0])
    got = TESTS[rule](x, 10.0, 50.0)
    want = np.array([_brute_force(xi, 10.0, 50.0, rule) for xi in x])
    assert np.all(got > 0)
    assert got[-1] < 1e-290
    np.testing.assert_allclose(got, want, rtol=1e-8)


def test_equal_tail_matches_scipy_tails() -> None:
    rng = np.random.default_rng(5)
    m = 10 ** rng.uniform(-2, 5, 2000)
    r = 10 ** rng.uniform(-1, 3, 2000)
    x = rng.negative_binomial(r, r / (r + m)).astype(float)
    dist = stats.nbinom(r, r / (r + m))
    half = 0.5 * dist.pmf(x)
    want = np.minimum(1, 2 * np.minimum(dist.cdf(x - 1) + half, dist.sf(x) + half))
    np.testing.assert_allclose(equal_tail_midp(x, m, r), want, rtol=1e-9, atol=1e-13)


def test_density_ties_are_included() -> None:
    # r = 2: pmf(k) ∝ (k+1) q^k, so q = 1/sqrt(3) makes pmf(0) == pmf(2) (up to rounding).
    r = 2.0
    q = 1 / np.sqrt(3)
    m = r * q / (1 - q)
    pmf = _scipy_nb(m, r).pmf(np.arange(3))
    assert pmf[0] == pytest.approx(pmf[2], rel=1e-14)
    want = 1.0 - pmf[1]  # everything except k = 1
    np.testing.assert_allclose(density_pvalue([0.0, 2.0], m, r), [want, want], rtol=1e-12)
    # Two modes (r = 2, m = 8: pmf(3) == pmf(4)): both are the most likely count, p = 1.
    np.testing.assert_array_equal(density_pvalue([3.0, 4.0], 8.0, 2.0), [1.0, 1.0])


def test_nb_logpmf_matches_scipy_and_high_precision() -> None:
    rng = np.random.default_rng(2)
    m = 10 ** rng.uniform(-3, 5, 500)
    r = 10 ** rng.uniform(np.log10(0.05), 3, 500)
    x = np.floor(10 ** rng.uniform(0, 6, 500))
    want = stats.nbinom.logpmf(x, r, r / (r + m))
    np.testing.assert_allclose(nb_logpmf(x, m, r), want, rtol=1e-9)

    def exact(k: int, mean: float, size: float) -> float:
        with mpmath.workdps(50):
            k_, m_, r_ = mpmath.mpf(k), mpmath.mpf(mean), mpmath.mpf(size)
            return float(
                mpmath.loggamma(k_ + r_)
                - mpmath.loggamma(r_)
                - mpmath.loggamma(k_ + 1)
                + k_ * mpmath.log(m_ / (m_ + r_))
                + r_ * mpmath.log(r_ / (m_ + r_))
            )

    # Huge r (towards Poisson) is where lgamma(k+r) - lgamma(r) would cancel.
    for k, mean, size in [(3, 2.5, 1e7), (120, 100.0, 1e9), (5000, 4000.0, 1e12), (0, 7.0, 1e15)]:
        assert nb_logpmf(k, mean, size) == pytest.approx(exact(k, mean, size), rel=1e-11, abs=1e-11)


# ------------------------------------------------------------------------------------------
# (b) calibration under the null
# ------------------------------------------------------------------------------------------


def test_null_pvalues_are_calibrated() -> None:
    rng = np.random.default_rng(20240607)
    n = 50_000
    se = np.sqrt(0.05 * 0.95 / n)
    # m >= 20 and r >= 1 keep the atoms of the discrete NB small, so mid-p is ~ U(0, 1).
    m = np.exp(rng.uniform(np.log(20), np.log(1e4), n))
    r = np.exp(rng.uniform(0, np.log(100), n))
    x = rng.negative_binomial(r, r / (r + m)).astype(float)
    p_mid = equal_tail_midp(x, m, r)
    assert stats.kstest(p_mid, "uniform").pvalue > 0.001
    for p in (p_mid, density_pvalue(x, m, r)):
        assert np.mean(p < 0.05) <= 0.05 + 3 * se
    # The density rule is a valid test for any NB, however discrete: check a wide range too.
    m = 10 ** rng.uniform(-2, 4, n)
    r = 10 ** rng.uniform(np.log10(0.05), 3, n)
    x = rng.negative_binomial(r, r / (r + m)).astype(float)
    assert np.mean(density_pvalue(x, m, r) < 0.05) <= 0.05 + 3 * se


# ------------------------------------------------------------------------------------------
# (c) bulkDGD's exact (resolution=None) p-values
# ------------------------------------------------------------------------------------------


def test_density_agrees_with_bulkdgd_exact() -> None:
    """Our exact density rule against bulkDGD's `resolution=None` computation.

    bulkDGD sums the pmf only over k = arange(0, tail) with tail = nbinom.ppf(0.99999): the mass
    D = P(X >= tail) is dropped (note arange excludes `tail` itself, so D is 1e-5 plus up to
    P(X = tail), not at most 1e-5) and the rest renormalised by 1 - D. Writing S for the counted
    region, p_bulk = (p - P(S, k >= tail)) / (1 - D), so |p_bulk - p| <= D / (1 - D): about
    1e-5 for smooth NBs, which is the whole remaining difference. We assert that per-case
    bound, and max |difference| <= 1e-4 over ~500 cases with m in [1, 1e4]. For tiny means the
    dropped P(X = tail) is large (m = 1e-3: tail = 1, D ~ 1e-3, bulkDGD gives p = 0 for x = 1
    where the exact p is 1e-3), checked separately below; the bound still holds there.
    """
    rng = np.random.default_rng(3)
    n = 500
    m = np.exp(rng.uniform(0, np.log(1e4), n))
    r = np.exp(rng.uniform(np.log(0.05), np.log(1e3), n))
    dist = stats.nbinom(r, r / (r + m))
    x = dist.ppf(rng.uniform(size=n))
    x[::5] = 0
    x[1::7] = dist.isf(1e-7)[1::7]  # beyond bulkDGD's grid
    ours = density_pvalue(x, m, r)
    theirs = bulkdgd_exact_pvalue(x, m, r)
    diff = np.abs(ours - theirs)
    tail = stats.nbinom.ppf(0.99999, r, 1 - m / (m + r))
    dropped = dist.sf(tail - 1)
    assert np.all(diff <= dropped / (1 - dropped) + 1e-12)
    assert diff.max() <= 1e-4

    small = np.array([1e-3, 1e-2, 0.1])
    ours = density_pvalue(1.0, small, 1.0)
    theirs = bulkdgd_exact_pvalue(np.ones(3), small, np.ones(3))
    tail = stats.nbinom.ppf(0.99999, 1.0, 1 - small / (small + 1.0))
    dropped = stats.nbinom.sf(tail - 1, 1.0, 1.0 / (1.0 + small))
    assert theirs[0] == 0.0 and ours[0] == pytest.approx(1e-3 / 1.001)
    assert np.all(np.abs(ours - theirs) <= dropped / (1 - dropped) + 1e-12)


# ------------------------------------------------------------------------------------------
# (d) down-call flag, fold change, BH
# ------------------------------------------------------------------------------------------


def test_min_pvalue_down_and_can_call_down() -> None:
    m = np.array([0.5, 3.0, 20.0, 200.0, 5.0])
    r = np.array([5.0, 1.0, 0.3, 10.0, 50.0])
    p0 = stats.nbinom.pmf(0, r, r / (r + m))
    np.testing.assert_allclose(min_pvalue_down(m, r, "equal-tail-midp"), p0, rtol=1e-12)
    # Density rule: P(X = 0) plus the matching upper tail; 1 when 0 is the mode (r <= 1).
    dens = min_pvalue_down(m, r, "density")
    assert np.all(dens >= p0 - 1e-15)
    assert dens[1] == dens[2] == 1.0
    alpha = 0.05
    for rule in RULES:
        flag = can_call_down(m, r, alpha, rule)
        np.testing.assert_array_equal(flag, min_pvalue_down(m, r, rule) < alpha)
        assert not flag[p0 > alpha].any()  # P(X = 0) above alpha: never callable down
    np.testing.assert_array_equal(can_call_down(m, r, alpha), p0 < alpha)
    with pytest.raises(ValueError):
        min_pvalue_down(m, r, "nope")


def test_log2_fold_change() -> None:
    np.testing.assert_allclose(log2_fold_change([0, 1, 7, 3], [0, 3, 1, 3]), [0, -1, 2, 0])
    assert log2_fold_change(np.zeros((2, 3)), np.ones(3)).shape == (2, 3)


def test_bh_hand_example_and_scipy() -> None:
    p = [0.001, 0.008, 0.039, 0.041, 0.042, 0.06, 0.074, 0.205, 0.212, 0.216]
    want = [0.01, 0.04, 0.084, 0.084, 0.084, 0.1, 0.074 * 10 / 7, 0.216, 0.216, 0.216]
    np.testing.assert_allclose(bh_adjust(p), want, rtol=1e-12)
    np.testing.assert_allclose(bh_adjust([0.01, 0.04, 0.03, 0.005]), [0.02, 0.04, 0.04, 0.02])
    rng = np.random.default_rng(0)
    ps = rng.uniform(size=(6, 300)) ** 4
    want = stats.false_discovery_control(ps, axis=-1)
    np.testing.assert_allclose(bh_adjust(ps), want, rtol=1e-12)
    np.testing.assert_allclose(
        bh_adjust(ps.T, axis=0), stats.false_discovery_control(ps.T, axis=0), rtol=1e-12
    )
    q = bh_adjust(ps)
    for row_p, row_q in zip(ps, q, strict=True):  # monotone in p, >= p, <= 1
        order = np.argsort(row_p)
        assert np.all(np.diff(row_q[order]) >= 0)
        assert np.all(row_q >= row_p) and np.all(row_q <= 1)


def test_bh_nan_handling() -> None:
    rng = np.random.default_rng(1)
    ps = rng.uniform(size=(3, 50)) ** 3
    ps[0, ::4] = np.nan
    ps[2, :] = np.nan
    q = bh_adjust(ps)
    keep = ~np.isnan(ps[0])
    np.testing.assert_allclose(q[0, keep], stats.false_discovery_control(ps[0, keep]), rtol=1e-12)
    assert np.isnan(q[0, ~keep]).all() and np.isnan(q[2]).all()
    np.testing.assert_allclose(q[1], stats.false_discovery_control(ps[1]), rtol=1e-12)
    with pytest.raises(ValueError):
        bh_adjust([0.1, 1.5])


# ------------------------------------------------------------------------------------------
# (e) edge cases and shapes
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rule", RULES)
def test_zero_mean_is_a_point_mass(rule: str) -> None:
    np.testing.assert_array_equal(TESTS[rule]([0, 1, 50], 0.0, 3.0), [1.0, 0.0, 0.0])
    np.testing.assert_array_equal(nb_logpmf([0, 1], 0.0, 3.0), [0.0, -np.inf])


@pytest.mark.parametrize("rule", RULES)
def test_zero_count_and_enormous_counts(rule: str) -> None:
    m = np.array([0.01, 1.0, 100.0, 1e4])
    r = np.array([0.5, 5.0, 20.0, 2.0])
    p0 = TESTS[rule](np.zeros(4), m, r)
    want = [_brute_force(0.0, mi, ri, rule) for mi, ri in zip(m, r, strict=True)]
    np.testing.assert_allclose(p0, want, rtol=1e-10)
    with np.errstate(invalid="raise", divide="raise", over="raise"):  # underflow to 0 is fine
        huge = TESTS[rule](np.array([1e6, 1e12, 1e15, 1e300]), 10.0, 5.0)
    np.testing.assert_array_equal(huge, 0.0)


@pytest.mark.parametrize("rule", RULES)
def test_large_r_tends_to_poisson(rule: str) -> None:
    m = np.array([0.5, 3.0, 40.0, 900.0])
    x = np.array([3.0, 0.0, 61.0, 820.0])
    pois = TESTS[rule](x, m, np.inf)
    dist = stats.poisson(m)
    half = 0.5 * dist.pmf(x)
    if rule == "equal-tail-midp":
        want = np.minimum(1, 2 * np.minimum(dist.cdf(x - 1) + half, dist.sf(x) + half))
        np.testing.assert_allclose(pois, want, rtol=1e-10)
    for size in (1e6, 1e9, 1e12):  # NB(m, r) -> Poisson(m) with error O(m / r)
        np.testing.assert_allclose(TESTS[rule](x, m, size), pois, rtol=10 * m.max() / size + 1e-7)
    np.testing.assert_allclose(nb_logpmf(x, m, np.inf), dist.logpmf(x), rtol=1e-13)


@pytest.mark.parametrize("rule", RULES)
def test_shapes_broadcast_samples_by_genes(rule: str) -> None:
    rng = np.random.default_rng(4)
    n_samples, n_genes = 4, 37
    r = 10 ** rng.uniform(-1, 2, n_genes)
    m_genes = 10 ** rng.uniform(-1, 4, n_genes)
    m = m_genes * rng.uniform(0.5, 2, (n_samples, 1))
    x = rng.negative_binomial(r, r / (r + m))  # int64 counts, as read from disk
    p = TESTS[rule](x, m, r)
    assert p.shape == (n_samples, n_genes) and p.dtype == np.float64
    for i in range(n_samples):
        np.testing.assert_array_equal(p[i], TESTS[rule](x[i], m[i], r))
    # genes-only m against samples x genes counts
    p2 = TESTS[rule](x, m_genes, r)
    assert p2.shape == (n_samples, n_genes)
    np.testing.assert_array_equal(p2[1], TESTS[rule](x[1], m_genes, r))
    assert np.ndim(TESTS[rule](3, 2.0, 1.0)) == 0
    assert can_call_down(m, r, 0.01, rule).shape == (n_samples, n_genes)


@pytest.mark.parametrize("rule", RULES)
def test_nan_inputs_give_nan_and_bad_inputs_raise(rule: str) -> None:
    p = TESTS[rule]([np.nan, 3.0, 3.0, 3.0], [5.0, np.nan, 5.0, 5.0], [2.0, 2.0, np.nan, 2.0])
    assert np.isnan(p[:3]).all() and 0 < p[3] <= 1
    for bad in ([-1.0], [2.5], [np.inf]):
        with pytest.raises(ValueError):
            TESTS[rule](bad, 5.0, 2.0)
    with pytest.raises(ValueError):
        TESTS[rule]([1.0], -1.0, 2.0)
    with pytest.raises(ValueError):
        TESTS[rule]([1.0], 1.0, 0.0)
