"""`nofone run` (the whole analysis on one machine) and `nofone demo` (on simulated data)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from nofone.choices import NULLS, TESTS
from nofone.cli.common import handle_errors
from nofone.cli.train import resolve_model_type
from nofone.models.registry import DEFAULT_MODEL_TYPE, MODEL_TYPES, presets_help

log = logging.getLogger(__name__)
console = Console(stderr=True)


@handle_errors
def run_command(
    samplesheet: Path = typer.Option(..., "--samplesheet", "-i", help="Sample sheet: normal samples to train on and the samples to test."),
    outdir: Path = typer.Option(..., "--outdir", "-o", help="Output folder (one sub-folder per step)."),
    model: Path | None = typer.Option(None, help="Use this model instead of training one."),
    model_type: str | None = typer.Option(None, "--model-type", help=f"Model to train: {', '.join(MODEL_TYPES)} (default: the JSON config's \"model_type\", else {DEFAULT_MODEL_TYPE})."),
    config: str | None = typer.Option(None, help=f"Model preset ({presets_help()}) or JSON file, when training."),
    epochs: int | None = typer.Option(None, min=1, help="Override the number of epochs."),
    seed: int | None = typer.Option(None, help="Override the training seed."),
    round_counts: bool = typer.Option(False, "--round-counts", help="Round non-integer counts (RSEM, Salmon)."),
    annotation: list[Path] | None = typer.Option(None, help="Gene annotation (ids -> Ensembl, biotypes); repeatable, e.g. Ensembl and NCBI gene aliases (docs/input.md)."),
    filter_genes: bool = typer.Option(True, "--filter/--no-filter", help="filterByExpr on the normals before training."),
    group: list[str] = typer.Option(["tissue"], "--group", help="Group column(s) for filterByExpr."),
    protein_coding: bool = typer.Option(False, "--protein-coding", help="Train on protein-coding genes only."),
    condition_column: str = typer.Option("condition", help="Sample column that marks normal samples."),
    normal_value: str = typer.Option("normal", help="Value of that column for normal samples."),
    method: str = typer.Option("two_opt", help="Representation search: two_opt or one_opt."),
    test: str = typer.Option("equal-tail-midp", help=f"Per-gene test: {', '.join(TESTS)}."),
    null: str = typer.Option("auto", "--null", help=f"What the DE test holds as normal ({', '.join(NULLS)}); see docs/null.md."),
    q_threshold: float = typer.Option(0.01, help="q-value cut-off for DE calls."),
    lfc_threshold: float = typer.Option(1.0, help="|log2 fold change| cut-off for DE calls."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    resume: bool = typer.Option(False, "--resume", help="Resume training from its newest checkpoint."),
    holdout_fraction: float = typer.Option(0.0, min=0.0, max=0.9, help="Share of each tissue's normals that filtering and training never see, tested as negative controls (docs/input.md)."),
    cross_fit: int = typer.Option(0, "--cross-fit", min=0, help="Fold models that calibrate the local null, as in `nofone train --cross-fit` (docs/null.md)."),
    regulators: Path | None = typer.Option(None, "--regulators", help="Regulator model (`nofone regulators train`): explain each tested sample's DE profile into explain/ (docs/regulators.md)."),
    regulator_features: list[Path] = typer.Option([], "--regulator-features", help="Regulator tables (genes x TFs, miRNAs, RBPs; repeatable or comma-separated): train a regulator model on the normals' tissue DE into regulators/, then explain."),
    regulator_structure: list[Path] = typer.Option([], "--regulator-structure", help="Gene-structure tables for that model (repeatable)."),
    regulator_annotation: Path | None = typer.Option(None, "--regulator-annotation", help="Annotation with each gene's chromosome for that model (default: the first --annotation)."),
    regulator_seeds: int = typer.Option(10, min=1, help="Training runs of that model (the best on validation is kept)."),
    gene_sets: Path | None = typer.Option(None, "--gene-sets", help="GMT file: also test every gene set per sample into pathways/ (docs/pathways.md)."),
) -> None:
    """Run every step on one machine: ingest, filter, train (or --model), represent, de, with
    --gene-sets the gene sets per sample (pathways/), and with --regulators or
    --regulator-features the regulators behind each sample (explain/).

    Example: nofone run --samplesheet samplesheet.csv --outdir results/ --round-counts
    """
    from nofone.cli.regulators import comma_separated
    from nofone.inference.represent import SearchConfig
    from nofone.io.ingest import IngestOptions
    from nofone.models.registry import model_class
    from nofone.steps.regulators import RegulatorOptions
    from nofone.steps.run import RunOptions, run

    regulator_options = None
    if regulators is not None or regulator_features or regulator_structure:
        regulator_options = RegulatorOptions(
            model=regulators, features=comma_separated(regulator_features),
            structure=comma_separated(regulator_structure), annotation=regulator_annotation, seeds=regulator_seeds)
    settings = model_class(resolve_model_type(model_type, config)).settings(
        config, {"training.epochs": epochs, "training.seed": seed})
    options = RunOptions(
        model=model, config=settings,
        ingest=IngestOptions(round_counts=round_counts, annotation=annotation or None), filter_genes=filter_genes,
        group=group, protein_coding=protein_coding, condition_column=condition_column,
        normal_value=normal_value, search=SearchConfig(method=method), test=test, null=null, q_threshold=q_threshold,
        lfc_threshold=lfc_threshold, device=device, resume=resume, holdout_fraction=holdout_fraction,
        cross_fit=cross_fit, regulators=regulator_options, seed=seed or 0, gene_sets=gene_sets,
    )
    report = run(samplesheet, outdir, options)
    _print_groups(report)
    if "regulators" in report:
        found = report["regulators"]
        console.print(f"regulators ({found['model']}): {found['n_samples']} samples explained, held-out Spearman "
                      f"median {found['median_heldout_spearman']:.3f} -> {found['explain']}; "
                      f"nofone report --run {outdir} shows them")


@handle_errors
def demo_command(
    outdir: Path = typer.Option(..., "--outdir", "-o", help="Output folder."),
    seed: int = typer.Option(0, help="Seed of the simulation and the training."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    evaluate_: bool = typer.Option(True, "--evaluate/--no-evaluate",
                                   help="Also compare with DESeq2 (held-out normals, spike-ins) for the report."),
) -> None:
    """Simulate a normal atlas with planted DE in case samples, run everything, score the calls,
    and end with the HTML report (demo/report/report.html).

    Example: nofone demo --outdir demo/
    """
    from nofone.io.atomic import write_json_atomic
    from nofone.io.ingest import IngestOptions
    from nofone.models.registry import model_class
    from nofone.simulate import SimulationConfig, simulate
    from nofone.steps.run import RunOptions, run, score_against_truth

    started = time.perf_counter()
    outdir = Path(outdir)
    sim = outdir / "simulation"
    log.info("simulating a normal atlas and case samples into %s", sim)
    simulate(sim, SimulationConfig(seed=seed, samples_per_tissue=100, cases=16))
    options = RunOptions(config=model_class(DEFAULT_MODEL_TYPE).settings(None, {"training.seed": seed}),
                         ingest=IngestOptions(annotation=sim / "genes.tsv"), device=device)
    report = run(sim / "samplesheet.csv", outdir, options)
    cases = [s["sample_id"] for s in report["samples"] if s["group"] == "case"]
    controls = [s["sample_id"] for s in report["samples"] if s["group"] != "case"]
    scores = score_against_truth(outdir / "de" / "de.parquet", sim / "truth.tsv", cases,
                                 options.q_threshold, options.lfc_threshold)
    negative = {g: v for g, v in report["groups"].items() if g != "case"}
    demo = {"seconds": round(time.perf_counter() - started, 1), "cases": scores,
            "negative_controls": negative, "n_negative_control_samples": len(controls)}
    write_json_atomic(outdir / "demo_report.json", demo)
    evaluation = None
    if evaluate_:
        from nofone.steps.evaluate import EvaluateOptions, evaluate

        # 4 of the simulation's 8 held-out normals (never seen by training, unlike the early-
        # stopping ones), DESeq2 with all same-tissue training normals and with 5 random ones
        # (2 draws), spike-ins of 4-fold changes: a small version of `nofone evaluate` (~1 min)
        evaluation = outdir / "evaluation"
        log.info("comparing with DESeq2 on the held-out normals -> %s", evaluation)
        evaluate(outdir, evaluation, EvaluateOptions(normal_value="heldout_normal", max_negative=4, repeats=2,
                                                     spike_lfcs=(2.0,), seed=seed, device=device))
    from nofone.report.build import ReportOptions
    from nofone.report.build import report as write_report

    write_report(outdir, outdir / "report", evaluation=evaluation,
                 options=ReportOptions(title="nofone demo: a simulated atlas with planted DE"))
    demo["seconds"] = round(time.perf_counter() - started, 1)
    write_json_atomic(outdir / "demo_report.json", demo)
    _print_groups(report)
    console.print(
        f"planted DE genes in {scores['samples']} cases: recall {scores['recall_abs_lfc_ge_1']:.1%} "
        f"(|log2FC| >= 1), observed FDR {scores['observed_fdr']:.1%}, direction correct "
        f"{scores['direction_correct']:.1%}; {demo['seconds']} s. Details: {outdir / 'demo_report.json'}; "
        f"report: {outdir / 'report' / 'report.html'}"
    )


def _print_groups(report: dict) -> None:
    table = Table(title=f"DE genes per sample ({report['calls']})")
    for column in ("group", "samples", "mean DE genes", "mean up", "mean down"):
        table.add_column(column)
    for group, values in report["groups"].items():
        table.add_row(group, str(values["samples"]), f"{values['mean_de_genes']:.1f}",
                      f"{values['mean_up']:.1f}", f"{values['mean_down']:.1f}")
    console.print(table)
    log.debug(json.dumps(report["groups"]))


def register(app: typer.Typer) -> None:
    app.command("run")(run_command)
    app.command("demo")(demo_command)
