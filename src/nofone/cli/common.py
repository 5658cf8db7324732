"""What every command shares: error reporting, logging, option types."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console

from nofone.errors import EXIT_CUDA_OOM, NofoneError

err_console = Console(stderr=True)
log = logging.getLogger("nofone")
F = TypeVar("F", bound=Callable[..., Any])


def handle_errors(func: F) -> F:
    """Print user errors as one clear line on stderr and exit with their code, no traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except NofoneError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except RuntimeError as exc:
            if "CUDA out of memory" in str(exc) or type(exc).__name__ == "OutOfMemoryError":
                err_console.print(
                    f"[bold red]error:[/] CUDA out of memory ({exc}); retry with a smaller "
                    "--chunk-size or on a larger GPU", highlight=False, soft_wrap=True,
                )
                raise typer.Exit(EXIT_CUDA_OOM) from None
            raise

    return wrapper  # type: ignore[return-value]


def setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    from rich.logging import RichHandler

    logging.basicConfig(
        level=level, format="%(message)s", datefmt="[%X]",
        handlers=[RichHandler(console=err_console, show_path=False, rich_tracebacks=False)],
        force=True,
    )


def echo(message: str) -> None:
    """A result line for the user, on stderr so that stdout stays clean for pipes."""
    print(message, file=sys.stderr)
