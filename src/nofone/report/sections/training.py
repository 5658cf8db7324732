"""Training: loss, held-out NLL, components used and dispersions per epoch."""

from __future__ import annotations

import numpy as np

from nofone.report.context import ReportContext
from nofone.report.figures.model import training_curves
from nofone.report.html import Section, bold, png_figure


def build(ctx: ReportContext, section: Section) -> None:
    history = ctx.data.history
    if history is None or "epoch" not in history or history.empty:
        section.unavailable("model/history.tsv not found "
                            "(a model from `nofone import-bulkdgd` has no training history)")
        return
    best = ctx.data.training_info.get("best_epoch")
    best = int(best) if best is not None else None
    section.add(png_figure(
        training_curves(history, best),
        f"Training of the model. {bold('Top left')}: loss per sample on the training samples and on the held-out "
        "normals (their representations are fitted, the decoder is not). "
        f"{bold('Top right')}: count NLL per gene of the held-out normals after refining their representations, "
        "at each evaluation; training stops when it stops improving and the circled best epoch is restored "
        "(dashed line). A held-out curve rising while training loss falls means the decoder memorises the "
        f"training samples. {bold('Bottom left')}: mixture components holding training samples (a drop to 1 is a "
        f"collapsed mixture). {bold('Bottom right')}: spread of gene dispersions; if the band stays at its "
        "starting value no gene can ever be called down.",
        "training curves"))
    last = history.iloc[-1]
    ctx.numbers["training"] = {"epochs_run": int(last["epoch"]), "best_epoch": best,
                               "final_loss_train": float(last.get("loss_train", np.nan))}
