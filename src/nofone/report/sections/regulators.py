"""Regulators behind the profiles (a `nofone explain` folder: RUN/explain or --explain): how much
of each sample's DE profile the regulators explain, the regulators the samples share, and each
sample's top regulators with attribution, direction, q-value and in-silico knockout."""

from __future__ import annotations

import pandas as pd

from nofone.regulators.outputs import COHORT_FILE, LONG_FILE, REGULATORS_DIR, SUMMARY_FILE
from nofone.report.context import ReportContext
from nofone.report.figures.regulators import explained_per_sample, regulator_heatmap
from nofone.report.html import Section, code, esc, format_value, paragraph, png_figure, strong, subheading, table
from nofone.report.inputs import ExplainData
from nofone.report.style import is_normal_like

REGULATOR = "regulator"  # the `kind` of a regulator feature (the others are gene-structure covariates)
SUMMARY_SHOWN = ("sample_id", "group", "tissue", "n_genes", "heldout_spearman", "heldout_spearman_features_only",
                 "n_significant", "top_up", "top_down", "ig_spearman")
COHORT_SHOWN = ("feature", "source", "n_samples", "n_significant", "n_significant_up", "n_significant_down",
                "median_z", "mean_attribution", "median_rank")
TOP_SHOWN = ("rank", "feature", "source", "mean_attribution", "direction", "z", "q_value", "n_targets",
             "knockout_mean_change", "knockout_most_down", "knockout_most_up")


def build(ctx: ReportContext, section: Section) -> None:
    explained = ctx.data.explain
    summary = explained.summary
    if summary is None:
        section.unavailable(f"{SUMMARY_FILE} not found in {explained.folder}: is it the output folder of "
                            "`nofone explain`?")
        return
    report = explained.report or {}
    q = float((report.get("options") or {}).get("q_threshold", 0.05))
    model = report.get("regulators")
    section.add(paragraph(
        f"From {code(explained.folder)} ({code('nofone explain')}"
        + (f", regulator model {code(model)}" if model else "") + "). For each sample, a head on the "
        "regulator model's frozen trunk predicts the sample's log2 fold changes against its closest normal from "
        "the binding of every regulator on every gene. The Spearman correlation of its predictions on "
        f"chromosomes it did not see is {strong('how much of the profile the regulators explain')}. Per regulator: "
        "the mean DeepLIFT attribution over the genes (direction up: the genes it binds are higher in the sample "
        "than in its closest normal, given the other features), its z and q-value from a permutation null (the "
        "profile shuffled among genes within chromosomes; Benjamini-Hochberg over the sample's features). An "
        "attribution is an association, not a proof of regulation: regulators binding the same promoters share "
        f"credit. How it works and what it was measured to do: {code('docs/regulators.md')}."))
    order = {g: i for i, g in enumerate(ctx.group_order(summary["group"].astype(str)))}
    summary = summary.assign(_o=summary["group"].map(order)).sort_values(
        ["_o", "heldout_spearman", "sample_id"], ascending=[True, False, True]).drop(columns="_o")
    summary = summary.reset_index(drop=True)
    section.add(png_figure(
        explained_per_sample(summary, {g: ctx.colours[g] for g in order}),
        f"How much of each sample's profile the regulators explain (left: Spearman of the head's predictions on "
        f"held-out chromosomes; black tick: a head on the features alone, without the trunk) and how many "
        f"regulators have q < {esc(format_value(q))} (right). Held-out normals, explained against their own "
        "closest normal, are the negative control: few or no significant regulators.", "regulators per sample"))
    first = [c for c in SUMMARY_SHOWN if c in summary]
    summary = summary[first + [c for c in summary.columns if c not in first]]
    section.add(ctx.html_table(
        "regulators_per_sample", summary,
        f"Per sample: the genes modelled, the held-out-chromosome Spearman (with the trunk and with the features "
        f"alone), the regulators with q < {esc(format_value(q))} and the top three up and down; ig_spearman: "
        "agreement of DeepLIFT with Integrated Gradients (near 1 when the attributions can be trusted).",
        shown=summary[first]))
    ctx.numbers["regulators"] = {
        "folder": str(explained.folder), "regulator_model": model, "q_threshold": q, "n_samples": len(summary),
        "median_heldout_spearman": _median(summary["heldout_spearman"]),
        "median_n_significant": _median(summary["n_significant"]),
        "agreement_between_samples": report.get("agreement_between_samples"),
    }
    _cohort(ctx, section, explained, summary, q)
    _per_sample(ctx, section, explained, summary, q)


def _cohort(ctx: ReportContext, section: Section, explained: ExplainData, summary: pd.DataFrame, q: float) -> None:
    section.add(subheading("Regulators across the samples"))
    cohort = explained.cohort
    if cohort is None:
        section.missing(f"{COHORT_FILE} not found in {explained.folder}")
        return
    if "kind" in cohort:
        cohort = cohort[cohort["kind"] == REGULATOR]
    agreement = (explained.report or {}).get("agreement_between_samples") or {}
    if "mean_spearman_z" in agreement:
        jaccard = next((v for k, v in agreement.items() if k.startswith("mean_jaccard")), None)
        overlap = f", mean overlap (Jaccard) of their top 10 regulators {esc(format_value(jaccard))}"
        section.add(paragraph(
            f"Agreement between the {format_value(agreement.get('n_samples'))} samples: mean pairwise Spearman of "
            f"the regulators' z {esc(format_value(agreement['mean_spearman_z']))}"
            + (overlap if jaccard is not None else "") + "."))
    long = explained.regulators
    if long is not None and len(cohort):
        shown = cohort["feature"].head(ctx.options.heatmap_regulators).tolist()
        rows = long[long["feature"].isin(shown) & long["sample_id"].isin(summary["sample_id"])]
        samples = [s for s in summary["sample_id"] if s in set(rows["sample_id"])]
        z = rows.pivot(index="feature", columns="sample_id", values="z").reindex(index=shown, columns=samples)
        significant = (rows.pivot(index="feature", columns="sample_id", values="q_value")
                       .reindex(index=shown, columns=samples) < q)
        group = dict(zip(summary["sample_id"], summary["group"].astype(str)))
        section.add(png_figure(
            regulator_heatmap(z, significant, [ctx.colours.get(group[s], "#333333") for s in samples]),
            f"The {len(shown)} regulators significant in most samples (rows, most often first) in every sample "
            "(columns, in the order of the table above; the strip on top gives the group's colour). Colour: z of "
            f"the regulator's mean attribution (red: its targets higher than in the closest normal, blue: lower); "
            f"dot: q < {esc(format_value(q))}. A row of dots across the tumours is a regulator they share.",
            "regulators by samples heatmap"))
    elif long is None:
        section.missing(f"neither {LONG_FILE} nor {REGULATORS_DIR}/*.tsv in {explained.folder}: no heatmap")
    columns = [c for c in COHORT_SHOWN if c in cohort]
    section.add(ctx.html_table(
        "regulators_cohort", cohort.reset_index(drop=True),
        f"Per regulator over the samples: in how many it is significant (q < {esc(format_value(q))}) with its "
        "targets up or down, its median z and median rank. Gene-structure covariates are left out here (the "
        f"TSV of {code(COHORT_FILE)} in the explain folder has them).",
        shown=cohort[columns].reset_index(drop=True), colour_column=None))


def _per_sample(ctx: ReportContext, section: Section, explained: ExplainData, summary: pd.DataFrame,
                q: float) -> None:
    section.add(subheading("Top regulators per sample"))
    long = explained.regulators
    if long is None:
        section.missing(f"neither {LONG_FILE} nor {REGULATORS_DIR}/*.tsv in {explained.folder}")
        return
    regulators = long[long["kind"] == REGULATOR] if "kind" in long else long
    top = (regulators.sort_values(["sample_id", "rank"], kind="stable").groupby("sample_id", sort=False)
           .head(ctx.options.top_regulators))
    top = top[["sample_id", *[c for c in TOP_SHOWN if c in top]]].reset_index(drop=True)
    ctx.add_table("regulators_top", top)
    samples = _chosen_samples(ctx, summary, set(top["sample_id"]))
    if len(samples) < top["sample_id"].nunique():
        how = ("chosen with --sample" if set(samples) <= set(ctx.options.samples)
               else "the tested samples with most significant regulators, normals last")
        section.add(paragraph(
            f"{len(samples)} of the {top['sample_id'].nunique()} samples are shown ({how}); every sample's top "
            f"regulators are in {code('tables/regulators_top.tsv')}.", "note"))
    rows = summary.set_index("sample_id")
    for sample in samples:
        row = rows.loc[sample]
        section.add(subheading(f"{sample} ({row['group']})"))
        only = row.get("heldout_spearman_features_only")
        section.add(paragraph(
            f"The regulators explain this profile with a held-out-chromosome Spearman of "
            f"{strong(esc(format_value(row['heldout_spearman'])))}"
            + (f" (features alone {esc(format_value(only))})" if only is not None and pd.notna(only) else "")
            + f"; {esc(format_value(row['n_significant']))} regulators have q < {esc(format_value(q))}."))
        section.add(table(
            top[top["sample_id"] == sample].drop(columns="sample_id").reset_index(drop=True),
            f"Top {ctx.options.top_regulators} regulators by p-value (rank among all features, gene-structure "
            "covariates included). mean_attribution in log2 fold change units; knockout: the regulator's binding "
            "set to 0 in its n_targets genes, their mean predicted change and the targets lowered and raised most."))


def _chosen_samples(ctx: ReportContext, summary: pd.DataFrame, explained: set[str]) -> list[str]:
    chosen = [s for s in dict.fromkeys(ctx.options.samples) if s in explained]
    if chosen:
        return chosen
    frame = summary[summary["sample_id"].isin(explained)]
    frame = frame.assign(_normal=frame["group"].map(lambda g: is_normal_like(str(g), ctx.normal)))
    frame = frame.sort_values(["_normal", "n_significant", "sample_id"], ascending=[True, False, True])
    return frame["sample_id"].head(ctx.options.max_explained_samples).tolist()


def _median(values: pd.Series) -> float | None:
    values = pd.to_numeric(values, errors="coerce").dropna()
    return float(values.median()) if len(values) else None
