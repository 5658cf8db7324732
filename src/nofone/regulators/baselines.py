"""Simpler models on the same matrices and the same split, to say plainly where DEcode's network
does not beat them: ridge regression (penalty chosen on the validation genes) and gradient-
boosted trees (scikit-learn's histogram boosting; the number of trees chosen on the validation
genes). Each target is fitted on the genes that have a value for it.

Both run on as many threads as torch was given (`nofone --threads`): scikit-learn's OpenMP
threads otherwise take every core, and on a shared machine oversubscribed OpenMP threads made
the trees 30 times slower than one thread.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import Ridge
from threadpoolctl import threadpool_limits

from nofone.progress import progress

RIDGE_ALPHAS = tuple(float(a) for a in np.logspace(-2, 5, 15))
TREES = 300


def _known(y: np.ndarray) -> np.ndarray:
    return ~np.isnan(y)


def ridge_baseline(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
                   x_test: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """Test predictions [n_test, T] and the penalty chosen per target."""
    out = np.zeros((len(x_test), y_train.shape[1]))
    chosen = []
    with threadpool_limits(torch.get_num_threads()):
        for t in range(y_train.shape[1]):
            out[:, t], alpha = _ridge_one(x_train, y_train[:, t], x_val, y_val[:, t], x_test)
            chosen.append(alpha)
    return out, chosen


def _ridge_one(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
               x_test: np.ndarray) -> tuple[np.ndarray, float]:
    fit_rows, val_rows = _known(y_train), _known(y_val)
    errors = []
    for alpha in RIDGE_ALPHAS:
        model = Ridge(alpha=alpha).fit(x_train[fit_rows], y_train[fit_rows])
        errors.append(np.mean((model.predict(x_val[val_rows]) - y_val[val_rows]) ** 2))
    alpha = RIDGE_ALPHAS[int(np.argmin(errors))]
    return Ridge(alpha=alpha).fit(x_train[fit_rows], y_train[fit_rows]).predict(x_test), alpha


def boosted_trees_baseline(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
                           x_test: np.ndarray, seed: int = 0) -> tuple[np.ndarray, list[int]]:
    """Test predictions [n_test, T] and the number of trees chosen per target."""
    out = np.zeros((len(x_test), y_train.shape[1]))
    chosen = []
    with progress("boosted trees", y_train.shape[1]) as advance, threadpool_limits(torch.get_num_threads()):
        for t in range(y_train.shape[1]):
            fit_rows, val_rows = _known(y_train[:, t]), _known(y_val[:, t])
            model = HistGradientBoostingRegressor(max_iter=TREES, learning_rate=0.1, early_stopping=False,
                                                  random_state=seed)
            model.fit(x_train[fit_rows], y_train[fit_rows, t])
            errors = [np.mean((p - y_val[val_rows, t]) ** 2) for p in model.staged_predict(x_val[val_rows])]
            best = int(np.argmin(errors))
            for i, prediction in enumerate(model.staged_predict(x_test)):
                if i == best:
                    out[:, t] = prediction
                    break
            chosen.append(best + 1)
            advance()
    return out, chosen
