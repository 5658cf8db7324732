"""Volcano plots of the samples with most calls (or those chosen with --sample), with their top genes."""

from __future__ import annotations

import pandas as pd
import pyarrow.parquet as pq

from nofone.evaluate.calls import top_calls
from nofone.report.context import ReportContext
from nofone.report.figures.calls import volcanoes
from nofone.report.html import Section, esc, format_value, paragraph, png_figure, subheading, table
from nofone.report.style import is_normal_like

MAX_VOLCANOES = 12
DE_COLUMNS = ("sample_id", "gene_id", "gene_name", "count", "normal_mean", "log2_fold_change", "p_value",
              "q_value", "can_call_down", "q_value_nb", "call")
TOP_COLUMNS = ("sample_id", "gene_id", "gene_name", "call", "tier", "count", "normal_mean", "log2_fold_change",
               "q_value", "q_value_nb")


def _volcano_samples(ctx: ReportContext) -> list[str]:
    if ctx.options.samples:
        return list(dict.fromkeys(ctx.options.samples))[:MAX_VOLCANOES]
    summary = ctx.data.summary
    if summary is None:
        return []
    tested = summary.assign(_normal=summary["group"].map(lambda g: is_normal_like(str(g), ctx.normal)))
    pick = tested[~tested["_normal"]]
    if pick.empty:
        pick = tested
    pick = pick.sort_values(["n_de", "sample_id"], ascending=[False, True])
    return pick["sample_id"].head(ctx.options.max_volcanoes).tolist()


def build(ctx: ReportContext, section: Section) -> None:
    de_file = ctx.data.de_file
    if de_file is None:
        section.unavailable("de/de.parquet not found: run `nofone de`")
        return
    samples = _volcano_samples(ctx)
    if len(dict.fromkeys(ctx.options.samples)) > MAX_VOLCANOES:
        section.add(paragraph(f"Only the first {MAX_VOLCANOES} samples given with --sample are shown.", "note"))
    if not samples:  # no summary.tsv: the first sample of de.parquet
        parquet = pq.ParquetFile(de_file)
        first = parquet.read_row_group(0, columns=["sample_id"]) if parquet.num_row_groups else None
        samples = [first["sample_id"][0].as_py()] if first is not None and len(first) else []
    if not samples:
        section.unavailable("de/de.parquet holds no samples")
        return
    present = [c for c in DE_COLUMNS if c in pq.read_schema(de_file).names]
    frame = pq.read_table(de_file, columns=present, filters=[("sample_id", "in", samples)]).to_pandas()
    if "gene_name" not in frame:
        frame["gene_name"] = ""
    report = ctx.data.de_report or {}
    q_thr = float(report.get("q_threshold", 0.01))
    lfc_thr = float(report.get("lfc_threshold", 1.0))
    tables = {s: frame[frame["sample_id"] == s] for s in samples if (frame["sample_id"] == s).any()}
    if not tables:
        section.unavailable(f"none of {samples} is in {de_file}")
        return
    chosen = "chosen with --sample" if ctx.options.samples else (
        f"the {len(tables)} tested sample{'s' if len(tables) > 1 else ''} with most DE calls, normals last")
    section.add(png_figure(
        volcanoes(tables, q_thr, lfc_thr),
        f"Every tested gene of {esc(chosen)}: log2 fold change against the closest normal (x) and the "
        f"significance of the test (y, −log10 q; q-values below 1e-300 drawn at 300). Red: called up, blue: "
        f"called down (q < {esc(format_value(q_thr))}, |log2FC| > {esc(format_value(lfc_thr))}, dashed lines); "
        "grey: not called. The most significant calls are named.", "volcano plots"))
    top_all = []
    for sample, t in tables.items():
        t = top_calls(t, q_thr, lfc_thr, ctx.options.top_genes)
        keep = [c for c in TOP_COLUMNS if c in t]
        top_all.append(t[keep])
        group = ""
        if ctx.data.summary is not None:
            match = ctx.data.summary.loc[ctx.data.summary["sample_id"] == sample, "group"]
            group = f" ({match.iloc[0]})" if len(match) else ""
        section.add(subheading(f"{sample}{group}"))
        section.add(table(t[keep].drop(columns="sample_id").reset_index(drop=True),
                          f"Top {ctx.options.top_genes} genes by q-value (then |log2FC|); normal_mean: expected "
                          "count of the closest normal; tier: abnormal (beyond healthy variation) or "
                          "candidate (the NB test's call only), q_value_nb: the NB test's q-value."))
    ctx.add_table("volcano_top_genes", pd.concat(top_all, ignore_index=True))
    ctx.numbers["volcano"] = {"samples": list(tables), "q_threshold": q_thr, "lfc_threshold": lfc_thr}
