"""Ports of the R routines where Bioconductor DESeq2 1.38 (and R itself) and pydeseq2 0.5.4 part
ways, so that `nofone.baselines.deseq2` gives R's results (tests/test_realdata_deseq2.py):

- dispersion trend: R's `parametricDispersionFit` (genes with dispersion > 100 min_disp, the
  (1e-4, 15) band reselected from all of them at every round). pydeseq2 starts from every gene
  and drops genes for good; on airway it gave a0, a1 = 0.0106, 2.47 against R-style 0.0094, 3.48;
- dispersion prior variance with 1 to 3 residual degrees of freedom (airway `~ celltype + dex`;
  an n-of-one with 2 to 4 controls): R's KL matching to simulated log chi-square residuals
  instead of MAD^2 - trigamma (airway: 0.57 against pydeseq2's 0.25); its loess smoothing is
  `local_quadratic`;
- independent filtering: R's `pvalueAdjustment` with R's `lowess` (`r_lowess`, a port of the C
  `clowess`) and `p.adjust(method = "BH")` (`nofone.stats.multiple_testing.bh_adjust`).
  pydeseq2's own lowess picks another filter threshold on GSE60450 (fed R's p-values it changes
  1.5% of the padj NA mask); ours reproduces R's padj from R's p-values to 2e-15 on both
  reference sets.

numpy in, numpy out; nothing here knows pydeseq2.
"""

from __future__ import annotations

import numpy as np

from nofone.errors import InputError
from nofone.stats.multiple_testing import bh_adjust


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
            adjusted[use, i] = bh_adjust(pvalue[use])
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
