"""`nofone run` and `nofone demo`: every step on one machine, in one output folder.

    ingest -> filter -> train (or --model) -> represent -> de [-> regulators] -> summary

Samples represented and tested are all samples the model did not train on: the cases, plus
the normals held out from training, which serve as a negative control (a well-calibrated model
calls almost no genes in them). With regulator options (`nofone.steps.regulators`) every tested
sample's profile is then explained by the regulators behind it (RUN/explain).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from nofone import __version__
from nofone.enrichment.gene_sets import read_gmt
from nofone.errors import InputError
from nofone.inference.represent import SearchConfig
from nofone.io.atomic import check_outdir, staged_outdir, write_json_atomic
from nofone.io.dataset import Dataset, copy_subset
from nofone.io.ingest import IngestOptions, ingest
from nofone.io.split import stratified_split
from nofone.models.registry import DEFAULT_MODEL_TYPE, TRAIN_REPRESENTATIONS, model_class
from nofone.stats.local_null import NULL_FILE, load_local_null
from nofone.stats.nulls import check_null
from nofone.steps.de import DEOptions, differential_expression
from nofone.steps.filter import filter_dataset
from nofone.steps.pathways import PathwayOptions, pathways
from nofone.steps.regulators import RegulatorOptions, regulators_step
from nofone.steps.represent import represent
from nofone.steps.train import train

log = logging.getLogger(__name__)


@dataclass
class RunOptions:
    model: Path | None = None
    config: Any = field(default_factory=lambda: model_class(DEFAULT_MODEL_TYPE).CONFIG_CLASS())  # any model's settings
    ingest: IngestOptions = field(default_factory=IngestOptions)
    filter_genes: bool = True
    group: list[str] = field(default_factory=lambda: ["tissue"])
    protein_coding: bool = False
    condition_column: str = "condition"
    normal_value: str = "normal"
    search: SearchConfig = field(default_factory=SearchConfig)
    test: str = "equal-tail-midp"
    null: str = "auto"  # see `nofone de --null`
    q_threshold: float = 0.01
    lfc_threshold: float = 1.0
    device: str = "auto"
    resume: bool = False
    holdout_fraction: float = 0.0  # normals never seen by filter or training, tested as negative controls
    cross_fit: int = 0  # fold models that calibrate the local null (`nofone train --cross-fit`)
    regulators: RegulatorOptions | None = None  # explain the DE profiles by their regulators
    seed: int = 0
    gene_sets: Path | None = None  # a GMT file: also `nofone pathways` into pathways/


def run(samplesheet: Path, outdir: Path, options: RunOptions) -> dict:
    """Run the whole analysis into `outdir` (one sub-folder per step); returns the summary."""
    check_null(options.null, options.test)
    annotation = _first_annotation(options.ingest.annotation)
    if options.regulators is not None:
        options.regulators.check(annotation)
    steps = 5 if options.regulators is None else 6
    outdir = check_outdir(outdir)
    if options.gene_sets is not None:  # a bad GMT file or a model without a local null fail before any work
        read_gmt(options.gene_sets)
        if options.model is not None and load_local_null(options.model) is None:
            raise InputError(f"model {options.model} has no local null ({NULL_FILE}): --gene-sets needs one "
                             "(train the model with this version of `nofone train`)")
    outdir.mkdir(parents=True, exist_ok=True)
    ingest_options = options.ingest
    if options.model is not None:
        ingest_options.genes = Path(options.model) / "genes.tsv"
    log.info("1/%d ingest", steps)
    ingest(samplesheet, outdir / "data", ingest_options)
    data_dir = outdir / "data"
    model_dir = Path(options.model) if options.model else outdir / "model"
    if options.model is None:
        train_dir = _training_subset(data_dir, outdir, options)
        if options.filter_genes:
            log.info("2/%d filter (edgeR filterByExpr on the normal samples)", steps)
            samples = Dataset(train_dir).samples
            group = [g for g in options.group if g in samples.columns]
            filter_dataset(train_dir, outdir / "filtered", group=group, protein_coding=options.protein_coding,
                           annotation=options.ingest.annotation, condition=options.normal_value,
                           condition_column=options.condition_column)
            if train_dir != data_dir:  # the held-out normals: same genes, kept for testing
                kept = np.flatnonzero(np.isin(Dataset(data_dir).gene_ids, Dataset(outdir / "filtered").gene_ids))
                shutil.rmtree(outdir / "training_data", ignore_errors=True)
                os.replace(outdir / "filtered", outdir / "training_data")
                with staged_outdir(outdir / "filtered") as stage:
                    copy_subset(Dataset(data_dir), stage, gene_index=kept)
                train_dir = outdir / "training_data"
            else:
                train_dir = outdir / "filtered"
            data_dir = outdir / "filtered"
        log.info("3/%d train", steps)
        train(train_dir, model_dir, options.config, condition_column=options.condition_column,
              normal_value=options.normal_value, device=options.device, resume=options.resume,
              cross_fit=options.cross_fit)
    data = Dataset(data_dir)
    trained_on = _samples_of_split(model_dir, "train")
    targets = [s for s in data.sample_ids if s not in trained_on]
    if not targets:
        raise InputError("every sample was used to train the model: nothing left to test")
    log.info("4/%d represent %d samples", steps, len(targets))
    represent(model_dir, data_dir, outdir / "representations", options.search, targets, device=options.device)
    log.info("5/%d differential expression", steps)
    de_options = DEOptions(test=options.test, null=options.null, q_threshold=options.q_threshold,
                           lfc_threshold=options.lfc_threshold, device=options.device)
    summary = differential_expression(model_dir, outdir / "representations", data_dir, outdir / "de", de_options)
    report = _run_summary(summary, data, model_dir, options)
    if options.gene_sets is not None:
        report["pathways"] = _pathways(outdir, model_dir, options)
    if options.regulators is not None:
        log.info("6/6 regulators behind each sample's profile")
        normals_dir = train_dir if options.model is None else data_dir
        report["regulators"] = regulators_step(options.regulators, outdir, outdir / "de", normals_dir, annotation,
                                               (options.condition_column, options.normal_value))
    write_json_atomic(outdir / "run_summary.json", report)
    return report


def _first_annotation(annotation: Path | list[Path] | None) -> Path | None:
    """The annotation that gives a regulator model its chromosomes: the only or the first one."""
    if isinstance(annotation, list | tuple):
        return Path(annotation[0]) if annotation else None
    return Path(annotation) if annotation else None


def _training_subset(data_dir: Path, outdir: Path, options: RunOptions) -> Path:
    """The dataset training sees: all of it, or all but `holdout_fraction` of each tissue's normals."""
    if options.holdout_fraction <= 0:
        return data_dir
    data = Dataset(data_dir)
    stratify = "tissue" if "tissue" in data.samples.columns else None
    split = stratified_split(data.samples, options.holdout_fraction, options.seed, stratify,
                             options.condition_column, options.normal_value)
    held = set(split.loc[split["split"] == "test", "sample_id"])
    write_json_atomic(outdir / "heldout_normals.json", sorted(held))
    log.info("holding out %d normal samples from filtering and training", len(held))
    with staged_outdir(outdir / "training_data") as stage:
        copy_subset(data, stage, sample_ids=[s for s in data.sample_ids if s not in held])
    return outdir / "training_data"


def _samples_of_split(model_dir: Path, part: str) -> set[str]:
    """The samples a model trained on (`train`) or held out for early stopping (`test`)."""
    path = Path(model_dir) / TRAIN_REPRESENTATIONS
    if not path.is_file():
        return set()
    table = pq.read_table(path, columns=["sample_id", "split"]).to_pandas()
    return set(table.loc[table["split"] == part, "sample_id"])


def _pathways(outdir: Path, model_dir: Path, options: RunOptions) -> dict:
    """The per-sample gene-set test after de (skipped, and said so, when the trained model got no
    local null: no held-out normals to calibrate it)."""
    null = load_local_null(model_dir)
    if null is None or null.scores is None:
        log.warning("pathways skipped: model %s has no local null (no held-out normals to calibrate it)", model_dir)
        return {"skipped": f"model {model_dir} has no local null"}
    log.info("pathways: %s", options.gene_sets)
    summary = pathways(outdir / "de", options.gene_sets, model_dir, outdir / "pathways",
                       PathwayOptions(q_threshold=options.q_threshold))
    return {"gene_sets": str(options.gene_sets), "n_sets_tested": int(summary["n_sets_tested"].max()),
            "median_called_per_sample": float(summary["n_called"].median())}


def _run_summary(summary: pd.DataFrame, data: Dataset, model_dir: Path, options: RunOptions) -> dict:
    meta = data.samples.set_index("sample_id")
    table = summary.copy()
    column = options.condition_column
    table["group"] = meta.loc[table["sample_id"], column].astype(str).to_numpy() if column in meta else "all"
    heldout = _samples_of_split(model_dir, "test")
    table.loc[table["sample_id"].isin(heldout), "group"] = f"held-out {options.normal_value}"
    table.loc[(table["group"] == options.normal_value) & ~table["sample_id"].isin(heldout),
              "group"] = f"held-out {options.normal_value} (never trained on)"
    per_group = {
        group: {"samples": len(rows), "mean_de_genes": float(rows["n_de"].mean()),
                "mean_up": float(rows["n_up"].mean()), "mean_down": float(rows["n_down"].mean())}
        for group, rows in table.groupby("group")
    }
    return {
        "nofone_version": __version__,
        "model": str(model_dir),
        "calls": f"q < {options.q_threshold} and |log2FC| > {options.lfc_threshold}",
        "groups": per_group,
        "samples": json.loads(table.to_json(orient="records")),
    }


def score_against_truth(de_file: Path, truth_file: Path, sample_ids: list[str], q: float, lfc: float) -> dict:
    """Recall and observed FDR of calls (q < `q`, |log2FC| > `lfc`) against planted DE genes."""
    truth = pd.read_csv(truth_file, sep="\t")
    table = pq.read_table(de_file, columns=["sample_id", "gene_id", "q_value", "log2_fold_change"]).to_pandas()
    table = table[table["sample_id"].isin(sample_ids)]
    called = table[(table["q_value"] < q) & (table["log2_fold_change"].abs() > lfc)]
    planted = truth[truth["sample_id"].isin(sample_ids)]
    big = planted[planted["log2_fold_change"].abs() >= 1]
    key = lambda df: set(zip(df["sample_id"], df["gene_id"]))  # noqa: E731
    called_set, planted_set, big_set = key(called), key(planted), key(big)
    true_calls = called_set & planted_set
    direction_ok = 0
    truth_lfc = dict(zip(zip(planted["sample_id"], planted["gene_id"]), planted["log2_fold_change"]))
    for _, row in called.iterrows():
        k = (row["sample_id"], row["gene_id"])
        if k in truth_lfc and np.sign(truth_lfc[k]) == np.sign(row["log2_fold_change"]):
            direction_ok += 1
    return {
        "samples": len(sample_ids),
        "planted": len(planted_set),
        "planted_abs_lfc_ge_1": len(big_set),
        "called": len(called_set),
        "true_calls": len(true_calls),
        "recall_abs_lfc_ge_1": len(called_set & big_set) / max(1, len(big_set)),
        "observed_fdr": 1 - len(true_calls) / max(1, len(called_set)),
        "direction_correct": direction_ok / max(1, len(true_calls)),
    }
