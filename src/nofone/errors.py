"""Errors a user can act on, and the exit codes the CLI and Nextflow rely on."""

from __future__ import annotations

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


def shown(text: str, limit: int = 40) -> str:
    """A value for a message: quoted, non-printable characters escaped, long ones cut."""
    cut = text if len(text) <= limit else text[:limit] + "..."
    return ascii(cut) if not cut.isprintable() or not cut.isascii() else repr(cut)
