"""Seeded train/test split of the normal samples, stratified by tissue (as in the paper: 10% of
each tissue held out)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from nofone.errors import InputError


def stratified_split(samples: pd.DataFrame, test_fraction: float, seed: int,
                     stratify: str | None = "tissue", condition_column: str = "condition",
                     normal_value: str = "normal") -> pd.DataFrame:
    """Assign each sample to `train`, `test` or `excluded` (not a normal sample).

    Within each stratum, `round(test_fraction * n)` samples go to test, chosen by a permutation
    seeded from `seed` and the stratum name (so adding a tissue does not reshuffle the others).
    Strata of one sample stay in train. Returns `sample_id, split, stratum`.
    """
    if not 0.0 <= test_fraction < 1.0:
        raise InputError(f"test fraction {test_fraction} must be in [0, 1)")
    table = samples[["sample_id"]].copy()
    if condition_column in samples.columns:
        normal = samples[condition_column].astype("string").fillna("") == normal_value
    else:
        normal = pd.Series(True, index=samples.index)
    if not normal.any():
        raise InputError(
            f"no normal samples: no sample has {condition_column} == {normal_value!r} "
            f"(values present: {sorted(samples[condition_column].dropna().unique())[:10]})"
        )
    if stratify is None:
        strata = pd.Series("all", index=samples.index)
    elif stratify not in samples.columns:
        raise InputError(
            f"cannot stratify by {stratify!r}: no such sample column (have {list(samples.columns)})"
        )
    else:
        strata = samples[stratify].astype("string").fillna("NA")
    table["stratum"] = strata.to_numpy()
    table["split"] = np.where(normal, "train", "excluded")
    for stratum in sorted(strata[normal].unique()):
        members = table.index[(strata == stratum) & normal]
        n_test = round(test_fraction * len(members)) if len(members) > 1 else 0
        n_test = min(n_test, len(members) - 1)
        if n_test == 0:
            continue
        key = np.frombuffer(str(stratum).encode(), dtype=np.uint8).astype(np.uint64)
        rng = np.random.default_rng([seed, *key.tolist()])
        chosen = rng.choice(np.sort(members.to_numpy()), size=n_test, replace=False)
        table.loc[chosen, "split"] = "test"
    return table[["sample_id", "split", "stratum"]]
