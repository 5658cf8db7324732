"""Figures of the model: training curves, the latent space, tissue x component heatmaps, NLL densities."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter

from nofone.report.figures.canvas import HEAT, MARKERS, clean_axes, new_figure, to_png
from nofone.report.style import TRAINING_COLOUR


def training_curves(history: pd.DataFrame, best_epoch: int | None) -> bytes:
    """Loss per epoch, held-out NLL per gene, components used, dispersion quantiles."""
    fig = new_figure(6.2, layout="constrained")
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
        clean_axes(ax)
    return to_png(fig)


def latent_pca(train_xy: np.ndarray, train_tissue: Sequence[str] | None, train_heldout: np.ndarray,
               new_xy: np.ndarray | None, new_tissue: Sequence[str] | None, new_group: Sequence[str] | None,
               tissue_colours: dict[str, str], group_colours: dict[str, str], explained: Sequence[float]) -> bytes:
    """Two panels on the same PCA axes: coloured by tissue; new samples coloured by group."""
    fig = new_figure(4.6, layout="constrained")
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
        clean_axes(ax)
    left.set_ylabel(y_label, fontsize=9)
    return to_png(fig)


def association_heatmap(percent: pd.DataFrame, counts: pd.DataFrame, xlabel: str, ylabel: str,
                        colour_label: str) -> bytes:
    """A heatmap of percentages (0-100) annotated with counts; rows and columns as given."""
    n_rows, n_cols = percent.shape
    height = min(14.0, max(2.6, 0.32 * n_rows + 1.6))
    fig = new_figure(height, layout="constrained")
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
    return to_png(fig)


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
    fig = new_figure(3.8, layout="constrained")
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
    clean_axes(ax)
    return to_png(fig)
