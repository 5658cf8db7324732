"""`nofone deseq2 contrast` and `nofone deseq2 n-of-one`: the classical DESeq2 baseline (pydeseq2)."""

from __future__ import annotations

from pathlib import Path

import typer

from nofone.cli.common import echo, handle_errors

sub_app = typer.Typer(
    help="The classical baseline: DESeq2 (pydeseq2, matched to Bioconductor DESeq2's results()).",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@sub_app.command("contrast")
@handle_errors
def contrast_command(
    input: Path = typer.Option(..., "--input", "-i", help="Dataset folder."),
    outdir: Path = typer.Option(..., "--outdir", "-o", help="Output: deseq2_results.tsv, deseq2_report.json."),
    design: str = typer.Option(..., help="Design formula over sample-sheet columns, e.g. '~ celltype + dex' (docs/deseq2.md)."),
    contrast: str = typer.Option(..., help="factor,level,reference: log2 fold changes of level over reference."),
    alpha: float = typer.Option(0.05, help="FDR target of independent filtering; padj < alpha is counted as significant."),
) -> None:
    """DESeq2 on a whole cohort for one contrast (R's results(): baseMean, log2FoldChange, lfcSE, stat, pvalue, padj).

    Example: nofone deseq2 contrast --input data/ --outdir deseq2/ --design "~ celltype + dex" --contrast dex,treated,control
    """
    from nofone.steps.deseq2 import contrast as run_contrast

    report = run_contrast(input, outdir, design, contrast, alpha)
    c = report["contrast"]
    echo(f"{report['n_significant']} genes with padj < {alpha} ({report['n_up']} up, {report['n_down']} down) "
         f"for {c['factor']} {c['level']} vs {c['reference']} over {report['n_samples']} samples -> {outdir}")


@sub_app.command("n-of-one")
@handle_errors
def n_of_one_command(
    input: Path = typer.Option(..., "--input", "-i", help="Dataset folder."),
    outdir: Path = typer.Option(..., "--outdir", "-o", help="Output: deseq2.parquet, summary.tsv, controls.tsv, deseq2_report.json."),
    cases: list[str] = typer.Option([], "--case", help="Case sample id (repeatable)."),
    cases_condition: str | None = typer.Option(None, help="Cases: the samples whose condition is this value."),
    cases_except_condition: list[str] = typer.Option([], help="Cases: every sample whose condition is none of these values (repeatable; docs/deseq2.md)."),
    controls: list[str] = typer.Option([], "--control", help="Control sample id (repeatable)."),
    controls_condition: str | None = typer.Option(None, help="Controls: the samples whose condition is this value."),
    controls_trained_by: Path | None = typer.Option(None, help="Model folder: keep only the controls it trained on (docs/deseq2.md)."),
    same_tissue: bool = typer.Option(False, "--same-tissue", help="Only controls of the case's own tissue."),
    n_controls: int | None = typer.Option(None, min=2, help="Draw this many random controls per case and repeat (default: all)."),
    repeats: int = typer.Option(1, min=1, help="Repeats per case, each with its own random controls (needs --n-controls)."),
    seed: int = typer.Option(0, help="Seed of the random controls (one generator per case and repeat)."),
    alpha: float = typer.Option(0.05, help="FDR target of DESeq2's independent filtering."),
    q_threshold: float = typer.Option(0.01, help="q-value (padj) cut-off for calls in summary.tsv."),
    lfc_threshold: float = typer.Option(1.0, help="|log2 fold change| cut-off for calls in summary.tsv."),
    condition_column: str = typer.Option("condition", help="Metadata column of --cases-condition/--controls-condition."),
    tissue_column: str = typer.Option("tissue", help="Metadata column used by --same-tissue."),
) -> None:
    """Each case sample against controls with DESeq2 (~ group), in the per-gene layout of `nofone de`.

    A case is never its own control, so normals can be tested against the other normals.

    Example: nofone deseq2 n-of-one --input data/ --outdir deseq2_5/ --cases-condition tumour --controls-condition normal --same-tissue --n-controls 5 --repeats 20 --seed 0

    Every non-normal sample against the normals a model trained on: nofone deseq2 n-of-one --input filtered/
    --outdir deseq2/ --cases-except-condition normal --controls-condition normal --controls-trained-by model/
    """
    from nofone.steps.deseq2 import NOfOneOptions, n_of_one

    options = NOfOneOptions(
        cases=cases, cases_condition=cases_condition, cases_except_conditions=tuple(cases_except_condition),
        controls=controls, controls_condition=controls_condition, controls_trained_by=controls_trained_by,
        same_tissue=same_tissue, n_controls=n_controls, repeats=repeats, seed=seed, alpha=alpha,
        q_threshold=q_threshold, lfc_threshold=lfc_threshold, condition_column=condition_column,
        tissue_column=tissue_column)
    summary = n_of_one(input, outdir, options)
    echo(f"{summary['sample_id'].nunique()} cases x {repeats} repeat(s): median {summary['n_de'].median():g} DE genes "
         f"per run (q < {q_threshold}, |log2FC| > {lfc_threshold}) -> {outdir}")


def register(app: typer.Typer) -> None:
    app.add_typer(sub_app, name="deseq2")
