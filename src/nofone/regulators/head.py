"""A linear head fitted to one DE profile on a frozen trunk, and the significance of every
regulator's mean attribution under a within-chromosome permutation null.

The head reads the trunk's units and, through a linear skip, the features themselves, so that a
regulator the tissue model never needed can still explain a profile. It is a weighted ridge
regression (columns standardised, one penalty chosen by chromosome-grouped cross-validation),
so for a fixed penalty every coefficient, and with it DeepLIFT's mean attribution of every
feature (`nofone.regulators.attribution`: the head's weights times the mean attributions to the
units, plus the skip weight times the mean deviation from the reference), is a linear function
of the profile: stat = C^T y.

The null: the profile shuffled among genes within each chromosome and the head refitted. For a
linear statistic its permutation mean and variance are exact in closed form (the moments of a
linear permutation statistic), so "the head refitted" over every permutation costs one matrix
product, and a normal approximation gives the p-value (Hajek's combinatorial central limit
theorem; the simulator's false-positive checks keep it honest). Gene weights stay with their
genes under permutation (a gene's measurement precision is a property of the gene).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import norm, spearmanr

from nofone.stats.multiple_testing import bh_adjust

#: Ridge penalties tried, as multiples of the mean diagonal of the weighted Gram matrix.
PENALTIES = tuple(float(a) for a in np.logspace(-4, 2, 13))
FOLDS = 5


@dataclass
class HeadInputs:
    """What the fit needs that does not depend on the profile (one per gene set and trunk)."""

    units: np.ndarray  # [G, K] trunk outputs (K = 0 for a features-only head)
    scaled: np.ndarray  # [G, F] scaled features
    unit_means: np.ndarray  # [K, F] mean DeepLIFT attribution of each feature to each unit
    deviation_mean: np.ndarray  # [F] mean over the genes of (scaled - reference)
    strata: np.ndarray  # [G] chromosome of each gene

    def features_only(self) -> HeadInputs:
        return HeadInputs(self.units[:, :0], self.scaled, self.unit_means[:0], self.deviation_mean, self.strata)


@dataclass
class ProfileFit:
    penalty: float  # chosen multiple of the mean Gram diagonal
    intercept: float
    unit_weights: np.ndarray  # [K], raw units
    feature_weights: np.ndarray  # [F], raw scaled features
    attribution: np.ndarray  # [F] mean DeepLIFT attribution over the genes (profile units)
    null_mean: np.ndarray
    null_sd: np.ndarray
    z: np.ndarray
    p_value: np.ndarray
    q_value: np.ndarray
    heldout_prediction: np.ndarray  # [G] from heads that did not see the gene's chromosome group
    heldout_spearman: float
    fitted_spearman: float

    def predict(self, units: np.ndarray, scaled: np.ndarray) -> np.ndarray:
        return self.intercept + units @ self.unit_weights + scaled @ self.feature_weights


def fit_profile(inputs: HeadInputs, y: np.ndarray, weights: np.ndarray, seed: int = 0,
                penalty: float | None = None) -> ProfileFit:
    """Fit the head to profile `y` (one value per gene) with gene weights, and test every feature.

    `penalty` (a multiple of the mean Gram diagonal) fixes the ridge penalty instead of choosing
    it by cross-validation.
    """
    y = np.asarray(y, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.mean()
    design = np.hstack([inputs.units, inputs.scaled]).astype(np.float64)
    n_units = inputs.units.shape[1]
    centre = w @ design / w.sum()
    spread = np.sqrt(w @ (design - centre) ** 2 / w.sum())
    usable = spread > 1e-9 * max(1.0, float(spread.max()))
    spread = np.where(usable, spread, np.inf)
    standard = (design - centre) / spread  # unusable columns become 0
    folds = _folds(inputs.strata, seed)
    gram = standard.T @ (standard * w[:, None])
    scale = float(np.trace(gram)) / max(int(usable.sum()), 1)
    if penalty is None:
        penalty = _choose_penalty(standard, y, w, folds, scale)
    heldout = _heldout(standard, y, w, folds, penalty * scale)
    ridge = gram + penalty * scale * np.eye(len(gram))
    y_mean = float(w @ y / w.sum())
    beta = np.linalg.solve(ridge, standard.T @ (w * (y - y_mean)))
    raw = beta / spread
    # stat = L raw; L maps the head's weights to mean attributions
    link = np.hstack([inputs.unit_means.T, np.diag(inputs.deviation_mean)])
    contributions = (standard * w[:, None]) @ np.linalg.solve(ridge, (link / spread[None, :]).T)  # [G, F]
    stat = contributions.T @ y
    null_mean, null_var = permutation_moments(contributions, y, inputs.strata)
    null_sd = np.sqrt(np.maximum(null_var, 0))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(null_sd > 0, (stat - null_mean) / null_sd, 0.0)
    p = 2 * norm.sf(np.abs(z))
    fitted = y_mean + standard @ beta
    return ProfileFit(
        penalty=penalty, intercept=float(y_mean - centre[usable] @ raw[usable]),
        unit_weights=raw[:n_units], feature_weights=raw[n_units:], attribution=stat,
        null_mean=null_mean, null_sd=null_sd, z=z, p_value=p, q_value=bh_adjust(p),
        heldout_prediction=heldout, heldout_spearman=_spearman(heldout, y),
        fitted_spearman=_spearman(fitted, y),
    )


def permutation_moments(contributions: np.ndarray, y: np.ndarray, strata: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Exact mean and variance of sum_g c_gj y_pi(g) over permutations pi within each stratum:
    mean = sum_s n_s cbar_s ybar_s, variance = sum_s S_cc,s S_yy,s / (n_s - 1)."""
    mean = np.zeros(contributions.shape[1])
    var = np.zeros(contributions.shape[1])
    for stratum in np.unique(strata):
        rows = np.flatnonzero(strata == stratum)
        if len(rows) < 2:
            mean += contributions[rows].sum(0) * y[rows].mean()
            continue
        c, v = contributions[rows], y[rows]
        mean += len(rows) * c.mean(0) * v.mean()
        var += ((c - c.mean(0)) ** 2).sum(0) * ((v - v.mean()) ** 2).sum() / (len(rows) - 1)
    return mean, var


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    if np.std(a) == 0 or np.std(b) == 0:
        return 0.0
    return float(spearmanr(a, b).statistic)


def _folds(strata: np.ndarray, seed: int) -> np.ndarray:
    """Fold of each gene: whole chromosomes in FOLDS groups of similar size, or random folds
    when there are too few chromosomes (a test set on chromosome 1 alone)."""
    labels, counts = np.unique(strata, return_counts=True)
    fold = np.empty(len(strata), dtype=np.int64)
    if len(labels) < FOLDS:
        fold[:] = np.random.default_rng(seed).permutation(len(strata)) % FOLDS
        return fold
    load = np.zeros(FOLDS)
    for i in np.argsort(-counts, kind="stable"):
        target = int(np.argmin(load))
        fold[strata == labels[i]] = target
        load[target] += counts[i]
    return fold


def _solve_path(standard: np.ndarray, y: np.ndarray, w: np.ndarray, train: np.ndarray, penalties: list[float]
                ) -> list[tuple[np.ndarray, float, np.ndarray]]:
    """Weighted ridge on the `train` rows (re-centred there) for each penalty: (beta, y mean, centre)."""
    d, v, wt = standard[train], y[train], w[train]
    centre = wt @ d / wt.sum()
    y_mean = float(wt @ v / wt.sum())
    dc = d - centre
    gram = dc.T @ (dc * wt[:, None])
    cross = dc.T @ (wt * (v - y_mean))
    values, vectors = np.linalg.eigh(gram)
    projected = vectors.T @ cross
    return [(vectors @ (projected / (values + lam)), y_mean, centre) for lam in penalties]


def _choose_penalty(standard: np.ndarray, y: np.ndarray, w: np.ndarray, folds: np.ndarray, scale: float) -> float:
    errors = np.zeros(len(PENALTIES))
    for f in range(FOLDS):
        test = folds == f
        if not test.any():
            continue
        path = _solve_path(standard, y, w, ~test, [a * scale for a in PENALTIES])
        for i, (beta, y_mean, centre) in enumerate(path):
            residual = y[test] - (y_mean + (standard[test] - centre) @ beta)
            errors[i] += w[test] @ residual**2
    return PENALTIES[int(np.argmin(errors))]


def _heldout(standard: np.ndarray, y: np.ndarray, w: np.ndarray, folds: np.ndarray, penalty: float) -> np.ndarray:
    prediction = np.zeros(len(y))
    for f in range(FOLDS):
        test = folds == f
        if not test.any():
            continue
        (beta, y_mean, centre), = _solve_path(standard, y, w, ~test, [penalty])
        prediction[test] = y_mean + (standard[test] - centre) @ beta
    return prediction
