"""Figures of `nofone explain`: how much of each profile the regulators explain, and which
regulators are behind the profiles (a z heatmap of regulators x samples)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.colors import to_rgb
from matplotlib.lines import Line2D

from nofone.report.figures.canvas import clean_axes, new_figure, to_png

Z_LIMIT = 6.0  # the heatmap's colour scale ends here (|z| beyond it drawn at the end colour)


def explained_per_sample(summary: pd.DataFrame, colours: dict[str, str], max_bars: int = 40) -> bytes:
    """Held-out Spearman and significant regulators per sample: labelled bars (few samples) or
    strips per group (many)."""
    if len(summary) <= max_bars:
        return _bars(summary, colours)
    return _strips(summary, colours)


def _bars(summary: pd.DataFrame, colours: dict[str, str]) -> bytes:
    n = len(summary)
    fig = new_figure(min(12.0, max(2.4, 0.22 * n + 1.3)), layout="constrained")
    left, right = fig.subplots(1, 2, sharey=True, width_ratios=(3, 2))
    y = np.arange(n)[::-1]
    bar_colours = [colours.get(g, "#333333") for g in summary["group"]]
    left.barh(y, summary["heldout_spearman"], color=bar_colours, height=0.7)
    if "heldout_spearman_features_only" in summary:
        left.plot(summary["heldout_spearman_features_only"], y, "|", color="#111111", ms=9, mew=1.4,
                  label="features-only head")
        left.legend(frameon=False, fontsize=7.5, loc="lower right")
    left.axvline(0, color="#333333", lw=0.8)
    left.set_yticks(y)
    left.set_yticklabels(summary["sample_id"], fontsize=7 if n > 25 else 8)
    left.tick_params(axis="y", length=0)
    left.set_xlabel("held-out-chromosome Spearman of the profile", fontsize=9)
    right.barh(y, summary["n_significant"], color=bar_colours, height=0.7)
    right.set_xlabel("regulators with q below the threshold", fontsize=9)
    right.xaxis.get_major_locator().set_params(integer=True)
    handles = [Line2D([], [], ls="", marker="s", ms=7, color=colours[g], label=g)
               for g in colours if (summary["group"] == g).any()]
    right.legend(handles=handles, frameon=False, fontsize=8, loc="lower right")
    for ax in (left, right):
        clean_axes(ax)
    return to_png(fig)


def _strips(summary: pd.DataFrame, colours: dict[str, str]) -> bytes:
    groups = [g for g in colours if (summary["group"] == g).any()]
    fig = new_figure(3.8, layout="constrained")
    axes = fig.subplots(1, 2)
    rng = np.random.default_rng(0)
    for ax, column, title in ((axes[0], "heldout_spearman", "held-out-chromosome Spearman"),
                              (axes[1], "n_significant", "significant regulators per sample")):
        for i, group in enumerate(groups):
            values = summary.loc[summary["group"] == group, column].to_numpy(dtype=float)
            ax.scatter(i + rng.uniform(-0.28, 0.28, len(values)), values, s=8, color=colours[group], alpha=0.6,
                       lw=0)
            ax.plot([i - 0.35, i + 0.35], [np.median(values)] * 2, color="#111111", lw=1.6)
        ax.set_xticks(range(len(groups)))
        tilt = len(groups) > 4
        ax.set_xticklabels(groups, fontsize=8, rotation=20 if tilt else 0, ha="right" if tilt else "center")
        ax.set_title(title, fontsize=10)
        clean_axes(ax)
    axes[0].set_ylabel("black bar: median", fontsize=9)
    return to_png(fig)


def regulator_heatmap(z: pd.DataFrame, significant: pd.DataFrame, sample_colours: list[str]) -> bytes:
    """z of each regulator (rows) in each sample (columns), red where its targets are higher than
    in the closest normal, blue where lower; a dot marks q below the threshold; the strip above
    gives each sample's group colour."""
    rows, columns = z.shape
    fig = new_figure(min(11.0, max(2.8, 0.2 * rows + 1.8)), layout="constrained")
    strip, ax = fig.subplots(2, 1, height_ratios=(1, max(4, rows)), sharex=True)
    strip.imshow(np.array([[to_rgb(c) for c in sample_colours]]), aspect="auto")
    strip.set_axis_off()
    image = ax.imshow(np.clip(z.to_numpy(dtype=float), -Z_LIMIT, Z_LIMIT), cmap="RdBu_r", vmin=-Z_LIMIT,
                      vmax=Z_LIMIT, aspect="auto", interpolation="nearest")
    marked = np.argwhere(significant.to_numpy(dtype=bool))
    if len(marked):
        ax.scatter(marked[:, 1], marked[:, 0], s=6 if columns > 30 else 12, color="#111111", lw=0)
    ax.set_yticks(range(rows))
    ax.set_yticklabels(z.index, fontsize=7 if rows > 20 else 8)
    if columns <= 60:
        ax.set_xticks(range(columns))
        ax.set_xticklabels(z.columns, fontsize=7, rotation=60, ha="right")
    else:
        ax.set_xticks([])
        ax.set_xlabel(f"{columns} samples", fontsize=9)
    ax.tick_params(length=0)
    bar = fig.colorbar(image, ax=ax, shrink=0.6, pad=0.01)
    bar.set_label("z of the mean attribution", fontsize=8.5)
    bar.ax.tick_params(labelsize=7.5)
    return to_png(fig)

