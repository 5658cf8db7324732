"""Assemble the report: read the run's outputs, build each section, write one HTML file.

    report.html            one self-contained page (PNG figures as data: URIs, inline CSS, no JS)
    report_summary.json    the numbers shown, per section whether it was available
    tables/*.tsv           every table shown, in full

The sections (`nofone.report.sections`) are functions of the loaded data (`inputs.ReportData`);
this module picks them, runs them in order and puts the page together.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from nofone import __version__
from nofone.errors import InputError
from nofone.io.atomic import staged_outdir, write_json_atomic
from nofone.report.context import TABLES, ReportContext, ReportOptions
from nofone.report.html import Section, code, esc, page
from nofone.report.inputs import ReportData, ReportPaths, load, resolve_paths
from nofone.report.sections import COHORT, EXPLAIN, PATHWAYS, RUN, sections_for

__all__ = ["REPORT_HTML", "REPORT_SUMMARY", "Report", "ReportOptions", "build_report", "report", "write_report"]

REPORT_HTML = "report.html"
REPORT_SUMMARY = "report_summary.json"


@dataclass
class Report:
    html: str
    summary: dict
    tables: dict[str, pd.DataFrame]


def build_report(paths: ReportPaths, options: ReportOptions | None = None) -> Report:
    """Read the inputs and build the report in memory (nothing is written)."""
    options = options or ReportOptions()
    data = load(paths)
    _check_samples(data, options.samples)
    ctx = ReportContext(data, options)
    run_inputs = any((paths.run, paths.model, paths.representations, paths.de, paths.data))
    # a cohort-de, explain or pathways report alone has nothing of a run to show: no list of empty sections
    alone = {COHORT: paths.cohort_de, EXPLAIN: paths.explain, PATHWAYS: paths.pathways}
    sources = {source for source, path in alone.items() if path is not None}
    if run_inputs or not sources:
        sources.add(RUN)
    sections = []
    for spec in sections_for(sources):
        section = Section(spec.id, spec.title)
        spec.build(ctx, section)
        sections.append(section)
    generated = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    html = page(options.title, _subtitle(paths, run_inputs, generated), sections, _footer(), __version__)
    summary = {
        "nofone_version": __version__,
        "title": options.title,
        "generated": generated.isoformat(),
        "inputs": paths.as_dict(),
        "sections": {s.id: {"title": s.title, "available": s.available, "not_available": s.notes}
                     for s in sections},
        **ctx.numbers,
        "tables": [f"{TABLES}/{name}.tsv" for name in ctx.tables],
    }
    return Report(html, summary, ctx.tables)


def _subtitle(paths: ReportPaths, run_inputs: bool, generated: dt.datetime) -> str:
    if run_inputs:
        source = paths.run or paths.de or paths.representations or paths.model or paths.data
        subtitle = f"N-of-one differential expression against a model of normal tissue · {code(source)}"
        if paths.cohort_de is not None:
            subtitle += f" · cohort differential expression: {code(paths.cohort_de)}"
    elif paths.cohort_de is not None:
        subtitle = ("Generative differential expression between two groups of a cohort (NB-VAE) · "
                    f"{code(paths.cohort_de)}")
    else:
        subtitle = f"The regulators behind DE profiles (DEcode) · {code(paths.explain)}"
    return subtitle + f" · {esc(generated.strftime('%Y-%m-%d %H:%M UTC'))}"


def _footer() -> str:
    return (f"Made by nofone {esc(__version__)} ({code('nofone report')}). Self-contained: "
            f"no scripts, fonts or images are loaded from anywhere. Tables in full: {code(f'{TABLES}/')}.")


def write_report(report: Report, outdir: Path) -> None:
    """Write report.html, report_summary.json and tables/ atomically into `outdir`."""
    with staged_outdir(outdir) as stage:
        (stage / REPORT_HTML).write_text(report.html, encoding="utf-8")
        (stage / TABLES).mkdir()
        for name, frame in report.tables.items():
            frame.to_csv(stage / TABLES / f"{name}.tsv", sep="\t", index=False, float_format="%.6g")
        write_json_atomic(stage / REPORT_SUMMARY, report.summary)


def report(run: Path | None, outdir: Path, *, model: Path | None = None,
           representations: Path | None = None, de: Path | None = None, data: Path | None = None,
           evaluation: Path | None = None, cohort_de: Path | None = None, explain: Path | None = None,
           pathways: Path | None = None,
           options: ReportOptions | None = None) -> dict:
    """The `nofone report` step: resolve the inputs, build, write; returns the summary."""
    paths = resolve_paths(run, model, representations, de, data, evaluation, cohort_de, explain, pathways)
    built = build_report(paths, options)
    write_report(built, outdir)
    return built.summary


def _check_samples(data: ReportData, samples: list[str]) -> None:
    if not samples:
        return
    known: set[str] = set()
    if data.summary is not None:
        known = set(data.summary["sample_id"])
    elif data.de_file is not None:
        known = set(pq.read_table(data.de_file, columns=["sample_id"])["sample_id"].unique().to_pylist())
    elif data.explain_summary is None:
        raise InputError("--sample was given but there are no DE results (de/summary.tsv, de/de.parquet)")
    if data.explain_summary is not None:
        known |= set(data.explain_summary["sample_id"])
    unknown = [s for s in samples if s not in known]
    if unknown:
        raise InputError(f"--sample {unknown[0]!r} is not among the {len(known)} samples with DE results"
                         + (f" (also unknown: {unknown[1:5]})" if len(unknown) > 1 else ""))
