"""Loading model configs: a preset name or a JSON file of settings, plus dotted overrides.

Shared by every model type; each config class only says how to build itself from a dict.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any, TypeVar

from nofone.errors import InputError

C = TypeVar("C")


def build(kind: type[C], values: Any, where: str, skip: frozenset[str] | set[str] = frozenset()) -> C:
    """A dataclass from a dict; unknown keys are an error that names them and the known ones."""
    if not isinstance(values, dict):
        raise InputError(f"{where}: expected an object of settings, got {type(values).__name__}")
    known = {f.name for f in fields(kind)} - set(skip)
    unknown = set(values) - known
    if unknown:
        raise InputError(f"{where}: unknown setting(s) {sorted(unknown)}; known: {sorted(known)}")
    try:
        return kind(**values)
    except TypeError as exc:
        raise InputError(f"{where}: {exc}") from None


def merge(base: dict, update: dict) -> dict:
    """`update` laid over `base`, nested dicts merged key by key."""
    out = dict(base)
    for key, value in update.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load(spec: str, presets: dict[str, C], from_dict: Callable[[dict, str], C], to_dict: Callable[[C], dict],
         overrides: dict | None, what: str, default_preset: str, article: str = "a") -> C:
    """A preset, or a JSON file laid over its `preset` (default `default_preset`); then the
    overrides, with dotted keys ({"training.epochs": 50}; None values are ignored)."""
    if spec in presets:
        config = presets[spec]
    else:
        path = Path(spec)
        if not path.is_file():
            raise InputError(f"--config {spec!r} is neither {article} {what} preset ({', '.join(presets)}) nor a file")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise InputError(f"config {path}: not valid JSON ({exc})") from exc
        if not isinstance(data, dict):
            raise InputError(f"config {path}: expected a JSON object of settings")
        data.pop("model_type", None)
        preset = data.pop("preset", default_preset)
        if preset not in presets:
            raise InputError(f"config {path}: unknown preset {preset!r} ({what} presets: {', '.join(presets)})")
        config = from_dict(merge(to_dict(presets[preset]), data), str(path))
    if overrides:
        data = to_dict(config)
        for key, value in overrides.items():
            if value is None:
                continue
            target = data
            *parents, leaf = key.split(".")
            for parent in parents:
                target = target[parent]
            if leaf not in target:
                raise InputError(f"unknown {what} setting {key!r}")
            target[leaf] = value
        config = from_dict(data, "overrides")
    return config
