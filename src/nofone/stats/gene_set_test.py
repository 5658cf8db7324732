"""A self-contained gene-set test for one sample: do the set's genes deviate together?

Why this escapes the single-gene limit: a gene is callable only where fewer healthy people show
its change than the FDR allows, but a set of genes that all move a little the same way is rare in
healthy people, *provided the null knows how much healthy genes move together*. So the null is
not a permutation of genes (which assumes them independent) but the same statistic computed on
the calibration normals of the model's local null (`nofone.stats.local_null`: normals the model
never trained on, each scored against its own closest normal), which keeps the correlation of
healthy variation between genes.

Statistic: the mean of the set's genes' signed normal scores (`normal_scores`: mid-p NB score of
the count under the sample's closest normal, clipped +-6), after two adjustments made alike in
the sample and in every calibration normal: each one's mean score over all its genes is
subtracted (a set is tested for deviating more than the sample's genes at large: a tumour whose
every gene sits above its closest normal does not call every set), and the top `FACTORS`
principal axes of the calibration normals' scores are projected out (the few programmes healthy
people vary along together). Null location: the statistic's mean over all calibration normals;
null scale: the larger of its sd over all calibration normals and its RMS deviation (from that
mean) over the `k` calibration normals nearest to the sample (where the model covers a tissue
badly, sets vary more). p-value: two-sided t with k - 1 degrees of freedom; BH across the sets
of one sample. docs/pathways.md has the atlas figures behind each choice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from nofone.stats.local_null import SCORE_CLIP, LocalNull
from nofone.stats.multiple_testing import bh_adjust

#: Sets with fewer of their genes in the model than this are skipped (a mean of fewer genes is
#: a single-gene test in disguise, and its null sd is estimated from few genes' correlations).
MIN_GENES = 10
#: Calibration normals nearest to the sample whose spread bounds the null's scale from below.
NEIGHBOURS = 120
#: Genes named as driving a set (largest normal scores in the set's direction).
LEADING = 5
#: Gene weights: "equal" (the plain mean) or "inverse-sd" (each gene's score divided by its
#: healthy sd over the calibration normals, so that genes the model predicts well count more).
WEIGHTINGS = ("equal", "inverse-sd")
#: Principal axes of healthy variation (of the calibration normals' scores) projected out of every
#: sample's scores before the set means: the few programmes every healthy person varies along
#: (composition, stress) no longer move all their sets at once.
FACTORS = 3
#: The smallest healthy sd a gene's weight is taken from (genes with almost no spread in the
#: calibration normals would otherwise dominate).
SD_FLOOR = 0.5


@dataclass(frozen=True)
class SetTestOptions:
    """How the sets are tested (docs/pathways.md: the atlas figures of each)."""

    k: int = NEIGHBOURS
    weighting: str = "equal"
    local_scale: bool = True  # False: the global sd alone (calibrated on average, not per sample)
    centred: bool = True  # subtract each sample's mean score over its genes (a competitive test)
    clip: float = SCORE_CLIP  # scores clipped to +-clip (in the sample and its null alike)
    factors: int = FACTORS  # principal axes of the calibration normals' scores projected out of every sample's


@dataclass(frozen=True)
class SetTestResult:
    """Per sample and set [N, S]: the statistic (weighted mean score), its null location and
    scale, the standardised statistic, two-sided p and BH q within each sample."""

    statistic: np.ndarray
    location: np.ndarray
    scale: np.ndarray
    standardized: np.ndarray
    p_value: np.ndarray
    q_value: np.ndarray
    df: int
    adjusted: np.ndarray  # [N, G] the scores the statistic averages (after centring and factors)


def gene_weights(null: LocalNull, weighting: str) -> np.ndarray:
    """[G] the weight of each gene's score in a set mean."""
    if weighting not in WEIGHTINGS:
        raise ValueError(f"unknown weighting {weighting!r}; use one of {', '.join(WEIGHTINGS)}")
    n_genes = null.centre.shape[0]
    if weighting == "equal" or null.scores is None:
        return np.ones(n_genes)
    sd = np.asarray(null.scores, dtype=np.float64).std(0)
    return 1.0 / np.maximum(sd, SD_FLOOR)


def set_matrix(index: Sequence[np.ndarray], weights: np.ndarray, usable: np.ndarray | None = None) -> np.ndarray:
    """[S, G]: row s averages the set's usable genes with `weights` (rows sum to one; a set with
    no usable gene is a row of zeros)."""
    n_genes = weights.shape[0]
    usable = np.ones(n_genes, dtype=bool) if usable is None else usable
    out = np.zeros((len(index), n_genes))
    for s, genes in enumerate(index):
        genes = genes[usable[genes]]
        w = weights[genes]
        if w.sum() > 0:
            out[s, genes] = w / w.sum()
    return out


@dataclass(frozen=True)
class Calibration:
    """The calibration normals' scores as the test uses them (centred and with the healthy
    factors projected out as `SetTestOptions` asks), computed once per null."""

    scores: np.ndarray  # [J, G]
    gene_centre: np.ndarray  # [G] the calibration normals' mean score per gene (before projection)
    axes: np.ndarray  # [G, F] the healthy factors projected out

    @classmethod
    def of(cls, null: LocalNull, options: SetTestOptions) -> Calibration:
        if null.scores is None:
            raise ValueError("the local null has no calibration scores")
        scores = np.clip(np.asarray(null.scores, dtype=np.float64), -options.clip, options.clip)
        if options.centred:
            scores = scores - scores.mean(1, keepdims=True)
        gene_centre = scores.mean(0)
        axes = np.zeros((scores.shape[1], 0))
        if options.factors > 0:
            _, _, vt = np.linalg.svd(scores - gene_centre, full_matrices=False)
            axes = vt[:options.factors].T
            scores = scores - ((scores - gene_centre) @ axes) @ axes.T
        return cls(scores=scores, gene_centre=gene_centre, axes=axes)

    def adjust(self, z: np.ndarray, measured: np.ndarray, options: SetTestOptions) -> np.ndarray:
        """Samples' scores [N, G] transformed as the calibration normals' were (an unmeasured
        gene is taken at the calibration mean, so that it does not move the factors)."""
        z = np.clip(z, -options.clip, options.clip)
        if options.centred:
            z = z - np.where(measured, z, 0.0).sum(1, keepdims=True) / np.maximum(measured.sum(1, keepdims=True), 1)
        if self.axes.shape[1]:
            z = np.where(measured, z, self.gene_centre)
            z = z - ((z - self.gene_centre) @ self.axes) @ self.axes.T
        return np.where(measured, z, 0.0)


def gene_set_tests(z: np.ndarray, mean: np.ndarray, null: LocalNull, index: Sequence[np.ndarray],
                   measured: np.ndarray | None = None, options: SetTestOptions | None = None,
                   calibration: Calibration | None = None) -> SetTestResult:
    """Test every set (`index`: model gene indices per set) in every sample.

    `z` [N, G]: the samples' normal scores; `mean` [N, G]: their closest normals' NB means
    (where each sits among the calibration normals); `measured` [N, G]: genes tested per sample
    (an unmeasured gene leaves the set, in the sample and in its null alike); `calibration`:
    `Calibration.of(null, options)`, when calls share it.
    """
    options = options or SetTestOptions()
    calibration = calibration or Calibration.of(null, options)
    z = np.atleast_2d(np.asarray(z, dtype=np.float64))
    measured = np.ones(z.shape, dtype=bool) if measured is None else np.atleast_2d(measured)
    z = calibration.adjust(z, measured, options)
    scores = calibration.scores
    n_null = scores.shape[0]
    k = max(2, min(options.k, n_null))
    weights = gene_weights(null, options.weighting)
    neighbours = null.neighbours(np.atleast_2d(mean), k=k)
    shape = (z.shape[0], len(index))
    statistic, location, scale = np.zeros(shape), np.zeros(shape), np.zeros(shape)
    # samples that share one pattern of measured genes share one set matrix and one null
    patterns, which = np.unique(measured, axis=0, return_inverse=True)
    for p, usable in enumerate(patterns):
        rows = np.flatnonzero(which.ravel() == p)
        matrix = set_matrix(index, weights, usable)
        in_null = scores @ matrix.T  # [J, S]
        centre = in_null.mean(0)
        sd = in_null.std(0, ddof=1) * np.sqrt(1.0 + 1.0 / n_null)
        statistic[rows] = z[rows] @ matrix.T
        location[rows] = centre
        if options.local_scale:
            local = np.sqrt(((in_null[neighbours[rows]] - centre) ** 2).mean(1))  # [n, S]
            scale[rows] = np.maximum(sd, local)
        else:
            scale[rows] = sd
    with np.errstate(divide="ignore", invalid="ignore"):
        standardized = np.where(scale > 0, (statistic - location) / scale, 0.0)
    df = k - 1 if options.local_scale else n_null - 1
    p = 2.0 * stats.t.sf(np.abs(standardized), df)
    return SetTestResult(statistic=statistic, location=location, scale=scale, standardized=standardized,
                         p_value=p, q_value=bh_adjust(p, axis=1), df=df, adjusted=z)


def leading_genes(z: np.ndarray, genes: np.ndarray, direction: float, names: Sequence[str],
                  n: int = LEADING) -> list[str]:
    """The set's genes that drive it: the largest scores in the set's direction (names)."""
    signed = np.asarray(z)[genes] * (1.0 if direction >= 0 else -1.0)
    order = np.argsort(-signed, kind="stable")[:n]
    return [str(names[genes[i]]) for i in order if signed[i] > 0]
