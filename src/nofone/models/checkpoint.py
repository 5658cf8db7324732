"""Training checkpoints without pickle: tensors in safetensors, everything else in JSON.

A checkpoint is a folder `epoch-000123/` made under a temporary name and renamed when complete,
so a run killed while writing one leaves the previous checkpoint as the newest complete one.
`TrainingState` is what one holds (enough to resume a run exactly); `Checkpointing` is where
one run keeps them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import torch
from safetensors.torch import load_file, save_file

from nofone.errors import InputError

_TENSORS = "state.safetensors"
_META = "state.json"
KEEP = 2
log = logging.getLogger(__name__)


class Checkpointed(Protocol):
    """What a checkpoint takes from a training plan (`nofone.models.training.TrainingPlan`)."""

    module: torch.nn.Module
    optimizers: dict[str, torch.optim.Optimizer]

    def extra_tensors(self) -> dict[str, torch.Tensor]: ...
    def load_extra_tensors(self, tensors: dict[str, torch.Tensor]) -> None: ...


def flatten_optimizer(name: str, optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Optimizer state as named tensors plus a JSON-able description of its groups."""
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entry in state["state"].items():
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"optim.{name}.{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def restore_optimizer(name: str, optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                      meta: dict) -> None:
    prefix = f"optim.{name}."
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith(prefix):
            index, field = key[len(prefix):].split(".", 1)
            state.setdefault(int(index), {})[field] = value
    for index, values in meta["scalars"].items():
        state.setdefault(int(index), {}).update(values)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_checkpoint(folder: Path, epoch: int, tensors: dict[str, torch.Tensor], meta: dict) -> Path:
    """Write checkpoint `epoch` atomically and keep only the newest `KEEP`."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".partial-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp / _TENSORS))
        (tmp / _META).write_text(json.dumps({"epoch": epoch, **meta}))
        final = folder / f"epoch-{epoch:06d}"
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for old in sorted(folder.glob("epoch-*"))[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(folder: Path) -> Path | None:
    """The newest complete checkpoint in `folder`, or None."""
    if not folder.is_dir():
        return None
    complete = [p for p in sorted(folder.glob("epoch-*")) if (p / _META).is_file() and (p / _TENSORS).is_file()]
    return complete[-1] if complete else None


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    try:
        return load_file(str(path / _TENSORS)), json.loads((path / _META).read_text())
    except Exception as exc:
        raise InputError(f"checkpoint {path} cannot be read ({exc}); delete it to start over") from exc


class TrainingState:
    """Everything a checkpoint holds: the plan's module, its optimisers and extra tensors (the
    DGD's representations), the batch generator, the history and the early-stopping bookkeeping
    (best score, its epoch and a copy of its state)."""

    def __init__(self, plan: Checkpointed, seed: int):
        self.plan = plan
        self.module = plan.module
        self.optimizers = plan.optimizers
        self.generator = torch.Generator().manual_seed(seed)
        self.epoch = 0
        self.history: list[dict] = []
        self.best_score = math.inf
        self.best_epoch = 0
        self.bad_evaluations = 0
        self.best: dict[str, torch.Tensor] = {}

    def _state(self) -> dict[str, torch.Tensor]:
        out = {f"module.{k}": v for k, v in self.module.state_dict().items()}
        return out | {k: v.detach() for k, v in self.plan.extra_tensors().items()}

    def _load(self, tensors: dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict({k[len("module."):]: v for k, v in tensors.items() if k.startswith("module.")})
        with torch.no_grad():
            self.plan.load_extra_tensors(tensors)

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
