"""DESeq2's median-of-ratios size factors, with a reference that new samples are scaled against.

`estimateSizeFactorsForMatrix` in R DESeq2: each gene's log geometric mean over the samples is
the reference; a sample's size factor is the exponential of the median, over genes with a finite
reference and a positive count, of log(count) - log reference.

- `ratio` (DESeq2's default): the log geometric mean over all samples, so a gene with a zero in
  any sample has no reference (-inf) and is left out. R's size factors are reproduced exactly
  (R's `median` averages the two middle values, as `numpy.median` does).
- `poscounts` (DESeq2's `type = "poscounts"`, for sparse data where every gene has a zero
  somewhere): the geometric mean of the positive counts times n_positive / n (R's `geoMeanNZ`:
  `exp(sum(log(x[x > 0])) / length(x))`); all-zero genes have no reference. R then divides the
  size factors by their geometric mean; `log_centre` stores that divisor so that a new sample
  gets exactly the factor it would have had among the training samples.
- `auto`: `ratio` when at least `MIN_RATIO_GENES` genes (or every gene of a smaller table) have
  no zero in any sample, else `poscounts`.

The reference (`log_geo_means`, `log_centre`) is fitted once on the training samples and stored
with the model: a new sample is then scaled against the same genes and the same reference, and
its factor does not depend on which other samples come with it. Genes a sample did not measure
(`measured` False) are left out of its median and of the reference. Everything is float64 numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nofone.errors import InputError

METHODS = ("auto", "ratio", "poscounts")
MIN_RATIO_GENES = 100


def log_geometric_means(counts: np.ndarray, measured: np.ndarray | None = None,
                        method: str = "ratio") -> np.ndarray:
    """[G] log geometric mean of each gene over the samples (rows); -inf where it has none.

    `ratio`: -inf for genes with a zero in any (measured) sample. `poscounts`: R's `geoMeanNZ`;
    -inf only for genes that are zero in every sample. Unmeasured entries do not count.
    """
    if method not in ("ratio", "poscounts"):
        raise ValueError(f"unknown geometric-mean method {method!r}")
    x = np.asarray(counts, dtype=np.float64)
    mask = np.ones(x.shape, dtype=bool) if measured is None else np.asarray(measured, dtype=bool)
    n = mask.sum(0)
    positive = mask & (x > 0)
    with np.errstate(divide="ignore"):
        logs = np.where(positive, np.log(np.where(positive, x, 1.0)), 0.0)
    total = logs.sum(0)
    out = np.full(x.shape[1], -np.inf)
    ok = (positive.sum(0) == n) & (n > 0) if method == "ratio" else positive.any(0)
    out[ok] = total[ok] / n[ok]
    return out


def median_of_ratios(counts: np.ndarray, log_geo_means: np.ndarray, measured: np.ndarray | None = None,
                     log_centre: float = 0.0) -> np.ndarray:
    """[N] size factors: exp(median over usable genes of log x - log geo mean - log_centre).

    Usable: finite reference, positive count, measured. NaN for a sample with no usable gene.
    """
    x = np.asarray(counts, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != len(log_geo_means):
        raise ValueError(f"counts of shape {x.shape} do not match a reference of {len(log_geo_means)} genes")
    usable = np.isfinite(log_geo_means)[None, :] & (x > 0)
    if measured is not None:
        usable &= np.asarray(measured, dtype=bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.where(usable, np.log(np.where(usable, x, 1.0)) - np.where(np.isfinite(log_geo_means),
                                                                                log_geo_means, 0.0), np.nan)
    out = np.full(x.shape[0], np.nan)
    some = usable.any(1)
    if some.any():
        out[some] = np.exp(np.nanmedian(ratios[some], axis=1) - log_centre)
    return out


@dataclass(frozen=True)
class SizeFactorReference:
    """The per-gene reference of median-of-ratios size factors, fitted on training samples."""

    log_geo_means: np.ndarray  # [G] float64, -inf for genes outside the reference
    log_centre: float = 0.0
    method: str = "ratio"

    @property
    def n_reference_genes(self) -> int:
        return int(np.isfinite(self.log_geo_means).sum())

    @classmethod
    def fit(cls, counts: np.ndarray, measured: np.ndarray | None = None, method: str = "auto") -> SizeFactorReference:
        """Fit on the training samples (rows of `counts`); raises InputError when impossible."""
        if method not in METHODS:
            raise InputError(f"unknown size-factor method {method!r}; use one of {', '.join(METHODS)}")
        counts = np.asarray(counts)
        if counts.ndim != 2 or counts.shape[0] == 0 or counts.shape[1] == 0:
            raise InputError(f"size factors need samples and genes, got a table of shape {counts.shape}")
        chosen = method
        if method in ("auto", "ratio"):
            log_geo = log_geometric_means(counts, measured, "ratio")
            n_finite = int(np.isfinite(log_geo).sum())
            if method == "auto" and n_finite < min(MIN_RATIO_GENES, counts.shape[1]):
                chosen = "poscounts"
            elif n_finite == 0:
                raise InputError("every gene has a zero in some sample: median-of-ratios size factors cannot be "
                                 "computed (use the poscounts method)")
            else:
                chosen = "ratio"
        if chosen == "poscounts":
            log_geo = log_geometric_means(counts, measured, "poscounts")
            if not np.isfinite(log_geo).any():
                raise InputError("every gene is zero in every sample: no size factors")
        reference = cls(log_geo, 0.0, chosen)
        raw = reference(counts, measured, check=True)
        if chosen == "poscounts":  # R: sf / exp(mean(log(sf))) when geometric means are given
            reference = cls(log_geo, float(np.mean(np.log(raw))), chosen)
        return reference

    def __call__(self, counts: np.ndarray, measured: np.ndarray | None = None, *, check: bool = False,
                 sample_ids: list[str] | None = None) -> np.ndarray:
        """[N] size factors of `counts` against this reference (NaN where none; an error with `check`)."""
        sf = median_of_ratios(counts, self.log_geo_means, measured, self.log_centre)
        if check and not np.isfinite(sf).all():
            bad = np.flatnonzero(~np.isfinite(sf))[:5]
            names = [sample_ids[i] for i in bad] if sample_ids else bad.tolist()
            raise InputError(f"samples {names} have no positive count on any of the {self.n_reference_genes} "
                             "reference genes of the size factors")
        return sf
