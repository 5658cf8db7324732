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
filtering). Where it departs from R DESeq2 1.38 we follow R (tests/test_realdata_deseq2.py):

- dispersion trend: R's `parametricDispersionFit` (genes with dispersion > 100 min_disp, the
  (1e-4, 15) band reselected from all of them at every round). pydeseq2 starts from every gene
  and drops genes for good; on airway it gave a0, a1 = 0.0106, 2.47 against R-style 0.0094, 3.48;
- dispersion prior variance with 1 to 3 residual degrees of freedom (airway `~ celltype + dex`;
  an n-of-one with 2 to 4 controls): R's KL matching to simulated log chi-square residuals
  instead of MAD^2 - trigamma (airway: 0.57 against pydeseq2's 0.25);
- independent filtering: R's `pvalueAdjustment` with R's `lowess` (`r_lowess`, a port of the C
  `clowess`). pydeseq2's own lowess picks another filter threshold on GSE60450 (fed R's
  p-values it changes 1.5% of the padj NA mask); ours reproduces R's padj from R's p-values to
  2e-15 on both reference sets;
- R's `cleanContrast`: genes whose counts are all zero in the two compared levels (but not
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


def r_parametric_dispersion_fit(means: np.ndarray, dispersions: np.ndarray) -> np.ndarray | None:
    """R DESeq2's `parametricDispersionFit`: (a0, a1) of alpha = a0 + a1 / mean, or None where R gives up.

    A Gamma GLM with identity link of the gene-wise dispersions on 1/mean, refitted on the genes
    whose dispersion lies within (1e-4, 15) times the current curve until the coefficients settle.
    pydeseq2 starts from every gene (also those at the minimum dispersion) and drops genes for
    good once they fall outside; R reselects them from all genes at every round.
    """
    coefs = np.array([0.1, 1.0])
    for _ in range(11):
        ratio = dispersions / (coefs[0] + coefs[1] / means)
        good = (ratio > 1e-4) & (ratio < 15)
        if good.sum() < 2:
            return None
        new, converged = _gamma_identity_glm(np.column_stack([np.ones(good.sum()), 1 / means[good]]),
                                             dispersions[good], coefs)
        if new is None or not (new > 0).all():
            return None
        old, coefs = coefs, new
        if np.sum(np.log(coefs / old) ** 2) < 1e-6 and converged:
            return coefs
    return None


def _gamma_identity_glm(x: np.ndarray, y: np.ndarray, start: np.ndarray, max_iter: int = 25,
                        epsilon: float = 1e-8) -> tuple[np.ndarray | None, bool]:
    """R's `glm.fit` for `family = Gamma(link = "identity")` from `start` (IRLS with step halving)."""

    def deviance(mu: np.ndarray) -> float:
        return float(-2 * np.sum(np.log(np.where(y == 0, 1, y / mu)) - (y - mu) / mu))

    coef = np.asarray(start, dtype=float)
    mu = x @ coef
    if not (np.isfinite(mu).all() and (mu > 0).all()):
        return None, False
    dev_old = deviance(mu)
    for _ in range(max_iter):
        w = 1 / mu  # sqrt of the working weights 1 / V(mu) with V(mu) = mu^2
        new = np.linalg.lstsq(x * w[:, None], y * w, rcond=None)[0]
        mu_new = x @ new
        halvings = 0
        while not (np.isfinite(mu_new).all() and (mu_new > 0).all()):
            halvings += 1
            if halvings > 25:
                return None, False
            new = (new + coef) / 2
            mu_new = x @ new
        coef, mu = new, mu_new
        dev = deviance(mu)
        if abs(dev - dev_old) / (abs(dev) + 0.1) < epsilon:
            return coef, True
        dev_old = dev
    return coef, False


def r_dispersion_prior(genewise: np.ndarray, fitted: np.ndarray, n_samples: int, n_coefficients: int,
                       min_disp: float = 1e-8, seed: int = 2, draws: int = 100_000) -> tuple[float, float]:
    """R DESeq2's `estimateDispersionsMAP` prior: (MAD^2 of log residuals, prior variance of log dispersion).

    pydeseq2 always takes MAD^2 - trigamma(df/2) (floored at 0.25) over genes with dispersion
    >= 100 min_disp. So does R, except with 1 to 3 residual degrees of freedom
    (airway's `~ celltype + dex`: 8 samples, 5 coefficients; an n-of-one with 2 to 4 controls),
    where the MAD is a poor estimate, matches the histogram of the log residuals to simulated
    log(chi2_df / df) + N(0, v) by KL divergence over v in [0, 8], smooths the KL curve with
    loess (span 0.2) and takes its minimum. R draws 10^4 values per v from its own generator
    (seed 2), which we cannot reproduce; we draw 10^5 so that our estimate sits closer to the
    expectation R's draw scatters around.
    """
    from scipy.special import polygamma

    residuals = np.log(genewise) - np.log(fitted)
    use = (genewise >= 100 * min_disp) & np.isfinite(residuals)
    if not use.any():
        raise InputError("every gene's dispersion estimate is at its minimum: DESeq2 cannot fit a prior")
    values = residuals[use]
    mad = float(np.median(np.abs(values - np.median(values))) * 1.482602218505602)
    squared = mad**2
    df = n_samples - n_coefficients
    if df <= 0:
        return squared, squared
    expected = float(polygamma(1, df / 2))
    if df > 3:
        return squared, max(squared - expected, 0.25)
    def density(x: np.ndarray) -> np.ndarray:  # hist(x, breaks = -20:20/2)$density over (-10, 10)
        x = x[(x > -10) & (x < 10)]
        bins = np.clip(np.ceil((x + 10) * 2).astype(np.int64) - 1, 0, 39)  # R's intervals are (a, b]
        return np.bincount(bins, minlength=40) / (len(x) * 0.5)

    obs_density = density(values)
    grid = np.linspace(0, 8, 200)
    rng = np.random.default_rng(seed)
    kl = np.empty(len(grid))
    base = np.log(rng.chisquare(df, draws)) - np.log(df)
    noise = rng.standard_normal(draws)
    for i, v in enumerate(grid):
        sim_density = density(base + noise * np.sqrt(v))
        both = np.concatenate([obs_density, sim_density])
        small = both[both > 0].min()
        kl[i] = np.sum(obs_density * (np.log(obs_density + small) - np.log(sim_density + small)))
    fine = np.linspace(0, 8, 1000)
    argmin = float(fine[np.argmin(local_quadratic(grid, kl, fine, span=0.2))])
    return squared, max(argmin, 0.25)


def local_quadratic(x: np.ndarray, y: np.ndarray, at: np.ndarray, span: float) -> np.ndarray:
    """loess(y ~ x, span, degree = 2) evaluated at `at` (direct fit, tricube weights)."""
    q = max(3, int(np.floor(span * len(x))))
    out = np.empty(len(at))
    for i, x0 in enumerate(at):
        distance = np.abs(x - x0)
        nearest = np.argsort(distance, kind="stable")[:q]
        h = distance[nearest].max()
        w = (1 - np.clip(distance[nearest] / h, 0, 1) ** 3) ** 3
        design = np.vander(x[nearest] - x0, 3, increasing=True)
        sw = np.sqrt(w)
        coef = np.linalg.lstsq(design * sw[:, None], y[nearest] * sw, rcond=None)[0]
        out[i] = coef[0]
    return out


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


def r_independent_filtering(base_mean: np.ndarray, pvalue: np.ndarray, alpha: float, n_theta: int = 50) -> np.ndarray:
    """R DESeq2's `pvalueAdjustment` (independent filtering on the mean, BH): adjusted p-values.

    Genes whose mean of normalised counts lies below the chosen quantile get NaN, as in R.
    """
    base_mean = np.asarray(base_mean, dtype=float)
    pvalue = np.asarray(pvalue, dtype=float)
    lower = float(np.mean(base_mean == 0))
    upper = 0.95 if lower < 0.95 else 1.0
    theta = np.linspace(lower, upper, n_theta)
    cutoffs = np.quantile(base_mean, theta)  # R's quantile type 7
    adjusted = np.full((len(base_mean), n_theta), np.nan)
    for i, cutoff in enumerate(cutoffs):  # genefilter::filtered_p
        use = base_mean >= cutoff
        if use.any():
            adjusted[use, i] = bh(pvalue[use])
    with np.errstate(invalid="ignore"):
        n_rejected = (adjusted < alpha).sum(axis=0)
    fitted = r_lowess(theta, n_rejected.astype(float), f=1 / 5)
    if n_rejected.max() <= 10:
        j = 0
    else:
        residual = n_rejected[n_rejected > 0] - fitted[n_rejected > 0] if (n_rejected > 0).any() else np.zeros(1)
        threshold = fitted.max() - np.sqrt(np.mean(residual**2))
        above = np.flatnonzero(n_rejected > threshold)
        j = int(above[0]) if len(above) else 0
    return adjusted[:, j]


def bh(p: np.ndarray) -> np.ndarray:
    """R's `p.adjust(p, "BH")`: NaN stays NaN and does not count."""
    p = np.asarray(p, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    values = p[ok]
    n = len(values)
    if n == 0:
        return out
    order = np.argsort(values)[::-1]
    ranks = np.arange(n, 0, -1)
    adjusted = np.minimum.accumulate(values[order] * n / ranks)
    result = np.empty(n)
    result[order] = np.minimum(adjusted, 1.0)
    out[ok] = result
    return out


def r_lowess(x: np.ndarray, y: np.ndarray, f: float = 2 / 3, iterations: int = 3,
             delta: float | None = None) -> np.ndarray:
    """R's `lowess(x, y, f, iter)` (a port of R's C `clowess`); returns fitted y in the order of sorted x."""
    order = np.argsort(x, kind="stable")
    x = np.asarray(x, dtype=float)[order]
    y = np.asarray(y, dtype=float)[order]
    n = len(x)
    if n < 2:
        return y.copy()
    if delta is None:
        delta = 0.01 * (x[-1] - x[0])
    ns = max(2, min(n, int(f * n + 1e-7)))
    ys = np.zeros(n)
    rw = np.ones(n)
    res = np.zeros(n)
    for iteration in range(1, iterations + 2):
        nleft, nright, last, i = 0, ns - 1, -1, 0
        while True:
            if nright < n - 1 and x[i] - x[nleft] > x[nright + 1] - x[i]:
                nleft += 1
                nright += 1
                continue
            fitted = _lowest(x, y, x[i], nleft, nright, rw if iteration > 1 else None)
            ys[i] = y[i] if fitted is None else fitted
            if last < i - 1:
                denom = x[i] - x[last]
                for j in range(last + 1, i):
                    a = (x[j] - x[last]) / denom
                    ys[j] = a * ys[i] + (1 - a) * ys[last]
            last = i
            cut = x[last] + delta
            i = last + 1
            while i < n:
                if x[i] > cut:
                    break
                if x[i] == x[last]:
                    ys[i] = ys[last]
                    last = i
                i += 1
            i = max(last + 1, i - 1)
            if last >= n - 1:
                break
        res = y - ys
        scale = np.mean(np.abs(res))
        if iteration > iterations:
            break
        abs_res = np.sort(np.abs(res))
        m1 = n // 2
        cmad = 3.0 * (abs_res[m1] + abs_res[n - m1 - 1]) if n % 2 == 0 else 6.0 * abs_res[m1]
        if cmad < 1e-7 * scale:
            break
        r = np.abs(res)
        with np.errstate(divide="ignore", invalid="ignore"):  # cmad = 0 when every y is equal
            rw = np.where(r <= 0.001 * cmad, 1.0, np.where(r <= 0.999 * cmad, (1 - (r / cmad) ** 2) ** 2, 0.0))
    return ys


def _lowest(x: np.ndarray, y: np.ndarray, xs: float, nleft: int, nright: int,
            robustness: np.ndarray | None) -> float | None:
    """R's C `lowest`: the local linear fit at xs over points nleft..nright (and ties beyond)."""
    n = len(x)
    spread = x[-1] - x[0]
    h = max(xs - x[nleft], x[nright] - xs)
    h9, h1 = 0.999 * h, 0.001 * h
    w = np.zeros(n)
    total = 0.0
    j = nleft
    while j < n:
        r = abs(x[j] - xs)
        if r <= h9:
            w[j] = 1.0 if r <= h1 else (1 - (r / h) ** 3) ** 3
            if robustness is not None:
                w[j] *= robustness[j]
            total += w[j]
        elif x[j] > xs:
            break
        j += 1
    right = j - 1
    if total <= 0:
        return None
    span = slice(nleft, right + 1)
    weights = w[span] / total
    xw = x[span]
    if h > 0:
        centre = float(np.sum(weights * xw))
        b = xs - centre
        c = float(np.sum(weights * (xw - centre) ** 2))
        if np.sqrt(c) > 0.001 * spread:
            weights = weights * (b / c * (xw - centre) + 1.0)
    return float(np.sum(weights * y[span]))
