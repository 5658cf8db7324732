"""Figures of the DE calls: calls per sample, volcano plots, negative-control bars."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from nofone.report.figures.canvas import clean_axes, new_figure, to_png
from nofone.report.style import DOWN_COLOUR, NEUTRAL_COLOUR, UP_COLOUR


def de_per_sample(summary: pd.DataFrame, colours: dict[str, str], max_bars: int = 60, what: str = "DE genes") -> bytes:
    """Up and down calls per sample (`what` is called: genes, gene sets): diverging bars (few
    samples) or strips per group (many)."""
    if len(summary) <= max_bars:
        return _de_bars(summary, colours, what)
    return _de_strips(summary, colours)


def _de_bars(summary: pd.DataFrame, colours: dict[str, str], what: str) -> bytes:
    n = len(summary)
    fig = new_figure(min(14.0, max(2.4, 0.19 * n + 1.2)), layout="constrained")
    ax = fig.subplots()
    y = np.arange(n)[::-1]
    bar_colours = [colours.get(g, "#333333") for g in summary["group"]]
    ax.barh(y, summary["n_up"], color=bar_colours, height=0.75)
    ax.barh(y, -summary["n_down"].to_numpy(), color=bar_colours, height=0.75, alpha=0.55, hatch="///",
            edgecolor="white", lw=0)
    ax.axvline(0, color="#333333", lw=0.8)
    ax.set_yticks(y)
    ax.set_yticklabels(summary["sample_id"], fontsize=7 if n > 30 else 8)
    ax.tick_params(axis="y", length=0)
    limit = max(1, int(summary["n_up"].max()), int(summary["n_down"].max()))
    ax.set_xlim(-limit * 1.08, limit * 1.08)
    ticks = ax.get_xticks()
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{abs(int(t))}" for t in ticks])
    ax.set_xlim(-limit * 1.08, limit * 1.08)
    ax.set_xlabel(f"{what} per sample:   ← down        up →", fontsize=9)
    handles = [Line2D([], [], ls="", marker="s", ms=7, color=colours[g], label=g)
               for g in colours if (summary["group"] == g).any()]
    ax.legend(handles=handles, frameon=False, fontsize=8, loc="lower right")
    clean_axes(ax)
    return to_png(fig)


def _de_strips(summary: pd.DataFrame, colours: dict[str, str]) -> bytes:
    groups = [g for g in colours if (summary["group"] == g).any()]
    fig = new_figure(3.8, layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    rng = np.random.default_rng(0)
    for ax, column, title in ((axes[0], "n_up", "up calls per sample"), (axes[1], "n_down", "down calls per sample")):
        for i, group in enumerate(groups):
            values = summary.loc[summary["group"] == group, column].to_numpy(dtype=float)
            x = i + rng.uniform(-0.28, 0.28, len(values))
            ax.scatter(x, values, s=8, color=colours[group], alpha=0.6, lw=0)
            ax.plot([i - 0.35, i + 0.35], [np.median(values)] * 2, color="#111111", lw=1.6)
        ax.set_xticks(range(len(groups)))
        tilt = len(groups) > 4
        ax.set_xticklabels(groups, fontsize=8, rotation=20 if tilt else 0, ha="right" if tilt else "center")
        ax.set_title(title, fontsize=10)
        if summary[["n_up", "n_down"]].to_numpy().max() > 100:
            ax.set_yscale("symlog", linthresh=1)
        clean_axes(ax)
    axes[0].set_ylabel("DE genes (black bar: median)", fontsize=9)
    return to_png(fig)


def volcanoes(tables: dict[str, pd.DataFrame], q_threshold: float, lfc_threshold: float,
              n_labels: int = 8) -> bytes:
    """One volcano per sample: log2 fold change vs -log10 q; calls coloured, top genes named."""
    n = len(tables)
    cols = 1 if n == 1 else 2
    rows = int(np.ceil(n / cols))
    fig = new_figure(4.2 * rows if cols == 2 else 4.6, layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    floor = 1e-300
    labels = []
    for ax, (sample, table) in zip(axes, tables.items()):
        lfc = table["log2_fold_change"].to_numpy(dtype=float)
        q = np.clip(table["q_value"].to_numpy(dtype=float), floor, 1)
        y = -np.log10(q)
        significant = (table["q_value"] < q_threshold).to_numpy()
        up = significant & (lfc > lfc_threshold)
        down = significant & (lfc < -lfc_threshold)
        other = ~(up | down)
        ax.scatter(lfc[other], y[other], s=5, color=NEUTRAL_COLOUR, lw=0, alpha=0.6, rasterized=True)
        ax.scatter(lfc[up], y[up], s=9, color=UP_COLOUR, lw=0, label=f"up ({int(up.sum())})")
        ax.scatter(lfc[down], y[down], s=9, color=DOWN_COLOUR, lw=0, label=f"down ({int(down.sum())})")
        ax.axhline(-np.log10(q_threshold), color="#777777", lw=0.7, ls="--")
        for x in (-lfc_threshold, lfc_threshold):
            ax.axvline(x, color="#777777", lw=0.7, ls="--")
        called = np.flatnonzero(up | down)
        top = called[np.lexsort((-np.abs(lfc[called]), -y[called]))][:n_labels]
        names = table["gene_name"].fillna("").astype(str).to_numpy()
        ids = table["gene_id"].astype(str).to_numpy()
        labels.append((ax, [(names[i] or ids[i], lfc[i], y[i]) for i in top]))
        ax.set_title(sample, fontsize=10)
        ax.set_xlabel("log2 fold change vs closest normal", fontsize=8.5)
        ax.set_ylabel("−log10 q", fontsize=8.5)
        ax.legend(frameon=False, fontsize=7.5, loc="upper left")
        ax.set_ylim(0, max(float(y.max()) if len(y) else 1.0, -np.log10(q_threshold)) * 1.08)
        x_max = float(np.abs(lfc).max()) if len(lfc) else 1.0
        ax.set_xlim(-x_max * 1.25 - 0.2, x_max * 1.25 + 0.2)
        clean_axes(ax)
    for ax in axes[n:]:
        ax.set_visible(False)
    fig.canvas.draw()  # fixes the layout, so that labels can be spaced in axes coordinates
    for ax, points in labels:
        _place_labels(ax, points)
    fig.set_layout_engine("none")
    return to_png(fig)


def _place_labels(ax, points: list[tuple[str, float, float]], gap_pt: float = 9.0) -> None:
    """Name points without overlaps: per side of zero, labels stacked downwards from the top."""
    to_axes = ax.transAxes.inverted()
    gap = gap_pt * ax.figure.dpi / 72 / max(1.0, ax.bbox.height)
    for side in (1, -1):
        chosen = [(name, *to_axes.transform(ax.transData.transform((x, y)))) for name, x, y in points
                  if (x >= 0) == (side > 0)]
        chosen.sort(key=lambda p: -p[2])
        previous = 1.02
        for name, fx, fy in chosen:
            ty = min(fy + gap / 2, previous - gap)
            previous = ty
            tx = fx + side * 0.05
            text = ax.annotate(name, (fx, fy), xytext=(tx, ty), xycoords="axes fraction",
                               textcoords="axes fraction", fontsize=7, va="center",
                               ha="left" if side > 0 else "right", color="#222222",
                               arrowprops={"arrowstyle": "-", "lw": 0.5, "color": "#777777",
                                           "shrinkA": 1, "shrinkB": 2})
            text.set_in_layout(False)


def negative_control_bars(table: pd.DataFrame) -> bytes:
    """Mean DE genes per held-out normal (± sd) by method, one bar per q threshold.

    Methods run with several control sets (the `controls` column) get one bar group each.
    """
    table = table.copy()
    label = table["method"].astype(str)
    if "controls" in table and table.duplicated(["method", "q_threshold"]).any():
        label = label + "\n" + table["controls"].astype(str)
    table["_label"] = label
    labels = list(dict.fromkeys(table["_label"]))
    thresholds = sorted(table["q_threshold"].unique())
    fig = new_figure(3.6, layout="constrained")
    ax = fig.subplots()
    width = 0.8 / max(1, len(thresholds))
    shades = ["#08519c", "#4292c6", "#9ecae1", "#c6dbef", "#6baed6"]
    for k, threshold in enumerate(thresholds):
        rows = table[table["q_threshold"] == threshold]
        mean_of = dict(zip(rows["_label"], rows["mean_de"].astype(float)))
        sd_of = dict(zip(rows["_label"], rows["sd_de"].astype(float))) if "sd_de" in rows else {}
        means = [mean_of.get(m, np.nan) for m in labels]
        sds = list(np.nan_to_num([sd_of.get(m, 0.0) for m in labels])) if sd_of else None
        x = np.arange(len(labels)) - 0.4 + width * (k + 0.5)
        bars = ax.bar(x, means, width=width * 0.92, color=shades[k % len(shades)], yerr=sds, capsize=2,
                      error_kw={"lw": 0.8, "ecolor": "#333333"}, label=f"q < {threshold:g}")
        ax.bar_label(bars, labels=[f"{m:.3g}" if np.isfinite(m) else "" for m in means], fontsize=7,
                     padding=2, color="#333333")
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, fontsize=8.5 if len(labels) < 8 else 7)
    ax.set_ylabel("DE genes per held-out normal", fontsize=9)
    ax.set_ylim(bottom=0)
    ax.legend(frameon=False, fontsize=8)
    clean_axes(ax)
    return to_png(fig)
