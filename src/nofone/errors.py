"""Errors a user can act on, and the exit codes the CLI and Nextflow rely on."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

#: Exit code for input or usage errors (bad file, bad option). Nextflow must not retry these.
EXIT_INPUT = 2
#: Exit code for CUDA out-of-memory; `conf/base.config` retries it with more memory.
EXIT_CUDA_OOM = 75


class NofoneError(Exception):
    """An error caused by the user's input or options: printed without a traceback."""

    exit_code = EXIT_INPUT


class InputError(NofoneError):
    """A problem in an input file: the message names the file and, when known, row/gene/sample."""


class CudaOutOfMemory(NofoneError):
    """The GPU ran out of memory; a retry with a smaller chunk or a larger GPU may succeed."""

    exit_code = EXIT_CUDA_OOM


@contextmanager
def cuda_memory_guard(advice: str) -> Iterator[None]:
    """Turn torch's CUDA out-of-memory error into `CudaOutOfMemory` (exit 75), with `advice`
    ("retry with a smaller --chunk-size ...") after torch's own first line."""
    try:
        yield
    except RuntimeError as exc:
        import torch  # already imported by whoever ran out of GPU memory

        if not isinstance(exc, torch.cuda.OutOfMemoryError):
            raise
        first = str(exc).splitlines()[0] if str(exc) else "CUDA out of memory"
        raise CudaOutOfMemory(f"CUDA out of memory ({first}); {advice}") from exc


def shown(text: str, limit: int = 40) -> str:
    """A value for a message: quoted, non-printable characters escaped, long ones cut."""
    cut = text if len(text) <= limit else text[:limit] + "..."
    return ascii(cut) if not cut.isprintable() or not cut.isascii() else repr(cut)
