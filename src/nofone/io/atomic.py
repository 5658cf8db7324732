"""Atomic outputs: a step either leaves complete files or nothing at all.

A killed or failed step must never leave a half-written file that a resumed run (or
Nextflow's `-resume`) would trust. Every step writes into a staging folder beside its output
folder and moves the finished files in at the end, each with an atomic `os.replace`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def staged_outdir(outdir: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a private staging folder; on success move its contents into `outdir`.

    On any exception the staging folder is deleted and `outdir` is left as it was (not even
    created if it did not exist). Files already in `outdir` that the step does not produce are
    left alone; files it produces are replaced atomically one by one.
    """
    outdir = Path(outdir).absolute()
    created = [p for p in reversed(outdir.parents) if not p.exists()]
    outdir.parent.mkdir(parents=True, exist_ok=True)
    stage = outdir.parent / f".{outdir.name}.partial-{uuid.uuid4().hex[:8]}"
    stage.mkdir()
    published = False
    try:
        yield stage
        _publish(stage, outdir)
        published = True
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        if not published:
            for parent in reversed(created):  # deepest first; only if still empty
                with contextlib.suppress(OSError):
                    parent.rmdir()


def _publish(stage: Path, outdir: Path) -> None:
    if not outdir.exists():
        os.replace(stage, outdir)
        stage.mkdir()  # so that the caller's cleanup finds something to remove
        return
    if not outdir.is_dir():
        raise NotADirectoryError(f"output path {outdir} exists and is not a folder")
    for item in sorted(stage.iterdir()):
        target = outdir / item.name
        if target.is_dir() or (item.is_dir() and target.exists()):
            # move the old one aside first: at every moment the old or the new version exists
            old = outdir / f".{item.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(target, old)
            os.replace(item, target)
            if old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink(missing_ok=True)
        else:
            os.replace(item, target)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write a text file through a temporary name in the same folder, then rename it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once at import: os.umask is process-wide and not thread-safe


def _umask() -> int:
    return _UMASK


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> None:
    """Write JSON (indented, keys in insertion order) atomically."""
    write_text_atomic(path, json.dumps(data, indent=2, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
