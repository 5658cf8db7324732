"""The normals that calibrate the local null, and their residuals from models that never saw them.

Without cross-fitting those are the early-stopping normals (tens of samples: too few to say how
far the normals *near* a new sample sit off the model, docs/null.md). With `nofone train
--cross-fit K` the normals are dealt into K folds stratified by tissue; a model of the same class
and settings trains on the other folds (early stopping and dispersion calibration on its fold)
and finds the closest normal of each of its fold's samples by the same search `nofone represent`
uses, so every normal gets an honest residual. Cost: K more trainings.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nofone.errors import InputError
from nofone.inference.represent import SearchConfig, find_representations
from nofone.models.base import NormalModel
from nofone.models.training import TrainingData, fit

log = logging.getLogger(__name__)

#: Samples per closest-normal search chunk (memory grows with it).
CHUNK = 32
#: Calibration normals kept at most (a seeded draw beyond it: the null's file and its fit stay small).
MAX_NORMALS = 1000


@dataclass
class Residuals:
    """Calibration normals' counts and the NB of each one's closest normal, from a model that
    never trained on it."""

    sample_ids: list[str]
    counts: np.ndarray  # [J, G] int64
    mean: np.ndarray  # [J, G] float64
    dispersion: np.ndarray  # [J, G] float64
    measured: np.ndarray | None  # [J, G] bool

    def take(self, rows: np.ndarray) -> Residuals:
        return Residuals([self.sample_ids[i] for i in rows], self.counts[rows], self.mean[rows],
                         self.dispersion[rows], None if self.measured is None else self.measured[rows])

    @staticmethod
    def concat(parts: list[Residuals]) -> Residuals:
        measured = None
        if any(p.measured is not None for p in parts):
            measured = np.concatenate([np.ones(p.counts.shape, bool) if p.measured is None else p.measured
                                       for p in parts])
        return Residuals([s for p in parts for s in p.sample_ids], np.concatenate([p.counts for p in parts]),
                         np.concatenate([p.mean for p in parts]), np.concatenate([p.dispersion for p in parts]),
                         measured)


@torch.no_grad()
def closest_normal_nb(model: NormalModel, counts: np.ndarray, measured: np.ndarray | None,
                      search: SearchConfig | None = None, device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """(mean, dispersion) [N, G] of each sample's closest normal, as `represent` then `de` find it."""
    search = (search or SearchConfig()).for_model(model)
    means, dispersions = [], []
    for start in range(0, len(counts), CHUNK):
        x = torch.as_tensor(counts[start:start + CHUNK], device=device)
        m = None if measured is None else torch.as_tensor(measured[start:start + CHUNK], device=device)
        with torch.enable_grad():
            found = find_representations(model, x, m, search)
        relative, r = model.decode(found.latent)
        means.append((relative.double() * found.scale.to(relative.device).unsqueeze(-1)).cpu().numpy())
        dispersions.append(torch.broadcast_to(r.double(), relative.shape).cpu().numpy())
    return np.concatenate(means), np.concatenate(dispersions)


def heldout_residuals(model: NormalModel, data: TrainingData, device: str = "cpu") -> Residuals | None:
    """The early-stopping normals' residuals from the trained model, None when there are none."""
    rows = np.flatnonzero(np.asarray(data.split) != "train")
    if rows.size == 0:
        return None
    return _residuals(model, data, rows, device)


def fold_of(data: TrainingData, k: int, seed: int) -> np.ndarray:
    """Each sample's fold, 0..k-1: a seeded permutation within each tissue dealt round-robin, so
    every fold holds every tissue in proportion."""
    n = len(data.sample_ids)
    if k < 2 or k > n:
        raise InputError(f"--cross-fit {k}: use 0 (none) or between 2 and the number of normals ({n})")
    rng = np.random.default_rng(seed)
    groups = np.zeros(n, dtype=object) if data.tissue is None else np.asarray(data.tissue, dtype=object)
    fold = np.empty(n, dtype=int)
    for group in sorted(set(groups.tolist()), key=str):
        where = rng.permutation(np.flatnonzero(groups == group))
        fold[where] = (np.arange(len(where)) + rng.integers(k)) % k
    return fold


def cross_fit_residuals(model_class: type[NormalModel], data: TrainingData, config: Any, k: int,
                        genes: Any, device: str = "cpu", checkpoint_dir: Path | None = None,
                        resume: bool = False, on_fold: Callable[[int, dict], None] | None = None) -> Residuals:
    """Every normal's residual from the fold model that never trained on it (see the module
    docstring); `on_fold(fold, summary)` after each fold."""
    fold = fold_of(data, k, config.training.seed)
    parts = []
    for f in range(k):
        split = np.where(fold == f, "test", "train")
        fold_data = TrainingData(list(data.sample_ids), data.counts, split, data.tissue, data.measured)
        plan = model_class.training_plan(fold_data, config, device)
        outcome = fit(plan, checkpoint_dir=None if checkpoint_dir is None else Path(checkpoint_dir) / f"fold{f}",
                      resume=resume)
        model = model_class(plan.module, genes)
        model.module.eval()
        rows = np.flatnonzero(fold == f)
        parts.append(_residuals(model, data, rows, device))
        if on_fold:
            on_fold(f, {"n_heldout": int(rows.size), "best_epoch": outcome.best_epoch,
                        "outlier_null": outcome.outlier_null})
        log.info("cross-fit fold %d of %d: %d normals held out, best epoch %s", f + 1, k, rows.size,
                 outcome.best_epoch)
    return Residuals.concat(parts)


def bounded(residuals: Residuals, seed: int, limit: int = MAX_NORMALS) -> Residuals:
    """At most `limit` calibration normals (a seeded draw, in their original order)."""
    if len(residuals.sample_ids) <= limit:
        return residuals
    rows = np.sort(np.random.default_rng(seed).choice(len(residuals.sample_ids), limit, replace=False))
    return residuals.take(rows)


def _residuals(model: NormalModel, data: TrainingData, rows: np.ndarray, device: str) -> Residuals:
    counts = np.asarray(data.counts)[rows]
    measured = None if data.measured is None else np.asarray(data.measured)[rows]
    model.to(device)
    mean, r = closest_normal_nb(model, counts, measured, device=device)
    return Residuals([data.sample_ids[i] for i in rows], counts, mean, r, measured)
