"""`nofone represent` and `nofone de`: closest normals and per-gene tests."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from nofone.choices import NULLS, SCALINGS, TESTS
from nofone.choices import SEARCH_METHODS as METHODS
from nofone.cli.common import echo, handle_errors


@handle_errors
def represent_command(
    model: Path = typer.Option(..., "--model", "-m", help="Model folder."),
    input: Path = typer.Option(..., "--input", "-i", help="Dataset folder."),
    outdir: Path = typer.Option(..., "--outdir", "-o", help="Output folder (representations.parquet)."),
    method: str = typer.Option("two_opt", help=f"Search: {', '.join(METHODS)}."),
    chunk_size: int = typer.Option(16, min=1, help="Samples optimised together; bounds memory."),
    keep_candidates: int = typer.Option(8, min=0, help="two_opt: optimise only the best K starts per sample (0 = all, as bulkDGD)."),
    steps_first: int = typer.Option(10, min=0, help="Steps before choosing the best candidate."),
    steps_second: int = typer.Option(50, min=0, help="Steps after choosing it."),
    scaling: str | None = typer.Option(None, help=f"Scaling factor: {', '.join(SCALINGS)} (default: the model's own; DGD: mean)."),
    samples: list[str] = typer.Option([], "--sample", help="Only these samples (repeatable)."),
    samples_file: Path | None = typer.Option(None, help="Only the samples listed in this file (one id per line)."),
    condition: str | None = typer.Option(None, help="Only samples whose 'condition' is this value."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
) -> None:
    """Find each sample's closest normal representation (decoder and GMM frozen).

    Example: nofone represent --model model/ --input data/ --outdir reps/ --condition case
    """
    if scaling is not None and scaling not in SCALINGS:
        raise typer.BadParameter(f"use one of {', '.join(SCALINGS)}", param_hint="--scaling")
    from nofone.inference.represent import SearchConfig
    from nofone.io.dataset import Dataset
    from nofone.steps.common import select_samples
    from nofone.steps.represent import represent

    ids = select_samples(Dataset(input), samples, samples_file, condition)
    search = SearchConfig(method=method, steps_first=steps_first, steps_second=steps_second,
                          keep_candidates=keep_candidates or None, scaling=scaling)
    summary = represent(model, input, outdir, search, ids, chunk_size, device)
    left_out = f"; {len(summary['left_out'])} left out, no counts (represent_report.json)" if summary["left_out"] else ""
    echo(f"represented {summary['n_samples']} samples in {summary['seconds']} s -> {outdir}{left_out}")


@handle_errors
def de_command(
    model: Path = typer.Option(..., "--model", "-m", help="Model folder."),
    representations: Path = typer.Option(..., "--representations", "-r", help="Folder from `nofone represent`."),
    input: Path = typer.Option(..., "--input", "-i", help="Dataset folder."),
    outdir: Path = typer.Option(..., "--outdir", "-o", help="Output: de.parquet, summary.tsv, samples/<id>.tsv."),
    test: str = typer.Option("equal-tail-midp", help=f"Per-gene test: {', '.join(TESTS)}."),
    scaling: str | None = typer.Option(None, help=f"Recompute scaling factors ({', '.join(SCALINGS)}); default: as in represent."),
    q_threshold: float = typer.Option(0.01, help="q-value cut-off for calls in summary.tsv and for the can_call_down flag."),
    lfc_threshold: float = typer.Option(1.0, help="|log2 fold change| cut-off for calls in summary.tsv."),
    null: str = typer.Option("auto", "--null", help=f"What the test holds as normal ({', '.join(NULLS)}); auto: local for models trained "
                                                "with --cross-fit, else outlier where calibrated, else nb. See docs/null.md."),
    tsv: bool = typer.Option(True, "--tsv/--no-tsv", help="Also write one TSV per sample."),
    chunk_size: int = typer.Option(64, min=1, help="Samples per chunk; bounds memory."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
) -> None:
    """Test every gene of every represented sample against its closest normal's NB.

    Example: nofone de --model model/ --representations reps/ --input data/ --outdir de/
    """
    from nofone.steps.de import DEOptions, differential_expression

    options = DEOptions(test=test, scaling=scaling, q_threshold=q_threshold, lfc_threshold=lfc_threshold,
                        null=null, write_tsv=tsv, chunk_size=chunk_size, device=device)
    summary = differential_expression(model, representations, input, outdir, options)
    used = json.loads((outdir / "de_report.json").read_text())["null"]
    echo(f"tested {len(summary)} samples against the {used} null: median {int(summary['n_de'].median())} DE genes "
         f"per sample (q < {q_threshold}, |log2FC| > {lfc_threshold}) -> {outdir}")


def register(app: typer.Typer) -> None:
    app.command("represent")(represent_command)
    app.command("de")(de_command)
