"""The paper's gene split: every gene on chromosome 1 is a test gene (no information leaks through
intra-chromosomal interactions or overlapping regulatory regions); the rest are split at random
into training and validation genes (about 9:1, the paper's 22,251 : 2,472)."""

from __future__ import annotations

import numpy as np

from nofone.errors import InputError

TRAIN, VALIDATION, TEST = "train", "validation", "test"


def chromosome_split(chromosomes: np.ndarray, test_chromosomes: tuple[str, ...] = ("1",),
                     validation_fraction: float = 0.1, seed: int = 0) -> np.ndarray:
    """Per gene 'train', 'validation' or 'test'."""
    chromosomes = np.asarray(chromosomes, dtype=object)
    test = np.isin(chromosomes, list(test_chromosomes))
    rest = np.flatnonzero(~test)
    if test.sum() < 10 or len(rest) < 20:
        raise InputError(f"the split needs at least 10 genes on chromosome(s) {', '.join(test_chromosomes)} and 20 "
                         f"elsewhere (found {int(test.sum())} and {len(rest)})")
    split = np.where(test, TEST, TRAIN).astype(object)
    rng = np.random.default_rng(seed)
    n_validation = max(10, round(validation_fraction * len(rest)))
    split[rng.choice(rest, n_validation, replace=False)] = VALIDATION
    return split
