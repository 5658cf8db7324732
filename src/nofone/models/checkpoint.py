"""Training checkpoints without pickle: tensors in safetensors, everything else in JSON.

A checkpoint is a folder `epoch-000123/` made under a temporary name and renamed when complete,
so a run killed while writing one leaves the previous checkpoint as the newest complete one.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from nofone.errors import InputError

_TENSORS = "state.safetensors"
_META = "state.json"
KEEP = 2


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
