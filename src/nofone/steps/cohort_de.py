"""`nofone cohort-de`: generative differential expression between two groups of a cohort.

1. Genes with at least `min_total_count` counts over the cohort are kept (the rest cannot teach
   a decoder anything and are reported, not modelled).
2. An NB-VAE (`nofone.models.nbvae`) is trained on *every* sample of the cohort, with no
   normal/case split and no held-out samples: it sees no labels.
3. Each sample's decoded expression at its posterior mean, log2 rho_g(mu_i) (normalised-count
   units), is averaged within each group and the groups subtracted: the generative log2 fold
   change, a deterministic point estimate. With covariates (e.g. cell type), the difference is
   taken within each cell of covariate levels that holds samples of both groups, and the cells'
   differences are averaged with equal weights (cells lacking either group are skipped and
   reported).
4. Its credible interval: `samples` times, every sample's z is drawn from its posterior
   N(mu_i, diag(sigma_i^2)) and the contrast recomputed; the 2.5% and 97.5% quantiles of the
   draws. The interval reflects the uncertainty of where each sample sits in the latent space,
   given the trained decoder: not the decoder's own uncertainty nor count noise, so it is
   narrower than a frequentist confidence interval and must not be read as one (with a dozen
   samples of 18,000 genes each, the posteriors are so tight that the interval is a few
   thousandths of a log2 unit wide). So the table also has a replicate interval: the pooled
   within-group variance of the decoded values (over the cells' groups, df = samples - groups)
   gives the standard error of the same contrast, the latent variance is added, and a t
   quantile makes `ci_low_replicates` / `ci_high_replicates` (NaN when no group has two samples).
5. Optionally DESeq2 (pydeseq2, matched to R; `nofone.baselines.deseq2.group_contrast`) with the
   design `~ covariates + group` on the same samples, its columns joined to the table, and the
   agreement of the two estimates in the report; a latent plot; pathway enrichment of both
   rankings against a local GMT (`nofone.enrichment`).

Outputs in `outdir`: cohort_de.tsv, cohort_de_report.json, latent.tsv, latent.png, model/ (the
trained NB-VAE artifact) and, with gene sets, enrichment_<method>.tsv. This module runs the
steps and writes; the contrast maths is `nofone.stats.contrast`, latent.png is drawn by
`nofone.report.figures.cohort`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from nofone import __version__
from nofone.errors import InputError
from nofone.evaluate.agreement import compare_with_deseq2
from nofone.io.atomic import staged_outdir, write_json_atomic
from nofone.io.dataset import Dataset
from nofone.models.nbvae.config import load_config
from nofone.models.nbvae.model import NBVAE
from nofone.models.nbvae.train import train_nbvae
from nofone.models.training import TrainingData
from nofone.progress import progress
from nofone.stats.contrast import (
    contrast_weights,
    generative_lfc,
    group_means,
    posterior_interval,
    replicate_interval,
)
from nofone.stats.projection import principal_plane
from nofone.steps.common import resolve_device

log = logging.getLogger(__name__)

RESULTS_FILE = "cohort_de.tsv"
REPORT_FILE = "cohort_de_report.json"
LATENT_FILE = "latent.tsv"
LATENT_PLOT = "latent.png"
MODEL_DIR = "model"
DESEQ2_COLUMNS = ("baseMean", "log2FoldChange", "lfcSE", "stat", "pvalue", "padj")
#: Training epochs with the default preset: a cohort run has no held-out samples to stop on, and
#: a dozen samples are memorised (dispersions drifting towards Poisson) well before 600 epochs.
COHORT_EPOCHS = 300


@dataclass
class CohortDEOptions:
    group: str
    level: str
    reference: str
    covariates: list[str] = field(default_factory=list)
    config: str | None = None  # NB-VAE preset or JSON file (default: the `default` preset)
    latent_dim: int | None = None  # None: the config's (10 by default)
    epochs: int | None = None  # None: COHORT_EPOCHS with the default preset, else the config's
    samples: int = 200
    seed: int = 0
    min_total_count: int = 10
    deseq2: bool = True
    alpha: float = 0.05
    color_by: str | None = None  # default: the group column
    gene_sets: Path | None = None
    symbol_maps: list[Path] = field(default_factory=list)
    uppercase_symbols: bool = False
    enrichment_method: str = "prerank"
    permutations: int = 1000
    device: str = "auto"


def parse_contrast(text: str) -> tuple[str, str]:
    """`"lactate,virgin"` -> ("lactate", "virgin")."""
    parts = [p.strip() for p in str(text).split(",")]
    if len(parts) != 2 or not all(parts):
        raise InputError(f"--contrast {text!r}: give LEVEL,REFERENCE (e.g. lactate,virgin)")
    if parts[0] == parts[1]:
        raise InputError(f"--contrast {text!r} compares a level with itself")
    return parts[0], parts[1]


def cohort_de(input_dir: Path, outdir: Path, options: CohortDEOptions) -> dict:
    """Train the NB-VAE on the whole cohort, estimate the contrast, compare, write; returns the report."""
    started = time.perf_counter()
    if options.samples < 10:
        raise InputError(f"--samples {options.samples}: at least 10 posterior draws are needed for an interval")
    if options.enrichment_method not in ("prerank", "ora"):
        raise InputError(f"unknown enrichment method {options.enrichment_method!r}; use prerank or ora")
    device = resolve_device(options.device)
    data = Dataset(input_dir)
    metadata = data.samples.set_index("sample_id")
    metadata.index = metadata.index.astype(str)
    labels, cells = _design(metadata, options)
    weights, cell_table = contrast_weights(labels, cells, options.level, options.reference)
    if not (weights != 0).any():
        raise InputError(f"no cell of covariate levels ({', '.join(options.covariates)}) has samples of both "
                         f"{options.level!r} and {options.reference!r} in column {options.group!r}")
    gene_sets = symbol_maps = None
    if options.gene_sets is not None:  # read them first: a bad file fails before training
        from nofone.enrichment import read_gmt, read_symbol_map

        gene_sets = read_gmt(options.gene_sets)
        symbol_maps = [read_symbol_map(p) for p in options.symbol_maps]
    elif options.symbol_maps:
        raise InputError("--symbol-map is only used with --gene-sets")
    color_by = options.color_by or options.group
    if color_by not in metadata.columns:
        raise InputError(f"--color-by {color_by!r}: no such sample column (have {list(metadata.columns)})")

    chunk = data.read()
    measured = chunk.measured
    totals = (chunk.counts * (1 if measured is None else measured)).sum(0)
    keep = totals >= options.min_total_count
    if keep.sum() < 2:
        raise InputError(f"{input_dir}: fewer than 2 genes have at least {options.min_total_count} counts in total")
    gene_ids = np.asarray(data.gene_ids, dtype=object)
    names = data.genes["gene_name"].astype(object)
    gene_names = names.where(names.notna(), "").to_numpy(dtype=object)
    if symbol_maps:  # genes without a name get the first map's symbol (e.g. Entrez id -> symbol)
        gene_names = np.array([n or symbol_maps[0].get(str(g), "") for g, n in zip(gene_ids, gene_names)],
                              dtype=object)

    epochs = options.epochs or (COHORT_EPOCHS if options.config in (None, "default") else None)
    overrides = {"latent_dim": options.latent_dim, "training.epochs": epochs, "training.seed": options.seed,
                 "training.test_fraction": 0.0}
    config = load_config(options.config, overrides)
    training = TrainingData(list(chunk.sample_ids), chunk.counts[:, keep], np.array(["train"] * len(chunk)), None,
                            None if measured is None else measured[:, keep])
    log.info("training an NB-VAE (latent %d) on all %d samples, %d of %d genes (>= %d counts in total)",
             config.latent_dim, len(chunk), int(keep.sum()), len(keep), options.min_total_count)
    train_started = time.perf_counter()
    with progress("training", config.training.epochs) as advance:
        result = train_nbvae(training, config, device=device,
                             on_epoch=lambda record: advance(1, loss=record["loss_train"]))
    train_seconds = time.perf_counter() - train_started
    genes = pd.DataFrame({"gene_id": gene_ids[keep], "gene_name": gene_names[keep]})
    model = NBVAE(result.module, genes).to(device)

    point, draws = generative_lfc(model, result.latent, result.log_var, weights, options.samples, options.seed,
                                  device)
    lo, hi = posterior_interval(draws)
    with torch.no_grad():
        decoded = model.log2_relative_means(torch.as_tensor(result.latent, dtype=torch.float32, device=device))
        decoded = decoded.double().cpu().numpy()
    y_level, y_reference = group_means(decoded, labels, cells, cell_table, options.level, options.reference)
    latent_sd = draws.std(0, ddof=1)
    rep_low, rep_high, rep_se, df = replicate_interval(decoded, labels, cells, cell_table, options.level,
                                                       options.reference, latent_sd)
    table = pd.DataFrame({
        "gene_id": gene_ids[keep], "gene_name": gene_names[keep],
        "log2_fold_change": point, "ci_low": lo, "ci_high": hi, "lfc_sd": latent_sd,
        "se_replicates": rep_se, "ci_low_replicates": rep_low, "ci_high_replicates": rep_high,
        f"log2_expression_{_safe(options.level)}": y_level,
        f"log2_expression_{_safe(options.reference)}": y_reference,
    })

    deseq2 = None
    comparison = None
    if options.deseq2:
        deseq2 = _run_deseq2(chunk, gene_ids, metadata, options)
        for column in DESEQ2_COLUMNS:
            table[f"deseq2_{column}"] = deseq2[column].reindex(table["gene_id"]).to_numpy()
        comparison = compare_with_deseq2(table, options.alpha)

    enrichment = None
    latent = _latent_table(chunk.sample_ids, result.latent, metadata, options, color_by)
    report = {
        "nofone_version": __version__,
        "input": str(Path(input_dir).resolve()),
        "contrast": {"column": options.group, "level": options.level, "reference": options.reference,
                     "covariates": options.covariates, "cells": cell_table,
                     "estimate": "mean over cells (equal weights) of the difference of mean decoded log2 "
                                 "normalised expression at the posterior means; interval: 2.5%/97.5% "
                                 "quantiles over posterior draws of the latent",
                     "replicate_interval": "t interval from the pooled within-group variance of decoded values "
                                           "plus the latent variance", "replicate_df": df},
        "samples": {"n": len(chunk), "per_level": pd.Series(labels).value_counts().to_dict()},
        "genes": {"n_input": len(keep), "n_modelled": int(keep.sum()), "n_dropped_low_counts": int((~keep).sum()),
                  "min_total_count": options.min_total_count},
        "model": {"config": config.to_dict(), "epochs_run": len(result.history),
                  "final_loss_train": result.history[-1]["loss_train"],
                  "active_latent_dims": result.history[-1]["active_latent_dims"],
                  "size_factor_method": result.size_factor_method, "train_seconds": round(train_seconds, 1)},
        "posterior_draws": options.samples, "seed": options.seed, "options": options_dict(options),
        "deseq2": comparison,
    }
    from nofone.report.figures.cohort import latent_scatter

    with staged_outdir(outdir) as stage:
        if gene_sets is not None:
            enrichment = _enrichment(table, gene_sets, symbol_maps, options, stage)
            report["enrichment"] = enrichment
        table.to_csv(stage / RESULTS_FILE, sep="\t", index=False, float_format="%.6g")
        latent.to_csv(stage / LATENT_FILE, sep="\t", index=False, float_format="%.6g")
        latent_scatter(latent, color_by, stage / LATENT_PLOT, title=f"NB-VAE latent space ({len(chunk)} samples)")
        _save_model(stage / MODEL_DIR, model, training, result, report)
        report["seconds"] = round(time.perf_counter() - started, 1)
        report["outputs"] = [*sorted(p.name for p in stage.iterdir()), REPORT_FILE]
        write_json_atomic(stage / REPORT_FILE, report)
    return report


def _safe(level: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in level)


def _design(metadata: pd.DataFrame, options: CohortDEOptions) -> tuple[np.ndarray, np.ndarray]:
    """Group labels and covariate cells of every sample, checked."""
    columns = [options.group, *options.covariates]
    for column in columns:
        if column not in metadata.columns:
            raise InputError(f"no sample column {column!r} (have {[c for c in metadata.columns]})")
        empty = metadata[column].isna() | (metadata[column].astype(str).str.strip() == "")
        if empty.any():
            raise InputError(f"column {column!r} is empty for samples {list(metadata.index[empty][:5])}")
    if options.group in options.covariates:
        raise InputError(f"{options.group!r} is both the group and a covariate")
    labels = metadata[options.group].astype(str).to_numpy()
    present = sorted(set(labels))
    for name in (options.level, options.reference):
        if name not in present:
            raise InputError(f"level {name!r} is absent from column {options.group!r} (levels: {present})")
    if options.covariates:
        cells = metadata[options.covariates].astype(str).agg(" & ".join, axis=1).to_numpy()
    else:
        cells = np.array(["all"] * len(metadata), dtype=object)
    return labels, cells


def _run_deseq2(chunk, gene_ids: np.ndarray, metadata: pd.DataFrame, options: CohortDEOptions) -> pd.DataFrame:
    """pydeseq2 (R-matched) on every gene measured in every sample: design ~ covariates + group."""
    from nofone.baselines.deseq2 import default_n_cpus, group_contrast

    measured = chunk.measured_mask().all(axis=0)
    counts = pd.DataFrame(chunk.counts[:, measured], index=list(chunk.sample_ids), columns=gene_ids[measured])
    meta = metadata.loc[counts.index, [options.group, *options.covariates]].astype(str)
    design = "~ " + " + ".join([*options.covariates, options.group])
    log.info("DESeq2 (pydeseq2) %s, %s vs %s", design, options.level, options.reference)
    return group_contrast(counts, meta, design, (options.group, options.level, options.reference), options.alpha,
                          default_n_cpus())


def _latent_table(sample_ids, latent: np.ndarray, metadata: pd.DataFrame, options: CohortDEOptions,
                  color_by: str) -> pd.DataFrame:
    coords, _ = principal_plane(latent)
    table = pd.DataFrame({"sample_id": list(sample_ids)})
    for column in dict.fromkeys([options.group, *options.covariates, color_by]):
        table[column] = metadata.loc[table["sample_id"], column].to_numpy()
    table["plot_x"], table["plot_y"] = coords[:, 0], coords[:, 1]
    for j in range(latent.shape[1]):
        table[f"z{j + 1}"] = latent[:, j]
    return table


def _enrichment(table: pd.DataFrame, gene_sets: dict, symbol_maps: list, options: CohortDEOptions,
                stage: Path) -> dict:
    """Enrichment of the NB-VAE ranking (LFC) and DESeq2's (Wald statistic) -> enrichment_<method>.tsv."""
    from nofone.baselines.deseq2 import default_n_cpus
    from nofone.enrichment import run_enrichment, to_symbols
    from nofone.enrichment.run import ranking_by_symbol

    symbols = to_symbols(table["gene_id"].tolist(), table["gene_name"].tolist(), symbol_maps,
                         options.uppercase_symbols)
    rankings = {"nbvae": ranking_by_symbol(table["log2_fold_change"], symbols)}
    ours_sig = ((table["ci_low"] > 0) | (table["ci_high"] < 0)) & (table["log2_fold_change"].abs() >= 1)
    selected = {"nbvae": [s for s, ok in zip(symbols, ours_sig) if ok and s]}
    if "deseq2_stat" in table:
        rankings["deseq2"] = ranking_by_symbol(table["deseq2_stat"], symbols)
        theirs_sig = (table["deseq2_padj"] < options.alpha) & (table["deseq2_log2FoldChange"].abs() >= 1)
        selected["deseq2"] = [s for s, ok in zip(symbols, theirs_sig) if ok and s]
    n_cpus = default_n_cpus()
    result = run_enrichment(options.enrichment_method, rankings, gene_sets, selected=selected,
                            permutations=options.permutations, seed=options.seed, threads=n_cpus)
    name = f"enrichment_{options.enrichment_method}.tsv"
    result.to_csv(stage / name, sep="\t", index=False, float_format="%.6g")
    q = "fdr_q_value" if options.enrichment_method == "prerank" else "q_value"
    summary = {"method": options.enrichment_method, "file": name, "gene_sets": str(options.gene_sets),
               "n_gene_sets": len(gene_sets), "symbol_maps": [str(p) for p in options.symbol_maps],
               "uppercase_symbols": options.uppercase_symbols,
               "genes_with_symbol": int(sum(s is not None for s in symbols)),
               "rankings": {"nbvae": "log2_fold_change", "deseq2": "deseq2_stat (Wald statistic)"},
               "top_terms": {}}
    if options.enrichment_method == "ora":
        summary["selected"] = {k: len(v) for k, v in selected.items()}
    for ranking, rows in result.groupby("ranking"):
        top = rows.sort_values(q, kind="stable").head(10)
        summary["top_terms"][ranking] = [{"term": t, q: float(v)} for t, v in zip(top["term"], top[q])]
    return summary


def _save_model(folder: Path, model: NBVAE, training: TrainingData, result, report: dict) -> None:
    from nofone.steps.train import HISTORY, TRAIN_REPRESENTATIONS, nbvae_representation_table

    folder.mkdir()
    model.to("cpu")
    pd.DataFrame(result.history).to_csv(folder / HISTORY, sep="\t", index=False)
    table = nbvae_representation_table(model, training, result.latent, result.size_factors)
    pq.write_table(pa.Table.from_pandas(table, preserve_index=False), folder / TRAIN_REPRESENTATIONS)
    model.save(folder, {"training": {"cohort_de": {k: report[k] for k in ("input", "contrast", "genes")},
                                     "n_train": len(training.sample_ids), "n_test": 0,
                                     "epochs_run": report["model"]["epochs_run"]}})


def options_dict(options: CohortDEOptions) -> dict:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(options).items()}


