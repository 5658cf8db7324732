"""Errors a user can act on, and the exit codes the CLI and Nextflow rely on."""

from __future__ import annotations

import sys
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


def as_cuda_out_of_memory(exc: BaseException, advice: str) -> CudaOutOfMemory | None:
    """`CudaOutOfMemory` (exit 75) for torch's CUDA out-of-memory error, with `advice` ("retry with
    a smaller --chunk-size ...") after torch's own first line; None for any other error."""
    torch = sys.modules.get("torch")  # an out-of-memory error means torch is already imported
    if torch is None or not isinstance(exc, torch.cuda.OutOfMemoryError):
        return None
    first = str(exc).splitlines()[0] if str(exc) else "CUDA out of memory"
    return CudaOutOfMemory(f"CUDA out of memory ({first}); {advice}")


@contextmanager
def cuda_memory_guard(advice: str) -> Iterator[None]:
    """Raise torch's CUDA out-of-memory error inside the block as `CudaOutOfMemory`, with the
    step's own `advice`."""
    try:
        yield
    except RuntimeError as exc:
        converted = as_cuda_out_of_memory(exc, advice)
        if converted is None:
            raise
        raise converted from exc


def shown(text: str, limit: int = 40) -> str:
    """A value for a message: quoted, non-printable characters escaped, long ones cut."""
    cut = text if len(text) <= limit else text[:limit] + "..."
    return ascii(cut) if not cut.isprintable() or not cut.isascii() else repr(cut)
