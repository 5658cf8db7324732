"""Run summary: the model, the samples tested, the call rule and the calls per group."""

from __future__ import annotations

import json

import pandas as pd

from nofone import __version__
from nofone.evaluate.calls import calls_per_group, negative_control_calls, samples_per_group
from nofone.report.context import TABLES, ReportContext, latent_dim, model_settings, n_components
from nofone.report.html import (
    Section,
    code,
    emphasis,
    esc,
    format_duration,
    format_percent,
    format_value,
    key_values,
    paragraph,
    strong,
    subheading,
    table,
)

#: Column labels of the calls-per-group table (tables/de_per_group.tsv).
GROUP_LABELS = {"mean_de": "mean DE genes", "median_de": "median DE genes", "mean_up": "mean up",
                "mean_down": "mean down", "max_de": "max DE genes"}


def _model_rows(ctx: ReportContext) -> list[tuple[str, object]]:
    config = ctx.data.config or {}
    settings = model_settings(config)
    info = ctx.data.training_info
    calibration = info.get("dispersion_calibration") or {}
    history = ctx.data.history
    epochs_run = int(history["epoch"].max()) if history is not None and "epoch" in history and len(history) else None
    cal = None
    if calibration and "a" in calibration:
        cal = f"log r → {format_value(calibration.get('a'))} + {format_value(calibration.get('b'))} · log r"
        if calibration.get("applied") is False:
            cal += " (not applied)"
    elif calibration:
        cal = calibration.get("method")
    source = config.get("source")
    return [
        ("model type", config.get("model_type")),
        ("model folder", str(ctx.data.paths.model)),
        ("trained with nofone", config.get("nofone_version")),
        ("genes", config.get("n_genes")),
        ("latent dimensions", latent_dim(config)),
        ("hidden layers", " × ".join(str(h) for h in settings.get("hidden", [])) or None),
        ("mixture components", n_components(config)),
        ("training samples", info.get("n_train")),
        ("held-out normals", info.get("n_test")),
        ("epochs run (of max.)", f"{epochs_run} of {info.get('epochs')}" if epochs_run else info.get("epochs")),
        ("best epoch (held-out NLL)", info.get("best_epoch")),
        ("stopped early", info.get("stopped_early")),
        ("dispersion calibration", cal),
        *(info.get("model_card") or {}).items(),  # the model's own entries (TrainingPlan.summary)
        ("tissue purity of components (training / held-out)",
         f"{format_percent(info.get('tissue_purity_train'))} / {format_percent(info.get('tissue_purity_test'))}"
         if info.get("tissue_purity_train") is not None else None),
        ("training time", f"{format_duration(info.get('seconds'))} on {info.get('device')}"
         if info.get("seconds") else None),
        *([("imported from", source if isinstance(source, str) else "bulkDGD v1")] if source else []),
    ]


def _model_numbers(ctx: ReportContext) -> dict:
    config = ctx.data.config or {}
    info = ctx.data.training_info
    history = ctx.data.history
    calibration = info.get("dispersion_calibration") or {}
    return {
        "model_type": config.get("model_type"), "n_genes": config.get("n_genes"),
        "latent_dim": latent_dim(config), "n_components": n_components(config),
        "n_train": info.get("n_train"), "n_test": info.get("n_test"),
        "epochs_run": int(history["epoch"].max()) if history is not None and len(history) else None,
        "epochs_max": info.get("epochs"), "best_epoch": info.get("best_epoch"),
        "stopped_early": info.get("stopped_early"),
        "dispersion_calibration": {k: calibration.get(k) for k in ("a", "b")} if calibration else None,
        "training_seconds": info.get("seconds"), "model_card": info.get("model_card"),
    }


def _demo_scores(ctx: ReportContext) -> str | None:
    """`nofone demo` also scores the calls in the cases against the planted truth."""
    run = ctx.data.paths.run
    path = None if run is None else run / "demo_report.json"
    if path is None or not path.is_file():
        return None
    try:
        cases = json.loads(path.read_text()).get("cases") or {}
        recall, fdr = float(cases["recall_abs_lfc_ge_1"]), float(cases["observed_fdr"])
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    ctx.numbers["demo"] = cases
    return (f"{strong('Simulated data')} ({code('nofone demo')}): of the genes planted with |log2FC| ≥ 1 "
            f"in {esc(format_value(cases.get('samples')))} cases, {recall:.1%} were called; {fdr:.1%} of the calls "
            "were not planted (observed FDR).")


def _null_words(report: dict) -> str:
    """How the de report's null widened the NB, in words for the call rule."""
    null = report.get("null") or ("model-error" if report.get("model_error") else "nb")
    if null == "model-error":
        return " widened by the sample’s own model error"
    if null != "outlier":
        return ""
    fitted = report.get("outlier_null") or {}
    if not fitted.get("pi"):
        return " (the outlier mixture calibrated at training found no outliers among held-out normals: the plain NB)"
    return (f", allowing for the {100 * fitted['pi']:.1f}% of genes that healthy individuals show off their normal "
            f"(a log-normal outlier mixture of log-sd {fitted['tau']:.2f}, calibrated on held-out normals at training)")


def callable_folds(report: dict | None) -> tuple[float, float] | None:
    """The smallest changes the outlier null lets a gene be called with (from `de`): as a
    sample's only call, and when 5% of the genes are called; None for the other nulls."""
    folds = (report or {}).get("min_callable_fold") or {}
    if not (folds.get("only_call") and folds.get("five_percent_called")):
        return None
    return float(folds["only_call"]), float(folds["five_percent_called"])


def _callable_words(report: dict) -> str:
    folds = callable_folds(report)
    if folds is None:
        return ""
    return (f" Under this null no gene reaches the q threshold with a change smaller than about "
            f"{folds[0]:.0f}-fold, up or down, when it is a sample's only call, or "
            f"{folds[1]:.0f}-fold when 5% of the genes are called; the NB test "
            f"({code('nofone de --null nb')}) sees smaller changes.")


def call_rule(report: dict | None) -> tuple[str, str]:
    """(the rule in plain text, a paragraph of HTML on how calls are made)."""
    if not report:
        return "", "not available: de/de_report.json not found"
    test = {"equal-tail-midp": "equal-tail mid-p", "density": "density (the paper's rule)"}.get(
        report.get("test"), report.get("test"))
    q, lfc = report.get("q_threshold"), report.get("lfc_threshold")
    rule = f"q < {format_value(q)} and |log2 fold change| > {format_value(lfc)}"
    details = (f"A gene is called DE in a sample when {strong(esc(rule))}. Test: {esc(test)} against "
               f"the negative binomial of the sample's closest normal"
               f"{_null_words(report)}; q-values by "
               f"Benjamini-Hochberg within each sample; log2 fold change = log2((count + 1) / (normal mean + 1)).")
    details += _callable_words(report)
    if report.get("missing_model_genes"):
        missing = esc(format_value(report["missing_model_genes"]))
        details += f" {missing} model genes were missing from the input and not tested."
    return rule, details


def _tested(ctx: ReportContext) -> pd.DataFrame | None:
    """One row per tested sample (sample_id, group, tissue): from the DE summary or the representations."""
    for frame in (ctx.data.summary, ctx.data.represented):
        if frame is not None:
            return frame
    return None


def _samples_tested(ctx: ReportContext, section: Section, tested: pd.DataFrame) -> None:
    order = ctx.group_order(tested["group"])
    long = samples_per_group(tested, order)
    ctx.add_table("samples_per_group", long)
    shown = []
    for group in order:
        rows = long[long["group"] == group]
        parts = [f"{t} {n}" for t, n in zip(rows["tissue"], rows["samples"]) if t]
        shown.append({"group": group, "samples": int(rows["samples"].sum()), "by tissue": ", ".join(parts)})
    caption = ("Tested samples per group (condition from the sample sheet; normals held out from training form "
               f"their own group). {code(f'{TABLES}/samples_per_group.tsv')}")
    section.add(table(pd.DataFrame(shown), caption, colours=ctx.colours, colour_column="group"))
    ctx.numbers["samples_per_group"] = {r["group"]: r["samples"] for r in shown}


def _negative_controls(ctx: ReportContext, section: Section) -> None:
    data = ctx.data
    controls = negative_control_calls(data.summary, [data.heldout, data.normal_value])
    if controls is None:
        section.missing("no negative controls: no held-out or normal samples were tested")
        return
    names = " and ".join(ctx.group_order(controls["groups"]))
    section.add(paragraph(
        f"{strong('Negative controls')} ({esc(names)}, {controls['samples']} samples): "
        f"{strong(esc(format_value(controls['mean_de_genes'])))} DE genes per sample on average "
        f"(median {esc(format_value(controls['median_de_genes']))}; {esc(format_value(controls['total_up']))} up "
        f"and {esc(format_value(controls['total_down']))} down calls in all). Every one of them is a false call.",
        "headline"))
    ctx.numbers["negative_controls"] = controls


def build(ctx: ReportContext, section: Section) -> None:
    data = ctx.data
    section.add(paragraph(
        f"nofone tests each sample against the closest state a deep generative model of {emphasis('normal')} "
        "tissue can produce (an in-silico control), so no control samples are needed. Held-out normals — normal "
        "samples the model never trained on, tested like any other sample — are the negative control: a "
        "well-calibrated model calls almost no genes there."))
    section.add(paragraph(f"Report made by nofone {esc(__version__)}."))
    section.add(subheading("Model"))
    if data.config is None:
        section.missing("model/config.json not found (give --run or --model)")
    else:
        section.add(key_values(_model_rows(ctx)))
        ctx.numbers["model"] = _model_numbers(ctx)

    section.add(subheading("Samples tested"))
    tested = _tested(ctx)
    if tested is None:
        section.missing("no tested samples (de/summary.tsv or representations/representations.parquet); "
                        "run `nofone represent` and `nofone de`")
    else:
        _samples_tested(ctx, section, tested)

    if data.config is None and tested is None:
        section.available = False
    section.add(subheading("DE calls"))
    rule, details = call_rule(data.de_report)
    if data.de_report is None:
        section.missing("de/de_report.json not found: run `nofone de`")
    else:
        section.add(paragraph(details))
        ctx.numbers["call_rule"] = rule
    if data.summary is None:
        section.missing("de/summary.tsv not found: run `nofone de`")
        return
    per_group = calls_per_group(data.summary, ctx.group_order(data.summary["group"]))
    section.add(ctx.html_table("de_per_group", pd.DataFrame(per_group).rename(columns=GROUP_LABELS),
                               "DE genes per sample, by group."))
    ctx.numbers["groups"] = {r["group"]: {"samples": r["samples"], "mean_de_genes": float(r["mean_de"]),
                                          "mean_up": float(r["mean_up"]), "mean_down": float(r["mean_down"])}
                             for r in per_group}
    _negative_controls(ctx, section)
    demo = _demo_scores(ctx)
    if demo:
        section.add(paragraph(demo, "headline"))
