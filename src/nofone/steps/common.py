"""Helpers shared by the steps: devices, model loading, sample selection."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from nofone.errors import InputError
from nofone.io.artifact import WEIGHTS, sha256
from nofone.io.dataset import Dataset
from nofone.models import registry
from nofone.models.base import NormalModel


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when a GPU is visible, else 'cpu'; an unavailable 'cuda' is an error."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("--device cuda asked for, but no CUDA GPU is visible to PyTorch")
    if device not in {"cpu"} and not device.startswith("cuda"):
        raise InputError(f"unknown device {device!r}: use auto, cpu or cuda")
    return device


def load_model(folder: str | os.PathLike[str], device: str = "cpu") -> NormalModel:
    """Load any nofone model artifact by its `model_type` (`nofone.models.registry`)."""
    return registry.load_model(folder, device)


def model_fingerprint(folder: str | os.PathLike[str]) -> str:
    return sha256(Path(folder) / WEIGHTS)[:16]


def select_samples(data: Dataset, samples: Sequence[str] | None = None, samples_file: Path | None = None,
                   condition: str | None = None, condition_column: str = "condition") -> list[str]:
    """Sample ids to process: named ones, those listed in a file, those of a condition, or all."""
    chosen = list(data.sample_ids)
    if samples_file is not None:
        if not samples_file.is_file():
            raise InputError(f"samples file {samples_file} does not exist")
        listed = [ln.strip().split("\t")[0] for ln in samples_file.read_text().splitlines()]
        samples = [s for s in listed if s and s != "sample_id"] + list(samples or [])
    if samples:
        unknown = sorted(set(samples) - set(chosen))
        if unknown:
            raise InputError(f"{data.root}: unknown sample id(s) {unknown[:10]}")
        wanted = set(samples)
        chosen = [s for s in chosen if s in wanted]
    if condition is not None:
        if condition_column not in data.samples.columns:
            raise InputError(f"{data.root}: no '{condition_column}' column to select {condition!r} samples")
        keep = set(data.samples.loc[data.samples[condition_column] == condition, "sample_id"])
        chosen = [s for s in chosen if s in keep]
    if not chosen:
        raise InputError(f"{data.root}: no samples selected")
    return chosen
