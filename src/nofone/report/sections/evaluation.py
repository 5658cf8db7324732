"""Evaluation: the tables of `nofone evaluate` (negative controls, spike-ins, enrichment, assignment, AUROC)."""

from __future__ import annotations

from nofone.report.context import ReportContext
from nofone.report.figures.calls import negative_control_bars
from nofone.report.figures.frontier import frontier_figure
from nofone.report.html import Section, code, esc, paragraph, png_figure, subheading
from nofone.report.inputs import EVALUATION_FILES
from nofone.report.sections.summary import callable_folds

TITLES = {
    "negative_control_summary.tsv": "Negative controls", "spike_ins_summary.tsv": "Spike-ins",
    "frontier.tsv": "The sensitivity frontier", "tumour_control.tsv": "Tumour positive control",
    "enrichment_summary.tsv": "Gene-set enrichment", "assignment.tsv": "Tissue assignment",
    "nll_auroc.tsv": "Out-of-distribution AUROC",
}
CAPTIONS = {
    "negative_control_summary.tsv": "Negative controls: DE genes called per held-out normal sample, by method "
    "and q threshold (mean and sd over samples; up_down_ratio far from 1 reveals a directional bias). Fewer is "
    "better: every call is false.",
    "spike_ins_summary.tsv": "Spike-ins: genes with planted fold changes in held-out normals. Precision and "
    "recall of the calls at the nominal q, and the observed FDR (should not exceed the nominal q).",
    "frontier.tsv": "Every null of the model on the same closest normals, at q < 0.001, 0.01, 0.05 and 0.1: "
    "false calls per never-trained normal beside the recall and precision of the planted changes. A null "
    "that moves the frontier finds more at the same false calls (docs/null.md).",
    "tumour_control.tsv": "Half the cases as a cohort (DESeq2 against the training normals), the other half "
    "tested one by one under every null: calls per case, the share whose direction the cohort also calls "
    "(precision) and the share of the cohort's |log2FC| > 3 genes called (recall).",
    "enrichment_summary.tsv": "Gene-set enrichment of the DE calls in tumour samples, by method and gene set.",
    "assignment.tsv": "Tissue assignment: fraction of samples whose closest normal lies in a mixture component "
    "of their own tissue, by group and tissue.",
    "nll_auroc.tsv": "Out-of-distribution scores: AUROC of each group against the reference group "
    "(1 = every sample of the group scores higher than every reference sample).",
}


def build(ctx: ReportContext, section: Section) -> None:
    folder = ctx.data.paths.evaluation
    if folder is None:
        section.unavailable("run `nofone evaluate` and pass its output folder with --evaluation")
        return
    tables = ctx.data.evaluation
    if not tables:
        section.unavailable(f"none of {', '.join(EVALUATION_FILES)} in {folder}: run `nofone evaluate`")
        return
    section.add(paragraph(f"From {code(folder)} ({code('nofone evaluate')})."))
    negative = tables.get("negative_control_summary.tsv")
    if negative is not None:
        if {"method", "q_threshold", "mean_de"} <= set(negative.columns) and len(negative):
            section.add(png_figure(
                negative_control_bars(negative),
                "False DE calls per held-out normal sample (mean ± sd) by method, one bar per q-value threshold. "
                "Lower is better.", "negative controls bar chart"))
        else:
            section.add(paragraph("negative_control_summary.tsv lacks the columns method, q_threshold, mean_de: "
                                  "no bar chart.", "note"))
    curve = tables.get("frontier.tsv")
    if curve is not None and {"null", "nominal_q", "false_calls_per_normal", "recall"} <= set(curve.columns):
        section.add(png_figure(
            frontier_figure(curve, tables.get("tumour_control.tsv")),
            "The sensitivity frontier: false calls per never-trained normal (log axis; the dotted line is one) "
            "against the recall of planted changes, one curve per null over q < 0.001 to 0.1. The default null "
            "is bold, its q < 0.01 point ringed.", "frontier of false calls against recall"))
    folds = callable_folds(ctx.data.de_report)
    for name in EVALUATION_FILES:
        if name in tables:
            stem = name.removesuffix(".tsv")
            section.add(subheading(TITLES[name]))
            caption = CAPTIONS[name]
            if name == "spike_ins_summary.tsv" and folds is not None:
                caption += (f" The model's calls were tested with the outlier null, as in de: it calls no change "
                            f"smaller than about {folds[1]:.0f}-fold when 5% of the genes are called, so smaller "
                            "planted changes go unfound by design (nofone de --null nb finds them).")
            section.add(ctx.html_table(f"evaluation_{stem}", tables[name], esc(caption), colour_column=None))
    ctx.numbers["evaluation"] = {"folder": str(folder), "files": sorted(tables)}
