"""Is a set of synthetic samples like the real ones? Kernel and classifier two-sample tests.

- `mmd_test`: the squared maximum mean discrepancy with a Gaussian kernel (the biased
  V-statistic mean K_XX - 2 mean K_XY + mean K_YY, GEMDiff's estimate), its bandwidth by the
  median heuristic (sigma = median pairwise distance of the pooled samples) unless a `gamma` is
  given (GEMDiff: gamma = 1 / features, k = exp(-gamma |x - y|^2)), and a permutation p-value:
  the share of label permutations with an MMD at least as large. A number alone is hard to
  read (GEMDiff called synthetic MMDs 15-80 times its real baseline comparable); the p-value
  says whether the difference is more than sampling noise.
- `c2st_auroc`: the classifier two-sample test: cross-validated AUROC of telling the two sets
  apart (standardise, PCA, logistic regression); 0.5 means indistinguishable.
- `classifier_scores`: accuracy and balanced accuracy of a classifier fitted on one set and
  scored on another (train-on-synthetic / test-on-real beside train-on-real).
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.distance import cdist, pdist
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, balanced_accuracy_score, roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC


def _pooled_kernel(x: np.ndarray, y: np.ndarray, gamma: float | None) -> tuple[np.ndarray, float]:
    z = np.vstack([x, y]).astype(np.float64)
    d2 = cdist(z, z, "sqeuclidean")
    if gamma is None:
        sigma = float(np.median(pdist(z)))
        gamma = 1.0 / (2 * sigma**2) if sigma > 0 else 1.0
    return np.exp(-gamma * d2), gamma


def _mmd2(k: np.ndarray, in_x: np.ndarray) -> float:
    kxx = k[np.ix_(in_x, in_x)].mean()
    kyy = k[np.ix_(~in_x, ~in_x)].mean()
    kxy = k[np.ix_(in_x, ~in_x)].mean()
    return float(kxx + kyy - 2 * kxy)


def mmd_test(x: np.ndarray, y: np.ndarray, *, gamma: float | None = None, permutations: int = 500,
             seed: int = 0) -> dict:
    """{"mmd2", "p_value", "gamma"} for samples x [n, F] against y [m, F]."""
    x, y = np.atleast_2d(x), np.atleast_2d(y)
    if len(x) < 2 or len(y) < 2 or x.shape[1] != y.shape[1]:
        raise ValueError("mmd_test needs two sets of at least 2 samples with the same features")
    k, used = _pooled_kernel(x, y, gamma)
    in_x = np.zeros(len(k), dtype=bool)
    in_x[: len(x)] = True
    observed = _mmd2(k, in_x)
    rng = np.random.default_rng(seed)
    exceed = sum(_mmd2(k, rng.permutation(in_x)) >= observed - 1e-15 for _ in range(permutations))
    return {"mmd2": observed, "p_value": (1 + exceed) / (1 + permutations), "gamma": used}


def c2st_auroc(real: np.ndarray, synthetic: np.ndarray, *, folds: int = 5, components: int = 20,
               seed: int = 0) -> float:
    """Cross-validated AUROC of a classifier telling `synthetic` from `real` (0.5: alike)."""
    x = np.vstack([real, synthetic]).astype(np.float64)
    labels = np.r_[np.zeros(len(real)), np.ones(len(synthetic))]
    folds = max(2, min(folds, len(real), len(synthetic)))
    n_comp = max(1, min(components, x.shape[1], int(len(x) * (folds - 1) / folds) - 1))
    model = make_pipeline(StandardScaler(), PCA(n_comp, random_state=seed), LogisticRegression(max_iter=2000))
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    score = cross_val_predict(model, x, labels, cv=cv, method="predict_proba")[:, 1]
    return float(roc_auc_score(labels, score))


def fit_classifier(x: np.ndarray, labels: np.ndarray, kind: str = "logistic", seed: int = 0):
    """A fitted tumour/normal (or tissue) classifier on standardised features."""
    if kind == "linear_svm":
        clf = LinearSVC(C=1.0, max_iter=20000, random_state=seed)
    elif kind == "logistic":
        clf = LogisticRegression(max_iter=5000)
    else:
        raise ValueError(f"unknown classifier {kind!r}")
    return make_pipeline(StandardScaler(), clf).fit(np.asarray(x, dtype=np.float64), np.asarray(labels))


def classifier_scores(model, x: np.ndarray, labels: np.ndarray) -> dict:
    """Accuracy and balanced accuracy of a fitted classifier on (x, labels)."""
    predicted = model.predict(np.asarray(x, dtype=np.float64))
    return {"accuracy": float(accuracy_score(labels, predicted)),
            "balanced_accuracy": float(balanced_accuracy_score(labels, predicted))}
