"""Model artifacts: a folder with `config.json`, `weights.safetensors`, `genes.tsv`, any extra
files, and `checksums.sha256` listing them all.

No pickle anywhere: a model folder from a stranger cannot run code when loaded. The checksums
catch truncated copies and hand-edited weights before a model silently gives wrong answers.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from nofone.errors import InputError

CONFIG = "config.json"
WEIGHTS = "weights.safetensors"
GENES = "genes.tsv"
CHECKSUMS = "checksums.sha256"


@dataclass
class Artifact:
    folder: Path
    config: dict
    tensors: dict[str, torch.Tensor]
    genes: pd.DataFrame  # gene_id, gene_name


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_artifact(folder: Path, config: dict, tensors: dict[str, torch.Tensor], genes: pd.DataFrame) -> None:
    """Write config, weights and genes into `folder`, then the checksum manifest of every file.

    Call this last, after any extra files (history, representations) are in `folder`, so that
    the manifest covers them. `folder` is normally a staging folder (see `staged_outdir`).
    """
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(folder / WEIGHTS),
              metadata={"format": "nofone"})
    genes[["gene_id", "gene_name"]].to_csv(folder / GENES, sep="\t", index=False)
    lines = [f"{sha256(p)}  {p.name}" for p in sorted(folder.iterdir())
             if p.is_file() and p.name != CHECKSUMS]
    (folder / CHECKSUMS).write_text("\n".join(lines) + "\n")


def read_artifact(folder: str | os.PathLike[str], verify: bool = True) -> Artifact:
    """Read and (by default) verify a model folder; every problem names the file."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(
            f"model {folder} does not exist (expected a folder from `nofone train` or `nofone import-bulkdgd`)"
        )
    for name in (CONFIG, WEIGHTS, GENES):
        if not (folder / name).is_file():
            raise InputError(f"model {folder}: {name} is missing")
    if verify:
        verify_checksums(folder)
    try:
        config = json.loads((folder / CONFIG).read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"model {folder}: {CONFIG} is not valid JSON ({exc})") from exc
    try:
        tensors = load_file(str(folder / WEIGHTS))
    except (SafetensorError, OSError) as exc:
        raise InputError(f"model {folder}: {WEIGHTS} cannot be read ({exc})") from exc
    genes = pd.read_csv(folder / GENES, sep="\t", dtype=str, keep_default_na=False)
    if "gene_id" not in genes.columns:
        raise InputError(f"model {folder}: {GENES} has no gene_id column")
    if "gene_name" not in genes.columns:
        genes["gene_name"] = ""
    return Artifact(folder, config, tensors, genes)


def verify_checksums(folder: Path) -> None:
    manifest = folder / CHECKSUMS
    if not manifest.is_file():
        raise InputError(f"model {folder}: {CHECKSUMS} is missing; the model cannot be verified")
    for line in manifest.read_text().splitlines():
        if not line.strip():
            continue
        expected, name = line.split(maxsplit=1)
        path = folder / name.strip()
        if not path.is_file():
            raise InputError(f"model {folder}: {name} is listed in {CHECKSUMS} but missing")
        if sha256(path) != expected:
            raise InputError(f"model {folder}: {name} does not match its checksum (corrupted or modified)")
