"""The report's figures: one function per figure, each returning PNG bytes.

Figures are drawn on matplotlib `Figure` objects with the Agg canvas directly (no pyplot, no
global backend, no display needed). They are 9 inches wide at 150 dpi and shown 900 px wide.
Text drawn into a PNG is not HTML, so gene names and tissues need no escaping here.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LinearSegmentedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter

from nofone.report.style import (
    DOWN_COLOUR,
    NA_COLOUR,
    NA_LFC_COLOUR,
    NEUTRAL_COLOUR,
    TRAINING_COLOUR,
    UP_COLOUR,
)

WIDTH = 9.0
DPI = 150
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
HEAT = LinearSegmentedColormap.from_list("nofone_heat", ["#ffffff", "#c6dbef", "#4292c6", "#08306b"])


def _new(height: float, **kwargs) -> Figure:
    fig = Figure(figsize=(WIDTH, height), dpi=DPI, **kwargs)
    FigureCanvasAgg(fig)
    return fig


def _clean(ax) -> None:
    ax.spines["top"].set_visible(False)
    ax.spines["right"].set_visible(False)
    ax.tick_params(labelsize=8.5)


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, facecolor="white")
    return buffer.getvalue()


def training_curves(history: pd.DataFrame, best_epoch: int | None) -> bytes:
    """Loss per epoch, held-out NLL per gene, components used, dispersion quantiles."""
    fig = _new(6.2, layout="constrained")
    axes = fig.subplots(2, 2, sharex=True)
    epoch = history["epoch"].to_numpy()

    def mark(ax) -> None:
        if best_epoch:
            ax.axvline(best_epoch, color="#444444", ls="--", lw=0.9)

    ax = axes[0, 0]
    if "loss_train" in history:
        ax.plot(epoch, history["loss_train"], color=TRAINING_COLOUR, lw=1.4, label="training")
    if "loss_test" in history and history["loss_test"].notna().any():
        ax.plot(epoch, history["loss_test"], color="#2c6fbb", lw=1.4, label="held-out")
    ax.set_title("Loss per sample (NB + latent prior)", fontsize=10)
    ax.legend(frameon=False, fontsize=8)
    mark(ax)

    ax = axes[0, 1]
    # the DGD stops on the held-out NLL per gene, the NB-VAE on the held-out negative ELBO per gene
    metric, label = next(((c, t) for c, t in (("heldout_nll_per_gene", "Held-out NLL per gene"),
                                             ("heldout_neg_elbo_per_gene", "Held-out negative ELBO per gene"))
                          if c in history and history[c].notna().any()), (None, "Held-out NLL per gene"))
    if metric is not None:
        evaluated = history[history[metric].notna()]
        ax.plot(evaluated["epoch"], evaluated[metric], "o-", color="#2c6fbb", lw=1.4, ms=3.5)
        if best_epoch and (evaluated["epoch"] == best_epoch).any():
            best = evaluated.loc[evaluated["epoch"] == best_epoch, metric].iloc[0]
            ax.plot([best_epoch], [best], "o", ms=8, mfc="none", mec="#111111", mew=1.4)
    else:
        ax.text(0.5, 0.5, "no held-out evaluations", ha="center", va="center", transform=ax.transAxes,
                color="#777777", fontsize=9)
    ax.set_title(f"{label} (at evaluations)", fontsize=10)
    mark(ax)

    ax = axes[1, 0]
    if "components_used" in history:
        ax.step(epoch, history["components_used"], where="mid", color="#444444", lw=1.4)
        ax.set_ylim(bottom=0)
        ax.yaxis.get_major_locator().set_params(integer=True)
    ax.set_title("Mixture components holding training samples", fontsize=10)
    ax.set_xlabel("epoch", fontsize=9)
    mark(ax)

    ax = axes[1, 1]
    if {"dispersion_median", "dispersion_q05", "dispersion_q95"} <= set(history.columns):
        ax.fill_between(epoch, history["dispersion_q05"], history["dispersion_q95"], color="#9ecae1", alpha=0.6,
                        lw=0, label="5%-95%")
        ax.plot(epoch, history["dispersion_median"], color="#08519c", lw=1.4, label="median")
        ax.set_yscale("log")
        plain = FuncFormatter(lambda v, _: f"{v:g}")
        ax.yaxis.set_major_formatter(plain)
        low, high = float(history["dispersion_q05"].min()), float(history["dispersion_q95"].max())
        if low > 0 and high / low < 100:  # few decades: label the minor ticks too, else they crowd
            ax.yaxis.set_minor_formatter(plain)
        ax.legend(frameon=False, fontsize=8)
    ax.set_title("Gene dispersion r (before calibration)", fontsize=10)
    ax.set_xlabel("epoch", fontsize=9)
    mark(ax)
    for ax in axes.ravel():
        _clean(ax)
    return _png(fig)


def latent_pca(train_xy: np.ndarray, train_tissue: Sequence[str] | None, train_heldout: np.ndarray,
               new_xy: np.ndarray | None, new_tissue: Sequence[str] | None, new_group: Sequence[str] | None,
               tissue_colours: dict[str, str], group_colours: dict[str, str], explained: Sequence[float]) -> bytes:
    """Two panels on the same PCA axes: coloured by tissue; new samples coloured by group."""
    fig = _new(4.6, layout="constrained")
    left, right = fig.subplots(1, 2, sharex=True, sharey=True)
    x_label = f"PC1 ({100 * explained[0]:.0f}% of variance)"
    y_label = f"PC2 ({100 * explained[1]:.0f}% of variance)" if len(explained) > 1 else "PC2"

    # left: every point coloured by tissue; held-out normals hollow, new samples as crosses
    if train_tissue is not None:
        colours = [tissue_colours.get(str(t), TRAINING_COLOUR) for t in train_tissue]
    else:
        colours = [TRAINING_COLOUR] * len(train_xy)
    colours = np.asarray(colours, dtype=object)
    fit = ~train_heldout
    left.scatter(train_xy[fit, 0], train_xy[fit, 1], s=9, c=list(colours[fit]), alpha=0.55, lw=0)
    if train_heldout.any():
        left.scatter(train_xy[~fit, 0], train_xy[~fit, 1], s=16, facecolors="none",
                     edgecolors=list(colours[~fit]), lw=0.9)
    if new_xy is not None and len(new_xy):
        new_colours = [tissue_colours.get(str(t), "#222222") for t in new_tissue] if new_tissue is not None \
            else ["#222222"] * len(new_xy)
        left.scatter(new_xy[:, 0], new_xy[:, 1], s=28, c=new_colours, marker="X", lw=0.5, edgecolors="#111111")
    handles = [Line2D([], [], ls="", marker="o", ms=5, color=c, label=t) for t, c in tissue_colours.items()]
    if len(handles) > 14:
        handles = [*handles[:13], Line2D([], [], ls="", label=f"+{len(handles) - 13} more")]
    handles.append(Line2D([], [], ls="", marker="o", ms=5, mfc="none", mec="#555555", label="held-out normal"))
    if new_xy is not None and len(new_xy):
        handles.append(Line2D([], [], ls="", marker="X", ms=6, color="#555555", mec="#111111", label="tested sample"))
    left.legend(handles=handles, frameon=False, fontsize=7, loc="best", title="tissue", title_fontsize=7.5)
    left.set_title("Coloured by tissue", fontsize=10)

    # right: training normals grey, tested samples by group (the colours of every other figure)
    right.scatter(train_xy[:, 0], train_xy[:, 1], s=9, c=TRAINING_COLOUR, alpha=0.35, lw=0)
    handles = [Line2D([], [], ls="", marker="o", ms=5, color=TRAINING_COLOUR, label="training normals")]
    if new_xy is not None and len(new_xy) and new_group is not None:
        groups = np.asarray(new_group, dtype=object)
        for i, (group, colour) in enumerate((g, c) for g, c in group_colours.items() if (groups == g).any()):
            pick = groups == group
            marker = MARKERS[i % len(MARKERS)]
            right.scatter(new_xy[pick, 0], new_xy[pick, 1], s=30, c=colour, marker=marker, lw=0.5,
                          edgecolors="#111111")
            handles.append(Line2D([], [], ls="", marker=marker, ms=6, color=colour, mec="#111111",
                                  label=f"{group} (n={int(pick.sum())})"))
    right.legend(handles=handles, frameon=False, fontsize=7, loc="best")
    right.set_title("Tested samples by group", fontsize=10)
    for ax in (left, right):
        ax.set_xlabel(x_label, fontsize=9)
        _clean(ax)
    left.set_ylabel(y_label, fontsize=9)
    return _png(fig)


def association_heatmap(percent: pd.DataFrame, counts: pd.DataFrame, xlabel: str, ylabel: str,
                        colour_label: str) -> bytes:
    """A heatmap of percentages (0-100) annotated with counts; rows and columns as given."""
    n_rows, n_cols = percent.shape
    height = min(14.0, max(2.6, 0.32 * n_rows + 1.6))
    fig = _new(height, layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(percent.to_numpy(dtype=float), cmap=HEAT, vmin=0, vmax=100, aspect="auto",
                      interpolation="nearest")
    ax.set_xticks(range(n_cols))
    ax.set_xticklabels([str(c) for c in percent.columns], fontsize=7.5 if n_cols > 25 else 8.5)
    ax.set_yticks(range(n_rows))
    ax.set_yticklabels([str(r) for r in percent.index], fontsize=8.5 if n_rows <= 25 else (7 if n_rows <= 50 else 5.5))
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel(ylabel, fontsize=9)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    if n_rows * n_cols <= 900:
        size = 7.5 if n_cols <= 20 else 6
        values = counts.to_numpy()
        shade = percent.to_numpy(dtype=float)
        for i in range(n_rows):
            for j in range(n_cols):
                if values[i, j]:
                    ax.text(j, i, str(int(values[i, j])), ha="center", va="center", fontsize=size,
                            color="white" if shade[i, j] > 55 else "#222222")
    bar = fig.colorbar(image, ax=ax, fraction=0.04, pad=0.01)
    bar.set_label(colour_label, fontsize=8.5)
    bar.ax.tick_params(labelsize=8)
    return _png(fig)


def _density(values: np.ndarray, grid: np.ndarray) -> np.ndarray | None:
    from scipy.stats import gaussian_kde

    values = values[np.isfinite(values)]
    if len(values) < 3 or np.ptp(values) == 0:
        return None
    try:
        return gaussian_kde(values)(grid)
    except (np.linalg.LinAlgError, ValueError):
        return None


def nll_densities(values: dict[str, np.ndarray], colours: dict[str, str]) -> bytes:
    """Density of the count NLL per gene of each group, with a rug of the samples."""
    fig = _new(3.8, layout="constrained")
    ax = fig.subplots()
    pooled = np.concatenate([v[np.isfinite(v)] for v in values.values()])
    low, high = float(pooled.min()), float(pooled.max())
    pad = 0.08 * (high - low) if high > low else 0.5
    grid = np.linspace(low - pad, high + pad, 400)
    peak = 0.0
    curves = {}
    for group, v in values.items():
        d = _density(np.asarray(v, dtype=float), grid)
        curves[group] = d
        if d is not None:
            peak = max(peak, float(d.max()))
    peak = peak or 1.0
    for i, (group, v) in enumerate(values.items()):
        colour = colours.get(group, "#333333")
        d = curves[group]
        label = f"{group} (n={len(v)})"
        if d is not None:
            ax.fill_between(grid, d, color=colour, alpha=0.18, lw=0)
            ax.plot(grid, d, color=colour, lw=1.6, label=label)
        else:
            ax.plot([], [], color=colour, lw=1.6, label=label)
        rug = -(0.04 + 0.05 * i) * peak
        ax.plot(v, np.full(len(v), rug), "|", color=colour, ms=7, mew=1.1)
    ax.axhline(0, color="#999999", lw=0.6)
    ax.set_xlabel("count NLL per gene (higher = fits the model of normal tissue worse)", fontsize=9)
    ax.set_ylabel("density", fontsize=9)
    ax.legend(frameon=False, fontsize=8)
    _clean(ax)
    return _png(fig)


def de_per_sample(summary: pd.DataFrame, colours: dict[str, str], max_bars: int = 60) -> bytes:
    """Up and down calls per sample: diverging bars (few samples) or strips per group (many)."""
    if len(summary) <= max_bars:
        return _de_bars(summary, colours)
    return _de_strips(summary, colours)


def _de_bars(summary: pd.DataFrame, colours: dict[str, str]) -> bytes:
    n = len(summary)
    fig = _new(min(14.0, max(2.4, 0.19 * n + 1.2)), layout="constrained")
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
    ax.set_xlabel("DE genes per sample:   ← down        up →", fontsize=9)
    handles = [Line2D([], [], ls="", marker="s", ms=7, color=colours[g], label=g)
               for g in colours if (summary["group"] == g).any()]
    ax.legend(handles=handles, frameon=False, fontsize=8, loc="lower right")
    _clean(ax)
    return _png(fig)


def _de_strips(summary: pd.DataFrame, colours: dict[str, str]) -> bytes:
    groups = [g for g in colours if (summary["group"] == g).any()]
    fig = _new(3.8, layout="constrained")
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
        _clean(ax)
    axes[0].set_ylabel("DE genes (black bar: median)", fontsize=9)
    return _png(fig)


def volcanoes(tables: dict[str, pd.DataFrame], q_threshold: float, lfc_threshold: float,
              n_labels: int = 8) -> bytes:
    """One volcano per sample: log2 fold change vs -log10 q; calls coloured, top genes named."""
    n = len(tables)
    cols = 1 if n == 1 else 2
    rows = int(np.ceil(n / cols))
    fig = _new(4.2 * rows if cols == 2 else 4.6, layout="constrained")
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
        _clean(ax)
    for ax in axes[n:]:
        ax.set_visible(False)
    fig.canvas.draw()  # fixes the layout, so that labels can be spaced in axes coordinates
    for ax, points in labels:
        _place_labels(ax, points)
    fig.set_layout_engine("none")
    return _png(fig)


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
    fig = _new(3.6, layout="constrained")
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
    _clean(ax)
    return _png(fig)


def cohort_latent(xy: np.ndarray, panels: list[dict], x_label: str, y_label: str) -> bytes:
    """The cohort's samples in the latent plane, one panel per variable, all on the same axes.

    Each panel: `title`, `values` (one per sample), `colours` (value -> colour; None: a numeric
    colour scale), optionally `markers` (a second variable drawn as the marker shape) and
    `marker_title`.
    """
    n = len(panels)
    fig = _new(4.4 if n > 1 else 4.8, layout="constrained")
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
        _clean(ax)
    axes[0].set_ylabel(y_label, fontsize=9)
    # room for the legends: 25% more on each side
    for ax in axes:
        ax.margins(0.18)
    return _png(fig)


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
    fig = Figure(figsize=(6.6, 7.0), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
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
    _clean(ax)
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
    return _png(fig)
