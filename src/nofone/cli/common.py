"""What every command shares: error reporting, logging, option types."""

from __future__ import annotations

import errno
import functools
import logging
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from nofone.errors import EXIT_CUDA_OOM, EXIT_INPUT, NofoneError

err_console = Console(stderr=True)
log = logging.getLogger("nofone")
F = TypeVar("F", bound=Callable[..., Any])


#: OS errors about the paths a user gave: bad input (exit 2), not worth a retry.
_PATH_ERRNOS = {errno.ENOENT, errno.EACCES, errno.EPERM, errno.EISDIR, errno.ENOTDIR, errno.EEXIST,
                errno.EROFS, errno.ENAMETOOLONG, errno.ELOOP}
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_MAX_MESSAGE = 2000


def handle_errors(func: F) -> F:
    """Print user errors as one clear line on stderr and exit with their code, no traceback.

    The command's `--outdir` is checked first (a file, under a file, read-only), so that a
    bad output folder fails before the work, not after it.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            if isinstance(kwargs.get("outdir"), Path):
                from nofone.io.atomic import check_outdir

                check_outdir(kwargs["outdir"])
            return func(*args, **kwargs)
        except NofoneError as exc:
            fail(str(exc), exc.exit_code)
        except OSError as exc:
            where = f": {exc.filename}" if exc.filename else ""
            fail(f"{(exc.strerror or str(exc)).lower()}{where}", EXIT_INPUT if exc.errno in _PATH_ERRNOS else 1)
        except RuntimeError as exc:
            if "CUDA out of memory" in str(exc) or type(exc).__name__ == "OutOfMemoryError":
                fail(f"CUDA out of memory ({exc}); retry with a smaller --chunk-size or on a larger GPU",
                     EXIT_CUDA_OOM)
            raise

    return wrapper  # type: ignore[return-value]


def one_line(message: str) -> str:
    """A message as one printable line: line breaks and control characters escaped, cut short."""
    text = message.replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\r").replace("\t", " ")
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    return text if len(text) <= _MAX_MESSAGE else text[:_MAX_MESSAGE] + " ..."


def fail(message: str, code: int) -> NoReturn:
    """Print `error: message` on stderr (never as rich markup) and exit with `code`."""
    err_console.print(f"[bold red]error:[/] {escape(one_line(message))}", highlight=False, soft_wrap=True)
    raise typer.Exit(code) from None


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
