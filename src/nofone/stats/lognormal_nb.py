"""Mid-p tails of a negative binomial whose mean is off by a log-normal factor:
X | mu ~ NB(mu, r) with ln mu = ln m + sd Z, Z ~ N(0, 1).

Both the outlier null (a share of genes whose mean is off by log-sd tau) and the per-sample
model error test counts against this distribution. Its tails are one-dimensional integrals, and
the variable integrated over decides both cost and accuracy:

- over Z: P(X >= x) = E[P(X >= x | mu)], one incomplete beta function (the NB tail) per node.
  Fixed Gauss-Hermite nodes are accurate where the NB is wide on the log scale compared with sd
  (small r, small counts) and fail where it is narrow: the tail then comes from a sliver of Z
  between the nodes (48 nodes: 20-40% off at p ~ 1e-4, orders of magnitude further out).
- over V = ln(r G_x / G_r), G_a ~ Gamma(a, 1): by the Poisson-gamma form of the NB,
  P(X >= x | mu) = P(V <= ln mu), so P(X >= x) = E[Phi((ln m - V) / sd)], a normal CDF times V's
  closed-form (log-F) density per node: cheap, and accurate by adaptive Gauss-Hermite (nodes
  centred on the mode of the log-concave integrand, scaled by its curvature) wherever V is not
  heavy-tailed on the side that matters. V's lower tail decays at rate x, its upper at rate r,
  so V is used where that rate times sd is at least MIN_RATE_SD.

The mid-p tails P(X > x) + P(X = x)/2 = (P(X >= x) + P(X >= x + 1)) / 2 are one integral (the
two densities share every node), summed on the small side (upper where x >= m) and the other
side is 1 minus it. A count of 0 (rate 1 is too heavy-tailed for V) has the closed form
P(X = 0 | mu) = (1 + mu / r)^-r, integrated over Z adaptively. Against dense integration over Z
(tests/test_lognormal_nb.py): relative error below 1e-3 for tails below 0.01 and below 1e-2
everywhere, down to 1e-280.
"""

from __future__ import annotations

import numpy as np
from numpy.polynomial.hermite import hermgauss
from numpy.polynomial.hermite_e import hermegauss
from scipy import special

from nofone.stats.nb_tests import _LARGE_R, _NB, FloatArray, _lgamma_ratio_large

#: Fixed nodes over Z, used where the NB is wide (rate x sd < MIN_RATE_SD).
Z_NODES = 8
#: Adaptive nodes over V (and over Z for counts of 0).
ADAPTIVE_NODES = 16
#: Below this rate x sd, V's tail is too heavy for Gauss-Hermite and Z is integrated instead.
MIN_RATE_SD = 1.0
#: Newton steps to the integrand's mode (all values), then more for the few not yet there.
_NEWTON_STEPS, _NEWTON_MAX, _NEWTON_TOL = 5, 60, 1e-6
_SQRT2 = float(np.sqrt(2.0))
_SQRT_2_OVER_PI = float(np.sqrt(2.0 / np.pi))
_LOG_SQRT_2PI = float(0.5 * np.log(2.0 * np.pi))
_T, _W = hermgauss(ADAPTIVE_NODES)  # physicists' nodes: integrals of g(t) e^(-t^2)
_LOG_W_T2 = np.log(_W) + _T**2


def midp_tails(x: FloatArray, mean: FloatArray, r: FloatArray, sd: FloatArray | float) -> tuple[FloatArray, FloatArray]:
    """(P(X < x) + P(X = x)/2, P(X > x) + P(X = x)/2) elementwise for any broadcastable inputs;
    sd = 0 is the plain NB, r = inf the Poisson, mean 0 the point mass at 0, NaN gives NaN."""
    arrays = np.broadcast_arrays(*(np.asarray(a, np.float64) for a in (x, mean, r, sd)))
    shape = arrays[0].shape
    x, mean, r, sd = (a.ravel() for a in arrays)
    with np.errstate(invalid="ignore"):
        upper_side = x >= mean
        usable = np.isfinite(x) & np.isfinite(mean) & (mean > 0) & (sd > 0)
        rate = np.where(upper_side, x, r)
        over_v = usable & (x > 0) & (rate * sd >= MIN_RATE_SD)
        zero = usable & (x == 0) & (r * sd >= MIN_RATE_SD)
    plain = ~(over_v | zero) & (sd == 0)  # the NB itself: one node
    over_z = ~(over_v | zero | plain)
    side = np.empty(x.shape)
    for part, compute in ((plain, _plain), (over_z, _over_z), (over_v, _over_v), (zero, _zero_over_z)):
        if part.any():
            i = np.flatnonzero(part)
            side[i] = compute(x[i], mean[i], r[i], sd[i], upper_side[i])
    lower = np.where(upper_side, 1.0 - side, side)
    upper = np.where(upper_side, side, 1.0 - side)
    return lower.reshape(shape), upper.reshape(shape)


def _plain(x, mean, r, sd, upper_side) -> FloatArray:
    """The small side's mid-p of the NB itself (sd = 0)."""
    return _over_z(x, mean, r, sd, upper_side, nodes=1)


def _over_z(x, mean, r, sd, upper_side, nodes: int = Z_NODES) -> FloatArray:
    """The small side's mid-p by fixed Gauss-Hermite nodes over Z (NB tails per node)."""
    up, down = np.flatnonzero(upper_side), np.flatnonzero(~upper_side)
    base = _NB(mean, r)
    log_comb = base.log_comb(x)
    side = np.zeros(x.shape)
    z_nodes, weights = hermegauss(nodes)
    for z, w in zip(z_nodes, weights / weights.sum(), strict=True):
        nb = base.at_mean(mean * np.exp(sd * z))
        side += w * 0.5 * np.exp(nb.logpmf(x, log_comb=log_comb))
        side[up] += w * nb.sf(x[up], up)
        side[down] += w * nb.cdf(x[down] - 1.0, down)
    return side


def _log_beta_v(a: FloatArray, r: FloatArray) -> FloatArray:
    """ln B(a, r) + a ln r: V's normalising constant, without cancellation for huge or infinite r."""
    out = np.empty(a.shape)
    small = r < _LARGE_R
    out[small] = special.betaln(a[small], r[small]) + a[small] * np.log(r[small])
    big = ~small & np.isfinite(r)
    out[big] = special.gammaln(a[big]) - (_lgamma_ratio_large(a[big], r[big]) - a[big] * np.log(r[big]))
    inf = np.isinf(r)
    out[inf] = special.gammaln(a[inf])
    return out


def _softplus_terms(v: FloatArray, r: FloatArray, inv_r: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    """e^v, r ln(1 + e^v / r) (e^v for r = inf) and ln(1 + e^v / r): the pieces of ln f_V."""
    ev = np.exp(v)
    lp = np.log1p(ev * inv_r)
    with np.errstate(invalid="ignore"):
        big = np.where(inv_r > 0, r * lp, ev)
    return ev, big, lp


def _mills(w: FloatArray) -> FloatArray:
    """phi(w) / Phi(w) for any w."""
    return _SQRT_2_OVER_PI / special.erfcx(-w / _SQRT2)


def _over_v(x, mean, r, sd, upper_side) -> FloatArray:
    """The small side's mid-p by adaptive Gauss-Hermite over V (x >= 1).

    ln f_a(v) = a v - r ln(1 + e^v / r) - a ln(1 + e^v / r) - [ln B(a, r) + a ln r] is V's
    density for shape a; the integrand is Phi(s (ln m - v) / sd) (f_x + f_(x+1)) / 2 with s = +1
    for the upper side (P(X >= a) = E[Phi((ln m - V) / sd)]) and -1 for the lower (P(X < a)).
    """
    s = np.where(upper_side, 1.0, -1.0)
    c = np.log(mean)
    inv_r = 1.0 / r
    a = x + 0.5  # the mode and curvature are taken for the shape halfway between x and x + 1
    v = _mode_v(a, c, s, r, inv_r, sd)
    ev, _, _ = _softplus_terms(v, r, inv_r)
    w = s * (c - v) / sd
    mills = _mills(w)
    hess = -(1.0 + a * inv_r) * ev / (1.0 + ev * inv_r) ** 2 - mills * (w + mills) / sd**2
    scale = _SQRT2 / np.sqrt(-hess)
    log_b1 = _log_beta_v(x + 1.0, r)
    inv_x = 1.0 / x

    def log_integrand(vk: FloatArray) -> FloatArray:
        _, big, lp = _softplus_terms(vk, r, inv_r)
        # f_x / f_(x+1) = (e^-v + 1/r) / (1/x + 1/r): the two shapes' mixture needs no second density
        ratio = (np.exp(-np.clip(vk, -700.0, 700.0)) + inv_r) / (inv_x + inv_r)
        log_mix = (x + 1.0) * (vk - lp) - big - log_b1 + np.log1p(ratio) - np.log(2.0)
        return log_mix + special.log_ndtr(s * (c - vk) / sd)

    return _adaptive_sum(log_integrand, v, scale)


def _mode_v(a, c, s, r, inv_r, sd) -> FloatArray:
    """Mode of ln f_a(v) + ln Phi(s (c - v) / sd), a concave function of v, by Newton from the
    density's mode (ln a), pulled towards c by precision weighting where Phi cuts into it."""
    v = np.log(a)
    var = 1.0 / a + inv_r
    v = np.where(s * (c - v) < 0, (v / var + c / sd**2) / (1.0 / var + 1.0 / sd**2), v)
    limit = 2.0 * np.sqrt(var + sd**2)

    def step(v, idx):
        ai, ri, ii, si, ci, sdi = a[idx], r[idx], inv_r[idx], s[idx], c[idx], sd[idx]
        ev, _, _ = _softplus_terms(v, ri, ii)
        w = si * (ci - v) / sdi
        mills = _mills(w)
        grad = ai - (1.0 + ai * ii) * ev / (1.0 + ev * ii) - si * mills / sdi
        hess = -(1.0 + ai * ii) * ev / (1.0 + ev * ii) ** 2 - mills * (w + mills) / sdi**2
        move = np.clip(-grad / hess, -limit[idx], limit[idx])
        return v + move, np.abs(grad) / np.sqrt(-hess)

    return _newton(step, v)


def _newton(step, v: FloatArray) -> FloatArray:
    """_NEWTON_STEPS steps for all, then more only for those whose gradient (in units of the
    integrand's width) is still above _NEWTON_TOL."""
    idx = np.arange(v.size)
    for _ in range(_NEWTON_STEPS):
        v, off = step(v, idx)
    for _ in range(_NEWTON_MAX):
        todo = np.flatnonzero(~(off <= _NEWTON_TOL))
        if todo.size == 0:
            break
        idx = idx[todo]
        v_todo, off = step(v[idx], idx)
        v[idx] = v_todo
    return v


def _adaptive_sum(log_integrand, centre: FloatArray, scale: FloatArray) -> FloatArray:
    """Integral of exp(log_integrand) by Gauss-Hermite nodes centre + scale t, computed relative
    to the integrand at the centre so that nothing overflows and tails down to 1e-300 survive."""
    peak = log_integrand(centre)
    total = np.zeros(centre.shape)
    for t, log_w in zip(_T, _LOG_W_T2, strict=True):
        total += np.exp(log_integrand(centre + scale * t) - peak + log_w)
    return np.exp(peak + np.log(total * scale))


def _zero_over_z(x, mean, r, sd, upper_side) -> FloatArray:
    """P(X = 0) / 2 (the lower mid-p of a count of 0) by adaptive Gauss-Hermite over Z, with
    ln P(X = 0 | mu) = -r ln(1 + mu / r) (-mu for r = inf)."""
    inv_r = 1.0 / r

    def log_p0(z: FloatArray, idx=slice(None)) -> tuple[FloatArray, FloatArray, FloatArray]:
        mu = mean[idx] * np.exp(sd[idx] * z)
        _, big, _ = _softplus_terms(np.log(mu), r[idx], inv_r[idx])
        return -big, mu, 1.0 + mu * inv_r[idx]

    def step(z, idx):
        _, mu, ratio = log_p0(z, idx)
        grad = -sd[idx] * mu / ratio - z
        hess = -sd[idx] ** 2 * mu / ratio**2 - 1.0
        return z + np.clip(-grad / hess, -3.0, 3.0), np.abs(grad) / np.sqrt(-hess)

    z = _newton(step, np.zeros(mean.shape))
    _, mu, ratio = log_p0(z)
    scale = _SQRT2 / np.sqrt(sd**2 * mu / ratio**2 + 1.0)
    return 0.5 * _adaptive_sum(lambda zk: log_p0(zk)[0] - 0.5 * zk**2 - _LOG_SQRT_2PI, z, scale)
