"""`nofone evaluate`: the paper's comparisons (negative controls, spike-ins, enrichment, tissues)."""

from __future__ import annotations

from pathlib import Path

import typer

from nofone.cli.common import echo, handle_errors


@handle_errors
def evaluate_command(
    run: Path | None = typer.Option(None, "--run", help="Output folder of `nofone run` or `nofone demo`; or give all of --data, --model, --representations, --de."),
    outdir: Path = typer.Option(..., "--outdir", "-o", help="Folder for the evaluation tables."),
    data: Path | None = typer.Option(None, "--data", help="Dataset folder with counts.parquet (instead of RUN/filtered or RUN/data)."),
    model: Path | None = typer.Option(None, "--model", help="Model folder from `nofone train`, with training_representations.parquet (instead of RUN/model)."),
    representations: Path | None = typer.Option(None, "--representations", help="Folder with representations.parquet (instead of RUN/representations), e.g. the Nextflow cohort/ folder."),
    de: Path | None = typer.Option(None, "--de", help="Folder with de.parquet (instead of RUN/de), e.g. the Nextflow cohort/ folder."),
    gene_set: list[Path] = typer.Option([], "--gene-set", help="GMT file or gene list (one per line); repeatable."),
    deseq2: bool = typer.Option(True, "--deseq2/--no-deseq2", help="Compare with DESeq2 (pydeseq2) N-of-one calls."),
    n_random_controls: int = typer.Option(5, min=0, help="DESeq2 with this many random controls (0: skip)."),
    repeats: int = typer.Option(20, min=0, help="Repetitions of the random-controls comparison."),
    max_negative: int = typer.Option(20, min=1, help="Held-out normals used (chosen at random, seeded)."),
    max_cases: int = typer.Option(20, min=1, help="Cases scored for gene-set enrichment (chosen at random, seeded)."),
    negative_condition: list[str] = typer.Option([], help="Further 'condition' values that are normal (e.g. heldout_normal)."),
    normal_value: str = typer.Option("normal", help="'condition' value of normal samples."),
    spike_ins: bool = typer.Option(True, "--spike-ins/--no-spike-ins", help="Plant DE in held-out normals and score both methods."),
    spike_fraction: float = typer.Option(0.05, help="Fraction of (expressed) genes changed per spiked sample."),
    spike_lfc: list[float] = typer.Option([1.0, 2.0, 3.0], help="|log2 fold change| of the planted changes; repeatable."),
    q_threshold: list[float] = typer.Option([0.01, 0.05, 0.1], help="q-value thresholds; repeatable."),
    lfc_threshold: float = typer.Option(1.0, help="|log2 fold change| for a DE call."),
    compare_model: list[str] = typer.Option([], help="NAME=MODEL_DIR: also evaluate this model (e.g. nbvae=nbvae_model/) on the same samples; repeatable."),
    seed: int = typer.Option(0, help="Seed for sampling controls, held-out normals and spike-ins."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
) -> None:
    """Compare the model with DESeq2 on your data: false calls in held-out normals, spike-in
    recovery, enrichment of gene sets, tissue assignment, out-of-distribution scores.

    Example: nofone evaluate --run results/ --outdir evaluation/ --gene-set h.all.v7.0.symbols.gmt

    Nextflow layout: nofone evaluate --data results/filtered --model results/model
    --representations results/cohort --de results/cohort --outdir results/evaluation
    """
    from nofone.errors import InputError
    from nofone.steps.evaluate import EvaluateOptions, evaluate

    compare = {}
    for spec in compare_model:
        name, sep, folder = spec.partition("=")
        if not sep or not name or not folder:
            raise InputError(f"--compare-model {spec!r}: use NAME=MODEL_DIR")
        compare[name] = folder

    options = EvaluateOptions(
        q_thresholds=tuple(sorted(q_threshold)), lfc_threshold=lfc_threshold, normal_value=normal_value,
        negative_conditions=tuple(negative_condition), max_negative=max_negative, max_cases=max_cases, deseq2=deseq2,
        n_random_controls=n_random_controls, repeats=repeats, spike_ins=spike_ins, spike_fraction=spike_fraction,
        spike_lfcs=tuple(spike_lfc), gene_sets=tuple(str(p) for p in gene_set), compare_models=compare,
        seed=seed, device=device,
    )
    summary = evaluate(run, outdir, options, data=data, model=model, representations=representations, de=de)
    echo(f"evaluated {summary['n_negative_controls']} held-out normals and {summary['n_cases']} cases "
         f"in {summary['seconds']} s -> {outdir}")


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate_command)
