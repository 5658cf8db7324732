"""The one training loop of every model of normal tissue (`fit`), and what a model supplies to
it (`TrainingPlan`, as scvi-tools' TrainingPlan): epochs, early stopping on held-out normals,
checkpoints and exact resume, best-epoch restore, the calibrations on held-out normals and a
progress callback are the loop's; one epoch's steps, the held-out score, tensors to checkpoint
beyond the module, diagnostics and how to calibrate are the model's.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from nofone.errors import InputError, cuda_memory_guard
from nofone.models.calibration import calibrate_on_heldout
from nofone.models.checkpoint import Checkpointing, TrainingState


@dataclass(kw_only=True)
class TrainingOutcome:
    """What every model's training returns besides its module and latent points: the history,
    where it resumed, early stopping, the calibrations on held-out normals and the checkpoint folder."""

    history: list[dict] = field(default_factory=list)
    resumed_from: int | None = None
    best_epoch: int | None = None
    stopped_early: bool = False
    calibration: dict | None = None
    outlier_null: dict | None = None  # see nofone.stats.outlier_null
    checkpoint_dir: Path | None = None  # this run's own checkpoint folder


@dataclass
class TrainingData:
    """Counts of the normal samples to train on, with their split and (optional) tissue."""

    sample_ids: list[str]
    counts: np.ndarray  # int64 [N, G]
    split: np.ndarray  # "train" / "test" per sample
    tissue: np.ndarray | None = None
    measured: np.ndarray | None = None  # bool [N, G]

    def fingerprint(self) -> str:
        """A hash of what a checkpoint must match to be resumed."""
        h = hashlib.sha256()
        h.update("\n".join(self.sample_ids).encode())
        h.update("\n".join(self.split).encode())
        h.update(str(self.counts.shape).encode())
        h.update(np.ascontiguousarray(self.counts[:, :: max(1, self.counts.shape[1] // 997)]).tobytes())
        return h.hexdigest()[:16]


class TrainingPlan(ABC):
    """One model's part in `fit`.

    The constructor seeds torch with `config.training.seed`, splits the samples and puts the
    counts on the device (`x`, `m`: [N, G] float64 and the measured mask or None; rows of the
    training and held-out samples in `train_rows`, `test_rows`); the subclass then builds
    `module` and `optimizers`. The loop reads its settings from `config.training`: epochs, seed,
    batch_size, early_stopping, eval_every, patience, checkpoint_every, calibrate_dispersion.
    """

    #: history column of the held-out score, and its name in the log
    score_key: ClassVar[str]
    score_name: ClassVar[str]
    #: kept apart in the checkpoint folder from other models' runs on the same data and settings
    checkpoint_salt: ClassVar[str] = ""
    #: progress-bar fields: label -> history key
    progress_fields: ClassVar[dict[str, str]] = {}
    #: fewer optimiser steps than this makes `nofone train` warn that the model is under-trained
    min_steps: ClassVar[int] = 0
    #: score the untrained state too (epoch 0), so that early stopping can keep it (a model whose
    #: starting point is already a fitted model, as the diffusion model's Gaussian part)
    score_before_training: ClassVar[bool] = False
    module: torch.nn.Module
    optimizers: dict[str, torch.optim.Optimizer]

    def __init__(self, data: TrainingData, config: Any, device: str):
        torch.manual_seed(config.training.seed)
        self.data, self.config, self.device = data, config, device
        is_train = np.asarray(data.split) == "train"
        if not is_train.any():
            raise InputError("no training samples (every sample is in the test split)")
        self.train_idx, self.test_idx = np.flatnonzero(is_train), np.flatnonzero(~is_train)
        self.train_rows, self.test_rows = torch.as_tensor(self.train_idx), torch.as_tensor(self.test_idx)
        self.counts = torch.as_tensor(data.counts, dtype=torch.float64)
        all_measured = data.measured is None or bool(np.all(data.measured))
        self.measured = None if all_measured else torch.as_tensor(np.asarray(data.measured, dtype=bool))
        self.x = self.counts.to(device)
        self.m = None if self.measured is None else self.measured.to(device)

    @property
    def n_train(self) -> int:
        return len(self.train_idx)

    @property
    def has_heldout(self) -> bool:
        return len(self.test_idx) > 0

    def steps(self) -> int:
        """Optimiser steps the run will take at most."""
        t = self.config.training
        return epochs_to_steps(self.n_train, t.batch_size, t.epochs)

    def heldout(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The held-out normals' counts and measured mask (or None)."""
        return self.x[self.test_rows], None if self.m is None else self.m[self.test_rows]

    # -- the model's part ----------------------------------------------------------------------
    def initialise(self) -> None:  # noqa: B027 (optional hook)
        """Set the starting state of a fresh run (not called when resuming)."""

    def extra_tensors(self) -> dict[str, torch.Tensor]:
        """Tensors beyond the module's state that a checkpoint must hold."""
        return {}

    def load_extra_tensors(self, tensors: dict[str, torch.Tensor]) -> None:  # noqa: B027 (optional hook)
        """Copy the extra tensors back from `tensors` (keys as `extra_tensors` gives)."""

    @abstractmethod
    def train_epoch(self, epoch: int, generator: torch.Generator) -> dict:
        """One epoch's optimiser steps (0-based `epoch`; batches and noise from `generator`, whose
        state is checkpointed); the epoch's losses for the history."""

    def diagnostics(self) -> dict:
        """Per-epoch figures for the history (collapse warnings and the like)."""
        return {}

    @abstractmethod
    def heldout_score(self) -> float:
        """The held-out normals' score, lower is better, that early stopping watches."""

    def heldout_closest_normals(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(points, scale) of the held-out normals' closest normals, for the default `calibrate`."""
        raise NotImplementedError(f"{type(self).__name__} must give its held-out closest normals or "
                                  "override calibrate()")

    def calibrate(self) -> tuple[dict | None, dict | None]:
        """Calibrate on the held-out normals: (dispersion calibration, outlier null), as written
        to the model's training summary. Default: log r rescaled affinely at the held-out
        closest normals, then the outlier null at the calibrated r
        (`nofone.models.calibration.calibrate_on_heldout`)."""
        z, scale = self.heldout_closest_normals()
        x, m = self.heldout()
        return calibrate_on_heldout(self.module, x, z, scale, m)

    @abstractmethod
    def trained_points(self) -> tuple[np.ndarray, torch.Tensor | None]:
        """Every sample's final point [N, D] (rows as in the data) and its NB scale [N], or None
        for the model's default scaling at the decoded means."""

    def summary(self, final: dict, table: Any) -> dict:
        """The model's entries in the training summary (config.json), from the last history
        record and the training representation table."""
        return {}


@cuda_memory_guard("retry with a smaller batch size (--batch-size, or training.batch_size in the config) or on "
                   "a larger GPU")
def fit(plan: TrainingPlan, *, checkpoint_dir: Path | None = None, resume: bool = False,
        on_epoch: Callable[[dict], None] | None = None) -> TrainingOutcome:
    """Train `plan`: epochs of its steps, early stopping on its held-out score with the best
    epoch restored, checkpoints every `checkpoint_every` epochs (exact resume), then its
    calibration on the held-out normals. CUDA running out of memory is `CudaOutOfMemory` (exit 75)."""
    t = plan.config.training
    state = TrainingState(plan, t.seed)
    config_json = json.dumps(plan.config.to_dict(), sort_keys=True)
    checkpoints = Checkpointing(checkpoint_dir, plan.data.fingerprint(), config_json, salt=plan.checkpoint_salt)
    resumed_from = checkpoints.resume(state, resume)
    if resumed_from is None:
        plan.initialise()
    early = t.early_stopping and plan.has_heldout
    if early and resumed_from is None and plan.score_before_training:
        state.observe(plan.heldout_score(), t.patience)
    stopped = state.bad_evaluations >= t.patience if early else False
    while state.epoch < t.epochs and not stopped:
        started = time.perf_counter()
        record = plan.train_epoch(state.epoch, state.generator)
        state.epoch += 1
        record |= plan.diagnostics()
        if early and (state.epoch % t.eval_every == 0 or state.epoch == t.epochs):
            score = plan.heldout_score()
            record[plan.score_key] = score
            stopped = state.observe(score, t.patience)
        state.end_epoch(record, started, on_epoch)
        checkpoints.save_if_due(state, t.checkpoint_every, last=state.epoch == t.epochs or stopped)
    if early:
        state.restore_best_epoch(plan.score_name)
    plan.module.eval()
    calibration = outlier_null = None
    if t.calibrate_dispersion and plan.has_heldout:
        calibration, outlier_null = plan.calibrate()
    return TrainingOutcome(history=state.history, resumed_from=resumed_from,
                           best_epoch=state.best_epoch if early else None, stopped_early=stopped,
                           calibration=calibration, outlier_null=outlier_null, checkpoint_dir=checkpoints.folder)


def component_purity(component: np.ndarray, tissue: np.ndarray) -> float:
    """Fraction of samples whose component's majority tissue is their own tissue."""
    total = 0
    for k in np.unique(component):
        _, n = np.unique(tissue[component == k], return_counts=True)
        total += n.max()
    return float(total / len(component))


def epochs_to_steps(n_train: int, batch_size: int, epochs: int) -> int:
    """Optimiser steps a run will take (a small cohort at batch 256 takes few)."""
    return epochs * math.ceil(n_train / batch_size)
