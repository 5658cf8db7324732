"""Rich progress bars on stderr for long work; silent when disabled (tests, `--quiet`)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

_console = Console(stderr=True)
_enabled = os.environ.get("NOFONE_PROGRESS", "1") != "0"


def set_enabled(enabled: bool) -> None:
    """Turn progress bars on or off for this process (the CLI's `--quiet`)."""
    global _enabled
    _enabled = enabled


@contextlib.contextmanager
def progress(description: str, total: int | None) -> Iterator[Callable[..., None]]:
    """Yield `advance(n=1, **fields)`; extra fields (e.g. `loss=`) are shown after the bar."""
    if not _enabled:
        yield lambda n=1, **fields: None
        return
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
    ]
    with Progress(*columns, console=_console, transient=False) as bar:
        task = bar.add_task(description, total=total, info="")

        def advance(n: int = 1, **fields: object) -> None:
            info = "  ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items()
            )
            bar.update(task, advance=n, info=info)

        yield advance
