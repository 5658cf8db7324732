"""Shared fixtures: paths to the optional real data, small file writers, a CLI runner."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("NOFONE_SHARED_DATA", REPO.parent / "shared" / "data"))

os.environ.setdefault("NOFONE_PROGRESS", "0")

requires_shared_data = pytest.mark.skipif(
    not SHARED_DATA.is_dir(),
    reason=f"real datasets not found at {SHARED_DATA} (set NOFONE_SHARED_DATA to run these)",
)


def write(path: Path, text: str, gz: bool = False) -> Path:
    """Write a text fixture, gzipped when asked."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        with gzip.open(path, "wt") as handle:
            handle.write(text)
    else:
        path.write_text(text)
    return path


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture(autouse=True)
def _quiet_progress():
    from nofone import progress

    progress.set_enabled(False)
    yield
