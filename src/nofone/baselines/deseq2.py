"""The classical baseline: DESeq2 (through pydeseq2) with Bioconductor DESeq2's results.

pandas in, pandas out, no files. Two entry points:

- `group_contrast`: a cohort comparison with any design over the sample metadata, e.g.
  `~ celltype + dex`, contrast `("dex", "treated", "control")`;
- `n_of_one`: the paper's baseline, one case sample against a set of controls, `~ group`.

Both return R's `results()` columns (`baseMean, log2FoldChange, lfcSE, stat, pvalue, padj`, LFCs
unshrunk, the Wald test) with R's NAs kept as NaN: all-zero genes (everything but baseMean),
Cook's outliers (pvalue, padj) and genes removed by independent filtering (padj).

pydeseq2 0.5.4 runs every step (size factors, gene-wise dispersions, MAP dispersions, GLM fits,
Cook's distances, outlier replacement for cells of >= 7 replicates, the Wald test, Cook's
filtering). Where it departs from R DESeq2 1.38 we follow R (tests/test_realdata_deseq2.py): the
dispersion trend, the dispersion prior with few residual degrees of freedom and independent
filtering are R's, ported in `nofone.baselines.r_deseq2` (which says how far each departs);
and R's `cleanContrast`: genes whose counts are all zero in the two compared levels (but not
elsewhere) get LFC 0, stat 0 and p-value 1 (392 genes on GSE60450).

Known remaining differences: pydeseq2's optimisers for gene-wise dispersions and GLM
coefficients are not R's (line search with its "no increase: keep the start" rule; R's `optim`
fallback for coefficients that run off to infinity: on GSE60450 two genes of mean < 1 with all
zeros in one level get R's LFC of +-16 and p ~ 1e-5 where pydeseq2 gives a finite LFC and p > 0.3).
With all of the above, pydeseq2 stays within about 1.5% of R's lfcSE.

pydeseq2 prints progress unless told not to: every call here passes `quiet=True` and turns its
warnings into debug log lines, so nothing reaches the user's terminal or the pipeline logs.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from nofone.baselines.r_deseq2 import r_dispersion_prior, r_independent_filtering, r_parametric_dispersion_fit
from nofone.errors import InputError

log = logging.getLogger(__name__)

RESULT_COLUMNS = ("baseMean", "log2FoldChange", "lfcSE", "stat", "pvalue", "padj")
#: The factor and its levels that `n_of_one` builds: design `~ group`, contrast case vs control.
GROUP, CASE, CONTROL = "group", "case", "control"
MIN_PER_LEVEL = 2


@dataclass
class DeseqFit:
    """What one DESeq2 run gives: R's results table plus what the callers report beside it."""

    results: pd.DataFrame  # genes x RESULT_COLUMNS, in the order of the count columns
    size_factors: pd.Series  # per sample (median of ratios)
    dispersions: pd.Series  # per gene, DESeq2's final dispersion alpha (NaN for all-zero genes)
    normed_means: pd.Series  # per gene, mean of the normalised counts of the reference level's samples


def default_n_cpus() -> int:
    """CPUs for pydeseq2: `--threads` of the CLI (torch's thread count or OMP_NUM_THREADS), else all."""
    torch = sys.modules.get("torch")
    if torch is not None:
        return max(1, int(torch.get_num_threads()))
    value = os.environ.get("OMP_NUM_THREADS", "")
    if value.isdigit() and int(value) > 0:
        return int(value)
    return os.cpu_count() or 1


def group_contrast(counts: pd.DataFrame, metadata: pd.DataFrame, design: str,
                   contrast: Sequence[str], alpha: float = 0.05, n_cpus: int | None = None) -> pd.DataFrame:
    """DESeq2 `results(dds, contrast=c(factor, level, reference), alpha=alpha)` for a cohort.

    `counts`: samples x genes (index: sample ids); `metadata`: indexed by sample id, at least the
    samples of `counts`; `design`: a formula over metadata columns (`"~ celltype + dex"`). Text
    columns are categorical factors; numeric columns are covariates unless wrapped in `C()`; the
    contrast factor is always categorical. Returns genes x RESULT_COLUMNS (the size factors are
    in `.attrs["size_factors"]`, a dict sample -> size factor).
    """
    fit = fit_contrast(counts, metadata, design, contrast, alpha, n_cpus)
    fit.results.attrs["size_factors"] = {s: float(v) for s, v in fit.size_factors.items()}
    return fit.results


def n_of_one(case: pd.Series, controls: pd.DataFrame, alpha: float = 0.05,
             n_cpus: int | None = None) -> pd.DataFrame:
    """One case sample against controls (`~ group`, case vs control), as in the paper's baseline.

    `case`: one sample's counts indexed by gene (its name is the sample id); `controls`: controls
    x genes, the same genes. Returns genes x (`count`, `normal_mean`, `dispersion`, RESULT_COLUMNS):
    `normal_mean` is the controls' mean normalised count times the case's size factor (the count
    DESeq2 expects for the case were it a control), `dispersion` DESeq2's final alpha. Size
    factors are in `.attrs["size_factors"]` (a dict sample -> size factor, the case first).
    """
    name = str(case.name) if case.name is not None else "case"
    if len(controls) < MIN_PER_LEVEL:
        raise InputError(f"{name}: DESeq2 needs at least {MIN_PER_LEVEL} controls, got {len(controls)}")
    if name in set(map(str, controls.index)):
        raise InputError(f"{name}: the case sample is also among its controls")
    if not case.index.equals(controls.columns):
        raise InputError(f"{name}: the case and its controls do not have the same genes in the same order")
    counts = pd.concat([case.to_frame(name).T, controls])
    counts.index = counts.index.astype(str)
    metadata = pd.DataFrame({GROUP: [CASE] + [CONTROL] * len(controls)}, index=counts.index)
    fit = fit_contrast(counts, metadata, f"~ {GROUP}", (GROUP, CASE, CONTROL), alpha, n_cpus, min_case=1)
    table = pd.DataFrame({
        "count": case.to_numpy(dtype=np.int64),
        "normal_mean": fit.normed_means.to_numpy() * fit.size_factors.iloc[0],
        "dispersion": fit.dispersions.to_numpy(),
    }, index=fit.results.index)
    table = pd.concat([table, fit.results], axis=1)
    table.attrs["size_factors"] = {s: float(v) for s, v in fit.size_factors.items()}
    return table


def fit_contrast(counts: pd.DataFrame, metadata: pd.DataFrame, design: str, contrast: Sequence[str],
                 alpha: float = 0.05, n_cpus: int | None = None, *, min_case: int = MIN_PER_LEVEL) -> DeseqFit:
    """Run DESeq2 and its Wald test for one contrast; see `group_contrast` for the arguments.

    `min_case`: samples needed at the tested level (1 for an n-of-one comparison); the reference
    level always needs at least 2.
    """
    from pydeseq2.dds import DeseqDataSet
    from pydeseq2.ds import DeseqStats
    from threadpoolctl import threadpool_limits

    if not 0 < alpha < 1:
        raise InputError(f"alpha must lie strictly between 0 and 1, got {alpha}")
    counts = _check_counts(counts)
    metadata, factor, level, reference = _prepare_metadata(counts, metadata, design, contrast, min_case)
    n_cpus = n_cpus or default_n_cpus()
    # one BLAS thread: pydeseq2 runs thousands of tiny per-gene optimisations, and in-process
    # (n_cpus=1) a multi-threaded BLAS made them 8x slower; its loky workers already use one
    with threadpool_limits(limits=1), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            dds = DeseqDataSet(counts=counts, metadata=metadata, design=design, refit_cooks=True,
                               min_replicates=7, n_cpus=n_cpus, quiet=True)
        except ValueError as exc:  # rank-deficient design, NaN in the design matrix
            raise InputError(f"design {design!r}: {exc}") from None
        _deseq2(dds)
        stats = DeseqStats(dds, contrast=[factor, level, reference], alpha=alpha, cooks_filter=True,
                           independent_filter=False, quiet=True, n_cpus=n_cpus)
        stats.summary()
    for warning in caught:
        log.debug("pydeseq2: %s", warning.message)
    results = stats.results_df.loc[:, list(RESULT_COLUMNS)].copy()
    # R's cleanContrast: genes with only zeros in the two compared levels (but counts elsewhere)
    # get LFC 0, stat 0 and p-value 1 (unless a Cook's outlier), not an LFC fitted to nothing
    compared = metadata[factor].astype(str).isin([level, reference]).to_numpy()
    contrast_zero = (counts.to_numpy()[compared] == 0).all(axis=0) & (results["baseMean"].to_numpy() > 0)
    if contrast_zero.any():
        outlier = np.asarray(dds.var["_pvalue_cooks_outlier"], dtype=bool)
        results.loc[contrast_zero, ["log2FoldChange", "stat"]] = 0.0
        results.loc[contrast_zero & ~outlier, "pvalue"] = 1.0
    results["padj"] = r_independent_filtering(results["baseMean"].to_numpy(), results["pvalue"].to_numpy(), alpha)
    results.index.name = "gene_id"
    size_factors = pd.Series(np.asarray(dds.obs["size_factors"], dtype=float), index=counts.index,
                             name="size_factor")
    dispersions = pd.Series(np.asarray(dds.var["dispersions"], dtype=float), index=counts.columns)
    dispersions[results["baseMean"].to_numpy() == 0] = np.nan
    reference_rows = (metadata[factor].astype(str) == reference).to_numpy()
    normed = counts.to_numpy(dtype=float)[reference_rows] / size_factors.to_numpy()[reference_rows, None]
    normed_means = pd.Series(normed.mean(axis=0), index=counts.columns)
    return DeseqFit(results, size_factors, dispersions, normed_means)


def _deseq2(dds) -> None:
    """pydeseq2's `DeseqDataSet.deseq2()` with R's dispersion trend and prior variance (see the module docstring)."""
    dds.fit_size_factors()
    dds.fit_genewise_dispersions()
    dds.fit_dispersion_trend()
    nonzero = dds.non_zero_idx
    means = dds.var["_normed_means"].to_numpy()[nonzero]
    genewise = dds.var["genewise_dispersions"].to_numpy()[nonzero]
    use = genewise > 100 * dds.min_disp
    coefficients = r_parametric_dispersion_fit(means[use], genewise[use]) if use.any() else None
    if coefficients is None:
        log.warning("DESeq2: the parametric dispersion trend did not fit (R would switch to a local fit); "
                    "using pydeseq2's %s trend", dds.uns.get("disp_function_type"))
    else:
        dds.uns["trend_coeffs"] = pd.Series(coefficients, index=["a0", "a1"])
        dds.uns["disp_function_type"] = "parametric"
        fitted = np.full(dds.n_vars, np.nan)
        fitted[nonzero] = coefficients[0] + coefficients[1] / means
        dds.var["fitted_dispersions"] = fitted
    squared_logres, prior_var = r_dispersion_prior(
        dds.var["genewise_dispersions"].to_numpy()[dds.non_zero_idx],
        dds.var["fitted_dispersions"].to_numpy()[dds.non_zero_idx],
        n_samples=dds.n_obs, n_coefficients=dds.obsm["design_matrix"].shape[1], min_disp=dds.min_disp)
    dds.uns["_squared_logres"] = squared_logres
    dds.uns["prior_disp_var"] = np.asarray(prior_var)
    dds.fit_MAP_dispersions()
    dds.fit_LFC()
    dds.calculate_cooks()
    if dds.refit_cooks:
        dds.refit()
    dds.cooks_outlier()


def _check_counts(counts: pd.DataFrame) -> pd.DataFrame:
    if counts.shape[0] == 0 or counts.shape[1] == 0:
        raise InputError(f"DESeq2 needs samples and genes, got a {counts.shape[0]} x {counts.shape[1]} count table")
    counts = counts.copy()
    counts.index = counts.index.astype(str)
    counts.columns = counts.columns.astype(str)
    if counts.index.duplicated().any():
        raise InputError(f"duplicate sample ids {sorted(set(counts.index[counts.index.duplicated()]))[:5]}")
    values = counts.to_numpy()
    if not np.issubdtype(values.dtype, np.number) or np.isnan(values.astype(float)).any():
        raise InputError("counts must be numbers without missing values")
    if (values < 0).any() or (np.round(values) != values).any():
        raise InputError("DESeq2 needs non-negative integer counts (round estimated counts first)")
    return counts.astype(np.int64)


def design_variables(design: str) -> list[str]:
    """Metadata columns a design formula uses (`"~ celltype + dex"` -> celltype, dex)."""
    from formulaic import Formula

    text = design.strip()
    if not text.startswith("~"):
        text = "~ " + text
    try:
        return sorted(Formula(text).required_variables)
    except Exception as exc:  # formulaic raises its own parser errors
        raise InputError(f"cannot parse the design {design!r}: {exc}") from None


def _prepare_metadata(counts: pd.DataFrame, metadata: pd.DataFrame, design: str, contrast: Sequence[str],
                      min_case: int) -> tuple[pd.DataFrame, str, str, str]:
    if len(contrast) != 3:
        raise InputError(f"a contrast is (factor, level, reference), got {list(contrast)}")
    factor, level, reference = (str(c) for c in contrast)
    metadata = metadata.copy()
    metadata.index = metadata.index.astype(str)
    missing = [s for s in counts.index if s not in metadata.index]
    if missing:
        raise InputError(f"samples {missing[:5]} have counts but no metadata")
    metadata = metadata.loc[counts.index]
    variables = design_variables(design)
    unknown = [v for v in variables if v not in metadata.columns]
    if unknown:
        raise InputError(f"design {design!r} uses unknown column(s) {unknown}; the sample metadata has "
                         f"{[c for c in metadata.columns if c != 'sample_id']}")
    if factor not in variables:
        raise InputError(f"contrast factor {factor!r} is not in the design {design!r}")
    metadata = metadata[variables]
    for column in variables:
        empty = metadata[column].isna()
        if empty.any():
            raise InputError(f"column {column!r} of the design is empty for samples {list(metadata.index[empty][:5])}")
        if column == factor or not pd.api.types.is_numeric_dtype(metadata[column]) \
                or pd.api.types.is_bool_dtype(metadata[column]):
            metadata[column] = metadata[column].astype(str)
    values = metadata[factor]
    levels = sorted(set(values))
    if level == reference:
        raise InputError(f"contrast compares {factor!r} level {level!r} with itself")
    for name, needed in ((level, min_case), (reference, MIN_PER_LEVEL)):
        n = int((values == name).sum())
        if n == 0:
            raise InputError(f"contrast level {name!r} is absent from column {factor!r} (levels: {levels})")
        if n < needed:
            raise InputError(f"contrast level {name!r} of {factor!r} has {n} sample(s); DESeq2 needs at least {needed}")
    # the reference first, as R's relevel(): the contrast is then one coefficient of the design
    metadata[factor] = pd.Categorical(values, categories=[reference] + [v for v in levels if v != reference])
    return metadata, factor, level, reference
