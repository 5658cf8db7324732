"""Gene sets per sample: the sets `nofone pathways` called in each tested sample, up and down."""

from __future__ import annotations

from nofone.report.context import ReportContext
from nofone.report.figures.calls import de_per_sample
from nofone.report.html import Section, esc, png_figure

#: What the table shows of each called set, in this order.
COLUMNS = ["sample_id", "group", "gene_set", "direction", "standardized", "q_value", "mean_score",
           "mean_log2_fold_change", "n_genes", "leading_genes"]


def build(ctx: ReportContext, section: Section) -> None:
    found = ctx.data.pathways
    if found is None:
        section.unavailable("pathways/ not found: run `nofone pathways` (or `nofone run --gene-sets`)")
        return
    report = found.report or {}
    q = report.get("q_threshold", 0.01)
    summary = found.summary
    order = {g: i for i, g in enumerate(ctx.group_order(summary["group"]))}
    frame = summary.assign(_o=summary["group"].map(order)).sort_values(
        ["_o", "n_called", "sample_id"], ascending=[True, False, True]).drop(columns="_o").reset_index(drop=True)
    colours = {g: ctx.colours.get(g, "#333333") for g in order}
    ctx.numbers["pathways"] = {"n_sets_tested": report.get("n_sets_tested"), "q_threshold": q,
                               "median_called": float(frame["n_called"].median())}
    skipped = report.get("skipped_sets") or {}
    section.add(png_figure(
        de_per_sample(frame, colours, what="Gene sets"),
        f"Gene sets called up and down in each tested sample (q < {esc(q)}, BH over the "
        f"{esc(report.get('n_sets_tested', '?'))} sets of a sample; {len(skipped)} sets with fewer than "
        f"{esc(report.get('min_genes', '?'))} model genes skipped). Each set's mean normal score is tested "
        "against the same mean in normals the model never trained on, so healthy co-variation of its genes is "
        "allowed for; held-out normals should have (almost) none.", "Gene sets per sample"))
    called = found.called.sort_values(["sample_id", "q_value"], kind="stable")
    shown = called[[c for c in COLUMNS if c in called.columns]]
    section.add(ctx.html_table("pathways_called", shown,
                               "Called gene sets per sample (standardized: the set's mean score minus the "
                               "healthy mean, over the healthy spread; leading_genes: the set's genes that "
                               "drive it most).", colour_column="group"))
