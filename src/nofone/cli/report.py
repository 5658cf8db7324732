"""`nofone report`: one self-contained HTML report of a run (figures, tables, evaluation)."""

from __future__ import annotations

from pathlib import Path

import typer

from nofone.cli.common import echo, handle_errors


@handle_errors
def report_command(
    run: Path | None = typer.Option(None, "--run", help="Output folder of `nofone run`/`nofone demo` (data/ or filtered/, model/, representations/, de/)."),
    outdir: Path = typer.Option(..., "--outdir", "-o", help="Output folder: report.html, report_summary.json, tables/*.tsv."),
    evaluation: Path | None = typer.Option(None, "--evaluation", help="Output folder of `nofone evaluate` (its tables are shown)."),
    samples: list[str] = typer.Option([], "--sample", help="Sample for the volcano plots (repeatable; default: up to 4 non-normal samples with most calls)."),
    title: str = typer.Option("nofone report", "--title", help="Title of the report."),
    model: Path | None = typer.Option(None, "--model", help="Model folder (instead of RUN/model)."),
    representations: Path | None = typer.Option(None, "--representations", help="Folder with representations.parquet (instead of RUN/representations), e.g. the Nextflow cohort/ folder."),
    de: Path | None = typer.Option(None, "--de", help="Folder with de.parquet, summary.tsv (instead of RUN/de), e.g. the Nextflow cohort/ folder."),
    data: Path | None = typer.Option(None, "--data", help="Dataset folder with samples.parquet (instead of RUN/filtered or RUN/data)."),
    cohort_de: Path | None = typer.Option(None, "--cohort-de", help="Output folder of `nofone cohort-de`: adds its section; may be given without --run (docs/input.md)."),
    explain: Path | None = typer.Option(None, "--explain", help="Output folder of `nofone explain` (instead of RUN/explain): adds the regulators section; may be given without --run."),
    pathways: Path | None = typer.Option(None, "--pathways", help="Output folder of `nofone pathways` (default: RUN/pathways): adds the gene sets called per sample."),
    max_table_rows: int = typer.Option(200, min=1, help="Rows shown per table in the HTML (the TSVs have all)."),
) -> None:
    """Write an HTML report of a run (model, training, latent, NLL, DE calls, volcanoes, regulators) and/or of `nofone cohort-de`.

    The page is one file with every figure embedded: it opens offline and can be mailed.

    Example: nofone report --run results/ --outdir results/report --evaluation results/evaluation

    Nextflow layout: nofone report --model results/model --data results/filtered
    --representations results/cohort --de results/cohort --outdir results/report

    Cohort DE alone: nofone report --cohort-de gse_de/ --outdir gse_report/ --title "lactate vs virgin"

    Regulators: nofone report --run results/ --explain results/explain --outdir results/report
    """
    from nofone.report.build import REPORT_HTML, ReportOptions, report

    options = ReportOptions(title=title, samples=list(samples), max_table_rows=max_table_rows)
    summary = report(run, outdir, model=model, representations=representations, de=de, data=data,
                     evaluation=evaluation, cohort_de=cohort_de, explain=explain, pathways=pathways, options=options)
    missing = [name for name, s in summary["sections"].items() if not s["available"]]
    echo(f"report -> {Path(outdir) / REPORT_HTML}" + (f" (not available: {', '.join(missing)})" if missing else ""))


def register(app: typer.Typer) -> None:
    app.command("report")(report_command)
