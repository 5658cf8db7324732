"""A linear head fitted to one DE profile on a frozen trunk, and the significance of every
regulator's mean attribution under a within-chromosome permutation null.

The head reads the trunk's units and, through a linear skip, the features themselves, so that a
regulator the tissue model never needed can still explain a profile, and hinges of the
structure features (`nofone.regulators.basis`), so that curved length and GC effects are not
left for GC-rich promoters' regulators to explain. It is a weighted ridge
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

from dataclasses import dataclass, field

import numpy as np
from scipy.stats import norm, spearmanr

from nofone.regulators.basis import HingeBasis
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
    basis: HingeBasis = field(default_factory=HingeBasis.empty)  # hinges of the structure features
    basis_values: np.ndarray | None = None  # [G, B]
    basis_link: np.ndarray | None = None  # [F, B]

    @classmethod
    def build(cls, units: np.ndarray, scaled: np.ndarray, unit_means: np.ndarray, reference: np.ndarray,
              strata: np.ndarray, structure: np.ndarray) -> HeadInputs:
        """Inputs with the hinges of the `structure` columns (bool [F]) at their quartiles."""
        basis = HingeBasis.at_quantiles(scaled, structure)
        return cls(units, scaled, unit_means, (scaled - reference).astype(np.float64).mean(0), strata, basis,
                   basis.values(scaled), basis.link(scaled, reference))

    def features_only(self) -> HeadInputs:
        return HeadInputs(self.units[:, :0], self.scaled, self.unit_means[:0], self.deviation_mean, self.strata,
                          self.basis, self.basis_values, self.basis_link)

    def subset(self, rows: np.ndarray) -> HeadInputs:
        """The same inputs on some of the genes (the attributions stay averaged over all)."""
        values = None if self.basis_values is None else self.basis_values[rows]
        return HeadInputs(self.units[rows], self.scaled[rows], self.unit_means, self.deviation_mean,
                          self.strata[rows], self.basis, values, self.basis_link)

    def hinge_values(self) -> np.ndarray:
        return np.zeros((len(self.scaled), 0)) if self.basis_values is None else self.basis_values

    def hinge_link(self) -> np.ndarray:
        return np.zeros((self.scaled.shape[1], 0)) if self.basis_link is None else self.basis_link


@dataclass
class ProfileFit:
    penalty: float  # chosen multiple of the mean Gram diagonal
    intercept: float
    unit_weights: np.ndarray  # [K], raw units
    feature_weights: np.ndarray  # [F], raw scaled features
    basis: HingeBasis
    hinge_weights: np.ndarray  # [B]
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
        return (self.intercept + units @ self.unit_weights + scaled @ self.feature_weights
                + self.basis.values(scaled) @ self.hinge_weights)


def fit_profile(inputs: HeadInputs, y: np.ndarray, weights: np.ndarray, seed: int = 0,
                penalty: float | None = None) -> ProfileFit:
    """Fit the head to profile `y` (one value per gene) with gene weights, and test every feature.

    `penalty` (a multiple of the mean Gram diagonal) fixes the ridge penalty instead of choosing
    it by cross-validation.
    """
    y = np.asarray(y, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.mean()
    design = np.hstack([inputs.units, inputs.scaled, inputs.hinge_values()]).astype(np.float64)
    n_units, n_features = inputs.units.shape[1], inputs.scaled.shape[1]
    centre = w @ design / w.sum()
    spread = np.sqrt(w @ (design - centre) ** 2 / w.sum())
    usable = spread > 1e-9 * max(1.0, float(spread.max()))
    spread = np.where(usable, spread, np.inf)
    standard = (design - centre) / spread  # unusable columns become 0
    folds = _folds(inputs.strata, seed)
    gram = standard.T @ (standard * w[:, None])
    scale = float(np.trace(gram)) / max(int(usable.sum()), 1)
    fold_fits = _fold_fits(standard, y, w, folds)
    if penalty is None:
        penalty = _choose_penalty(standard, y, w, fold_fits, scale)
    heldout = _heldout(standard, y, fold_fits, penalty * scale)
    ridge = gram + penalty * scale * np.eye(len(gram))
    y_mean = float(w @ y / w.sum())
    beta = np.linalg.solve(ridge, standard.T @ (w * (y - y_mean)))
    raw = beta / spread
    # stat = L raw; L maps the head's weights to mean attributions
    link = np.hstack([inputs.unit_means.T, np.diag(inputs.deviation_mean), inputs.hinge_link()])
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
        unit_weights=raw[:n_units], feature_weights=raw[n_units:n_units + n_features], basis=inputs.basis,
        hinge_weights=raw[n_units + n_features:], attribution=stat,
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


@dataclass
class _FoldFit:
    """A fold's training genes, re-centred, in the eigenbasis of their Gram matrix: the ridge
    solution for any penalty is then a rescaling."""

    test: np.ndarray
    values: np.ndarray
    vectors: np.ndarray
    projected: np.ndarray
    y_mean: float
    centre: np.ndarray

    def predict(self, standard: np.ndarray, penalty: float) -> np.ndarray:
        beta = self.vectors @ (self.projected / (self.values + penalty))
        return self.y_mean + (standard[self.test] - self.centre) @ beta


def _fold_fits(standard: np.ndarray, y: np.ndarray, w: np.ndarray, folds: np.ndarray) -> list[_FoldFit]:
    """Each fold's training fit from sums over the folds (one pass over the genes, not one per fold)."""
    present = [f for f in range(FOLDS) if (folds == f).any()]
    sums = {}
    for f in present:
        rows = folds == f
        d, wt, v = standard[rows], w[rows], y[rows]
        sums[f] = (d.T @ (d * wt[:, None]), d.T @ wt, wt.sum(), d.T @ (wt * v), wt @ v)
    total = [sum(parts) for parts in zip(*sums.values())]
    fits = []
    for f in present:
        gram, first, weight, cross, y_sum = (t - part for t, part in zip(total, sums[f]))
        centre, y_mean = first / weight, float(y_sum / weight)
        values, vectors = np.linalg.eigh(gram - weight * np.outer(centre, centre))
        projected = vectors.T @ (cross - weight * centre * y_mean)
        fits.append(_FoldFit(folds == f, values, vectors, projected, y_mean, centre))
    return fits


def _choose_penalty(standard: np.ndarray, y: np.ndarray, w: np.ndarray, fits: list[_FoldFit], scale: float) -> float:
    errors = [sum(w[f.test] @ (y[f.test] - f.predict(standard, a * scale)) ** 2 for f in fits) for a in PENALTIES]
    return PENALTIES[int(np.argmin(errors))]


def _heldout(standard: np.ndarray, y: np.ndarray, fits: list[_FoldFit], penalty: float) -> np.ndarray:
    prediction = np.zeros(len(y))
    for f in fits:
        prediction[f.test] = f.predict(standard, penalty)
    return prediction
