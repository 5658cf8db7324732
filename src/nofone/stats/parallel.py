"""Per-gene tests on several CPU threads: the genes are cut into blocks and a thread pool
evaluates each block.

The tests are elementwise along genes and spend their time in scipy's special functions
(incomplete beta, log-gamma), which are numpy ufuncs and release the GIL, so threads give a real
speed-up without copying data into worker processes. A test that takes a chunk of samples
[N, G] is simply called on column blocks [N, G_b]; per-sample inputs (a scale, a model error)
pass through unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise

import numpy as np

#: Below this many genes per block the thread overhead outweighs the gain.
MIN_BLOCK = 2048


def by_gene_blocks(compute: Callable[[slice], np.ndarray], n_genes: int, threads: int) -> np.ndarray:
    """`compute(genes)` for contiguous gene slices on up to `threads` threads, joined along the
    last axis. `compute` must return an array whose last axis is the sliced genes."""
    n_blocks = max(1, min(threads, n_genes // MIN_BLOCK))
    if n_blocks == 1:
        return compute(slice(0, n_genes))
    edges = np.linspace(0, n_genes, n_blocks + 1).round().astype(int)
    blocks = [slice(int(a), int(b)) for a, b in pairwise(edges)]
    with ThreadPoolExecutor(max_workers=n_blocks, thread_name_prefix="nofone-test") as pool:
        parts = list(pool.map(compute, blocks))
    return np.concatenate(parts, axis=-1)
