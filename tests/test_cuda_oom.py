"""CUDA out of memory is exit 75 (Nextflow retries it) wherever the GPU work runs, recognised by
the error's type: a step's guard gives its own advice, the CLI's wrapper catches the rest."""

from __future__ import annotations

import pytest
import torch
import typer
from typer.testing import CliRunner

from nofone.cli.common import handle_errors
from nofone.errors import EXIT_CUDA_OOM, CudaOutOfMemory, as_cuda_out_of_memory, cuda_memory_guard


def _command(error: BaseException) -> typer.Typer:
    app = typer.Typer()

    @app.command()
    @handle_errors
    def work() -> None:
        raise error

    return app


def test_unguarded_out_of_memory_exits_75_with_one_line():
    error = torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore detail")
    result = CliRunner().invoke(_command(error), [])
    assert result.exit_code == EXIT_CUDA_OOM
    assert "CUDA out of memory (CUDA out of memory. Tried to allocate 2.00 GiB)" in result.output
    assert "--chunk-size" in result.output and "more detail" not in result.output


def test_other_runtime_errors_are_not_taken_for_out_of_memory():
    """The message alone does not make an out-of-memory error: a bug stays a bug (a traceback)."""
    result = CliRunner().invoke(_command(RuntimeError("CUDA out of memory, says a message")), [])
    assert result.exit_code == 1 and isinstance(result.exception, RuntimeError)


def test_the_guard_gives_its_own_advice():
    with pytest.raises(CudaOutOfMemory, match="smaller batch") as caught, cuda_memory_guard("a smaller batch"):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory.")
    assert caught.value.exit_code == EXIT_CUDA_OOM
    with pytest.raises(RuntimeError, match="not memory"), cuda_memory_guard("advice"):
        raise RuntimeError("not memory")
    assert as_cuda_out_of_memory(ValueError("CUDA out of memory"), "advice") is None
