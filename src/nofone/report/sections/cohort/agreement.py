"""Agreement with DESeq2: the measures cohort-de reported (or computed again from its table), the scatter."""

from __future__ import annotations

import numpy as np
import pandas as pd

from nofone.evaluate.agreement import compare_with_deseq2
from nofone.report.context import ReportContext
from nofone.report.figures.cohort import lfc_agreement
from nofone.report.html import Section, code, coloured, esc, format_value, paragraph, png_figure, strong, subheading
from nofone.report.inputs import COHORT_REPORT, COHORT_RESULTS
from nofone.report.sections.cohort.contrast import Contrast
from nofone.report.style import NA_COLOUR, NA_LFC_COLOUR

#: The agreement measures shown, in order: (key path in cohort_de_report.json's "deseq2", label, kind)
AGREEMENT_ROWS = (
    ("n_genes", "genes modelled", "count"),
    ("n_both_finite", "genes with both log2 fold changes", "count"),
    ("pearson", "Pearson r of the log2 fold changes", "r"),
    ("spearman", "Spearman ρ of the log2 fold changes", "r"),
    ("pearson_padj_not_na", "Pearson r, genes with a DESeq2 adjusted p-value", "r"),
    ("spearman_padj_not_na", "Spearman ρ, genes with a DESeq2 adjusted p-value", "r"),
    ("deseq2_significant", "DESeq2 genes with padj < α", "count"),
    ("sign_agreement_deseq2_significant", "… with the same sign here", "fraction"),
    ("deseq2_significant_replicate_interval_excludes_zero", "… whose replicate interval excludes 0", "fraction"),
    ("top_overlap.100.by_abs_lfc", "top 100 genes by |log2FC|: overlap", "fraction"),
    ("top_overlap.500.by_abs_lfc", "top 500 genes by |log2FC|: overlap", "fraction"),
    ("top_overlap.100.by_significance", "top 100 by significance (|LFC| / replicate se vs p-value): overlap",
     "fraction"),
    ("top_overlap.500.by_significance", "top 500 by significance: overlap", "fraction"),
    ("deseq2_na.padj_na", "genes DESeq2 leaves without an adjusted p-value", "count"),
    ("deseq2_na.padj_na_with_finite_estimate_and_interval", "… with a finite estimate and interval here",
     "count"),
    ("deseq2_na.padj_na_interval_excludes_zero", "… whose posterior interval excludes 0", "count"),
    ("deseq2_na.padj_na_replicate_interval_excludes_zero", "… whose replicate interval excludes 0", "count"),
    ("deseq2_na.lfc_na", "genes DESeq2 leaves without a log2 fold change", "count"),
    ("deseq2_na.lfc_na_with_finite_estimate_and_interval", "… with a finite estimate and interval here", "count"),
    ("replicate_interval_excludes_zero", "genes whose replicate interval excludes 0 (NB-VAE)", "count"),
)
DESEQ2_TABLE_COLUMNS = ("deseq2_log2FoldChange", "deseq2_pvalue", "deseq2_padj")
SCATTER_CAPTION = (
    "Each point is a gene: the NB-VAE's generative log2 fold change (x) against DESeq2's (y, its maximum-"
    "likelihood estimate, not shrunk); dashed: the identity line. Blue: DESeq2 padj &lt; {alpha}; grey: not "
    "significant; {orange}: genes DESeq2 leaves without an adjusted p-value (independent filtering, outliers), "
    "which still get an NB-VAE estimate. The strip below the axis marks every gene DESeq2 leaves NA at its NB-VAE "
    "log2 fold change (orange: no adjusted p-value; {purple}: no log2 fold change, e.g. a gene not measured in "
    "every sample). Both axes cover 99.8% of the genes; the rest are drawn on the border as triangles. Low-count "
    "genes spread vertically: DESeq2's estimate is noisy there, while the decoder's is pulled towards the cohort.")


def _get(tree: dict | None, path: str):
    node = tree
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def _set(tree: dict, path: str, value) -> None:
    *parents, last = path.split(".")
    for key in parents:
        tree = tree.setdefault(key, {})
    tree[last] = value


def _shown(value, kind: str) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "—"
    if kind == "fraction":
        return f"{100 * float(value):.1f}%"
    if kind == "r":
        return f"{float(value):.3f}"
    return format_value(value)


def _measures(stored: dict | None, computed: dict, alpha: float) -> tuple[dict, pd.DataFrame]:
    """Every measure of AGREEMENT_ROWS: from the report where it has it, else computed; as a tree
    (the report's layout) and as rows (measure, key, value, source)."""
    merged: dict = {}
    rows = []
    for key, label, _ in AGREEMENT_ROWS:
        value, source = _get(stored, key), COHORT_REPORT
        if value is None:
            value, source = _get(computed, key), f"computed from {COHORT_RESULTS}"
        if value is None:
            continue
        _set(merged, key, value)
        rows.append({"measure": label.replace("α", f"{alpha:g}"), "key": key, "value": value, "source": source})
    return merged, pd.DataFrame(rows, columns=["measure", "key", "value", "source"])


def _headline(merged: dict, alpha: float) -> str | None:
    r, rho = merged.get("pearson"), merged.get("spearman")
    parts = []
    if r is not None and rho is not None:
        parts.append(f"{strong(f'Pearson r = {r:.3f}, Spearman ρ = {rho:.3f}')} between the NB-VAE's and "
                     f"DESeq2's log2 fold changes over {format_value(merged.get('n_both_finite'))} genes")
    overlap = merged.get("top_overlap") or {}
    if overlap:
        parts.append("top-" + " / top-".join(overlap) + " genes by |log2FC| shared: "
                     + " / ".join(_shown(v.get("by_abs_lfc"), "fraction") for v in overlap.values()))
    if merged.get("sign_agreement_deseq2_significant") is not None:
        parts.append(f"{_shown(merged['sign_agreement_deseq2_significant'], 'fraction')} same sign among "
                     f"DESeq2's {format_value(merged.get('deseq2_significant'))} genes with padj &lt; {alpha:g}")
    na = merged.get("deseq2_na") or {}
    if na.get("padj_na"):
        finite = na.get("padj_na_with_finite_estimate_and_interval")
        parts.append(f"DESeq2 leaves {format_value(na['padj_na'])} genes without an adjusted p-value; "
                     f"{'all ' if finite == na['padj_na'] else ''}{format_value(finite)} of them have a finite "
                     "estimate and interval here")
    elif na.get("padj_na") == 0:
        parts.append("DESeq2 gives every gene an adjusted p-value")
    return "; ".join(parts) + "." if parts else None


def _scatter(table: pd.DataFrame, merged: dict, c: Contrast) -> str:
    r, rho = merged.get("pearson"), merged.get("spearman")
    stats_text = "\n".join(t for t in (
        f"Pearson r = {r:.3f}" if r is not None else "", f"Spearman ρ = {rho:.3f}" if rho is not None else "",
        f"{format_value(merged.get('n_both_finite'))} genes") if t)
    versus = f" ({c.level} vs {c.reference})" if c.level and c.reference else ""
    png = lfc_agreement(table["log2_fold_change"].to_numpy(dtype=float),
                        table["deseq2_log2FoldChange"].to_numpy(dtype=float),
                        table["deseq2_padj"].to_numpy(dtype=float), c.alpha,
                        f"NB-VAE generative log2 fold change{versus}", f"DESeq2 log2 fold change{versus}", stats_text)
    caption = SCATTER_CAPTION.format(alpha=esc(format_value(c.alpha)), orange=coloured("orange", NA_COLOUR),
                                     purple=coloured("purple", NA_LFC_COLOUR))
    return png_figure(png, caption, "NB-VAE vs DESeq2 log2 fold changes", width=660)


def build(ctx: ReportContext, section: Section, c: Contrast) -> None:
    section.add(subheading("Agreement with DESeq2"))
    cohort = ctx.data.cohort
    table = cohort.table
    report = c.report
    stored = report.get("deseq2") if isinstance(report.get("deseq2"), dict) else None
    has_columns = table is not None and set(DESEQ2_TABLE_COLUMNS) <= set(table.columns)
    if stored is None and not has_columns:
        section.missing("DESeq2 was not run (`nofone cohort-de --no-deseq2`)" if report or table is not None
                        else f"{COHORT_RESULTS} not found")
        return
    computed = compare_with_deseq2(table, c.alpha) if has_columns else {}
    merged, frame = _measures(stored, computed, c.alpha)
    kinds = {key: kind for key, _, kind in AGREEMENT_ROWS}
    shown = pd.DataFrame({"measure": frame["measure"],
                          "value": [_shown(v, kinds[k]) for v, k in zip(frame["value"], frame["key"])],
                          "source": frame["source"]})
    sources = sorted(set(frame["source"]))
    if len(sources) == 1:  # one source: said in the caption
        shown = shown.drop(columns="source")
    ctx.numbers["cohort"]["deseq2"] = merged
    headline = _headline(merged, c.alpha)
    if headline:
        section.add(paragraph(headline, "headline"))
    if has_columns:
        section.add(_scatter(table, merged, c))
    else:
        section.add(paragraph(f"{COHORT_RESULTS} has no DESeq2 columns: no scatter plot.", "note"))
    section.add(ctx.html_table(
        "cohort_deseq2_agreement", frame,
        "Agreement of the generative log2 fold changes with DESeq2's. Significance here is |log2FC| over the "
        "replicate standard error; DESeq2's is its p-value. The posterior interval carries only the latent "
        "uncertainty (narrow; not a confidence interval), the replicate interval the spread of the samples."
        + (f" All from {code(sources[0])}." if len(sources) == 1 and sources[0] == COHORT_REPORT else
           f" Source: {esc(sources[0])}." if len(sources) == 1 else ""),
        shown=shown, colour_column=None))
