"""The genes of largest generative log2 fold change, with both intervals and DESeq2's estimate."""

from __future__ import annotations

import numpy as np
import pandas as pd

from nofone.evaluate.calls import largest_changes
from nofone.report.context import ReportContext
from nofone.report.html import Section, code, esc, subheading
from nofone.report.inputs import COHORT_RESULTS
from nofone.report.sections.cohort.contrast import Contrast

INTERVALS = (("ci_low", "ci_high", "posterior 95%"), ("ci_low_replicates", "ci_high_replicates", "replicate 95%"))
DESEQ2_LABELS = (("deseq2_log2FoldChange", "DESeq2 log2FC"), ("deseq2_padj", "DESeq2 padj"))


def _interval(low: float, high: float) -> str:
    if not (np.isfinite(low) and np.isfinite(high)):
        return "—"
    return f"[{float(low):.3g}, {float(high):.3g}]"


def build(ctx: ReportContext, section: Section, c: Contrast) -> None:
    n = ctx.options.cohort_top_genes
    section.add(subheading(f"Top {n} genes by |generative log2 fold change|"))
    table = ctx.data.cohort.table
    if table is None:
        section.missing(f"{COHORT_RESULTS} not found in {ctx.data.cohort.folder}")
        return
    expression = [col for col in table.columns if col.startswith("log2_expression_")]
    columns = ["gene_id", "gene_name", "log2_fold_change", "ci_low", "ci_high", "ci_low_replicates",
               "ci_high_replicates", *expression, "deseq2_baseMean", "deseq2_log2FoldChange", "deseq2_padj"]
    top = largest_changes(table, n)
    top = top[[col for col in columns if col in top]].reset_index(drop=True)
    ctx.numbers["cohort"]["top_genes"] = top["gene_id"].astype(str).tolist()
    shown = pd.DataFrame({"gene_id": top["gene_id"], "gene_name": top["gene_name"],
                          "log2FC": top["log2_fold_change"]})
    for low, high, label in INTERVALS:
        if low in top and high in top:
            shown[label] = [_interval(a, b) for a, b in zip(top[low], top[high])]
    for column in expression:
        shown[f"log2 expr. {column.removeprefix('log2_expression_')}"] = top[column]
    for column, label in DESEQ2_LABELS:
        if column in top:
            shown[label] = top[column]
    section.add(ctx.html_table(
        "cohort_top_genes", top,
        "log2FC: the generative log2 fold change"
        + (f" of {esc(c.level)} over {esc(c.reference)}" if c.level and c.reference else "")
        + "; posterior 95%: its credible interval over where the samples sit in the latent (narrow; not a "
        "confidence interval); replicate 95%: a t interval from the within-group spread of the decoded values "
        "(— without replicates); log2 expr.: mean decoded log2 normalised expression of each group; DESeq2: its "
        "log2 fold change and adjusted p-value (— : NA). The TSV also has DESeq2's mean normalised count "
        f"(baseMean), with the column names of {code(COHORT_RESULTS)}.",
        shown=shown, colour_column=None, nowrap=("gene_id", "gene_name", "posterior 95%", "replicate 95%")))
