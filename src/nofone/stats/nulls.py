"""What a gene's test holds as normal: one registry of nulls, each prepared once per run and
then applied to chunks of samples.

- `nb`: the model's NB (the paper's test; any of `nofone.stats.nb_tests.TESTS`).
- `outlier`: the NB mixed with one share of genes off by a log-normal factor, calibrated on the
  held-out normals at training (`nofone.stats.outlier_null`).
- `local`: the same mixture with the outlier share of the calibration normals nearest to each
  sample (`nofone.stats.local_null`; calibrated by every normal with `nofone train --cross-fit`).
- `model-error`: the NB widened by each sample's own estimated model error
  (`nofone.stats.model_error`).

`auto` is `local` where the model's local null is cross-fitted, else `outlier` where the model
has one, else `nb` (imported models, the density rule). docs/null.md says what a call means
under each and the measured frontier.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nofone.choices import NULLS
from nofone.errors import InputError
from nofone.stats.local_null import LocalNull, load_local_null, local_null_source
from nofone.stats.model_error import equal_tail_midp_lognormal, min_pvalue_down_lognormal
from nofone.stats.nb_tests import TESTS, min_pvalue_down
from nofone.stats.outlier_null import OutlierNull, equal_tail_midp_outlier, min_pvalue_down_outlier

NULL_NAMES = tuple(name for name in NULLS if name != "auto")
#: Nulls defined for the equal-tail mid-p only (their tails mix NB tails).
MIDP_ONLY = ("outlier", "local", "model-error")
MIDP = "equal-tail-midp"

GeneFunction = Callable[[slice], np.ndarray]


@dataclass(frozen=True)
class ChunkTest:
    """A chunk's tests by gene block: p-values, and the smallest p-value a down call could reach."""

    n_genes: int
    pvalues: GeneFunction
    smallest_down: GeneFunction


@dataclass(frozen=True)
class Null:
    """A prepared null: `name`, what it holds (`outlier` or `local`, or None) and `test`."""

    name: str
    test: str = MIDP
    outlier: OutlierNull | None = None
    local: LocalNull | None = None

    def for_chunk(self, x: np.ndarray, mean: np.ndarray, r: np.ndarray,
                  model_error: np.ndarray | None = None) -> ChunkTest:
        """The tests of one chunk [N, G]; `model_error` [N] is each sample's (the `model-error` null)."""
        n = np.shape(x)[1]
        if self.name == "model-error" and model_error is not None and (model_error > 0).any():
            return ChunkTest(n, lambda g: equal_tail_midp_lognormal(x[:, g], mean[:, g], r[:, g], model_error),
                             lambda g: min_pvalue_down_lognormal(mean[:, g], r[:, g], model_error))
        if self.name == "outlier" and self.outlier is not None:
            null = self.outlier
            return ChunkTest(n, lambda g: equal_tail_midp_outlier(x[:, g], mean[:, g], r[:, g], null),
                             lambda g: min_pvalue_down_outlier(mean[:, g], r[:, g], null))
        if self.name == "local" and self.local is not None:
            local, share = self.local, self.local.shares_for(mean)
            return ChunkTest(n, lambda g: local.pvalues(x[:, g], mean[:, g], r[:, g], share),
                             lambda g: local.pvalues(np.zeros_like(mean[:, g]), mean[:, g], r[:, g], share))
        test = TESTS[self.test]
        return ChunkTest(n, lambda g: test(x[:, g], mean[:, g], r[:, g]),
                         lambda g: min_pvalue_down(mean[:, g], r[:, g], self.test))

    def describe(self) -> dict:
        """What `de_report.json` records of the null."""
        return {"null": self.name, "outlier_null": None if self.outlier is None else self.outlier.to_dict(),
                "local_null": None if self.local is None else self.local.describe()}


def check_null(requested: str, test: str) -> None:
    """Refuse an unknown null, or one the test cannot use, before any work is done."""
    if test not in TESTS:
        raise InputError(f"unknown test {test!r}; use one of {', '.join(TESTS)}")
    if requested != "auto" and requested not in NULL_NAMES:
        raise InputError(f"unknown null {requested!r}; use one of auto, {', '.join(NULL_NAMES)}")
    if requested in MIDP_ONLY and test != MIDP:
        raise InputError(f"--null {requested} needs --test {MIDP} (the density rule is defined for the NB only)")


def resolve_null(requested: str, test: str, model_info: dict, model_dir: str | Path) -> Null:
    """The null `requested` prepared from the model folder; `auto` as the module docstring says.
    Asking for a null the model does not have is an error naming what to do."""
    check_null(requested, test)
    where = str(model_dir)
    if requested == "auto":
        if test != MIDP:
            return Null("nb", test)
        source = local_null_source(model_dir)
        if source and source.startswith("cross-fit"):
            return Null("local", test, local=load_local_null(model_dir))
        stored = OutlierNull.stored_in(model_info)
        return Null("nb", test) if stored is None else Null("outlier", test, outlier=stored)
    if requested == "outlier":
        return Null("outlier", test, outlier=OutlierNull.from_model_info(model_info, where))
    if requested == "local":
        local = load_local_null(model_dir)
        if local is None:
            raise InputError(f"{where}: the model has no local null (it was imported, trained without held-out "
                             "normals, or by an older nofone); train it again (best with --cross-fit 5) to use "
                             "--null local")
        return Null("local", test, local=local)
    return Null(requested, test)


def available_nulls(model_info: dict, model_dir: str | Path, test: str = MIDP) -> list[Null]:
    """Every null the model supports with `test`, each prepared (the frontier compares them)."""
    out = [Null("nb", test)]
    if test != MIDP:
        return out
    out.append(Null("model-error", test))
    stored = OutlierNull.stored_in(model_info)
    if stored is not None:
        out.append(Null("outlier", test, outlier=stored))
    local = load_local_null(model_dir)
    if local is not None:
        out.append(Null("local", test, local=local))
    return out
