"""Per-gene tests of an observed count against the negative binomial of its closest normal.

For every gene the model predicts NB(mean m, size r) (variance m + m^2/r) and the observed count
x is tested against it. Everything here is numpy/scipy, float64 and vectorised over arrays of any
broadcastable shape (genes, or samples x genes against genes-only m and r), so one call tests a
whole sample or a whole chunk of samples; there is no Python loop over genes (bulkDGD's own
computation, to compare against, is in `nofone.stats.bulkdgd_reference`).

Tails come from the regularised incomplete beta function (`scipy.special.betainc`, Boost's
ibeta, the same routine behind `scipy.stats.nbinom.cdf/sf`), always evaluated on the side that
is small, so p-values stay accurate in relative terms down to ~1e-300 instead of underflowing or
cancelling to 0.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import special

FloatArray = NDArray[np.float64]
PValueFn = Callable[[ArrayLike, ArrayLike, ArrayLike], FloatArray]

#: Relative tolerance for ties in the density rule: k is counted when
#: pmf(k) <= pmf(x) * (1 + TIE_RTOL), as R's binom.test/poisson.test do (relErr = 1 + 1e-7), so
#: mathematically equal pmf values that differ by rounding are counted together and the p-value
#: does not jump with the last bit.
TIE_RTOL = 1e-7
_LOG_TIE = float(np.log1p(TIE_RTOL))
#: Above this size, lgamma(k + r) - lgamma(r) loses ~|lgamma(r)|*eps to cancellation, so a
#: Stirling-series difference is used instead (keeps the Poisson limit r -> inf accurate).
_LARGE_R = 1e5
#: The complement 1 - tail is trusted only when it is at least this large (no cancellation).
_COMPLEMENT_MIN = 1e-3


# --------------------------------------------------------------------------------------------
# Input handling and the distribution itself
# --------------------------------------------------------------------------------------------


def _broadcast(
    x: ArrayLike, m: ArrayLike, r: ArrayLike
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """float64 copies broadcast to one shape (validation is left to the callers)."""
    xa, ma, ra = np.broadcast_arrays(
        np.asarray(x, dtype=np.float64),
        np.asarray(m, dtype=np.float64),
        np.asarray(r, dtype=np.float64),
    )
    return xa, ma, ra


def _check_params(m: FloatArray, r: FloatArray) -> None:
    """Means must be finite and >= 0, sizes > 0 (inf allowed: Poisson); NaN means 'not tested'."""
    with np.errstate(invalid="ignore"):
        if np.any((m < 0) | np.isinf(m)):
            raise ValueError("NB means must be finite and >= 0")
        if np.any(r <= 0):
            raise ValueError("NB sizes (dispersions r) must be > 0")


def _check_counts(x: FloatArray) -> None:
    """Counts must be non-negative integers (NaN allowed: gives a NaN p-value)."""
    with np.errstate(invalid="ignore"):
        bad = (x < 0) | np.isinf(x) | ((x != np.floor(x)) & ~np.isnan(x))
    if np.any(bad):
        raise ValueError("counts must be finite non-negative integers (or NaN for untested genes)")


class _NB:
    """NB(m, r) for a flat batch of genes with per-gene constants precomputed once.

    The bisections of the density rule evaluate the log-pmf many times on shrinking subsets of
    genes (`idx`), so everything that does not depend on k is computed here, once.
    """

    def __init__(self, m: FloatArray, r: FloatArray, shared: _NB | None = None) -> None:
        self.m, self.r = m, r
        if shared is None:
            self.inf_r = np.isinf(r)
            self.big_r = (r >= _LARGE_R) & ~self.inf_r
            self.any_inf, self.any_big = bool(self.inf_r.any()), bool(self.big_r.any())
        else:
            self.inf_r, self.big_r = shared.inf_r, shared.big_r
            self.any_inf, self.any_big = shared.any_inf, shared.any_big
        self.zero_m = m == 0
        self.any_zero_m = bool(self.zero_m.any())
        # Placeholder sizes keep the generic formulas free of inf/inf warnings; the special
        # regimes are overwritten below.
        rs = np.where(self.inf_r | self.big_r, 1.0, r) if (self.any_inf or self.any_big) else r
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = m / r  # 0 for r = inf
            self.p = 1.0 / (1.0 + ratio)  # success probability r/(r+m), scipy's p
            self.q = m / (m + r)  # 1 - p without cancellation
            self.log_q = np.log(self.q)  # -inf for m = 0
            self.c0 = -r * np.log1p(ratio)  # r*log(p), stable when m << r
            if self.any_inf:
                self.log_q = np.where(self.inf_r, np.log(m), self.log_q)
                self.c0 = np.where(self.inf_r, -m, self.c0)
        self.lg_r = special.gammaln(rs) if shared is None else shared.lg_r
        self.rs = rs

    def at_mean(self, m: FloatArray) -> _NB:
        """The same sizes r at other means: what depends on r alone is not computed again."""
        return _NB(m, self.r, shared=self)

    # -- pieces -------------------------------------------------------------------------------
    def _take(self, a: FloatArray, idx: NDArray[np.intp] | None) -> FloatArray:
        return a if idx is None else a[idx]

    def log_comb(self, k: FloatArray, idx: NDArray[np.intp] | None = None) -> FloatArray:
        """log C(k + r - 1, k) = lgamma(k+r) - lgamma(r) - lgamma(k+1), stable for huge r."""
        rs = self._take(self.rs, idx)
        out = special.gammaln(k + rs) - self._take(self.lg_r, idx) - special.gammaln(k + 1.0)
        if self.any_big:
            big = self._take(self.big_r, idx)
            if big.any():
                kb = k[big]
                out[big] = _lgamma_ratio_large(kb, self._take(self.r, idx)[big]) - special.gammaln(
                    kb + 1.0
                )
        if self.any_inf:
            inf = self._take(self.inf_r, idx)
            if inf.any():
                out[inf] = -special.gammaln(k[inf] + 1.0)
        return out

    def logpmf(self, k: FloatArray, idx: NDArray[np.intp] | None = None,
               log_comb: FloatArray | None = None) -> FloatArray:
        """log pmf at integer k >= 0 (k may be any float array aligned with idx); `log_comb`, the
        part that depends on k and r only, may be passed when it is already known."""
        if log_comb is None:
            log_comb = self.log_comb(k, idx)
        with np.errstate(invalid="ignore"):
            out = log_comb + k * self._take(self.log_q, idx) + self._take(self.c0, idx)
        if self.any_zero_m:  # point mass at 0: 0 * log(0) must read as 0, not NaN
            zero = self._take(self.zero_m, idx)
            if zero.any():
                out[zero] = np.where(k[zero] == 0, 0.0, -np.inf)
        return out

    def cdf(self, k: FloatArray, idx: NDArray[np.intp] | None = None) -> FloatArray:
        """P(X <= k), 0 for k < 0: I_p(r, k+1) (accurate when it is the small tail)."""
        kk = np.maximum(k, 0.0)
        out = special.betainc(self._take(self.rs, idx), kk + 1.0, self._take(self.p, idx))
        self._special_tails(out, kk, idx, lower=True)
        return np.where(k < 0, 0.0, out)

    def sf(self, k: FloatArray, idx: NDArray[np.intp] | None = None) -> FloatArray:
        """P(X > k), 1 for k < 0: I_q(k+1, r) (accurate when it is the small tail)."""
        kk = np.maximum(k, 0.0)
        out = special.betainc(kk + 1.0, self._take(self.rs, idx), self._take(self.q, idx))
        self._special_tails(out, kk, idx, lower=False)
        return np.where(k < 0, 1.0, out)

    def _special_tails(
        self, out: FloatArray, kk: FloatArray, idx: NDArray[np.intp] | None, lower: bool
    ) -> None:
        """Overwrite the huge-r (true size, not the placeholder) and Poisson (r = inf) genes.

        For r >= 1e5, p = r/(r+m) is within m/r of 1 and its rounding alone costs betainc(r, ., p)
        ~r*eps relative accuracy (1e-5 at r = 1e12), so the lower tail goes through the F
        distribution instead, whose argument m/(k+1) carries no such rounding:
        P(X <= k) = P(F(2k+2, 2r) >= m/(k+1)). The upper tail I_q(k+1, r) takes the small q and
        stays accurate as it is.
        """
        if self.any_big:
            big = self._take(self.big_r, idx)
            if big.any():
                rb, kb, mb = self._take(self.r, idx)[big], kk[big], self._take(self.m, idx)[big]
                out[big] = (
                    special.fdtrc(2.0 * kb + 2.0, 2.0 * rb, mb / (kb + 1.0))
                    if lower
                    else special.betainc(kb + 1.0, rb, self._take(self.q, idx)[big])
                )
        if self.any_inf:
            inf = self._take(self.inf_r, idx)
            if inf.any():
                mi = self._take(self.m, idx)[inf]
                out[inf] = (
                    special.gammaincc(kk[inf] + 1.0, mi)
                    if lower
                    else special.gammainc(kk[inf] + 1.0, mi)
                )

    def mode(self) -> FloatArray:
        """floor((r-1) m / r) for r > 1, else 0: the pmf rises up to it and falls after it."""
        with np.errstate(invalid="ignore"):
            return np.floor(np.maximum(self.m - self.m / self.r, 0.0))


def _lgamma_ratio_large(k: FloatArray, r: FloatArray) -> FloatArray:
    """lgamma(k + r) - lgamma(r) for r >= 1e5 without cancellation (Stirling series difference)."""

    def tail(z: FloatArray) -> FloatArray:  # lgamma(z) - Stirling's leading terms, z >= 1e5
        zi = 1.0 / z
        return zi / 12.0 - zi**3 / 360.0

    return (r - 0.5) * np.log1p(k / r) + k * np.log(r + k) - k + (tail(r + k) - tail(r))


def nb_logpmf(x: ArrayLike, m: ArrayLike, r: ArrayLike) -> FloatArray:
    """Exact log NB(x; mean m, size r) pmf, broadcast over inputs.

    m = 0 is the point mass at 0 (log pmf 0 at x = 0, -inf elsewhere); r = inf is the Poisson
    limit and huge finite r uses a cancellation-free lgamma difference. Non-integer or negative x
    give -inf, NaN anywhere gives NaN.
    """
    xa, ma, ra = _broadcast(x, m, r)
    _check_params(ma, ra)
    shape = xa.shape
    xf, mf, rf = xa.ravel(), ma.ravel(), ra.ravel()
    out = np.full(xf.shape, np.nan)
    ok = ~(np.isnan(xf) | np.isnan(mf) | np.isnan(rf))
    with np.errstate(invalid="ignore"):
        bad_x = ok & ((xf < 0) | (xf != np.floor(xf)))
    out[bad_x] = -np.inf
    good = ok & ~bad_x
    if good.any():
        idx = np.flatnonzero(good)
        out[idx] = _NB(mf[idx], rf[idx]).logpmf(xf[idx])
    return out.reshape(shape)


def _flat_valid(
    x: ArrayLike, m: ArrayLike, r: ArrayLike
) -> tuple[tuple[int, ...], NDArray[np.intp] | None, FloatArray, FloatArray, FloatArray, int]:
    """Broadcast, validate and flatten; drop NaN entries (their p-value is NaN)."""
    xa, ma, ra = _broadcast(x, m, r)
    _check_params(ma, ra)
    _check_counts(xa)
    xf, mf, rf = xa.ravel(), ma.ravel(), ra.ravel()
    nan = np.isnan(xf) | np.isnan(mf) | np.isnan(rf)
    if nan.any():
        idx = np.flatnonzero(~nan)
        return xa.shape, idx, xf[idx], mf[idx], rf[idx], xf.size
    return xa.shape, None, xf, mf, rf, xf.size


def _unflatten(
    values: FloatArray, shape: tuple[int, ...], idx: NDArray[np.intp] | None, size: int
) -> FloatArray:
    if idx is None:
        return values.reshape(shape)
    out = np.full(size, np.nan)
    out[idx] = values
    return out.reshape(shape)


# --------------------------------------------------------------------------------------------
# The two tests
# --------------------------------------------------------------------------------------------


def equal_tail_midp(x: ArrayLike, m: ArrayLike, r: ArrayLike) -> FloatArray:
    """Two-sided equal-tail mid-p: min(1, 2 min(P(X<x) + P(X=x)/2, P(X>x) + P(X=x)/2)).

    Symmetric in its error rates up and down (unlike the density rule, which favours up-calls for
    skewed NBs), close to uniform under the null, and needs one incomplete beta per gene: the
    tail on x's side of the mean is computed directly and the other as its complement (the two
    halves sum to 1), recomputed directly when that complement is the small one.
    """
    shape, idx, x, m, r, size = _flat_valid(x, m, r)
    nb = _NB(m, r)
    half = 0.5 * np.exp(nb.logpmf(x))
    low = x <= m  # x's own tail is the small one, or p is not small anyway
    li, hi = np.flatnonzero(low), np.flatnonzero(~low)
    direct = np.empty_like(x)
    direct[li] = nb.cdf(x[li] - 1.0, li) + half[li]  # lower half, P(X<x) + P(X=x)/2
    direct[hi] = nb.sf(x[hi], hi) + half[hi]  # upper half, P(X>x) + P(X=x)/2
    other = 1.0 - direct
    fix = np.flatnonzero((other < direct) & (other < _COMPLEMENT_MIN))
    if fix.size:  # the complement is the small half: do not trust 1 - (almost 1)
        lo_fix = low[fix]
        fl, fh = fix[lo_fix], fix[~lo_fix]
        other[fl] = nb.sf(x[fl], fl) + half[fl]
        other[fh] = nb.cdf(x[fh] - 1.0, fh) + half[fh]
    p = np.minimum(1.0, 2.0 * np.minimum(direct, other))
    return _unflatten(p, shape, idx, size)


def _bisect(
    nb: _NB, work: NDArray[np.intp], t: FloatArray, lo: FloatArray, hi: FloatArray, true_at_lo: bool
) -> None:
    """Integer bisection, in place, of a predicate monotone in k on [lo, hi].

    Arrays are indexed by position in `work` (genes of `nb`). pred(k) = log pmf(k) <= t;
    invariant pred(lo) == true_at_lo, pred(hi) == not true_at_lo; stops at hi = lo + 1. Only genes
    still open are evaluated each round, all of them at once.
    """
    act = np.flatnonzero(hi - lo > 1)
    while act.size:
        mid = np.floor(0.5 * (lo[act] + hi[act]))
        stuck = (mid <= lo[act]) | (mid >= hi[act])  # beyond 2**53 integers are not representable
        inside = nb.logpmf(mid, work[act]) <= t[act]
        move_lo = inside if true_at_lo else ~inside
        lo[act[move_lo & ~stuck]] = mid[move_lo & ~stuck]
        hi[act[~move_lo & ~stuck]] = mid[~move_lo & ~stuck]
        act = act[~stuck]
        act = act[hi[act] - lo[act] > 1]


def _neighbour_settles(nb: _NB, work: NDArray[np.intp], t: FloatArray, x: FloatArray, mode: FloatArray,
                       a_hi: FloatArray, b_lo: FloatArray) -> None:
    """Where pmf(x +- 1 towards the mode) is above the threshold, x's bracket shrinks to [x, x +- 1]."""
    below = np.flatnonzero(x + 1.0 < mode)
    if below.size:
        out = nb.logpmf(x[below] + 1.0, work[below]) > t[below]
        a_hi[below[out]] = x[below[out]] + 1.0
    above = np.flatnonzero(x - 1.0 > mode)
    if above.size:
        out = nb.logpmf(x[above] - 1.0, work[above]) > t[above]
        b_lo[above[out]] = x[above[out]] - 1.0


def _other_boundary_guess(nb: _NB, work: NDArray[np.intp], t: FloatArray, x: FloatArray,
                          mode: FloatArray) -> FloatArray:
    """Where the log-pmf, continued to real k, falls to t on the side of the mode opposite x: two
    Newton steps from x's mirror image (l'(k) = digamma(k + r) - digamma(k + 1) + log q)."""
    above = x > mode
    lo = np.where(above, 0.0, mode + 1.0)
    hi = np.where(above, np.maximum(mode - 1.0, 0.0), np.inf)
    k = np.clip(2.0 * mode - x, lo, hi)
    rs, log_q = nb.rs[work], nb.log_q[work]
    with np.errstate(all="ignore"):
        for _ in range(2):
            slope = special.digamma(k + rs) - special.digamma(k + 1.0) + log_q
            k = np.clip(k - (nb.logpmf(k, work) - t) / slope, lo, hi)
    return np.where(np.isfinite(k), np.round(k), np.where(above, 0.0, mode + 1.0))


def _gallop(nb: _NB, work: NDArray[np.intp], t: FloatArray, lo: FloatArray, hi: FloatArray, guess: FloatArray,
            use: NDArray[np.bool_], true_at_lo: bool) -> None:
    """Narrows [lo, hi] (predicate as in `_bisect`) around `guess` where `use`: the guess is
    evaluated, then steps of 1, 2, 4, ... away from it towards the unknown end until the
    predicate flips; ends with `_bisect`."""
    act = np.flatnonzero(use & (guess > lo) & (guess < hi))
    if act.size:
        inside = nb.logpmf(guess[act], work[act]) <= t[act]
        at_lo = inside if true_at_lo else ~inside
        lo[act[at_lo]] = guess[act[at_lo]]
        hi[act[~at_lo]] = guess[act[~at_lo]]
        up = at_lo  # the boundary is above the guess: search upwards, else downwards
        step = np.ones(act.size)
        while act.size:
            cand = np.where(up, lo[act] + step, hi[act] - step)
            open_ = (cand > lo[act]) & (cand < hi[act])
            act, cand, up, step = act[open_], cand[open_], up[open_], step[open_]
            if not act.size:
                break
            inside = nb.logpmf(cand, work[act]) <= t[act]
            at_lo = inside if true_at_lo else ~inside
            lo[act[at_lo]] = cand[at_lo]
            hi[act[~at_lo]] = cand[~at_lo]
            keep = at_lo == up  # still moving in the same direction: the boundary lies further on
            act, up, step = act[keep], up[keep], 2.0 * step[keep]
    _grow_open_upper(nb, work, t, lo, hi, true_at_lo)
    _bisect(nb, work, t, lo, hi, true_at_lo)


def _grow_open_upper(nb: _NB, work: NDArray[np.intp], t: FloatArray, lo: FloatArray, hi: FloatArray,
                     true_at_lo: bool) -> None:
    """An infinite upper end (the upper boundary with no guess inside) is found by doubling steps."""
    open_ = np.flatnonzero(np.isinf(hi))
    step = np.ones(open_.size)
    while open_.size:
        cand = lo[open_] + step
        inside = nb.logpmf(cand, work[open_]) <= t[open_]
        at_lo = inside if true_at_lo else ~inside
        lo[open_[at_lo]] = cand[at_lo]
        hi[open_[~at_lo]] = cand[~at_lo]
        open_, step = open_[at_lo], 2.0 * step[at_lo]


def density_pvalue(x: ArrayLike, m: ArrayLike, r: ArrayLike) -> FloatArray:
    """The paper's rule, exactly: p = sum of pmf(k) over all k >= 0 with pmf(k) <= pmf(x).

    Ties count as included within a relative TIE_RTOL (1e-7), as in R's binom.test. The pmf is
    unimodal, so {k : pmf(k) <= pmf(x)} is a lower tail {k <= a} plus an upper tail {k >= b}
    around the mode; x is one boundary (unless its neighbour ties with it), the other is found
    from a Newton guess on the continuous log-pmf by a bracket grown around it and vectorised
    integer bisection, and p = CDF(a) + SF(b - 1), capped at 1. No grid, no truncation, no loop
    over genes.
    """
    shape, idx, x, m, r, size = _flat_valid(x, m, r)
    nb = _NB(m, r)
    t = nb.logpmf(x) + _LOG_TIE
    mode = nb.mode()
    p = np.ones_like(x)
    # If the mode itself is in the region, every k is (unimodality): p = 1.
    work = np.flatnonzero(nb.logpmf(mode) > t)
    if work.size:
        xw, mw = x[work], mode[work]
        # Lower boundary a = max{k < mode: pmf(k) <= thr}; -1 (virtual, "true") if none.
        a_lo = np.where(xw < mw, xw, -1.0)
        a_hi = mw.copy()
        need = np.flatnonzero(xw > mw)  # x is above the mode: is k = 0 in the region at all?
        if need.size:
            zero_in = nb.logpmf(np.zeros(need.size), work[need]) <= t[work[need]]
            a_hi[need[~zero_in]] = 0.0  # a = -1
            a_lo[need[zero_in]] = 0.0
        # Upper boundary b = min{k > mode: pmf(k) <= thr}.
        b_lo = mw.copy()
        b_hi = np.where(xw > mw, xw, np.inf)
        # x's own side: the pmf rises strictly towards the mode, so x is the boundary unless its
        # neighbour ties with it (one evaluation instead of a bisection from x to the mode).
        _neighbour_settles(nb, work, t[work], xw, mw, a_hi, b_lo)
        # The other side: a guess from Newton steps on the continuous log-pmf, a bracket grown
        # from it, then bisection (the guess only saves work; the boundary is exact regardless).
        guess = _other_boundary_guess(nb, work, t[work], xw, mw)
        _gallop(nb, work, t[work], a_lo, a_hi, guess, xw > mw, true_at_lo=True)
        _gallop(nb, work, t[work], b_lo, b_hi, guess, xw < mw, true_at_lo=False)
        a, b = a_lo, b_hi
        lower = np.zeros(work.size)
        has_a = np.flatnonzero(a >= 0)
        if has_a.size:
            lower[has_a] = nb.cdf(a[has_a], work[has_a])
        p[work] = np.minimum(1.0, lower + nb.sf(b - 1.0, work))
    return _unflatten(p, shape, idx, size)


TESTS: dict[str, PValueFn] = {"equal-tail-midp": equal_tail_midp, "density": density_pvalue}


# --------------------------------------------------------------------------------------------
# What a gene can show at all, and the effect size
# --------------------------------------------------------------------------------------------


def min_pvalue_down(m: ArrayLike, r: ArrayLike, rule: str = "equal-tail-midp") -> FloatArray:
    """The smallest p-value any count can get on the low side: the p-value of x = 0.

    Both rules' p-values only grow as x moves from 0 towards the centre, so x = 0 is the
    strongest possible down observation. For equal-tail mid-p it equals P(X = 0); for the
    density rule it is P(X = 0) plus the matching upper tail, or 1 when 0 is the mode (then no
    count is "down" at all).
    """
    if rule not in TESTS:
        raise ValueError(f"unknown rule {rule!r}; use one of {', '.join(TESTS)}")
    ma = np.asarray(m, dtype=np.float64)
    return TESTS[rule](np.zeros(ma.shape), ma, r)


def can_call_down(
    m: ArrayLike, r: ArrayLike, alpha: float = 0.05, rule: str = "equal-tail-midp"
) -> NDArray[np.bool_]:
    """False where even x = 0 gives p >= alpha, so the gene can never be called down.

    Such genes (low mean and/or strong overdispersion: P(X = 0) is large) would otherwise read as
    "not down-regulated" when the data cannot say. BH q-values are >= p, so p >= alpha rules out
    q < alpha too. NaN inputs give False.
    """
    with np.errstate(invalid="ignore"):
        return min_pvalue_down(m, r, rule) < alpha


def log2_fold_change(x: ArrayLike, m: ArrayLike) -> FloatArray:
    """log2((x + 1) / (m + 1)): the pseudo-count keeps x = 0 and m = 0 finite."""
    xa, ma = np.asarray(x, dtype=np.float64), np.asarray(m, dtype=np.float64)
    return np.log2((xa + 1.0) / (ma + 1.0))
