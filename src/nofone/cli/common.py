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

from nofone.errors import EXIT_INPUT, NofoneError, as_cuda_out_of_memory

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
            # Steps guard their GPU work with a step-specific advice (`errors.cuda_memory_guard`);
            # this catches the GPU work that no guard wraps (cohort DE's decoding and sampling, the
            # diffusion model's perturb and augment), by the error's type as the guard does.
            converted = as_cuda_out_of_memory(exc, "retry with a smaller --chunk-size or on a larger GPU")
            if converted is None:
                raise
            fail(str(converted), converted.exit_code)

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
