"""What training any model of normal expression shares: its data, its checkpointed state with
early stopping and exact resume, the dispersion calibration on held-out samples, and the
diagnostics of its latent space."""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from nofone.errors import InputError
from nofone.models.checkpoint import (
    flatten_optimizer,
    latest_checkpoint,
    load_checkpoint,
    restore_optimizer,
    save_checkpoint,
)
from nofone.models.nb import nb_log_prob
from nofone.stats.optimise import lbfgs

log = logging.getLogger(__name__)


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


def calibrate_dispersion(module: torch.nn.Module, x: torch.Tensor, mean: torch.Tensor, z: torch.Tensor,
                         measured: torch.Tensor | None) -> dict:
    """Set log r <- a + b log r, (a, b) maximising the held-out samples' NB likelihood at their
    means `mean` (float64) and closest normals z.

    `module` gives `log_dispersion_at(z)` and `rescale_log_dispersion(a, b)`; r may be per gene
    or depend on the latent point."""
    with torch.no_grad():
        log_r = module.log_dispersion_at(z).detach().double()
    n_values = float(measured.sum()) if measured is not None else float(x.numel())

    def nll(params: torch.Tensor) -> torch.Tensor:
        ll = nb_log_prob(x, mean, torch.exp(params[0] + params[1] * log_r))
        return -(ll * measured).sum() / n_values if measured is not None else -ll.sum() / n_values

    params = torch.tensor([0.0, 1.0], dtype=torch.float64, requires_grad=True)
    before = float(nll(params.detach()))
    lbfgs(nll, params, max_iter=100)
    a, b = (float(v) for v in params.detach())
    after = float(nll(params.detach()))
    if not (np.isfinite(after) and after <= before):
        return {"a": 0.0, "b": 1.0, "nll_before": before, "nll_after": before, "applied": False}
    module.rescale_log_dispersion(a, b)
    return {"a": a, "b": b, "nll_before": before, "nll_after": after, "applied": True}


def calibrate_on_heldout(module: torch.nn.Module, x: torch.Tensor, z: torch.Tensor, scale: torch.Tensor,
                         measured: torch.Tensor | None) -> tuple[dict, dict]:
    """Both calibrations on the held-out normals at their closest normals z: the dispersion
    (`calibrate_dispersion`), then the outlier null of `nofone de` (its default null) with the
    calibrated dispersion."""
    from nofone.stats.outlier_null import fit_outlier_null

    with torch.no_grad():
        mean = (module.decoder(z) * scale.unsqueeze(-1)).double()  # the calibration changes r only
    calibration = calibrate_dispersion(module, x, mean, z, measured)
    with torch.no_grad():
        r = torch.exp(module.log_dispersion_at(z).detach().double()).cpu().numpy()
    null = fit_outlier_null(x.cpu().numpy(), mean.cpu().numpy(), r,
                            None if measured is None else measured.cpu().numpy())
    log.info("dispersion calibrated on %d held-out samples: log r -> %.3f + %.3f log r (NLL/gene %.4f -> %.4f); "
             "outlier null: %.2f%% of genes off by log-sd %.2f", x.shape[0], calibration["a"], calibration["b"],
             calibration["nll_before"], calibration["nll_after"], 100 * null.pi, null.tau)
    return calibration, null.to_dict()


def component_purity(component: np.ndarray, tissue: np.ndarray) -> float:
    """Fraction of samples whose component's majority tissue is their own tissue."""
    total = 0
    for k in np.unique(component):
        _, n = np.unique(tissue[component == k], return_counts=True)
        total += n.max()
    return float(total / len(component))


def epochs_to_steps(n_train: int, batch_size: int, epochs: int) -> int:
    """Decoder optimiser steps a run will take (a small cohort at batch 256 takes few)."""
    return epochs * math.ceil(n_train / batch_size)


# -- what every training loop shares: its checkpointed state, early stopping, resume --------------


class TrainingState:
    """Everything a checkpoint holds: the module, its optimisers, the batch generator, the
    history and the early-stopping bookkeeping (best score, its epoch and a copy of its state).

    A model adds tensors of its own that are not module parameters (the DGD's representations)
    by overriding `extra_tensors` and `load_extra_tensors`.
    """

    def __init__(self, module: torch.nn.Module, optimizers: dict[str, torch.optim.Optimizer], seed: int):
        self.module = module
        self.optimizers = optimizers
        self.generator = torch.Generator().manual_seed(seed)
        self.epoch = 0
        self.history: list[dict] = []
        self.best_score = math.inf
        self.best_epoch = 0
        self.bad_evaluations = 0
        self.best: dict[str, torch.Tensor] = {}

    def extra_tensors(self) -> dict[str, torch.Tensor]:
        return {}

    def load_extra_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Copy this model's extra tensors back from `tensors` (keys as `extra_tensors` gives)."""

    def _state(self) -> dict[str, torch.Tensor]:
        out = {f"module.{k}": v for k, v in self.module.state_dict().items()}
        return out | {k: v.detach() for k, v in self.extra_tensors().items()}

    def _load(self, tensors: dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict({k[len("module."):]: v for k, v in tensors.items() if k.startswith("module.")})
        with torch.no_grad():
            self.load_extra_tensors(tensors)

    def snapshot(self) -> dict[str, torch.Tensor]:
        """A copy of what restoring the best-so-far state needs."""
        return {k: v.detach().clone() for k, v in self._state().items()}

    def restore_best(self) -> None:
        self._load(self.best)

    def observe(self, score: float, patience: int) -> bool:
        """Early stopping: record a held-out score (lower is better); True when training should stop."""
        if score < self.best_score - 1e-9:
            self.best_score, self.best_epoch, self.bad_evaluations = score, self.epoch, 0
            self.best = self.snapshot()
        else:
            self.bad_evaluations += 1
        return self.bad_evaluations >= patience

    def end_epoch(self, record: dict, started: float, on_epoch: Callable[[dict], None] | None) -> None:
        """Close an epoch: its number and duration into `record`, the history, the callback."""
        record["epoch"] = self.epoch
        record["seconds"] = round(time.perf_counter() - started, 3)
        self.history.append(record)
        if on_epoch:
            on_epoch(record)

    def restore_best_epoch(self, score_name: str) -> None:
        """After early stopping: back to the epoch with the best held-out score, if one was kept."""
        if self.best:
            self.restore_best()
            log.info("restored the epoch with the best %s: %d (%.4f per gene)", score_name, self.best_epoch,
                     self.best_score)

    def tensors(self) -> tuple[dict[str, torch.Tensor], dict]:
        tensors = self._state()
        tensors["rng.torch"] = torch.get_rng_state()
        tensors["rng.batches"] = self.generator.get_state()
        tensors.update({f"best.{k}": v for k, v in self.best.items()})
        meta: dict = {"history": self.history, "optimizers": {}, "best_score": self.best_score,
                      "best_epoch": self.best_epoch, "bad_evaluations": self.bad_evaluations}
        for name, optimizer in self.optimizers.items():
            flat, desc = flatten_optimizer(name, optimizer)
            tensors.update(flat)
            meta["optimizers"][name] = desc
        return tensors, meta

    def restore(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        self._load(tensors)
        torch.set_rng_state(tensors["rng.torch"])
        self.generator.set_state(tensors["rng.batches"])
        for name, optimizer in self.optimizers.items():
            restore_optimizer(name, optimizer, tensors, meta["optimizers"][name])
        self.epoch = meta["epoch"]
        self.history = meta["history"]
        self.best_score, self.best_epoch = meta["best_score"], meta["best_epoch"]
        self.bad_evaluations = meta["bad_evaluations"]
        self.best = {k[len("best."):]: v for k, v in tensors.items() if k.startswith("best.")}


class Checkpointing:
    """Where one training run keeps its checkpoints: a sub-folder per (data, config), so that a
    resumed run finds only checkpoints it can continue and a run with other settings starts
    fresh instead of failing. `folder` None: no checkpoints."""

    def __init__(self, folder: Path | None, fingerprint: str, config_json: str, salt: str = ""):
        self.fingerprint, self.config_json = fingerprint, config_json
        key = hashlib.sha256((fingerprint + config_json + salt).encode()).hexdigest()[:12]
        self.folder = None if folder is None else Path(folder) / f"run-{key}"

    def resume(self, state: TrainingState, resume: bool) -> int | None:
        """Restore the latest checkpoint into `state` when asked; the epoch resumed from, or None."""
        latest = latest_checkpoint(self.folder) if (self.folder and resume) else None
        if resume and latest is None:
            log.info("no checkpoint for these data and settings in %s: starting from scratch", self.folder)
        if latest is None:
            return None
        tensors, meta = load_checkpoint(latest)
        if meta.get("fingerprint") != self.fingerprint or meta.get("config") != self.config_json:
            raise InputError(f"checkpoint {latest} was made with other data or another config; "
                             "run without --resume (or delete the checkpoints) to start over")
        state.restore(tensors, meta)
        log.info("resumed from %s (epoch %d)", latest, state.epoch)
        return state.epoch

    def save_if_due(self, state: TrainingState, every: int, last: bool) -> None:
        if self.folder and (state.epoch % every == 0 or last):
            tensors, meta = state.tensors()
            meta |= {"fingerprint": self.fingerprint, "config": self.config_json}
            save_checkpoint(self.folder, state.epoch, tensors, meta)
