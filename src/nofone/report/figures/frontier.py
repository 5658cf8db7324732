"""The sensitivity frontier (`nofone.evaluate.frontier`): false calls per never-trained normal
against the recall of planted changes, one curve per null over the q thresholds, one panel per
planted fold change; the default null drawn bold and its q < 0.01 point ringed."""

from __future__ import annotations

import numpy as np
import pandas as pd

from nofone.report.figures.canvas import MARKERS, clean_axes, new_figure, to_png

COLOURS = {"nb": "#d62728", "model-error": "#ff7f0e", "outlier": "#1f77b4", "local": "#2ca02c"}


def frontier_figure(table: pd.DataFrame, tumour: pd.DataFrame | None = None) -> bytes:
    """`table`: the rows of frontier.tsv (null, default, nominal_q, false_calls_per_normal,
    spike_lfc, recall); `tumour` optionally (null, nominal_q, recall) of a positive control, drawn
    against the same nulls' false calls per normal."""
    panels = sorted(v for v in table["spike_lfc"].dropna().unique())
    panels = panels or [np.nan]
    extra = tumour is not None and len(tumour) > 0
    fig = new_figure(3.9, layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(panels) + extra, sharey=False))
    floor = _floor(table)
    for ax, lfc in zip(axes, panels):
        rows = table if np.isnan(lfc) else table[table["spike_lfc"] == lfc]
        _curves(ax, rows, floor)
        ax.set_title("no spike-ins" if np.isnan(lfc) else f"planted {2 ** lfc:g}-fold", fontsize=9)
    if extra:
        rates = table.drop_duplicates(["null", "nominal_q"])[["null", "nominal_q", "false_calls_per_normal"]]
        _curves(axes[-1], tumour.drop(columns="false_calls_per_normal", errors="ignore").merge(
            rates, on=["null", "nominal_q"]), floor)
        axes[-1].set_title("tumours: cohort |LFC| > 3", fontsize=9)
    axes[0].set_ylabel("recall", fontsize=9)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 3), frameon=False, fontsize=7.5)
    return to_png(fig)


def _floor(table: pd.DataFrame) -> float:
    """Where zero false calls are drawn on the log axis: below the smallest positive rate."""
    positive = table["false_calls_per_normal"][table["false_calls_per_normal"] > 0]
    return float(positive.min() / 3) if len(positive) else 0.01


def _curves(ax, rows: pd.DataFrame, floor: float) -> None:
    for k, (null, part) in enumerate(rows.groupby("null", sort=False)):
        part = part.sort_values("nominal_q")
        x = np.maximum(part["false_calls_per_normal"].to_numpy(float), floor)
        y = part["recall"].to_numpy(float)
        default = bool(part["default"].any()) if "default" in part else False
        colour = COLOURS.get(str(null).split(" ")[0].rstrip(","), "#555555")
        ax.plot(x, y, marker=MARKERS[k % len(MARKERS)], ms=4, lw=2.4 if default else 1.2, color=colour,
                alpha=1.0 if default or "," not in str(null) else 0.55,
                label=null + (" (default)" if default and "default" not in str(null) else ""))
        at = part["nominal_q"].to_numpy(float) == 0.01
        if default and at.any():
            ax.plot(x[at], y[at], "o", ms=10, mfc="none", mec="#000000", lw=1.0)
    ax.axvline(1.0, color="#999999", lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_xlabel("false calls per normal", fontsize=8)
    ax.set_ylim(bottom=0)
    clean_axes(ax)
