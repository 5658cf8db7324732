"""Per-sample model error: how far a sample's decoded normal means are off, estimated robustly.

A generative model predicts each gene's mean with an error that the NB dispersion (fitted to the
training samples, calibrated on held-out ones) only covers on average. A sample from a tissue
the model saw little of is predicted worse, and testing it against the plain NB calls every
gene the model got wrong. With a multiplicative error of log-scale variance s^2 on the mean,
log((x + 1/2) / (m + 1/2)) has variance about 1/m + alpha + s^2 for a well-expressed gene. We take
s^2 as the smallest value at which the 25th percentile of d^2 / (1/m + alpha + s^2) over the
sample's well-expressed genes equals the chi-square(1) 25th percentile. A low quantile
keeps a tumour's many truly changed genes, which sit in the upper tail, from inflating it, and
s^2 is 0 whenever the sample fits as well as the model's own held-out normals. A sample is
widened only when its quantile lies beyond two standard errors of what a perfectly modelled
sample would show (so a well-modelled sample keeps the exact test).

The error is log-symmetric (a model is as likely to over- as to under-predict two-fold), so the
count is tested against NB(m e, r) with ln e ~ N(0, s^2) (`nofone.stats.lognormal_nb`).
Widening the NB's own dispersion instead (1/r' = 1/r + s^2) would make two-fold drops far more
plausible than two-fold rises and bias the calls towards "up".
"""

from __future__ import annotations

import numpy as np
from scipy.stats import chi2

from nofone.stats.lognormal_nb import midp_tails

QUANTILE = 0.25
MIN_MEAN = 50.0
MIN_GENES = 50
_TARGET = float(chi2.ppf(QUANTILE, 1))
_DENSITY = float(chi2.pdf(_TARGET, 1))


def sample_model_error(x: np.ndarray, mean: np.ndarray, dispersion: np.ndarray,
                       measured: np.ndarray | None = None) -> np.ndarray:
    """s^2 per sample ([N]) for counts and means [N, G] and dispersions r [G] or [N, G]."""
    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    mean = np.atleast_2d(np.asarray(mean, dtype=np.float64))
    alpha = 1.0 / np.broadcast_to(np.asarray(dispersion, dtype=np.float64), x.shape)
    measured = np.ones(x.shape, bool) if measured is None else np.atleast_2d(measured)
    out = np.zeros(x.shape[0])
    for i in range(x.shape[0]):
        use = measured[i] & (mean[i] >= MIN_MEAN)
        if use.sum() < MIN_GENES:
            continue
        d2 = np.log((x[i, use] + 0.5) / (mean[i, use] + 0.5)) ** 2
        base = 1.0 / mean[i, use] + alpha[i, use]
        out[i] = _solve(d2, base)
    return out


def _solve(d2: np.ndarray, base: np.ndarray) -> float:
    """The s^2 >= 0 at which the QUANTILE of d2 / (base + s^2) equals its chi-square value."""
    def excess(s2: float) -> float:
        return float(np.quantile(d2 / (base + s2), QUANTILE)) - _TARGET

    # standard error of a sample quantile: sqrt(p (1 - p) / n) / density at the quantile
    noise = (QUANTILE * (1 - QUANTILE) / len(d2)) ** 0.5 / _DENSITY
    if excess(0.0) <= 2 * noise:
        return 0.0
    lo, hi = 0.0, 1.0
    while excess(hi) > 0 and hi < 1e6:
        lo, hi = hi, hi * 4
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if excess(mid) > 0 else (lo, mid)
    return 0.5 * (lo + hi)


def equal_tail_midp_lognormal(x: np.ndarray, mean: np.ndarray, dispersion: np.ndarray,
                              s2: np.ndarray) -> np.ndarray:
    """Equal-tail mid-p of counts [N, G] against NB(mean e, r), ln e ~ N(0, s2 per sample).

    Samples with s2 = 0 get the plain exact test.
    """
    sd = np.sqrt(np.asarray(s2, dtype=np.float64))[:, None]
    lower, upper = midp_tails(np.atleast_2d(x), np.atleast_2d(mean), dispersion, sd)
    return np.minimum(1.0, 2.0 * np.minimum(lower, upper))


def min_pvalue_down_lognormal(mean: np.ndarray, dispersion: np.ndarray, s2: np.ndarray) -> np.ndarray:
    """The smallest p-value a down call could reach (the p-value of a count of 0)."""
    return equal_tail_midp_lognormal(np.zeros_like(mean), mean, dispersion, s2)
