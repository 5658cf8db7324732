"""Out-of-distribution score: the count NLL per gene by group, and its AUROC against held-out normals."""

from __future__ import annotations

import numpy as np
import pandas as pd

from nofone.evaluate.ood import nll_by_group
from nofone.report.context import ReportContext
from nofone.report.figures.model import nll_densities
from nofone.report.html import Section, esc, png_figure
from nofone.report.style import TRAINING

#: Column labels of tables/nll_auroc.tsv.
LABELS = {"median_nll_per_gene": "median NLL per gene", "auroc_vs_reference": "AUROC vs held-out normals"}


def _nll_groups(ctx: ReportContext) -> tuple[dict[str, np.ndarray], str | None, list[str]]:
    """NLL per gene by group; the reference for AUROC; notes on where each group comes from."""
    data = ctx.data
    values: dict[str, np.ndarray] = {}
    notes = []
    training = data.training
    if training is not None and "nll_per_gene" in training:
        values[TRAINING] = training.loc[training["split"] == "train", "nll_per_gene"].to_numpy(dtype=float)
    reps = data.represented
    reference = None
    if reps is not None and "nll_per_gene" in reps:
        for group in ctx.group_order(reps["group"]):
            values[group] = reps.loc[reps["group"] == group, "nll_per_gene"].to_numpy(dtype=float)
    if data.heldout not in values and training is not None and (training["split"] == "test").any():
        values[data.heldout] = training.loc[training["split"] == "test", "nll_per_gene"].to_numpy(dtype=float)
        notes.append("held-out normals: NLL from training (they were not among the tested samples)")
    if data.heldout in values and len(values[data.heldout]):
        reference = data.heldout
    ordered = {g: values[g] for g in ctx.group_order(values) if len(values[g])}
    return ordered, reference, notes


def build(ctx: ReportContext, section: Section) -> None:
    values, reference, notes = _nll_groups(ctx)
    if not values:
        section.unavailable("no NLL values: model/training_representations.parquet and "
                        "representations/representations.parquet not found")
        return
    section.add(png_figure(
        nll_densities(values, ctx.colours),
        "How well the model of normal tissue explains each sample: the negative log-likelihood of its counts "
        "under the negative binomial of its closest normal, per gene (the out-of-distribution score of "
        "Prada-Luengo et al. 2023, Fig. 3B). Curves: density per group; ticks below: single samples. "
        "Tested samples that sit right of the held-out normals are fitted worse than any normal the model "
        "has not seen, which is what disease (or a tissue the model was not trained on) looks like. "
        "Training samples are scored at their training representations, the others after the representation "
        "search." + (" " + esc("; ".join(notes)) + "." if notes else ""),
        "NLL per gene densities"))
    rows = nll_by_group(values, reference)
    caption = ("AUROC: the probability that a sample of the group scores higher (fits worse) than a held-out "
               "normal (Mann-Whitney U / (n₁ n₂)); 0.5 = indistinguishable, 1 = always worse. Training "
               "samples below 0.5 fit better than unseen normals (the decoder has learnt them).")
    if reference is None:
        caption += " Not computed: no held-out normals."
    section.add(ctx.html_table("nll_auroc", pd.DataFrame(rows).rename(columns=LABELS), caption))
    ctx.numbers["nll"] = {r["group"]: {"samples": r["samples"], "median_nll_per_gene": r["median_nll_per_gene"],
                                       "auroc_vs_heldout": r["auroc_vs_reference"]} for r in rows}
