"""Assemble the report: read the run's outputs, build each section, write one HTML file.

    report.html            one self-contained page (PNG figures as data: URIs, inline CSS, no JS)
    report_summary.json    the numbers shown, per section whether it was available
    tables/*.tsv           every table shown, in full

Each section is a function of the loaded data (`inputs.ReportData`); a section whose inputs
are missing shows one "not available: ..." line instead of failing.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from nofone import __version__
from nofone.errors import InputError
from nofone.evaluate.agreement import compare_with_deseq2
from nofone.evaluate.metrics import auroc
from nofone.io.atomic import staged_outdir, write_json_atomic
from nofone.models.registry import model_facts
from nofone.report import figures
from nofone.report.html import Section, esc, format_value, key_values, page, paragraph, png_figure, table
from nofone.report.inputs import (
    COHORT_ENRICHMENT,
    COHORT_LATENT,
    COHORT_REPORT,
    COHORT_RESULTS,
    EVALUATION_FILES,
    ReportData,
    ReportPaths,
    load,
    resolve_paths,
)
from nofone.report.style import (
    NA_COLOUR,
    NA_LFC_COLOUR,
    TRAINING,
    cohort_group_colours,
    group_colours,
    is_normal_like,
    order_groups,
    tissue_colours,
)

log = logging.getLogger(__name__)
REPORT_HTML = "report.html"
MAX_VOLCANOES = 12
REPORT_SUMMARY = "report_summary.json"
TABLES = "tables"

SECTIONS = (
    ("summary", "Run summary"),
    ("training", "Training"),
    ("latent", "Latent space"),
    ("association", "Tissues and mixture components"),
    ("nll", "Out-of-distribution score (NLL per gene)"),
    ("degs", "DE genes per sample"),
    ("volcano", "Volcano plots"),
    ("evaluation", "Evaluation"),
)
#: Only with --cohort-de: last after a run's sections, alone when the report has no run.
COHORT_SECTION = ("cohort", "Cohort differential expression (NB-VAE)")


@dataclass
class ReportOptions:
    title: str = "nofone report"
    samples: list[str] = field(default_factory=list)   # volcano samples; default: chosen by calls
    max_volcanoes: int = 4
    max_table_rows: int = 200
    top_genes: int = 20
    cohort_top_genes: int = 25        # genes by |generative log2 fold change| in the cohort section
    cohort_top_terms: int = 15        # gene sets per ranking in the cohort section


@dataclass
class Report:
    html: str
    summary: dict
    tables: dict[str, pd.DataFrame]


class _Context:
    """What the section builders share: data, options, colours, collected tables and numbers."""

    def __init__(self, data: ReportData, options: ReportOptions) -> None:
        self.data = data
        self.options = options
        self.normal = data.normal_value
        self.colours = group_colours(data.all_groups(), self.normal)
        self.tables: dict[str, pd.DataFrame] = {}
        self.numbers: dict[str, dict] = {}

    def add_table(self, name: str, frame: pd.DataFrame) -> str:
        self.tables[name] = frame
        return f"{TABLES}/{name}.tsv"

    def html_table(self, name: str, frame: pd.DataFrame, caption: str, shown: pd.DataFrame | None = None,
                   colour_column: str | None = "group", nowrap: tuple[str, ...] = ()) -> str:
        """Register `frame` as tables/<name>.tsv and render `shown` (default: the frame)."""
        path = self.add_table(name, frame)
        caption = f"{caption} <span class=\"note\">(<code>{esc(path)}</code>)</span>"
        return table(frame if shown is None else shown, caption, max_rows=self.options.max_table_rows,
                     colours=self.colours, colour_column=colour_column, nowrap=nowrap)

    def group_order(self, groups) -> list[str]:
        return order_groups(groups, self.normal)


def build_report(paths: ReportPaths, options: ReportOptions | None = None) -> Report:
    """Read the inputs and build the report in memory (nothing is written)."""
    options = options or ReportOptions()
    data = load(paths)
    _check_samples(data, options.samples)
    ctx = _Context(data, options)
    builders: dict[str, Callable[[_Context, Section], None]] = {
        "summary": _summary, "training": _training, "latent": _latent, "association": _association,
        "nll": _nll, "degs": _degs, "volcano": _volcano, "evaluation": _evaluation, "cohort": _cohort,
    }
    run_inputs = any((paths.run, paths.model, paths.representations, paths.de, paths.data))
    order = list(SECTIONS)
    if paths.cohort_de is not None:
        # a cohort-de report alone has nothing of a run to show: no list of empty sections
        order = [*order, COHORT_SECTION] if run_inputs else [COHORT_SECTION]
    sections = []
    for section_id, title in order:
        section = Section(section_id, title)
        builders[section_id](ctx, section)
        sections.append(section)
    generated = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    if run_inputs:
        source = paths.run or paths.de or paths.representations or paths.model or paths.data
        subtitle = f"N-of-one differential expression against a model of normal tissue · <code>{esc(source)}</code>"
        if paths.cohort_de is not None:
            subtitle += f" · cohort differential expression: <code>{esc(paths.cohort_de)}</code>"
    else:
        subtitle = ("Generative differential expression between two groups of a cohort (NB-VAE) · "
                    f"<code>{esc(paths.cohort_de)}</code>")
    subtitle += f" · {esc(generated.strftime('%Y-%m-%d %H:%M UTC'))}"
    footer = (f"Made by nofone {esc(__version__)} (<code>nofone report</code>). Self-contained: "
              f"no scripts, fonts or images are loaded from anywhere. Tables in full: <code>{TABLES}/</code>.")
    html = page(options.title, subtitle, sections, footer, __version__)
    summary = {
        "nofone_version": __version__,
        "title": options.title,
        "generated": generated.isoformat(),
        "inputs": paths.as_dict(),
        "sections": {s.id: {"title": s.title, "available": s.available, "not_available": s.notes}
                     for s in sections},
        **ctx.numbers,
        "tables": [f"{TABLES}/{name}.tsv" for name in ctx.tables],
    }
    return Report(html, summary, ctx.tables)


def write_report(report: Report, outdir: Path) -> None:
    """Write report.html, report_summary.json and tables/ atomically into `outdir`."""
    with staged_outdir(outdir) as stage:
        (stage / REPORT_HTML).write_text(report.html, encoding="utf-8")
        (stage / TABLES).mkdir()
        for name, frame in report.tables.items():
            frame.to_csv(stage / TABLES / f"{name}.tsv", sep="\t", index=False, float_format="%.6g")
        write_json_atomic(stage / REPORT_SUMMARY, report.summary)


def report(run: Path | None, outdir: Path, *, model: Path | None = None,
           representations: Path | None = None, de: Path | None = None, data: Path | None = None,
           evaluation: Path | None = None, cohort_de: Path | None = None,
           options: ReportOptions | None = None) -> dict:
    """The `nofone report` step: resolve the inputs, build, write; returns the summary."""
    paths = resolve_paths(run, model, representations, de, data, evaluation, cohort_de)
    built = build_report(paths, options)
    write_report(built, outdir)
    return built.summary


def _check_samples(data: ReportData, samples: list[str]) -> None:
    if not samples:
        return
    known: set[str] = set()
    if data.summary is not None:
        known = set(data.summary["sample_id"])
    elif data.de_file is not None:
        known = set(pq.read_table(data.de_file, columns=["sample_id"])["sample_id"].unique().to_pylist())
    else:
        raise InputError("--sample was given but there are no DE results (de/summary.tsv, de/de.parquet)")
    unknown = [s for s in samples if s not in known]
    if unknown:
        raise InputError(f"--sample {unknown[0]!r} is not among the {len(known)} samples with DE results"
                         + (f" (also unknown: {unknown[1:5]})" if len(unknown) > 1 else ""))


# ------------------------------------------------------------------------------------------ summary

def _duration(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, s = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {s} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{100 * float(value):.0f}%"


def _model_settings(config: dict) -> dict:
    """The architecture settings of whichever model type made the artifact."""
    return config.get(config.get("model_type") or "") or {}


def _n_components(config: dict) -> int | None:
    """Mixture components of the model's prior (1 for a standard normal prior, as the NB-VAE's;
    None for a model without components), from the facts config.json states."""
    return model_facts(config)["n_components"]


def _model_rows(ctx: _Context) -> list[tuple[str, object]]:
    config = ctx.data.config or {}
    settings = _model_settings(config)
    info = ctx.data.training_info
    calibration = info.get("dispersion_calibration") or {}
    history = ctx.data.history
    epochs_run = int(history["epoch"].max()) if history is not None and "epoch" in history and len(history) else None
    cal = None
    if calibration:
        cal = f"log r → {format_value(calibration.get('a'))} + {format_value(calibration.get('b'))} · log r"
        if calibration.get("applied") is False:
            cal += " (not applied)"
    source = config.get("source")
    return [
        ("model type", config.get("model_type")),
        ("model folder", str(ctx.data.paths.model)),
        ("trained with nofone", config.get("nofone_version")),
        ("genes", config.get("n_genes")),
        ("latent dimensions", model_facts(config)["latent_dim"]),
        ("hidden layers", " × ".join(str(h) for h in settings.get("hidden", [])) or None),
        ("mixture components", _n_components(config)),
        ("training samples", info.get("n_train")),
        ("held-out normals", info.get("n_test")),
        ("epochs run (of max.)", f"{epochs_run} of {info.get('epochs')}" if epochs_run else info.get("epochs")),
        ("best epoch (held-out NLL)", info.get("best_epoch")),
        ("stopped early", info.get("stopped_early")),
        ("dispersion calibration", cal),
        ("tissue purity of components (training / held-out)",
         f"{_percent(info.get('tissue_purity_train'))} / {_percent(info.get('tissue_purity_test'))}"
         if info.get("tissue_purity_train") is not None else None),
        ("training time", f"{_duration(info.get('seconds'))} on {info.get('device')}" if info.get("seconds") else None),
        *([("imported from", source if isinstance(source, str) else "bulkDGD v1")] if source else []),
    ]


def _model_numbers(ctx: _Context) -> dict:
    config = ctx.data.config or {}
    info = ctx.data.training_info
    history = ctx.data.history
    calibration = info.get("dispersion_calibration") or {}
    return {
        "model_type": config.get("model_type"), "n_genes": config.get("n_genes"),
        "latent_dim": model_facts(config)["latent_dim"], "n_components": _n_components(config),
        "n_train": info.get("n_train"), "n_test": info.get("n_test"),
        "epochs_run": int(history["epoch"].max()) if history is not None and len(history) else None,
        "epochs_max": info.get("epochs"), "best_epoch": info.get("best_epoch"),
        "stopped_early": info.get("stopped_early"),
        "dispersion_calibration": {k: calibration.get(k) for k in ("a", "b")} if calibration else None,
        "training_seconds": info.get("seconds"),
    }


def _demo_scores(ctx: _Context) -> str | None:
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
    return (f"<strong>Simulated data</strong> (<code>nofone demo</code>): of the genes planted with |log2FC| ≥ 1 "
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


def _callable_folds(report: dict | None) -> tuple[float, float] | None:
    """The smallest changes the outlier null lets a gene be called with (from `de`): as a
    sample's only call, and when 5% of the genes are called; None for the other nulls."""
    folds = (report or {}).get("min_callable_fold") or {}
    if not (folds.get("only_call") and folds.get("five_percent_called")):
        return None
    return float(folds["only_call"]), float(folds["five_percent_called"])


def _callable_words(report: dict) -> str:
    folds = _callable_folds(report)
    if folds is None:
        return ""
    return (f" Under this null no gene reaches the q threshold with a change smaller than about "
            f"{folds[0]:.0f}-fold, up or down, when it is a sample's only call, or "
            f"{folds[1]:.0f}-fold when 5% of the genes are called; the NB test "
            "(<code>nofone de --null nb</code>) sees smaller changes.")


def _call_rule(report: dict | None) -> tuple[str, str]:
    if not report:
        return "", "not available: de/de_report.json not found"
    test = {"equal-tail-midp": "equal-tail mid-p", "density": "density (the paper's rule)"}.get(
        report.get("test"), report.get("test"))
    q, lfc = report.get("q_threshold"), report.get("lfc_threshold")
    rule = f"q < {format_value(q)} and |log2 fold change| > {format_value(lfc)}"
    details = (f"A gene is called DE in a sample when <strong>{esc(rule)}</strong>. Test: {esc(test)} against "
               f"the negative binomial of the sample's closest normal"
               f"{_null_words(report)}; q-values by "
               f"Benjamini-Hochberg within each sample; log2 fold change = log2((count + 1) / (normal mean + 1)).")
    details += _callable_words(report)
    if report.get("missing_model_genes"):
        missing = esc(format_value(report["missing_model_genes"]))
        details += f" {missing} model genes were missing from the input and not tested."
    return rule, details


def _tested(ctx: _Context) -> pd.DataFrame | None:
    """One row per tested sample (sample_id, group, tissue): from the DE summary or the representations."""
    for frame in (ctx.data.summary, ctx.data.represented):
        if frame is not None:
            return frame
    return None


def _summary(ctx: _Context, section: Section) -> None:
    data = ctx.data
    section.add(paragraph(
        "nofone tests each sample against the closest state a deep generative model of <em>normal</em> tissue "
        "can produce (an in-silico control), so no control samples are needed. Held-out normals — normal "
        "samples the model never trained on, tested like any other sample — are the negative control: a "
        "well-calibrated model calls almost no genes there."))
    section.add(f"<p>Report made by nofone {esc(__version__)}.</p>")
    section.add("<h3>Model</h3>")
    if data.config is None:
        section.missing("model/config.json not found (give --run or --model)")
    else:
        section.add(key_values(_model_rows(ctx)))
        ctx.numbers["model"] = _model_numbers(ctx)

    section.add("<h3>Samples tested</h3>")
    tested = _tested(ctx)
    if tested is None:
        section.missing("no tested samples (de/summary.tsv or representations/representations.parquet); "
                        "run `nofone represent` and `nofone de`")
    else:
        tissue = tested["tissue"] if "tissue" in tested else pd.Series("", index=tested.index)
        long = (pd.DataFrame({"group": tested["group"], "tissue": tissue.fillna("").astype(str)})
                .value_counts().rename("samples").reset_index())
        order = ctx.group_order(long["group"])
        long["_order"] = long["group"].map({g: i for i, g in enumerate(order)})
        long = long.sort_values(["_order", "tissue"]).drop(columns="_order").reset_index(drop=True)
        ctx.add_table("samples_per_group", long)
        shown = []
        for group in order:
            rows = long[long["group"] == group]
            parts = [f"{t} {n}" for t, n in zip(rows["tissue"], rows["samples"]) if t]
            shown.append({"group": group, "samples": int(rows["samples"].sum()), "by tissue": ", ".join(parts)})
        section.add(table(pd.DataFrame(shown), "Tested samples per group (condition from the sample sheet; "
                          f"normals held out from training form their own group). <code>{TABLES}/samples_per_group.tsv"
                          "</code>", colours=ctx.colours, colour_column="group"))
        ctx.numbers["samples_per_group"] = {r["group"]: r["samples"] for r in shown}

    if data.config is None and tested is None:
        section.available = False
    section.add("<h3>DE calls</h3>")
    rule, details = _call_rule(data.de_report)
    if data.de_report is None:
        section.missing("de/de_report.json not found: run `nofone de`")
    else:
        section.add(paragraph(details))
        ctx.numbers["call_rule"] = rule
    if data.summary is None:
        section.missing("de/summary.tsv not found: run `nofone de`")
        return
    rows = []
    for group in ctx.group_order(data.summary["group"]):
        g = data.summary[data.summary["group"] == group]
        rows.append({"group": group, "samples": len(g), "mean DE genes": g["n_de"].mean(),
                     "median DE genes": g["n_de"].median(), "mean up": g["n_up"].mean(),
                     "mean down": g["n_down"].mean(), "max DE genes": int(g["n_de"].max())})
    headline = pd.DataFrame(rows)
    section.add(ctx.html_table("de_per_group", headline, "DE genes per sample, by group."))
    ctx.numbers["groups"] = {r["group"]: {"samples": r["samples"], "mean_de_genes": float(r["mean DE genes"]),
                                          "mean_up": float(r["mean up"]), "mean_down": float(r["mean down"])}
                             for r in rows}
    controls = data.summary[data.summary["group"].isin([data.heldout, data.normal_value])]
    if len(controls):
        up, down = controls["n_up"].sum(), controls["n_down"].sum()
        names = " and ".join(ctx.group_order(controls["group"]))
        section.add(paragraph(
            f"<strong>Negative controls</strong> ({esc(names)}, {len(controls)} samples): "
            f"<strong>{esc(format_value(controls['n_de'].mean()))}</strong> DE genes per sample on average "
            f"(median {esc(format_value(controls['n_de'].median()))}; {esc(format_value(int(up)))} up and "
            f"{esc(format_value(int(down)))} down calls in all). Every one of them is a false call.",
            "headline"))
        ctx.numbers["negative_controls"] = {
            "groups": sorted(set(controls["group"])), "samples": len(controls),
            "mean_de_genes": float(controls["n_de"].mean()), "median_de_genes": float(controls["n_de"].median()),
            "total_up": int(up), "total_down": int(down)}
    else:
        section.missing("no negative controls: no held-out or normal samples were tested")
    demo = _demo_scores(ctx)
    if demo:
        section.add(paragraph(demo, "headline"))


# ----------------------------------------------------------------------------------------- training

def _training(ctx: _Context, section: Section) -> None:
    history = ctx.data.history
    if history is None or "epoch" not in history or history.empty:
        section.available = False
        section.missing("model/history.tsv not found (a model from `nofone import-bulkdgd` has no training history)")
        return
    best = ctx.data.training_info.get("best_epoch")
    best = int(best) if best is not None else None
    section.add(png_figure(
        figures.training_curves(history, best),
        "Training of the model. <b>Top left</b>: loss per sample on the training samples and on the held-out "
        "normals (their representations are fitted, the decoder is not). <b>Top right</b>: count NLL per gene "
        "of the held-out normals after refining their representations, at each evaluation; training stops when "
        "it stops improving and the circled best epoch is restored (dashed line). A held-out curve rising while "
        "training loss falls means the decoder memorises the training samples. <b>Bottom left</b>: mixture "
        "components holding training samples (a drop to 1 is a collapsed mixture). <b>Bottom right</b>: spread "
        "of gene dispersions; if the band stays at its starting value no gene can ever be called down.",
        "training curves"))
    last = history.iloc[-1]
    ctx.numbers["training"] = {"epochs_run": int(last["epoch"]), "best_epoch": best,
                               "final_loss_train": float(last.get("loss_train", np.nan))}


# ------------------------------------------------------------------------------------------- latent

def _latent(ctx: _Context, section: Section) -> None:
    data = ctx.data
    if data.training is None or data.training_latent is None or len(data.training) < 3:
        section.available = False
        section.missing("model/training_representations.parquet not found (made by `nofone train`)")
        return
    from sklearn.decomposition import PCA

    z = data.training_latent
    n_comp = min(2, z.shape[1], len(z))
    pca = PCA(n_components=n_comp, random_state=0).fit(z)
    train_xy = _two_columns(pca.transform(z))
    new_xy = new_tissue = new_group = None
    if data.represented is not None and data.represented_latent is not None:
        if data.represented_latent.shape[1] != z.shape[1]:
            section.missing(f"representations have {data.represented_latent.shape[1]} latent dimensions, the "
                            f"model {z.shape[1]}: they were made with another model")
        else:
            new_xy = _two_columns(pca.transform(data.represented_latent))
            new_group = data.represented["group"].astype(str).to_numpy()
            new_tissue = data.represented["tissue"].to_numpy() if "tissue" in data.represented else None
    else:
        section.notes.append("representations/representations.parquet not found: training samples only")
    tissues = data.training["tissue"] if "tissue" in data.training and data.training["tissue"].notna().any() else None
    all_tissues = set() if tissues is None else set(tissues.dropna().astype(str))
    if new_tissue is not None:
        all_tissues |= {str(t) for t in new_tissue if t is not None and t == t}
    heldout = (data.training["split"] == "test").to_numpy()
    png = figures.latent_pca(train_xy, None if tissues is None else tissues.astype(str).to_numpy(), heldout,
                             new_xy, new_tissue, new_group, tissue_colours(all_tissues), ctx.colours,
                             list(pca.explained_variance_ratio_))
    section.add(png_figure(
        png,
        f"The model's latent space, projected on the first two principal components of the "
        f"{len(z):,} normal samples it was trained with (PCA of their latent points; the tested samples' "
        "representations are projected with the same PCA). <b>Left</b>: every sample coloured by tissue "
        "(dots: training, hollow circles: normals held out from training, crosses: tested samples). "
        "<b>Right</b>: tested samples by group over the training normals in grey. A tested sample far from "
        "every normal cloud has no close normal: expect many DE calls and read them with care. PCA keeps only "
        f"part of the latent ({100 * float(pca.explained_variance_ratio_.sum()):.0f}% of its variance here).",
        "latent space PCA"))
    if new_xy is None and data.represented is None:
        section.add(paragraph("Tested samples not shown: representations/representations.parquet not found.",
                              "note"))
    ctx.numbers["latent"] = {"explained_variance": [float(v) for v in pca.explained_variance_ratio_],
                             "training_samples": len(z),
                             "tested_samples": 0 if new_xy is None else len(new_xy)}


def _two_columns(xy: np.ndarray) -> np.ndarray:
    return xy if xy.shape[1] >= 2 else np.column_stack([xy, np.zeros(len(xy))])


# -------------------------------------------------------------------------------------- association

def _association(ctx: _Context, section: Section) -> None:
    data = ctx.data
    training = data.training
    if training is None:
        section.available = False
        section.missing("model/training_representations.parquet not found (made by `nofone train`)")
        return
    if _n_components(data.config or {}) in (1, None) and data.config:
        section.available = False
        section.missing("not applicable: the model's latent prior has a single component (e.g. an NB-VAE)")
        return
    fit = training[training["split"] == "train"]
    if "tissue" not in fit or fit["tissue"].isna().all():
        section.available = False
        section.missing("the training samples have no tissue (train with a 'tissue' column in the sample sheet)")
        return
    counts = pd.crosstab(fit["tissue"].astype(str), fit["component"].astype(int))
    percent = 100 * counts / counts.sum(axis=0)
    tissues = sorted(counts.index)
    majority = percent.idxmax(axis=0)
    columns = sorted(counts.columns, key=lambda c: (tissues.index(majority[c]), -percent[c].max(), c))
    counts, percent = counts.loc[tissues, columns], percent.loc[tissues, columns]
    n_components = _n_components(data.config or {})
    empty = (n_components - len(columns)) if n_components else 0
    purity = float(counts.max(axis=0).sum() / counts.to_numpy().sum())
    section.add(png_figure(
        figures.association_heatmap(percent, counts, "mixture component", "tissue",
                                    "% of the component's samples"),
        f"Which tissues each mixture component of the model holds, for the {len(fit):,} training samples "
        "(as Fig. 2B of Prada-Luengo et al. 2023). Colour: percentage of a component's samples from each tissue "
        "(each column sums to 100%); numbers: samples. Components are ordered so that a model that separates "
        "tissues shows a diagonal. A column spread over many tissues is a component that mixes them; "
        "one column holding everything is a collapsed mixture. "
        f"Tissue purity (samples in their component's majority tissue): {purity:.0%}."
        + (f" {empty} of {n_components} components hold no training sample and are not shown." if empty > 0 else ""),
        "tissue by component heatmap"))
    long = counts.stack().rename("samples").reset_index()
    long.columns = ["tissue", "component", "samples"]
    long["percent_of_component"] = percent.stack().to_numpy()
    ctx.add_table("association_training", long[long["samples"] > 0].reset_index(drop=True))
    ctx.numbers["association"] = {"training_purity": purity, "components_used": len(columns),
                                  "components": n_components}

    section.add("<h3>Tested samples</h3>")
    reps = data.represented
    if reps is None:
        section.missing("representations/representations.parquet not found: run `nofone represent`")
        return
    if "tissue" not in reps or reps["tissue"].isna().all():
        section.missing("the tested samples have no tissue in samples.parquet")
        return
    known = reps[reps["tissue"].notna()]
    label = known["tissue"].astype(str) + " · " + known["group"].astype(str)
    new_counts = pd.crosstab(label, known["component"].astype(int))
    new_columns = [c for c in columns if c in new_counts.columns] + sorted(
        c for c in new_counts.columns if c not in columns)
    row_order = sorted(new_counts.index, key=lambda r: (r.split(" · ")[0], ctx.group_order(
        known["group"].astype(str)).index(r.split(" · ", 1)[1])))
    new_counts = new_counts.loc[row_order, new_columns]
    new_percent = 100 * new_counts.div(new_counts.sum(axis=1), axis=0)
    section.add(png_figure(
        figures.association_heatmap(new_percent, new_counts, "mixture component", "tissue · group",
                                    "% of the row's samples"),
        "Mixture component of each tested sample's closest normal, by the tissue given in the sample sheet and "
        "the group. Colour: percentage of the row's samples (each row sums to 100%); numbers: samples. "
        "Columns in the order of the training heatmap above, so that a sample landing in a component of its own "
        "tissue lies on the same diagonal.", "tested samples by component heatmap"))
    majority_tissue = {int(c): str(t) for c, t in majority.items()}
    agree = known["component"].astype(int).map(majority_tissue) == known["tissue"].astype(str)
    rows = []
    for group in ctx.group_order(known["group"]):
        pick = (known["group"] == group).to_numpy()
        rows.append({"group": group, "samples": int(pick.sum()),
                     "in a component of their tissue": int(agree[pick].sum()), "fraction": float(agree[pick].mean())})
    section.add(ctx.html_table(
        "assignment_tested", pd.DataFrame(rows),
        "Tested samples whose component's majority tissue (among training samples) is their own tissue."))
    long_new = new_counts.stack().rename("samples").reset_index()
    long_new.columns = ["row", "component", "samples"]
    ctx.add_table("association_tested", long_new[long_new["samples"] > 0].reset_index(drop=True))
    ctx.numbers["association"]["tested_agreement"] = {r["group"]: r["fraction"] for r in rows}


# ---------------------------------------------------------------------------------------------- nll

def _nll_groups(ctx: _Context) -> tuple[dict[str, np.ndarray], str | None, list[str]]:
    """NLL per gene by group; the reference for AUROC; notes on where each group comes from."""
    data = ctx.data
    values: dict[str, np.ndarray] = {}
    notes = []
    training = data.training
    if training is not None and "nll_per_gene" in training:
        values[TRAINING] = training.loc[training["split"] == "train", "nll_per_gene"].to_numpy(dtype=float)
    reps = data.represented
    reference = None
    if reps is not None and "nll_per_gene" in reps:
        for group in ctx.group_order(reps["group"]):
            values[group] = reps.loc[reps["group"] == group, "nll_per_gene"].to_numpy(dtype=float)
    if data.heldout not in values and training is not None and (training["split"] == "test").any():
        values[data.heldout] = training.loc[training["split"] == "test", "nll_per_gene"].to_numpy(dtype=float)
        notes.append("held-out normals: NLL from training (they were not among the tested samples)")
    if data.heldout in values and len(values[data.heldout]):
        reference = data.heldout
    ordered = {g: values[g] for g in ctx.group_order(values) if len(values[g])}
    return ordered, reference, notes


def _nll(ctx: _Context, section: Section) -> None:
    values, reference, notes = _nll_groups(ctx)
    if not values:
        section.available = False
        section.missing("no NLL values: model/training_representations.parquet and "
                        "representations/representations.parquet not found")
        return
    section.add(png_figure(
        figures.nll_densities(values, ctx.colours),
        "How well the model of normal tissue explains each sample: the negative log-likelihood of its counts "
        "under the negative binomial of its closest normal, per gene (the out-of-distribution score of "
        "Prada-Luengo et al. 2023, Fig. 3B). Curves: density per group; ticks below: single samples. "
        "Tested samples that sit right of the held-out normals are fitted worse than any normal the model "
        "has not seen, which is what disease (or a tissue the model was not trained on) looks like. "
        "Training samples are scored at their training representations, the others after the representation "
        "search." + (" " + esc("; ".join(notes)) + "." if notes else ""),
        "NLL per gene densities"))
    rows = []
    for group, v in values.items():
        row = {"group": group, "samples": len(v), "median NLL per gene": float(np.median(v)),
               "AUROC vs held-out normals": None}
        if reference is not None and group != reference:
            row["AUROC vs held-out normals"] = auroc(v, values[reference])
        rows.append(row)
    frame = pd.DataFrame(rows)
    caption = ("AUROC: the probability that a sample of the group scores higher (fits worse) than a held-out "
               "normal (Mann-Whitney U / (n₁ n₂)); 0.5 = indistinguishable, 1 = always worse. Training "
               "samples below 0.5 fit better than unseen normals (the decoder has learnt them).")
    if reference is None:
        caption += " Not computed: no held-out normals."
    section.add(ctx.html_table("nll_auroc", frame, caption))
    ctx.numbers["nll"] = {r["group"]: {"samples": r["samples"], "median_nll_per_gene": r["median NLL per gene"],
                                       "auroc_vs_heldout": r["AUROC vs held-out normals"]} for r in rows}


# --------------------------------------------------------------------------------------------- degs

def _degs(ctx: _Context, section: Section) -> None:
    summary = ctx.data.summary
    if summary is None:
        section.available = False
        section.missing("de/summary.tsv not found: run `nofone de`")
        return
    order = {g: i for i, g in enumerate(ctx.group_order(summary["group"]))}
    frame = summary.assign(_o=summary["group"].map(order)).sort_values(
        ["_o", "n_de", "sample_id"], ascending=[True, False, True]).drop(columns="_o").reset_index(drop=True)
    first = ["sample_id", "group", *(["tissue"] if "tissue" in frame else []), "n_up", "n_down", "n_de"]
    frame = frame[first + [c for c in frame.columns if c not in first]]
    colours = {g: ctx.colours[g] for g in order}
    rule = ctx.numbers.get("call_rule", "as in de/de_report.json")
    many = len(frame) > 60
    how = ("Each point is a sample; black bars are group medians." if many else
           "Bars right of zero: up calls; hatched bars left of zero: down calls; colour: group.")
    section.add(png_figure(
        figures.de_per_sample(frame, colours),
        f"Genes called up and down in each tested sample ({esc(rule)}). {how} Held-out normals should have "
        "(almost) none; a clear excess of up over down calls in normals points to a bias of the model "
        "rather than biology.", "DE genes per sample"))
    shown = frame.drop(columns=[c for c in ("scale",) if c in frame])
    section.add(ctx.html_table("de_per_sample", frame,
                               "DE genes per sample (n_cannot_call_down: genes whose expected count is so low that "
                               "even 0 reads would not be a significant down call; model_error_sd: how far, on the "
                               "log scale, the sample's closest normal misses it beyond the NB's own noise, 0 for a "
                               "sample the model fits as well as its held-out normals; many calls with a large "
                               "model_error_sd mean a sample the model covers poorly, and `de --null model-error` "
                               "tests against it).", shown=shown))


# ------------------------------------------------------------------------------------------ volcano

def _volcano_samples(ctx: _Context) -> list[str]:
    if ctx.options.samples:
        return list(dict.fromkeys(ctx.options.samples))[:MAX_VOLCANOES]
    summary = ctx.data.summary
    if summary is None:
        return []
    tested = summary.assign(_normal=summary["group"].map(lambda g: is_normal_like(str(g), ctx.normal)))
    pick = tested[~tested["_normal"]]
    if pick.empty:
        pick = tested
    pick = pick.sort_values(["n_de", "sample_id"], ascending=[False, True])
    return pick["sample_id"].head(ctx.options.max_volcanoes).tolist()


def _volcano(ctx: _Context, section: Section) -> None:
    de_file = ctx.data.de_file
    if de_file is None:
        section.available = False
        section.missing("de/de.parquet not found: run `nofone de`")
        return
    samples = _volcano_samples(ctx)
    if len(dict.fromkeys(ctx.options.samples)) > MAX_VOLCANOES:
        section.add(paragraph(f"Only the first {MAX_VOLCANOES} samples given with --sample are shown.", "note"))
    if not samples:  # no summary.tsv: the first sample of de.parquet
        parquet = pq.ParquetFile(de_file)
        first = parquet.read_row_group(0, columns=["sample_id"]) if parquet.num_row_groups else None
        samples = [first["sample_id"][0].as_py()] if first is not None and len(first) else []
    if not samples:
        section.available = False
        section.missing("de/de.parquet holds no samples")
        return
    columns = ["sample_id", "gene_id", "gene_name", "count", "normal_mean", "log2_fold_change", "p_value",
               "q_value", "can_call_down"]
    present = [c for c in columns if c in pq.read_schema(de_file).names]
    frame = pq.read_table(de_file, columns=present, filters=[("sample_id", "in", samples)]).to_pandas()
    if "gene_name" not in frame:
        frame["gene_name"] = ""
    report = ctx.data.de_report or {}
    q_thr = float(report.get("q_threshold", 0.01))
    lfc_thr = float(report.get("lfc_threshold", 1.0))
    tables = {s: frame[frame["sample_id"] == s] for s in samples if (frame["sample_id"] == s).any()}
    if not tables:
        section.available = False
        section.missing(f"none of {samples} is in {de_file}")
        return
    chosen = "chosen with --sample" if ctx.options.samples else (
        f"the {len(tables)} tested sample{'s' if len(tables) > 1 else ''} with most DE calls, normals last")
    section.add(png_figure(
        figures.volcanoes(tables, q_thr, lfc_thr),
        f"Every tested gene of {esc(chosen)}: log2 fold change against the closest normal (x) and the "
        f"significance of the test (y, −log10 q; q-values below 1e-300 drawn at 300). Red: called up, blue: "
        f"called down (q < {esc(format_value(q_thr))}, |log2FC| > {esc(format_value(lfc_thr))}, dashed lines); "
        "grey: not called. The most significant calls are named.", "volcano plots"))
    top_all = []
    for sample, t in tables.items():
        t = t.copy()
        called = (t["q_value"] < q_thr) & (t["log2_fold_change"].abs() > lfc_thr)
        t["call"] = np.where(called, np.where(t["log2_fold_change"] > 0, "up", "down"), "")
        t["_abs"] = -t["log2_fold_change"].abs()
        t = t.sort_values(["q_value", "_abs", "gene_id"]).head(ctx.options.top_genes).drop(columns="_abs")
        keep = [c for c in ("sample_id", "gene_id", "gene_name", "call", "count", "normal_mean",
                            "log2_fold_change", "q_value") if c in t]
        top_all.append(t[keep])
        group = ""
        if ctx.data.summary is not None:
            match = ctx.data.summary.loc[ctx.data.summary["sample_id"] == sample, "group"]
            group = f" ({match.iloc[0]})" if len(match) else ""
        section.add(f"<h3>{esc(sample)}{esc(group)}</h3>")
        section.add(table(t[keep].drop(columns="sample_id").reset_index(drop=True),
                          f"Top {ctx.options.top_genes} genes by q-value (then |log2FC|); normal_mean: expected "
                          "count of the closest normal."))
    ctx.add_table("volcano_top_genes", pd.concat(top_all, ignore_index=True))
    ctx.numbers["volcano"] = {"samples": list(tables), "q_threshold": q_thr, "lfc_threshold": lfc_thr}


# --------------------------------------------------------------------------------------- evaluation

EVALUATION_TITLES = {
    "negative_control_summary.tsv": "Negative controls", "spike_ins_summary.tsv": "Spike-ins",
    "enrichment_summary.tsv": "Gene-set enrichment", "assignment.tsv": "Tissue assignment",
    "nll_auroc.tsv": "Out-of-distribution AUROC",
}
EVALUATION_CAPTIONS = {
    "negative_control_summary.tsv": "Negative controls: DE genes called per held-out normal sample, by method "
    "and q threshold (mean and sd over samples; up_down_ratio far from 1 reveals a directional bias). Fewer is "
    "better: every call is false.",
    "spike_ins_summary.tsv": "Spike-ins: genes with planted fold changes in held-out normals. Precision and "
    "recall of the calls at the nominal q, and the observed FDR (should not exceed the nominal q).",
    "enrichment_summary.tsv": "Gene-set enrichment of the DE calls in tumour samples, by method and gene set.",
    "assignment.tsv": "Tissue assignment: fraction of samples whose closest normal lies in a mixture component "
    "of their own tissue, by group and tissue.",
    "nll_auroc.tsv": "Out-of-distribution scores: AUROC of each group against the reference group "
    "(1 = every sample of the group scores higher than every reference sample).",
}


def _evaluation(ctx: _Context, section: Section) -> None:
    folder = ctx.data.paths.evaluation
    if folder is None:
        section.available = False
        section.missing("run `nofone evaluate` and pass its output folder with --evaluation")
        return
    tables = ctx.data.evaluation
    if not tables:
        section.available = False
        section.missing(f"none of {', '.join(EVALUATION_FILES)} in {folder}: run `nofone evaluate`")
        return
    section.add(paragraph(f"From <code>{esc(folder)}</code> (<code>nofone evaluate</code>)."))
    negative = tables.get("negative_control_summary.tsv")
    if negative is not None:
        if {"method", "q_threshold", "mean_de"} <= set(negative.columns) and len(negative):
            section.add(png_figure(
                figures.negative_control_bars(negative),
                "False DE calls per held-out normal sample (mean ± sd) by method, one bar per q-value threshold. "
                "Lower is better.", "negative controls bar chart"))
        else:
            section.add(paragraph("negative_control_summary.tsv lacks the columns method, q_threshold, mean_de: "
                                  "no bar chart.", "note"))
    folds = _callable_folds(ctx.data.de_report)
    for name in EVALUATION_FILES:
        if name in tables:
            stem = name.removesuffix(".tsv")
            section.add(f"<h3>{esc(EVALUATION_TITLES[name])}</h3>")
            caption = EVALUATION_CAPTIONS[name]
            if name == "spike_ins_summary.tsv" and folds is not None:
                caption += (f" The model's calls were tested with the outlier null, as in de: it calls no change "
                            f"smaller than about {folds[1]:.0f}-fold when 5% of the genes are called, so smaller "
                            "planted changes go unfound by design (nofone de --null nb finds them).")
            section.add(ctx.html_table(f"evaluation_{stem}", tables[name], esc(caption), colour_column=None))
    ctx.numbers["evaluation"] = {"folder": str(folder), "files": sorted(tables)}


# ------------------------------------------------------------------------------------------- cohort

RANKING_LABELS = {"nbvae": "NB-VAE", "deseq2": "DESeq2"}
RANKING_TITLES = {
    "prerank": {"nbvae": "genes ranked by the generative log2 fold change",
                "deseq2": "genes ranked by the Wald statistic"},
    "ora": {"nbvae": "genes whose posterior interval excludes 0, with |log2FC| ≥ 1",
            "deseq2": "genes with padj < α and |log2FC| ≥ 1"},
}
#: The agreement measures shown, in order: (key path in cohort_de_report.json's "deseq2", label, kind)
AGREEMENT_ROWS = (
    ("n_genes", "genes modelled", "count"),
    ("n_both_finite", "genes with both log2 fold changes", "count"),
    ("pearson", "Pearson r of the log2 fold changes", "r"),
    ("spearman", "Spearman ρ of the log2 fold changes", "r"),
    ("pearson_padj_not_na", "Pearson r, genes with a DESeq2 adjusted p-value", "r"),
    ("spearman_padj_not_na", "Spearman ρ, genes with a DESeq2 adjusted p-value", "r"),
    ("deseq2_significant", "DESeq2 genes with padj < α", "count"),
    ("sign_agreement_deseq2_significant", "… with the same sign here", "fraction"),
    ("deseq2_significant_replicate_interval_excludes_zero", "… whose replicate interval excludes 0", "fraction"),
    ("top_overlap.100.by_abs_lfc", "top 100 genes by |log2FC|: overlap", "fraction"),
    ("top_overlap.500.by_abs_lfc", "top 500 genes by |log2FC|: overlap", "fraction"),
    ("top_overlap.100.by_significance", "top 100 by significance (|LFC| / replicate se vs p-value): overlap",
     "fraction"),
    ("top_overlap.500.by_significance", "top 500 by significance: overlap", "fraction"),
    ("deseq2_na.padj_na", "genes DESeq2 leaves without an adjusted p-value", "count"),
    ("deseq2_na.padj_na_with_finite_estimate_and_interval", "… with a finite estimate and interval here",
     "count"),
    ("deseq2_na.padj_na_interval_excludes_zero", "… whose posterior interval excludes 0", "count"),
    ("deseq2_na.padj_na_replicate_interval_excludes_zero", "… whose replicate interval excludes 0", "count"),
    ("deseq2_na.lfc_na", "genes DESeq2 leaves without a log2 fold change", "count"),
    ("deseq2_na.lfc_na_with_finite_estimate_and_interval", "… with a finite estimate and interval here", "count"),
    ("replicate_interval_excludes_zero", "genes whose replicate interval excludes 0 (NB-VAE)", "count"),
)
DESEQ2_TABLE_COLUMNS = ("deseq2_log2FoldChange", "deseq2_pvalue", "deseq2_padj")


def _get(tree: dict | None, path: str):
    node = tree
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def _set(tree: dict, path: str, value) -> None:
    *parents, last = path.split(".")
    for key in parents:
        tree = tree.setdefault(key, {})
    tree[last] = value


def _levels(cohort, report: dict) -> tuple[str | None, str | None, str | None, list[str]]:
    """(group column, level, reference, covariates) from the report JSON, else from the table's columns."""
    contrast = report.get("contrast") or {}
    options = report.get("options") or {}
    group = contrast.get("column") or options.get("group")
    level = contrast.get("level") or options.get("level")
    reference = contrast.get("reference") or options.get("reference")
    covariates = [str(c) for c in (contrast.get("covariates") or options.get("covariates") or [])]
    if (level is None or reference is None) and cohort.table is not None:
        expression = [c.removeprefix("log2_expression_") for c in cohort.table.columns
                      if c.startswith("log2_expression_")]
        if len(expression) == 2:  # cohort-de writes the level's column first
            level, reference = level or expression[0], reference or expression[1]
    return (None if group is None else str(group), None if level is None else str(level),
            None if reference is None else str(reference), covariates)


def _cohort(ctx: _Context, section: Section) -> None:
    cohort = ctx.data.cohort
    folder = cohort.folder
    if cohort.report is None and cohort.table is None:
        section.available = False
        section.missing(f"neither {COHORT_REPORT} nor {COHORT_RESULTS} in {folder}: is it the output folder of "
                        "`nofone cohort-de`?")
        return
    report = cohort.report or {}
    group, level, reference, covariates = _levels(cohort, report)
    alpha = float((report.get("options") or {}).get("alpha", 0.05))
    numbers: dict = {"folder": str(folder), "group": group, "level": level, "reference": reference,
                     "covariates": covariates}
    ctx.numbers["cohort"] = numbers
    contrast_text = f"{level} vs {reference}" if level and reference else "the two groups"
    section.add(paragraph(
        f"From <code>{esc(folder)}</code> (<code>nofone cohort-de</code>). A negative-binomial variational "
        "autoencoder (NB-VAE) was trained on <em>every</em> sample of the cohort without their labels. Each "
        "sample's expression decoded at its posterior mean is averaged within each group; the <strong>generative "
        f"log2 fold change</strong> of {esc(contrast_text)} is the difference of those means"
        + (" within each combination of covariate levels that has samples of both groups, averaged with equal "
           "weights" if covariates else "")
        + ". DESeq2 (pydeseq2, matched to R; design ~ covariates + group) was run on the same samples beside it."))
    _cohort_compared(ctx, section, report, group, level, reference, covariates)
    _cohort_latent(ctx, section, report, group, level, reference, covariates)
    _cohort_agreement(ctx, section, report, level, reference, alpha)
    _cohort_top_genes(ctx, section, level, reference)
    _cohort_enrichment(ctx, section, report, level, alpha)


def _cohort_compared(ctx: _Context, section: Section, report: dict, group, level, reference,
                     covariates: list[str]) -> None:
    section.add("<h3>What was compared</h3>")
    numbers = ctx.numbers["cohort"]
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
    cells = [c for c in contrast.get("cells") or [] if isinstance(c, dict)]
    used = [c for c in cells if c.get("used")]
    others = {k: v for k, v in per_level.items() if k not in (level, reference)}
    sample_text = None
    if per_level:
        sample_text = (f"{samples.get('n', sum(per_level.values()))} in all: {level} {per_level.get(level, 0)}, "
                       f"{reference} {per_level.get(reference, 0)}")
        if others:
            sample_text += "; not compared: " + ", ".join(f"{k} {v}" for k, v in sorted(others.items()))
    gene_text = None
    if genes.get("n_modelled") is not None:
        gene_text = f"{format_value(genes['n_modelled'])} modelled"
        if genes.get("n_input") is not None:
            gene_text += (f" of {format_value(genes['n_input'])} (at least {format_value(genes.get('min_total_count'))}"
                          f" counts over the cohort; {format_value(genes.get('n_dropped_low_counts'))} dropped)")
    latent_dim = config.get("latent_dim")
    active = model.get("active_latent_dims")
    epochs_run, epochs = model.get("epochs_run"), training.get("epochs")
    hidden = config.get("hidden") or []
    rows = [
        ("dataset", report.get("input")),
        ("group column", group),
        ("contrast", f"{level} vs {reference} (log2 fold change > 0: higher in {level})"),
        ("covariates", ", ".join(covariates) if covariates else "none"),
        ("samples", sample_text),
        ("covariate cells used", f"{len(used)} of {len(cells)}" if covariates and cells else None),
        ("genes", gene_text),
        ("latent dimensions", f"{latent_dim}" + (f" ({active} active)" if active is not None else "")
         if latent_dim is not None else None),
        ("encoder layers", " × ".join(str(h) for h in hidden) or None),
        ("epochs", f"{epochs_run} of {epochs}" if epochs_run is not None and epochs else epochs_run),
        ("final training loss (negative ELBO per sample)", model.get("final_loss_train")),
        ("size factors", model.get("size_factor_method")),
        ("posterior draws per sample (interval)", report.get("posterior_draws")),
        ("replicate interval df", contrast.get("replicate_df")),
        ("seed", report.get("seed")),
        ("training time", _duration(model.get("train_seconds"))),
        ("whole command", _duration(report.get("seconds"))),
        ("made by nofone", report.get("nofone_version")),
    ]
    section.add(key_values([(k, v) for k, v in rows if v is not None]))
    if covariates and cells:
        frame = pd.DataFrame({"covariate levels": [str(c.get("cell")) for c in cells],
                              f"{level} samples": [c.get("n_level") for c in cells],
                              f"{reference} samples": [c.get("n_reference") for c in cells],
                              "used": [bool(c.get("used")) for c in cells]})
        section.add(ctx.html_table(
            "cohort_cells", frame,
            f"Combinations of covariate levels ({esc(', '.join(covariates))}): the contrast is taken within each "
            "one that has samples of both groups (used) and averaged over them with equal weights.",
            colour_column=None))
    numbers.update({"samples": samples.get("n"), "samples_per_level": per_level,
                    "cells_used": len(used), "cells": len(cells), "genes_modelled": genes.get("n_modelled"),
                    "genes_input": genes.get("n_input"), "latent_dim": latent_dim, "active_latent_dims": active,
                    "epochs_run": epochs_run, "epochs": epochs, "train_seconds": model.get("train_seconds")})


def _latent_plane(latent: pd.DataFrame) -> tuple[np.ndarray, str, str, list[float] | None, int]:
    """(xy, x label, y label, explained variance ratios, latent dim): PCA of z1..zD when D > 2.

    The orientation is cohort-de's (each component's largest coordinate positive), so that the
    picture matches its latent.png.
    """
    zs = sorted((c for c in latent.columns if c[:1] == "z" and c[1:].isdigit()), key=lambda c: int(c[1:]))
    if not zs:
        return latent[["plot_x", "plot_y"]].to_numpy(dtype=float), "plot_x", "plot_y", None, 0
    z = latent[zs].to_numpy(dtype=float)
    if z.shape[1] == 1:
        return np.column_stack([z[:, 0], np.zeros(len(z))]), "z1", "", None, 1
    if z.shape[1] == 2:
        return z.copy(), "z1", "z2", None, 2
    centred = z - z.mean(0)
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    coords = centred @ vt[:2].T
    signs = np.sign(coords[np.abs(coords).argmax(0), range(2)])
    coords = coords * np.where(signs == 0, 1, signs)
    power = singular ** 2
    explained = [float(v) for v in (power / power.sum())[:2]] if power.sum() > 0 else [0.0, 0.0]
    return (coords, f"latent PC1 ({100 * explained[0]:.0f}% of variance)",
            f"latent PC2 ({100 * explained[1]:.0f}% of variance)", explained, z.shape[1])


def _is_scale(values: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values) and values.nunique() > 8


def _cohort_latent(ctx: _Context, section: Section, report: dict, group, level, reference,
                   covariates: list[str]) -> None:
    section.add("<h3>Latent space</h3>")
    cohort = ctx.data.cohort
    latent = cohort.latent
    if latent is None or latent.empty:
        section.missing(f"{COHORT_LATENT} not found in {cohort.folder}")
        return
    xy, x_label, y_label, explained, dim = _latent_plane(latent)
    coordinates = {"sample_id", "plot_x", "plot_y"} | {c for c in latent.columns if c[:1] == "z" and c[1:].isdigit()}
    labels = [c for c in latent.columns if c not in coordinates]
    color_by = (report.get("options") or {}).get("color_by")
    first_covariate = next((c for c in covariates if c in latent), None)
    panels = []
    if group in latent:
        values = latent[group].astype(str)
        panels.append({"title": group, "values": values.to_numpy(),
                       "colours": cohort_group_colours(values, level or "", reference or ""),
                       "markers": None if first_covariate is None else latent[first_covariate].astype(str).to_numpy(),
                       "marker_title": first_covariate})
    for covariate in [c for c in covariates if c in latent][:2]:
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
    png = figures.cohort_latent(xy, panels, x_label, y_label)
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
                  + (f", {esc(group)} in the others." if len(panels) > 1 and group in latent else "."))
    section.add(png_figure(
        png,
        f"Each point is one of the {len(latent):,} samples, at its posterior mean in the NB-VAE's latent space, "
        f"{esc(where)}. <b>The NB-VAE never saw the labels</b>: the group"
        + (" and the covariates are" if covariates else " is") + " used only to colour the points afterwards, so "
        "samples that cluster by a label differ by it in their whole expression profile." + shapes
        + (f" Colours of {esc(level)} and {esc(reference)} are those of the other figures of this section."
           if level and reference else ""),
        "cohort latent space"))
    keep = ["sample_id", *labels]
    frame = latent[[c for c in keep if c in latent]].copy()
    frame["x"], frame["y"] = xy[:, 0], xy[:, 1]
    ctx.add_table("cohort_latent", frame)
    ctx.numbers["cohort"]["latent"] = {"dim": dim, "samples": len(latent), "explained_variance": explained,
                                       "coloured_by": [p["title"] for p in panels]}


def _percent_or(value, kind: str) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "—"
    if kind == "fraction":
        return f"{100 * float(value):.1f}%"
    if kind == "r":
        return f"{float(value):.3f}"
    return format_value(value)


def _cohort_agreement(ctx: _Context, section: Section, report: dict, level, reference, alpha: float) -> None:
    section.add("<h3>Agreement with DESeq2</h3>")
    cohort = ctx.data.cohort
    table = cohort.table
    stored = report.get("deseq2") if isinstance(report.get("deseq2"), dict) else None
    has_columns = table is not None and set(DESEQ2_TABLE_COLUMNS) <= set(table.columns)
    if stored is None and not has_columns:
        section.missing("DESeq2 was not run (`nofone cohort-de --no-deseq2`)" if report or table is not None
                        else f"{COHORT_RESULTS} not found")
        return
    computed = compare_with_deseq2(table, alpha) if has_columns else {}
    merged: dict = {}
    rows = []
    for key, label, _ in AGREEMENT_ROWS:
        value, source = _get(stored, key), COHORT_REPORT
        if value is None:
            value, source = _get(computed, key), f"computed from {COHORT_RESULTS}"
        if value is None:
            continue
        _set(merged, key, value)
        rows.append({"measure": label.replace("α", f"{alpha:g}"), "key": key, "value": value, "source": source})
    frame = pd.DataFrame(rows, columns=["measure", "key", "value", "source"])
    kinds = {key: kind for key, _, kind in AGREEMENT_ROWS}
    shown = pd.DataFrame({"measure": frame["measure"],
                          "value": [_percent_or(v, kinds[k]) for v, k in zip(frame["value"], frame["key"])],
                          "source": frame["source"]})
    sources = sorted(set(frame["source"]))
    if len(sources) == 1:  # one source: said in the caption
        shown = shown.drop(columns="source")
    ctx.numbers["cohort"]["deseq2"] = merged
    r, rho = merged.get("pearson"), merged.get("spearman")
    parts = []
    if r is not None and rho is not None:
        parts.append(f"<strong>Pearson r = {r:.3f}, Spearman ρ = {rho:.3f}</strong> between the NB-VAE's and "
                     f"DESeq2's log2 fold changes over {format_value(merged.get('n_both_finite'))} genes")
    overlap = merged.get("top_overlap") or {}
    if overlap:
        parts.append("top-" + " / top-".join(overlap) + " genes by |log2FC| shared: "
                     + " / ".join(_percent_or(v.get("by_abs_lfc"), "fraction") for v in overlap.values()))
    if merged.get("sign_agreement_deseq2_significant") is not None:
        parts.append(f"{_percent_or(merged['sign_agreement_deseq2_significant'], 'fraction')} same sign among "
                     f"DESeq2's {format_value(merged.get('deseq2_significant'))} genes with padj &lt; {alpha:g}")
    na = merged.get("deseq2_na") or {}
    if na.get("padj_na"):
        finite = na.get("padj_na_with_finite_estimate_and_interval")
        parts.append(f"DESeq2 leaves {format_value(na['padj_na'])} genes without an adjusted p-value; "
                     f"{'all ' if finite == na['padj_na'] else ''}{format_value(finite)} of them have a finite "
                     "estimate and interval here")
    elif na.get("padj_na") == 0:
        parts.append("DESeq2 gives every gene an adjusted p-value")
    if parts:
        section.add(paragraph("; ".join(parts) + ".", "headline"))
    if has_columns:
        ours = table["log2_fold_change"].to_numpy(dtype=float)
        theirs = table["deseq2_log2FoldChange"].to_numpy(dtype=float)
        stats_text = "\n".join(t for t in (
            f"Pearson r = {r:.3f}" if r is not None else "", f"Spearman ρ = {rho:.3f}" if rho is not None else "",
            f"{format_value(merged.get('n_both_finite'))} genes") if t)
        versus = f" ({level} vs {reference})" if level and reference else ""
        png = figures.lfc_agreement(ours, theirs, table["deseq2_padj"].to_numpy(dtype=float), alpha,
                                    f"NB-VAE generative log2 fold change{versus}", f"DESeq2 log2 fold change{versus}",
                                    stats_text)
        section.add(png_figure(
            png,
            "Each point is a gene: the NB-VAE's generative log2 fold change (x) against DESeq2's (y, its maximum-"
            "likelihood estimate, not shrunk); dashed: the identity line. Blue: DESeq2 padj &lt; "
            f"{esc(format_value(alpha))}; grey: not significant; <span style=\"color:{NA_COLOUR}\">orange</span>: "
            "genes DESeq2 leaves without an adjusted p-value (independent filtering, outliers), which still get an "
            "NB-VAE estimate. The strip below the axis marks every gene DESeq2 leaves NA at its NB-VAE log2 fold "
            f"change (orange: no adjusted p-value; <span style=\"color:{NA_LFC_COLOUR}\">purple</span>: no log2 "
            "fold change, e.g. a gene not measured in every sample). Both axes cover 99.8% of the genes; the rest "
            "are drawn on the border as triangles. Low-count genes spread vertically: DESeq2's estimate is noisy "
            "there, while the decoder's is pulled towards the cohort.",
            "NB-VAE vs DESeq2 log2 fold changes", width=660))
    else:
        section.add(paragraph(f"{COHORT_RESULTS} has no DESeq2 columns: no scatter plot.", "note"))
    section.add(ctx.html_table(
        "cohort_deseq2_agreement", frame,
        "Agreement of the generative log2 fold changes with DESeq2's. Significance here is |log2FC| over the "
        "replicate standard error; DESeq2's is its p-value. The posterior interval carries only the latent "
        "uncertainty (narrow; not a confidence interval), the replicate interval the spread of the samples."
        + (f" All from <code>{esc(sources[0])}</code>." if len(sources) == 1 and sources[0] == COHORT_REPORT else
           f" Source: {esc(sources[0])}." if len(sources) == 1 else ""),
        shown=shown, colour_column=None))


def _cohort_top_genes(ctx: _Context, section: Section, level, reference) -> None:
    n = ctx.options.cohort_top_genes
    section.add(f"<h3>Top {n} genes by |generative log2 fold change|</h3>")
    table = ctx.data.cohort.table
    if table is None:
        section.missing(f"{COHORT_RESULTS} not found in {ctx.data.cohort.folder}")
        return
    ranked = table.assign(_abs=-table["log2_fold_change"].abs()).sort_values(
        ["_abs", "gene_id"], kind="stable", na_position="last").drop(columns="_abs")
    expression = [c for c in table.columns if c.startswith("log2_expression_")]
    columns = ["gene_id", "gene_name", "log2_fold_change", "ci_low", "ci_high", "ci_low_replicates",
               "ci_high_replicates", *expression, "deseq2_baseMean", "deseq2_log2FoldChange", "deseq2_padj"]
    top = ranked[[c for c in columns if c in ranked]].head(n).reset_index(drop=True)
    ctx.numbers["cohort"]["top_genes"] = top["gene_id"].astype(str).tolist()
    shown = pd.DataFrame({"gene_id": top["gene_id"], "gene_name": top["gene_name"],
                          "log2FC": top["log2_fold_change"]})
    for low, high, label in (("ci_low", "ci_high", "posterior 95%"),
                             ("ci_low_replicates", "ci_high_replicates", "replicate 95%")):
        if low in top and high in top:
            shown[label] = [_interval(a, b) for a, b in zip(top[low], top[high])]
    for column in expression:
        shown[f"log2 expr. {column.removeprefix('log2_expression_')}"] = top[column]
    for column, label in (("deseq2_log2FoldChange", "DESeq2 log2FC"), ("deseq2_padj", "DESeq2 padj")):
        if column in top:
            shown[label] = top[column]
    section.add(ctx.html_table(
        "cohort_top_genes", top,
        "log2FC: the generative log2 fold change"
        + (f" of {esc(level)} over {esc(reference)}" if level and reference else "")
        + "; posterior 95%: its credible interval over where the samples sit in the latent (narrow; not a "
        "confidence interval); replicate 95%: a t interval from the within-group spread of the decoded values "
        "(— without replicates); log2 expr.: mean decoded log2 normalised expression of each group; DESeq2: its "
        "log2 fold change and adjusted p-value (— : NA). The TSV also has DESeq2's mean normalised count "
        "(baseMean), with the column names of "
        f"<code>{esc(COHORT_RESULTS)}</code>.",
        shown=shown, colour_column=None, nowrap=("gene_id", "gene_name", "posterior 95%", "replicate 95%")))


def _interval(low: float, high: float) -> str:
    if not (np.isfinite(low) and np.isfinite(high)):
        return "—"
    return f"[{float(low):.3g}, {float(high):.3g}]"


def _lookup(rows: pd.DataFrame, column: str, terms: list[str]) -> list:
    """rows[column] of each term (rows indexed by term); NaN where a term or the column is missing."""
    return [rows.at[t, column] if t in rows.index and column in rows else np.nan for t in terms]


def _direction(nes: float) -> str:
    return "" if not np.isfinite(nes) else ("up" if nes > 0 else "down")


def _cohort_enrichment(ctx: _Context, section: Section, report: dict, level, alpha: float) -> None:
    section.add("<h3>Pathway enrichment</h3>")
    cohort = ctx.data.cohort
    if not cohort.enrichment:
        section.missing(f"no {COHORT_ENRICHMENT} in {cohort.folder}: run `nofone cohort-de` with --gene-sets GMT "
                        "(needs gseapy)")
        return
    summary = report.get("enrichment") if isinstance(report.get("enrichment"), dict) else {}
    about = []
    if summary.get("gene_sets"):
        sets = summary.get("n_gene_sets")
        about.append(f"gene sets <code>{esc(summary['gene_sets'])}</code>"
                     + (f" ({esc(format_value(sets))} sets)" if sets else ""))
    if summary.get("genes_with_symbol") is not None:
        about.append(f"{esc(format_value(summary['genes_with_symbol']))} genes with a symbol"
                     + (" (upper-cased)" if summary.get("uppercase_symbols") else ""))
    permutations = (report.get("options") or {}).get("permutations")
    numbers: dict = {}
    for name, frame in cohort.enrichment.items():
        method = "prerank" if "nes" in frame else ("ora" if "overlap" in frame else name.removeprefix(
            "enrichment_").removesuffix(".tsv"))
        q = "fdr_q_value" if "fdr_q_value" in frame else ("q_value" if "q_value" in frame else None)
        if "ranking" not in frame or "term" not in frame or q is None:
            section.add(paragraph(f"{esc(name)}: not an enrichment table of `nofone cohort-de` (needs ranking, "
                                  "term and a q-value column); skipped.", "note"))
            continue
        how = ("GSEA preranked" + (f", {esc(format_value(permutations))} gene-set permutations"
                                   if permutations else "") if method == "prerank" else
               "over-representation (hypergeometric) against the modelled genes" if method == "ora" else esc(method))
        section.add(paragraph(f"<code>{esc(name)}</code>: {how}" + ("; " + "; ".join(about) if about else "") + "."))
        ordered = frame.sort_values(["ranking", q, "p_value" if "p_value" in frame else q, "term"], kind="stable")
        stem = name.removesuffix(".tsv")
        path = ctx.add_table(f"cohort_{stem}", ordered.reset_index(drop=True))
        rankings = [r for r in ("nbvae", "deseq2") if (frame["ranking"] == r).any()]
        rankings += sorted(set(frame["ranking"].astype(str)) - set(rankings))
        significant: dict[str, set] = {}
        per_method: dict = {}
        by_term: dict[str, pd.DataFrame] = {}
        k = ctx.options.cohort_top_terms
        for ranking in rankings:
            rows = ordered[ordered["ranking"].astype(str) == ranking]
            significant[ranking] = set(rows.loc[rows[q] < 0.05, "term"].astype(str))
            by_term[ranking] = rows.assign(term=rows["term"].astype(str)).drop_duplicates("term").set_index("term")
            top = rows.head(5)
            per_method[ranking] = {
                "tested": len(rows), "fdr_below_0.05": len(significant[ranking]),
                "top_terms": [{"term": str(t), q: float(v), **({"nes": float(e)} if method == "prerank" else {})}
                              for t, v, e in zip(top["term"], top[q], top.get("nes", [None] * len(top)))]}
        # side by side: the k best terms of each ranking, ordered by their best FDR
        chosen = list(dict.fromkeys(t for r in rankings for t in by_term[r].index[:k]))
        best = {t: min(float(by_term[r].at[t, q]) if t in by_term[r].index else np.inf for r in rankings)
                for t in chosen}
        chosen.sort(key=lambda t: (best[t], t))
        side: dict[str, list] = {"term": chosen}
        for ranking in rankings:
            rows = by_term[ranking]
            label = RANKING_LABELS.get(ranking, ranking)
            if method == "prerank":
                nes = np.asarray(_lookup(rows, "nes", chosen), dtype=float)
                side[f"{label} direction"] = [_direction(v) for v in nes]
                side[f"{label} NES"] = list(nes)
            elif "overlap" in rows:
                side[f"{label} overlap"] = [v if isinstance(v, str) else "—" for v in _lookup(rows, "overlap", chosen)]
            side[f"{label} FDR q"] = _lookup(rows, q, chosen)
        shown = pd.DataFrame(side)
        titles = RANKING_TITLES.get(method, {})
        described = "; ".join(f"{RANKING_LABELS.get(r, r)}: {titles[r]}" for r in rankings if r in titles)
        caption = (f"The {k} gene sets with the lowest FDR in each ranking ({len(chosen)} in all), ordered by "
                   f"their lowest FDR. {esc(described)}. "
                   + (f"Direction: up = the set's genes lean towards higher expression in "
                      f"{esc(level) if level else 'the level'} (NES &gt; 0). FDR q = 0: below 1 / permutations. "
                      if method == "prerank" else "")
                   + "— : not tested in that ranking. With p-values and leading edges: "
                   f"<code>{esc(path)}</code>.")
        section.add(ctx.html_table(f"cohort_{stem}_top", shown, caption, colour_column=None,
                                   nowrap=tuple(c for c in shown if c.endswith("direction"))))
        if {"nbvae", "deseq2"} <= set(significant):
            shared = significant["nbvae"] & significant["deseq2"]
            section.add(paragraph(
                f"Gene sets at FDR &lt; 0.05: NB-VAE {len(significant['nbvae'])}, DESeq2 "
                f"{len(significant['deseq2'])}, both {len(shared)}"
                + (": " + esc(", ".join(sorted(shared)[:12])) + ("…" if len(shared) > 12 else "") if shared else "")
                + ".", "note"))
            per_method["fdr_below_0.05_in_both"] = len(shared)
        numbers[name] = {"method": method, **per_method}
    ctx.numbers["cohort"]["enrichment"] = numbers
