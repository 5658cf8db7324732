"""Multiple-testing corrections for the per-gene p-values of each sample."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray


def bh_adjust(p: ArrayLike, axis: int = -1) -> NDArray[np.float64]:
    """Benjamini-Hochberg q-values along `axis`, each slice (one sample) on its own.

    Same values as R's p.adjust(method="BH") and scipy.stats.false_discovery_control: sorted
    p_(i) * n / i, made monotone by a running minimum from the largest p down, capped at 1. NaN
    marks an untested gene (e.g. a model gene missing from the input): it stays NaN and is not
    counted in n, so missing genes neither get q-values nor dilute the others.
    """
    arr = np.asarray(p, dtype=np.float64)
    if arr.ndim == 0:
        return bh_adjust(arr[None])[0]
    with np.errstate(invalid="ignore"):
        if np.any((arr < 0) | (arr > 1)):
            raise ValueError("p-values must lie in [0, 1] (NaN for untested)")
    moved = np.moveaxis(arr, axis, -1)
    n = moved.shape[-1]
    if n == 0 or moved.size == 0:
        return np.array(arr, copy=True)
    flat = moved.reshape(-1, n)
    order = np.argsort(flat, axis=-1, kind="stable")  # NaNs sort last
    ranked = np.take_along_axis(flat, order, axis=-1)
    n_tested = np.sum(~np.isnan(flat), axis=-1, keepdims=True).astype(np.float64)
    scaled = ranked * n_tested / np.arange(1, n + 1, dtype=np.float64)
    # Running minimum from the largest p downwards; fmin skips the trailing NaNs.
    monotone = np.fmin.accumulate(scaled[:, ::-1], axis=-1)[:, ::-1]
    monotone = np.minimum(monotone, 1.0)
    monotone[np.isnan(ranked)] = np.nan
    q = np.empty_like(flat)
    np.put_along_axis(q, order, monotone, axis=-1)
    return np.moveaxis(q.reshape(moved.shape), -1, axis)
