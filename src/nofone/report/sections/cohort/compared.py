"""What was compared: the contrast, the samples and genes, the NB-VAE's training."""

from __future__ import annotations

import pandas as pd

from nofone.report.context import ReportContext
from nofone.report.html import Section, esc, format_duration, format_value, key_values, subheading
from nofone.report.inputs import COHORT_REPORT
from nofone.report.sections.cohort.contrast import Contrast


def _sample_text(samples: dict, per_level: dict[str, int], c: Contrast) -> str | None:
    if not per_level:
        return None
    others = {k: v for k, v in per_level.items() if k not in (c.level, c.reference)}
    text = (f"{samples.get('n', sum(per_level.values()))} in all: {c.level} {per_level.get(c.level, 0)}, "
            f"{c.reference} {per_level.get(c.reference, 0)}")
    if others:
        text += "; not compared: " + ", ".join(f"{k} {v}" for k, v in sorted(others.items()))
    return text


def _gene_text(genes: dict) -> str | None:
    if genes.get("n_modelled") is None:
        return None
    text = f"{format_value(genes['n_modelled'])} modelled"
    if genes.get("n_input") is not None:
        text += (f" of {format_value(genes['n_input'])} (at least {format_value(genes.get('min_total_count'))}"
                 f" counts over the cohort; {format_value(genes.get('n_dropped_low_counts'))} dropped)")
    return text


def build(ctx: ReportContext, section: Section, c: Contrast) -> None:
    section.add(subheading("What was compared"))
    numbers = ctx.numbers["cohort"]
    report = c.report
    if not report:
        section.missing(f"{COHORT_REPORT} not found in {ctx.data.cohort.folder}: the contrast and the training "
                        "are unknown")
        return
    samples = report.get("samples") or {}
    per_level = {str(k): int(v) for k, v in (samples.get("per_level") or {}).items()}
    genes = report.get("genes") or {}
    model = report.get("model") or {}
    config = model.get("config") or {}
    training = config.get("training") or {}
    contrast = report.get("contrast") or {}
    cells = [cell for cell in contrast.get("cells") or [] if isinstance(cell, dict)]
    used = [cell for cell in cells if cell.get("used")]
    latent_dim = config.get("latent_dim")
    active = model.get("active_latent_dims")
    epochs_run, epochs = model.get("epochs_run"), training.get("epochs")
    hidden = config.get("hidden") or []
    rows = [
        ("dataset", report.get("input")),
        ("group column", c.group),
        ("contrast", f"{c.level} vs {c.reference} (log2 fold change > 0: higher in {c.level})"),
        ("covariates", ", ".join(c.covariates) if c.covariates else "none"),
        ("samples", _sample_text(samples, per_level, c)),
        ("covariate cells used", f"{len(used)} of {len(cells)}" if c.covariates and cells else None),
        ("genes", _gene_text(genes)),
        ("latent dimensions", f"{latent_dim}" + (f" ({active} active)" if active is not None else "")
         if latent_dim is not None else None),
        ("encoder layers", " × ".join(str(h) for h in hidden) or None),
        ("epochs", f"{epochs_run} of {epochs}" if epochs_run is not None and epochs else epochs_run),
        ("final training loss (negative ELBO per sample)", model.get("final_loss_train")),
        ("size factors", model.get("size_factor_method")),
        ("posterior draws per sample (interval)", report.get("posterior_draws")),
        ("replicate interval df", contrast.get("replicate_df")),
        ("seed", report.get("seed")),
        ("training time", format_duration(model.get("train_seconds"))),
        ("whole command", format_duration(report.get("seconds"))),
        ("made by nofone", report.get("nofone_version")),
    ]
    section.add(key_values([(k, v) for k, v in rows if v is not None]))
    if c.covariates and cells:
        frame = pd.DataFrame({"covariate levels": [str(cell.get("cell")) for cell in cells],
                              f"{c.level} samples": [cell.get("n_level") for cell in cells],
                              f"{c.reference} samples": [cell.get("n_reference") for cell in cells],
                              "used": [bool(cell.get("used")) for cell in cells]})
        section.add(ctx.html_table(
            "cohort_cells", frame,
            f"Combinations of covariate levels ({esc(', '.join(c.covariates))}): the contrast is taken within each "
            "one that has samples of both groups (used) and averaged over them with equal weights.",
            colour_column=None))
    numbers.update({"samples": samples.get("n"), "samples_per_level": per_level,
                    "cells_used": len(used), "cells": len(cells), "genes_modelled": genes.get("n_modelled"),
                    "genes_input": genes.get("n_input"), "latent_dim": latent_dim, "active_latent_dims": active,
                    "epochs_run": epochs_run, "epochs": epochs, "train_seconds": model.get("train_seconds")})
