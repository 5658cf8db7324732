"""The `nofone` typer app: global options and one subcommand per pipeline step."""

from __future__ import annotations

import typer

from nofone import __version__, progress
from nofone.cli import cohort_de as cohort_de_cmd
from nofone.cli import deseq2 as deseq2_cmd
from nofone.cli import diffusion_tasks as diffusion_tasks_cmd
from nofone.cli import evaluate as evaluate_cmd
from nofone.cli import filter as filter_cmd
from nofone.cli import infer as infer_cmd
from nofone.cli import ingest as ingest_cmd
from nofone.cli import pathways as pathways_cmd
from nofone.cli import regulators as regulators_cmd
from nofone.cli import report as report_cmd
from nofone.cli import run as run_cmd
from nofone.cli import scatter as scatter_cmd
from nofone.cli import simulate as simulate_cmd
from nofone.cli import split as split_cmd
from nofone.cli import train as train_cmd
from nofone.cli.common import setup_logging

app = typer.Typer(
    name="nofone",
    help="N-of-one differential expression of bulk RNA-seq against a generative model of "
    "normal tissue: no control samples needed.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        print(f"nofone {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="More log output (-vv: debug)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only warnings and errors; no progress bars."),
    threads: int | None = typer.Option(None, "--threads", min=1, envvar="NOFONE_THREADS",
                                       help="CPU threads for torch, BLAS and the per-gene tests of de (default: all cores; a cluster task passes its cpus)."),
) -> None:
    setup_logging(verbose, quiet)
    if quiet:
        progress.set_enabled(False)
    if threads:
        set_threads(threads)


def set_threads(n: int) -> None:
    """Limit torch's and the BLAS libraries' threads (an HPC job must not use cores it was not given)."""
    import os

    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = str(n)
    import torch

    torch.set_num_threads(n)


for module in (ingest_cmd, filter_cmd, split_cmd, simulate_cmd, train_cmd, infer_cmd, run_cmd, scatter_cmd,
               evaluate_cmd, deseq2_cmd, report_cmd, cohort_de_cmd, diffusion_tasks_cmd, pathways_cmd):
    module.register(app)
regulators_cmd.register(app)  # `nofone regulators train` and `nofone explain`


def main() -> None:
    """Console-script entry point."""
    app()
