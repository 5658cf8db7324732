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
from nofone.io.atomic import staged_outdir, write_json_atomic
from nofone.report import figures
from nofone.report.html import Section, esc, format_value, key_values, page, paragraph, png_figure, table
from nofone.report.inputs import EVALUATION_FILES, ReportData, ReportPaths, load, resolve_paths
from nofone.report.style import TRAINING, group_colours, is_normal_like, order_groups, tissue_colours

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


@dataclass
class ReportOptions:
    title: str = "nofone report"
    samples: list[str] = field(default_factory=list)   # volcano samples; default: chosen by calls
    max_volcanoes: int = 4
    max_table_rows: int = 200
    top_genes: int = 20


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
                   colour_column: str | None = "group") -> str:
        """Register `frame` as tables/<name>.tsv and render `shown` (default: the frame)."""
        path = self.add_table(name, frame)
        caption = f"{caption} <span class=\"note\">(<code>{esc(path)}</code>)</span>"
        return table(frame if shown is None else shown, caption, max_rows=self.options.max_table_rows,
                     colours=self.colours, colour_column=colour_column)

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
        "nll": _nll, "degs": _degs, "volcano": _volcano, "evaluation": _evaluation,
    }
    sections = []
    for section_id, title in SECTIONS:
        section = Section(section_id, title)
        builders[section_id](ctx, section)
        sections.append(section)
    generated = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    source = paths.run or paths.de or paths.representations or paths.model or paths.data
    subtitle = (f"N-of-one differential expression against a model of normal tissue · "
                f"<code>{esc(source)}</code> · {esc(generated.strftime('%Y-%m-%d %H:%M UTC'))}")
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
           evaluation: Path | None = None, options: ReportOptions | None = None) -> dict:
    """The `nofone report` step: resolve the inputs, build, write; returns the summary."""
    paths = resolve_paths(run, model, representations, de, data, evaluation)
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
    return config.get(config.get("model_type") or "dgd") or {}


def _n_components(config: dict) -> int | None:
    """Mixture components of the latent prior (1 for a standard normal prior, as the NB-VAE's)."""
    settings = _model_settings(config)
    if "gmm" in settings:
        return (settings.get("gmm") or {}).get("n_components")
    return 1 if settings else None


def _model_rows(ctx: _Context) -> list[tuple[str, object]]:
    config = ctx.data.config or {}
    dgd = _model_settings(config)
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
        ("latent dimensions", dgd.get("latent_dim")),
        ("hidden layers", " × ".join(str(h) for h in dgd.get("hidden", [])) or None),
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
    dgd = _model_settings(config)
    info = ctx.data.training_info
    history = ctx.data.history
    calibration = info.get("dispersion_calibration") or {}
    return {
        "model_type": config.get("model_type"), "n_genes": config.get("n_genes"),
        "latent_dim": dgd.get("latent_dim"), "n_components": _n_components(config),
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


def _call_rule(report: dict | None) -> tuple[str, str]:
    if not report:
        return "", "not available: de/de_report.json not found"
    test = {"equal-tail-midp": "equal-tail mid-p", "density": "density (the paper's rule)"}.get(
        report.get("test"), report.get("test"))
    q, lfc = report.get("q_threshold"), report.get("lfc_threshold")
    rule = f"q < {format_value(q)} and |log2 fold change| > {format_value(lfc)}"
    details = (f"A gene is called DE in a sample when <strong>{esc(rule)}</strong>. Test: {esc(test)} against "
               f"the negative binomial of the sample's closest normal"
               f"{' with the sample’s own model error' if report.get('model_error') else ''}; q-values by "
               f"Benjamini-Hochberg within each sample; log2 fold change = log2((count + 1) / (normal mean + 1)).")
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
    if _n_components(data.config or {}) == 1:
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


def auroc(scores: np.ndarray, reference: np.ndarray) -> float:
    """P(score of a group sample > score of a reference sample), ties half: Mann-Whitney U / (n1 n2)."""
    from scipy.stats import mannwhitneyu

    scores, reference = scores[np.isfinite(scores)], reference[np.isfinite(reference)]
    if not len(scores) or not len(reference):
        return float("nan")
    return float(mannwhitneyu(scores, reference, alternative="two-sided").statistic / (len(scores) * len(reference)))


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
                               "even 0 reads would not be a significant down call).", shown=shown))


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
    for name in EVALUATION_FILES:
        if name in tables:
            stem = name.removesuffix(".tsv")
            section.add(f"<h3>{esc(EVALUATION_TITLES[name])}</h3>")
            section.add(ctx.html_table(f"evaluation_{stem}", tables[name], esc(EVALUATION_CAPTIONS[name]),
                                       colour_column=None))
    ctx.numbers["evaluation"] = {"folder": str(folder), "files": sorted(tables)}
