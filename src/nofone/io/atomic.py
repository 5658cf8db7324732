"""Atomic outputs: a step either leaves complete files or nothing at all.

A killed or failed step must never leave a half-written file that a resumed run (or
Nextflow's `-resume`) would trust. Every step writes into a staging folder beside its output
folder and moves the finished files in at the end, each with an atomic `os.replace`.

A step killed outright (kill -9, a node lost) cannot remove its staging folder, so each one
carries an owner marker (`owner.json`: host, pid, start) that the running step holds locked
(`flock`). The next run of a step into the same output folder removes the staging folders of
that folder whose lock is free: their owner is dead. Another run still working keeps its lock
and its folder, on this host or, through NFS locks, on another node. Where the file system has
no locks, a folder is removed when its owner's pid is gone (same host) or nothing in it changed
for a week (another host). The output folder itself is checked before any work (`check_outdir`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nofone.errors import InputError

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)
STAGE_INFIX = ".partial-"
#: A staging folder is made under this name and renamed to its `.partial-` name once its locked
#: marker is written, so that a `.partial-` folder always has an owner to ask.
CLAIM_INFIX = ".claim-"
OWNER_FILE = "owner.json"
#: A staging folder without a readable marker that holds nothing: killed in the instant between
#: creating and marking it (claiming takes microseconds).
UNMARKED_EMPTY_STALE_SECONDS = 60
#: One without a marker that holds files (from nofone before markers): once quiet this long.
UNMARKED_STALE_SECONDS = 24 * 3600
#: Without file locks, another host's staging folder: once quiet this long.
FOREIGN_STALE_SECONDS = 7 * 24 * 3600
_STAGE_SUFFIX = re.compile(r"[0-9a-f]{8}")
_OLD_VERSION = re.compile(r"^\..+\.old-[0-9a-f]{8}$")
_OWN: set[Path] = set()  # staging folders this process holds


def check_outdir(outdir: str | os.PathLike[str]) -> Path:
    """Refuse an output folder that cannot be made or written, before any work is done (a file
    in its place, a file above it, a read-only folder), and clear this folder's stale staging.
    Returns the folder as an absolute path."""
    outdir = Path(outdir).absolute()
    try:
        if outdir.exists() and not outdir.is_dir():
            raise InputError(f"output folder {outdir} is a file, not a folder")
        existing = outdir.parent
        while not existing.exists():
            existing = existing.parent
        if not existing.is_dir():
            raise InputError(f"output folder {outdir} cannot be created: {existing} is a file, not a folder")
        for folder in [existing] + ([outdir] if outdir.is_dir() else []):
            if not os.access(folder, os.W_OK | os.X_OK):
                raise InputError(f"output folder {outdir} cannot be written: {folder} is read-only for this user")
    except OSError as exc:
        raise InputError(f"output folder {outdir}: {exc.strerror or exc}") from None
    clean_stale_staging(outdir)
    return outdir


@contextlib.contextmanager
def staged_outdir(outdir: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a private staging folder; on success move its contents into `outdir`.

    On any exception the staging folder is deleted and `outdir` is left as it was (not even
    created if it did not exist). Files already in `outdir` that the step does not produce are
    left alone; files it produces are replaced atomically one by one.
    """
    outdir = check_outdir(outdir)
    created = [p for p in reversed(outdir.parents) if not p.exists()]
    published = False
    root, lock = _claim(outdir)
    try:
        stage = root / "out"
        stage.mkdir()
        yield stage
        _publish(stage, outdir)
        published = True
    finally:
        shutil.rmtree(root, ignore_errors=True)
        _OWN.discard(root)
        os.close(lock)
        if not published:
            for parent in reversed(created):  # deepest first; only if still empty
                with contextlib.suppress(OSError):
                    parent.rmdir()


def _claim(outdir: Path) -> tuple[Path, int]:
    """A new staging folder beside `outdir`, marked as this process's and held locked."""
    suffix = uuid.uuid4().hex[:8]
    claim = outdir.parent / f".{outdir.name}{CLAIM_INFIX}{suffix}"
    root = outdir.parent / f".{outdir.name}{STAGE_INFIX}{suffix}"
    _OWN.update((claim, root))
    try:
        outdir.parent.mkdir(parents=True, exist_ok=True)
        claim.mkdir()
        fd = os.open(claim / OWNER_FILE, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        locked = _lock(fd)  # the lock belongs to the open file and survives the rename
        marker = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time(), "locked": locked}
        os.write(fd, json.dumps(marker).encode())
        os.rename(claim, root)
    except OSError as exc:
        shutil.rmtree(claim, ignore_errors=True)
        _OWN.discard(root)
        raise InputError(f"output folder {outdir}: cannot create its staging folder ({exc.strerror or exc})") from None
    finally:
        _OWN.discard(claim)
    return root, fd


def _lock(fd: int) -> bool:
    """Take an exclusive lock; False where the file system has none."""
    if fcntl is None:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False


def clean_stale_staging(outdir: str | os.PathLike[str]) -> list[Path]:
    """Remove the staging folders of `outdir` left by runs that died; returns them."""
    outdir = Path(outdir).absolute()
    prefixes = tuple(f".{outdir.name}{infix}" for infix in (STAGE_INFIX, CLAIM_INFIX))
    try:
        entries = [e for e in outdir.parent.iterdir() if e.name.startswith(prefixes)]
    except OSError:
        return []
    removed = []
    for entry in entries:
        prefix = next(p for p in prefixes if entry.name.startswith(p))
        if entry in _OWN or not _STAGE_SUFFIX.fullmatch(entry.name[len(prefix):]) or not entry.is_dir():
            continue
        try:
            stale = _stale(entry)
        except OSError:  # removed meanwhile by another run's clean-up
            continue
        if stale:
            shutil.rmtree(entry, ignore_errors=True)
            log.info("removed %s, left by a run that did not finish", entry)
            removed.append(entry)
    return removed


def _stale(root: Path) -> bool:
    marker = _read_marker(root / OWNER_FILE)
    if marker is None:
        empty = not any(p.name != OWNER_FILE for p in root.iterdir())
        return _quiet_for(root, UNMARKED_EMPTY_STALE_SECONDS if empty else UNMARKED_STALE_SECONDS)
    if marker.get("locked") and fcntl is not None:
        try:
            fd = os.open(root / OWNER_FILE, os.O_RDWR)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True  # nobody holds it: the run that made it is gone
        except BlockingIOError:
            return False
        except OSError:
            pass  # locks are not available here: judge by the marker
        finally:
            os.close(fd)
    if marker.get("host") == socket.gethostname():
        return not _alive(int(marker.get("pid", 0)))
    return _quiet_for(root, FOREIGN_STALE_SECONDS)


def _read_marker(path: Path) -> dict | None:
    try:
        marker = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # absent, or not yet written (it is written once the lock is held)
    return marker if isinstance(marker, dict) else None


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def _quiet_for(root: Path, seconds: float) -> bool:
    """Nothing below `root` changed for `seconds`."""
    newest = 0.0
    for folder, _, files in os.walk(root):
        for name in [folder, *(os.path.join(folder, f) for f in files)]:
            with contextlib.suppress(OSError):
                newest = max(newest, os.stat(name).st_mtime)
    return time.time() - newest > seconds


def _publish(stage: Path, outdir: Path) -> None:
    if not outdir.exists():
        try:
            os.replace(stage, outdir)
            return
        except OSError:
            if not outdir.is_dir():  # not a concurrent run that made it meanwhile
                raise
    if not outdir.is_dir():
        raise InputError(f"output folder {outdir} exists and is not a folder")
    _remove_old_versions(outdir)
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


def _remove_old_versions(outdir: Path) -> None:
    """Old versions that a killed publish had moved aside (`.NAME.old-XXXXXXXX`)."""
    with contextlib.suppress(OSError):
        for entry in outdir.iterdir():
            if _OLD_VERSION.match(entry.name) and (outdir / entry.name[1:entry.name.rindex(".old-")]).exists():
                if entry.is_dir():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)


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
