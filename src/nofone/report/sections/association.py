"""Tissues and mixture components: which tissues each component holds, and where tested samples land."""

from __future__ import annotations

import pandas as pd

from nofone.evaluate.association import component_tissues, components_of_tested, long_counts, own_tissue_agreement
from nofone.report.context import ReportContext, n_components
from nofone.report.figures.model import association_heatmap
from nofone.report.html import Section, png_figure, subheading


def build(ctx: ReportContext, section: Section) -> None:
    data = ctx.data
    training = data.training
    if training is None:
        section.unavailable("model/training_representations.parquet not found (made by `nofone train`)")
        return
    if n_components(data.config or {}) == 1:
        section.unavailable("not applicable: the model's latent prior has a single component (e.g. an NB-VAE)")
        return
    fit = training[training["split"] == "train"]
    if "tissue" not in fit or fit["tissue"].isna().all():
        section.unavailable("the training samples have no tissue (train with a 'tissue' column in the sample sheet)")
        return
    found = component_tissues(fit["tissue"], fit["component"])
    columns = list(found.counts.columns)
    components = n_components(data.config or {})
    empty = (components - len(columns)) if components else 0
    section.add(png_figure(
        association_heatmap(found.percent, found.counts, "mixture component", "tissue",
                            "% of the component's samples"),
        f"Which tissues each mixture component of the model holds, for the {len(fit):,} training samples "
        "(as Fig. 2B of Prada-Luengo et al. 2023). Colour: percentage of a component's samples from each tissue "
        "(each column sums to 100%); numbers: samples. Components are ordered so that a model that separates "
        "tissues shows a diagonal. A column spread over many tissues is a component that mixes them; "
        "one column holding everything is a collapsed mixture. "
        f"Tissue purity (samples in their component's majority tissue): {found.purity:.0%}."
        + (f" {empty} of {components} components hold no training sample and are not shown." if empty > 0 else ""),
        "tissue by component heatmap"))
    ctx.add_table("association_training", found.long())
    ctx.numbers["association"] = {"training_purity": found.purity, "components_used": len(columns),
                                  "components": components}
    _tested(ctx, section, found.majority, columns)


def _tested(ctx: ReportContext, section: Section, majority: pd.Series, columns: list[int]) -> None:
    section.add(subheading("Tested samples"))
    reps = ctx.data.represented
    if reps is None:
        section.missing("representations/representations.parquet not found: run `nofone represent`")
        return
    if "tissue" not in reps or reps["tissue"].isna().all():
        section.missing("the tested samples have no tissue in samples.parquet")
        return
    known = reps[reps["tissue"].notna()]
    counts, percent = components_of_tested(known["tissue"], known["group"], known["component"], columns,
                                        ctx.group_order(known["group"].astype(str)))
    section.add(png_figure(
        association_heatmap(percent, counts, "mixture component", "tissue · group", "% of the row's samples"),
        "Mixture component of each tested sample's closest normal, by the tissue given in the sample sheet and "
        "the group. Colour: percentage of the row's samples (each row sums to 100%); numbers: samples. "
        "Columns in the order of the training heatmap above, so that a sample landing in a component of its own "
        "tissue lies on the same diagonal.", "tested samples by component heatmap"))
    rows = own_tissue_agreement(known["tissue"], known["group"], known["component"], majority,
                                ctx.group_order(known["group"]))
    section.add(ctx.html_table(
        "assignment_tested", pd.DataFrame(rows),
        "Tested samples whose component's majority tissue (among training samples) is their own tissue."))
    ctx.add_table("association_tested", long_counts(counts))
    ctx.numbers["association"]["tested_agreement"] = {r["group"]: r["fraction"] for r in rows}
