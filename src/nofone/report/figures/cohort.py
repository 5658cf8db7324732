"""Figures of `nofone cohort-de`: the cohort's latent plane and the agreement with DESeq2."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from nofone.report.figures.canvas import MARKERS, clean_axes, new_figure, to_png
from nofone.report.style import NA_COLOUR, NA_LFC_COLOUR, NEUTRAL_COLOUR


def cohort_latent(xy: np.ndarray, panels: list[dict], x_label: str, y_label: str) -> bytes:
    """The cohort's samples in the latent plane, one panel per variable, all on the same axes.

    Each panel: `title`, `values` (one per sample), `colours` (value -> colour; None: a numeric
    colour scale), optionally `markers` (a second variable drawn as the marker shape) and
    `marker_title`.
    """
    n = len(panels)
    fig = new_figure(4.4 if n > 1 else 4.8, layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, n, sharex=True, sharey=True, squeeze=False)).ravel()
    size = 46 if len(xy) <= 60 else (22 if len(xy) <= 300 else 10)
    for ax, panel in zip(axes, panels):
        values = np.asarray(panel["values"], dtype=object)
        markers = panel.get("markers")
        shape_of: dict[str, str] = {}
        if markers is not None:
            markers = np.asarray(markers, dtype=object).astype(str)
            shape_of = {m: MARKERS[i % len(MARKERS)] for i, m in enumerate(dict.fromkeys(sorted(set(markers))))}
        if panel.get("colours") is None:  # numbers: one colour scale
            numbers = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=float)
            for shape in (shape_of or {"": "o"}):
                pick = markers == shape if markers is not None else np.ones(len(xy), dtype=bool)
                points = ax.scatter(xy[pick, 0], xy[pick, 1], c=numbers[pick], cmap="viridis", s=size,
                                    marker=shape_of.get(shape, "o"), edgecolors="#111111", lw=0.4,
                                    vmin=np.nanmin(numbers), vmax=np.nanmax(numbers))
            bar = fig.colorbar(points, ax=ax, fraction=0.05, pad=0.01)
            bar.set_label(panel["title"], fontsize=8.5)
            bar.ax.tick_params(labelsize=8)
            handles = []
        else:
            text = values.astype(str)
            handles = []
            for value, colour in panel["colours"].items():
                pick = text == value
                if not pick.any():
                    continue
                for shape in (shape_of or {"": "o"}):
                    both = pick & (markers == shape) if markers is not None else pick
                    if both.any():
                        ax.scatter(xy[both, 0], xy[both, 1], s=size, color=colour, marker=shape_of.get(shape, "o"),
                                   edgecolors="#111111", lw=0.4)
                handles.append(Line2D([], [], ls="", marker="o", ms=6, color=colour, mec="#111111",
                                      label=f"{value} (n={int(pick.sum())})"))
        if shape_of:
            handles.append(Line2D([], [], ls="", label=panel.get("marker_title", "")))
            handles += [Line2D([], [], ls="", marker=m, ms=6, color="#9e9e9e", mec="#111111", label=value)
                        for value, m in shape_of.items()]
        if handles:
            if len(handles) > 16:
                handles = [*handles[:15], Line2D([], [], ls="", label=f"+{len(handles) - 15} more")]
            ax.legend(handles=handles, frameon=False, fontsize=7, loc="best", title=panel.get("legend_title"),
                      title_fontsize=7.5)
        ax.set_title(panel["title_long"] if panel.get("title_long") else f"Coloured by {panel['title']}",
                     fontsize=10)
        ax.set_xlabel(x_label, fontsize=9)
        clean_axes(ax)
    axes[0].set_ylabel(y_label, fontsize=9)
    # room for the legends: 25% more on each side
    for ax in axes:
        ax.margins(0.18)
    return to_png(fig)


def lfc_agreement(ours: np.ndarray, theirs: np.ndarray, padj: np.ndarray, alpha: float, x_label: str,
                  y_label: str, stats_text: str) -> bytes:
    """Generative log2 fold change (x) against DESeq2's (y), identity line; genes DESeq2 leaves NA
    (no adjusted p-value: orange points and rug; no log2 fold change: purple rug) in their own colours.

    Axes cover 99.8% of the genes on both axes with the same range; genes beyond are drawn on the
    border as hollow triangles.
    """
    ours = np.asarray(ours, dtype=float)
    theirs = np.asarray(theirs, dtype=float)
    padj = np.asarray(padj, dtype=float)
    fig = new_figure(7.0, width=6.6, layout="constrained")
    ax, rug = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [14, 1.3]})
    both = np.isfinite(ours) & np.isfinite(theirs)
    finite = np.concatenate([ours[np.isfinite(ours)], theirs[np.isfinite(theirs)]])
    if len(finite):
        low, high = np.quantile(finite, [0.001, 0.999])
        pad = 0.06 * (high - low) if high > low else 1.0
        low, high = low - pad, high + pad
    else:
        low, high = -1.0, 1.0
    outside = both & ((ours < low) | (ours > high) | (theirs < low) | (theirs > high))
    inside = both & ~outside
    significant = np.isfinite(padj) & (padj < alpha)
    na = ~np.isfinite(padj)
    groups = [
        (inside & ~significant & ~na, NEUTRAL_COLOUR, 4, 0.55, f"DESeq2 padj ≥ {alpha:g}"),
        (inside & significant, "#2c6fbb", 5, 0.55, f"DESeq2 padj < {alpha:g}"),
        (inside & na, NA_COLOUR, 5, 0.6, "DESeq2 padj NA"),
    ]
    for pick, colour, size, alpha_, label in groups:
        ax.scatter(ours[pick], theirs[pick], s=size, color=colour, lw=0, alpha=alpha_, rasterized=True,
                   label=f"{label} ({int(pick.sum()):,})")
    if outside.any():
        x, y = np.clip(ours[outside], low, high), np.clip(theirs[outside], low, high)
        colours = np.where(na[outside], NA_COLOUR, np.where(significant[outside], "#2c6fbb", "#777777"))
        ax.scatter(x, y, s=16, marker="^", facecolors="none", edgecolors=list(colours), lw=0.7,
                   label=f"beyond the axes, on the border ({int(outside.sum()):,})")
    ax.plot([low, high], [low, high], color="#111111", lw=0.9, ls="--", label="identity (y = x)")
    ax.axhline(0, color="#bbbbbb", lw=0.5, zorder=0)
    ax.axvline(0, color="#bbbbbb", lw=0.5, zorder=0)
    ax.set_xlim(low, high)
    ax.set_ylim(low, high)
    ax.set_ylabel(y_label, fontsize=9)
    ax.text(0.02, 0.98, stats_text, transform=ax.transAxes, ha="left", va="top", fontsize=8.5,
            bbox={"boxstyle": "round,pad=0.35", "fc": "white", "ec": "#cccccc", "lw": 0.6})
    ax.legend(frameon=False, fontsize=7.5, loc="lower right", markerscale=1.8)
    clean_axes(ax)
    # the rug: every gene DESeq2 leaves NA, at its generative log2 fold change
    rows = [(na & np.isfinite(ours) & np.isfinite(theirs), NA_COLOUR, 1.0, "padj NA"),
            (np.isfinite(ours) & ~np.isfinite(theirs), NA_LFC_COLOUR, 0.0, "LFC NA")]
    for pick, colour, level, label in rows:
        x = np.clip(ours[pick], low, high)
        rug.plot(x, np.full(len(x), level), "|", color=colour, ms=9, mew=0.8, alpha=0.7)
        rug.text(1.01, level, f"{label} ({int(pick.sum()):,})", transform=rug.get_yaxis_transform(),
                 fontsize=7.5, va="center", color=colour)
    rug.set_ylim(-0.7, 1.7)
    rug.set_yticks([])
    for side in ("left", "right", "top"):
        rug.spines[side].set_visible(False)
    rug.tick_params(labelsize=8.5)
    rug.set_xlabel(x_label, fontsize=9)
    return to_png(fig)


def latent_scatter(table: pd.DataFrame, color_by: str, path: Path, title: str = "") -> None:
    """latent.png of `nofone cohort-de`: the plot coordinates, one colour per value of `color_by`
    (a colour scale for a number with more than 8 values)."""
    from matplotlib import colormaps

    d = sum(c.startswith("z") and c[1:].isdigit() for c in table.columns)
    fig = new_figure(4.5, width=5.5, dpi=120)
    ax = fig.subplots()
    values = table[color_by]
    if pd.api.types.is_numeric_dtype(values) and values.nunique() > 8:
        points = ax.scatter(table["plot_x"], table["plot_y"], c=values, cmap="viridis", s=36, edgecolor="k",
                            linewidth=0.3)
        fig.colorbar(points, ax=ax, label=color_by)
    else:
        cmap = colormaps["tab10" if values.nunique() <= 10 else "tab20"]
        for i, value in enumerate(sorted(values.astype(str).unique())):
            rows = values.astype(str) == value
            ax.scatter(table.loc[rows, "plot_x"], table.loc[rows, "plot_y"], color=cmap(i % cmap.N), s=36,
                       edgecolor="k", linewidth=0.3, label=value)
        ax.legend(title=color_by, fontsize=8, title_fontsize=8, frameon=False, loc="best")
    ax.set_xlabel("z1" if d <= 2 else "latent PC1")
    ax.set_ylabel("z2" if d == 2 else ("latent PC2" if d > 2 else ""))
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
