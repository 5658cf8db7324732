"""bulkDGD's p-value computation re-implemented, for comparison only (tests and benchmarks hold
`nofone.stats.nb_tests.density_pvalue` against it): a per-gene loop on purpose."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy import special, stats

from nofone.stats.nb_tests import FloatArray, _broadcast


def _bulkdgd_log_prob_mass(k: FloatArray, m: float, r: float) -> FloatArray:
    """bulkDGD's `_log_prob_mass`, float64, with its eps = 1e-10 terms kept."""
    eps = 1.0e-10
    c = 1.0 / (r + m + eps)
    return (
        special.gammaln(k + r)
        - special.gammaln(r)
        - special.gammaln(k + 1.0)
        + k * np.log(m * c + eps)
        + r * np.log(r * c)
    )


def bulkdgd_exact_pvalue(
    x: ArrayLike, m: ArrayLike, r: ArrayLike, chunk: int = 1 << 20
) -> FloatArray:
    """Re-implementation of bulkDGD's `perform_dea(resolution=None)` p-values (analysis/dea.py).

    Per gene: tail = nbinom.ppf(0.99999, n=r, p=1 - m/(m+r)); k = arange(0, tail) (end
    exclusive, so k = tail itself is dropped too); p = sum(exp(lpmf[lpmf <= lpmf(x)])) /
    sum(exp(lpmf)) with bulkDGD's own eps'd log-pmf. Mass beyond the grid is dropped and the rest
    renormalised; a gene whose grid is empty (tail = 0) gets 0/0 = NaN, as in bulkDGD. A per-gene
    loop on purpose (it is the reference), summed in chunks of `chunk` k's so genes with heavy
    tails do not need huge arrays. NaN inputs give NaN.
    """
    xa, ma, ra = _broadcast(x, m, r)
    shape = xa.shape
    xf, mf, rf = xa.ravel(), ma.ravel(), ra.ravel()
    with np.errstate(divide="ignore", invalid="ignore"):
        p_i = mf / (mf + rf)
        tails = stats.nbinom.ppf(0.99999, n=rf, p=1.0 - p_i)
    out = np.full(xf.shape, np.nan)
    for g in range(xf.size):
        xi, mi, ri, tail = xf[g], mf[g], rf[g], tails[g]
        if not (np.isfinite(xi) and np.isfinite(mi) and np.isfinite(ri) and np.isfinite(tail)):
            continue
        n_k = int(np.ceil(tail))  # torch.arange(0, tail) has ceil(tail) points
        obs = _bulkdgd_log_prob_mass(np.float64(xi), mi, ri)
        below = total = 0.0
        for start in range(0, n_k, chunk):
            lpmf = _bulkdgd_log_prob_mass(
                np.arange(start, min(start + chunk, n_k), dtype=np.float64), mi, ri
            )
            dens = np.exp(lpmf)
            below += float(dens[lpmf <= obs].sum())
            total += float(dens.sum())
        with np.errstate(invalid="ignore", divide="ignore"):
            out[g] = np.float64(below) / np.float64(total)
    return out.reshape(shape)
