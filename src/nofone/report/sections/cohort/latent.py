"""The cohort's latent space: every sample at its posterior mean, coloured by the labels the NB-VAE never saw."""

from __future__ import annotations

import numpy as np
import pandas as pd

from nofone.report.context import ReportContext
from nofone.report.figures.cohort import cohort_latent
from nofone.report.html import Section, bold, esc, png_figure, subheading
from nofone.report.inputs import COHORT_LATENT
from nofone.report.sections.cohort.contrast import Contrast
from nofone.report.style import cohort_group_colours, tissue_colours
from nofone.stats.projection import principal_plane


def latent_columns(latent: pd.DataFrame) -> list[str]:
    """z1, z2, ... in order."""
    return sorted((c for c in latent.columns if c[:1] == "z" and c[1:].isdigit()), key=lambda c: int(c[1:]))


def _latent_plane(latent: pd.DataFrame) -> tuple[np.ndarray, str, str, list[float] | None, int]:
    """(xy, x label, y label, explained variance ratios, latent dim): PCA of z1..zD when D > 2,
    oriented as cohort-de's latent.png (`principal_plane`)."""
    zs = latent_columns(latent)
    if not zs:
        return latent[["plot_x", "plot_y"]].to_numpy(dtype=float), "plot_x", "plot_y", None, 0
    z = latent[zs].to_numpy(dtype=float)
    coords, explained = principal_plane(z)
    if explained is None:
        return coords, "z1", "z2" if z.shape[1] == 2 else "", None, z.shape[1]
    return (coords, f"latent PC1 ({100 * explained[0]:.0f}% of variance)",
            f"latent PC2 ({100 * explained[1]:.0f}% of variance)", explained, z.shape[1])


def _is_scale(values: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values) and values.nunique() > 8


def _panels(latent: pd.DataFrame, c: Contrast) -> list[dict]:
    """One panel per variable: the group, up to two covariates, --color-by (or whatever labels there are)."""
    coordinates = {"sample_id", "plot_x", "plot_y", *latent_columns(latent)}
    labels = [col for col in latent.columns if col not in coordinates]
    group, covariates = c.group, c.covariates
    color_by = c.options.get("color_by")
    first_covariate = next((col for col in covariates if col in latent), None)
    panels = []
    if group in latent:
        values = latent[group].astype(str)
        panels.append({"title": group, "values": values.to_numpy(),
                       "colours": cohort_group_colours(values, c.level or "", c.reference or ""),
                       "markers": None if first_covariate is None else latent[first_covariate].astype(str).to_numpy(),
                       "marker_title": first_covariate})
    for covariate in [col for col in covariates if col in latent][:2]:
        values = latent[covariate]
        scale = _is_scale(values)
        panels.append({"title": covariate, "values": values.to_numpy(),
                       "colours": None if scale else tissue_colours(values.astype(str)),
                       "markers": None if group not in latent else latent[group].astype(str).to_numpy(),
                       "marker_title": group})
    extra = [color_by] if color_by and color_by in latent and color_by not in (group, *covariates) else []
    if not panels:  # no report: whatever labels latent.tsv has
        extra = labels[:2]
    for column in extra[: max(0, 3 - len(panels))]:
        values = latent[column]
        scale = _is_scale(values)
        panels.append({"title": column, "values": values.to_numpy(),
                       "colours": None if scale else tissue_colours(values.astype(str)), "markers": None})
    if not panels:
        panels.append({"title": "sample", "title_long": "Samples", "values": np.full(len(latent), "sample"),
                       "colours": {"sample": "#555555"}, "markers": None})
    return panels


def build(ctx: ReportContext, section: Section, c: Contrast) -> None:
    section.add(subheading("Latent space"))
    cohort = ctx.data.cohort
    latent = cohort.latent
    if latent is None or latent.empty:
        section.missing(f"{COHORT_LATENT} not found in {cohort.folder}")
        return
    xy, x_label, y_label, explained, dim = _latent_plane(latent)
    panels = _panels(latent, c)
    png = cohort_latent(xy, panels, x_label, y_label)
    if dim > 2:
        where = (f"projected on the first two principal components of the {dim}-dimensional latent (PCA of the "
                 f"posterior means; {100 * sum(explained):.0f}% of their variance)")
    elif dim:
        where = f"in the {dim}-dimensional latent itself"
    else:
        where = "at the plot coordinates of latent.tsv"
    shapes = ""
    if panels[0].get("markers") is not None:
        shapes = (f" Marker shapes: {esc(panels[0]['marker_title'])} in the first panel"
                  + (f", {esc(c.group)} in the others." if len(panels) > 1 and c.group in latent else "."))
    section.add(png_figure(
        png,
        f"Each point is one of the {len(latent):,} samples, at its posterior mean in the NB-VAE's latent space, "
        f"{esc(where)}. {bold('The NB-VAE never saw the labels')}: the group"
        + (" and the covariates are" if c.covariates else " is") + " used only to colour the points afterwards, so "
        "samples that cluster by a label differ by it in their whole expression profile." + shapes
        + (f" Colours of {esc(c.level)} and {esc(c.reference)} are those of the other figures of this section."
           if c.level and c.reference else ""),
        "cohort latent space"))
    coordinates = {"sample_id", "plot_x", "plot_y", *latent_columns(latent)}
    keep = ["sample_id", *[col for col in latent.columns if col not in coordinates]]
    frame = latent[[col for col in keep if col in latent]].copy()
    frame["x"], frame["y"] = xy[:, 0], xy[:, 1]
    ctx.add_table("cohort_latent", frame)
    ctx.numbers["cohort"]["latent"] = {"dim": dim, "samples": len(latent), "explained_variance": explained,
                                       "coloured_by": [p["title"] for p in panels]}
