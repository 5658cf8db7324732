"""edgeR's `filterByExpr` (default method, edgeR 3.40), exact and streamed over sample chunks.

Keep a gene when (a) its CPM reaches `min_count / median library size * 1e6` in at least
`MinSampleSize` samples and (b) its total count reaches `min_total_count`. `MinSampleSize` is
the smallest group size (all samples without groups), softened above `large_n` as
`large_n + (n - large_n) * min_prop`. Library sizes are column sums over all genes, as for a
fresh `DGEList`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

_TOL = 1e-14


@dataclass(frozen=True)
class FilterParams:
    """edgeR's defaults."""

    min_count: float = 10.0
    min_total_count: float = 15.0
    large_n: int = 10
    min_prop: float = 0.7


def min_sample_size(group: Sequence[object] | None, n_samples: int, params: FilterParams) -> float:
    """edgeR's MinSampleSize: the smallest non-empty group, softened for large groups."""
    if group is None:
        size = float(n_samples)
    else:
        _, counts = np.unique(np.asarray(group, dtype=str), return_counts=True)
        size = float(counts[counts > 0].min())
    if size > params.large_n:
        size = params.large_n + (size - params.large_n) * params.min_prop
    return size


def filter_by_expr(counts: np.ndarray, group: Sequence[object] | None = None,
                   params: FilterParams = FilterParams()) -> np.ndarray:
    """Boolean keep mask over genes for a [samples, genes] count matrix held in memory."""
    library = counts.sum(axis=1).astype(np.float64)
    return filter_by_expr_streamed([counts], library, group, params)


def filter_by_expr_streamed(chunks: Iterable[np.ndarray], library: np.ndarray,
                            group: Sequence[object] | None = None,
                            params: FilterParams = FilterParams()) -> np.ndarray:
    """The same mask from [samples, genes] chunks (in the order of `library`), one pass.

    `library` holds every sample's library size, computed beforehand (a first pass).
    """
    library = np.asarray(library, dtype=np.float64)
    cutoff = params.min_count / np.median(library) * 1e6
    needed = min_sample_size(group, len(library), params)
    above: np.ndarray | None = None
    total: np.ndarray | None = None
    start = 0
    for chunk in chunks:
        lib = library[start : start + len(chunk)]
        start += len(chunk)
        cpm = chunk / lib[:, None] * 1e6
        hits = (cpm >= cutoff).sum(axis=0)
        sums = chunk.sum(axis=0, dtype=np.float64)
        above = hits if above is None else above + hits
        total = sums if total is None else total + sums
    if above is None or total is None:
        raise ValueError("no samples to filter")
    return (above >= needed - _TOL) & (total >= params.min_total_count - _TOL)
