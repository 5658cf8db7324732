"""`nofone regulators train`: DEcode's network on gene x feature tables, with its baselines and
attributions, saved as a regulator model.

1. Feature tables and targets are read and placed on Ensembl ids (through the annotation); the
   genes modelled are those with targets and features on a known chromosome.
2. Regulators binding fewer than `min_genes_bound` of them and constant columns are dropped.
3. Genes on chromosome 1 are the test set, 10% of the others the validation set (early stopping,
   choice of seed, baselines' settings); structure gaps get the training median; features are
   scaled robustly and targets standardised on the training genes.
4. The network is trained over `seeds` seeds; the one with the best validation loss is kept,
   all are saved (explain can measure stability over them).
5. On the test genes: Spearman (and AUROC where there are positives) of DEcode, ridge and
   boosted trees; DeepLIFT mean attributions per target and feature for every seed (stability),
   with completeness and Integrated Gradients checks, and each target's q-values from the head
   refitted on the test genes (`nofone.regulators.head`; the trunk never saw them).

Outputs in `outdir`: the model artifact (config.json, weights.safetensors, genes.tsv,
gene_info.tsv, features.tsv, checksums.sha256) and performance.tsv, attribution.tsv,
history.tsv, train_report.json.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr

from nofone import __version__
from nofone.errors import InputError
from nofone.io.atomic import staged_outdir, write_json_atomic
from nofone.regulators.attribution import check_attributions, unit_attribution_means
from nofone.regulators.baselines import boosted_trees_baseline, ridge_baseline
from nofone.regulators.features import (
    MIN_GENES_BOUND,
    REGULATOR,
    STRUCTURE,
    FeatureMatrix,
    fill_structure,
    informative_features,
    join_tables,
    read_feature_table,
)
from nofone.regulators.genes import GeneAnnotation
from nofone.regulators.head import HeadInputs, fit_profile
from nofone.regulators.model import RegulatorModel
from nofone.regulators.network import NetworkConfig, fit_seeds
from nofone.regulators.scaling import RobustScaler
from nofone.regulators.scores import score_predictions
from nofone.regulators.split import TEST, TRAIN, VALIDATION, chromosome_split
from nofone.regulators.targets import Targets, read_targets

log = logging.getLogger(__name__)

PERFORMANCE_FILE = "performance.tsv"
ATTRIBUTION_FILE = "attribution.tsv"
HISTORY_FILE = "history.tsv"
REPORT_FILE = "train_report.json"


@dataclass
class TrainOptions:
    features: list[Path]
    targets: str  # tissue-de, de-prior or a table path
    structure: list[Path] = field(default_factory=list)
    input: Path | None = None
    annotation: Path | None = None
    network: NetworkConfig = field(default_factory=NetworkConfig)
    test_chromosomes: tuple[str, ...] = ("1",)
    validation_fraction: float = 0.1
    split_seed: int = 0
    min_genes_bound: int = MIN_GENES_BOUND
    min_cpm: float = 1.0
    normals: tuple[str, str] = ("condition", "normal")  # tissue-de: the column and value of normal samples
    baselines: bool = True
    seed: int = 0


@dataclass
class Prepared:
    """The matrices every method sees."""

    features: FeatureMatrix
    targets: Targets
    chromosomes: np.ndarray
    split: np.ndarray
    scaler: RobustScaler
    scaled: np.ndarray
    y_mean: np.ndarray
    y_sd: np.ndarray
    dropped: dict


def prepare(options: TrainOptions) -> Prepared:
    if options.annotation is None:
        raise InputError("--annotation is needed: it maps symbols to Ensembl ids and gives each gene's chromosome "
                         "(chromosome 1 is the test set; permutations stay within chromosomes)")
    if not options.features:
        raise InputError("give at least one regulator table (--features): structure alone has no regulators")
    annotation = GeneAnnotation.read(options.annotation)
    tables = [read_feature_table(p, REGULATOR, annotation) for p in options.features]
    tables += [read_feature_table(p, STRUCTURE, annotation) for p in options.structure]
    targets = read_targets(options.targets, options.input, annotation, options.min_cpm, options.normals)
    in_targets = set(targets.gene_ids)
    for table in tables:
        if not in_targets.intersection(table.gene_ids):
            raise InputError(f"feature table {table.path} shares no gene with the targets ({targets.source}; "
                             f"table genes look like {list(table.gene_ids[:3])}, target genes like "
                             f"{list(targets.gene_ids[:3])})")
    features = join_tables(tables)
    chromosomes_all = annotation.chromosomes_of(features.gene_ids)
    keep = np.array([g in in_targets for g in features.gene_ids]) & (chromosomes_all != "")
    features = features.select_genes(np.flatnonzero(keep))
    chromosomes = chromosomes_all[keep]
    position = {g: i for i, g in enumerate(targets.gene_ids)}
    rows = np.array([position[g] for g in features.gene_ids])
    targets = Targets(targets.gene_ids[rows], targets.gene_names[rows], targets.names, targets.values[rows],
                      targets.kind, targets.source, targets.positive_threshold, targets.notes)
    names = np.where(features.gene_names == "", targets.gene_names, features.gene_names)
    features = FeatureMatrix(features.gene_ids, names, features.names, features.kinds, features.sources,
                             features.values, features.tables)
    informative, dropped = informative_features(features, options.min_genes_bound)
    features = features.select_features(informative)
    split = chromosome_split(chromosomes, options.test_chromosomes, options.validation_fraction, options.split_seed)
    training = split == TRAIN
    medians = fill_structure(features, training)
    scaler = RobustScaler.fit(features.values[training])
    scaled = scaler.transform(features.values)
    y = targets.values[training]
    y_mean = np.nanmean(y, 0)
    y_sd = np.nanstd(y, 0)
    if np.isnan(y_mean).any():
        empty = targets.names[int(np.flatnonzero(np.isnan(y_mean))[0])]
        raise InputError(f"target {empty!r} has no value for any training gene")
    y_sd = np.where(y_sd > 0, y_sd, 1.0)
    dropped["structure_medians"] = {n: float(m) for n, m in zip(features.names, medians) if not np.isnan(m)}
    return Prepared(features, targets, chromosomes, split, scaler, scaled, y_mean, y_sd, dropped)


def train_regulators(outdir: Path, options: TrainOptions) -> dict:
    """Train, evaluate and save; returns the report (also written to train_report.json)."""
    started = time.perf_counter()
    data = prepare(options)
    x, split = data.scaled, data.split
    y = (data.targets.values - data.y_mean) / data.y_sd
    train, validation, test = (split == TRAIN), (split == VALIDATION), (split == TEST)
    fits = fit_seeds(x[train], y[train], x[validation], y[validation], options.network, options.seed)
    best = int(np.argmin([f.validation_loss for f in fits]))
    model = RegulatorModel(
        config={"targets_kind": data.targets.kind, "targets_source": data.targets.source,
                "positive_threshold": data.targets.positive_threshold,
                "test_chromosomes": list(options.test_chromosomes),
                "validation_fraction": options.validation_fraction, "split_seed": options.split_seed},
        network_config=options.network, genes=_gene_info(data), features=_feature_info(data),
        scaler=data.scaler, raw_features=data.features.values.astype(np.float32), target_names=data.targets.names,
        target_mean=data.y_mean, target_sd=data.y_sd, states=[f.state for f in fits], best=best,
    )
    observed = data.targets.values[test]
    predictions = {"decode": model.predict(np.flatnonzero(test))}
    chosen = {}
    if options.baselines:
        ridge, chosen["ridge_alpha"] = ridge_baseline(x[train], y[train], x[validation], y[validation], x[test])
        trees, chosen["boosted_trees"] = boosted_trees_baseline(x[train], y[train], x[validation], y[validation],
                                                                x[test], options.seed)
        predictions["ridge"] = ridge * data.y_sd + data.y_mean
        predictions["boosted_trees"] = trees * data.y_sd + data.y_mean
    performance = score_predictions(observed, predictions, data.targets.names, data.targets.positive_threshold)
    attribution, checks = test_gene_attributions(model, np.flatnonzero(test), data.targets.values[test], options.seed)
    history = pd.DataFrame([row for f in fits for row in f.history])
    report = {
        "nofone_version": __version__, "targets": {"kind": data.targets.kind, "source": data.targets.source,
                                                   "names": data.targets.names, **data.targets.notes},
        "features": {"tables": data.features.tables, "n_features": data.features.n_features,
                     "n_regulators": int(data.features.regulator_mask().sum()), "dropped": data.dropped},
        "genes": {"n": len(split), "train": int(train.sum()), "validation": int(validation.sum()),
                  "test": int(test.sum()), "test_chromosomes": list(options.test_chromosomes)},
        "network": options.network.to_dict(),
        "seeds": [{"seed": f.seed, "validation_loss": f.validation_loss, "best_epoch": f.best_epoch} for f in fits],
        "best_seed": fits[best].seed, "baseline_settings": chosen,
        "performance": _performance_summary(performance), "attribution_checks": checks,
        "seconds": round(time.perf_counter() - started, 1),
    }
    with staged_outdir(outdir) as stage:
        performance.to_csv(stage / PERFORMANCE_FILE, sep="\t", index=False, float_format="%.6g")
        attribution.to_csv(stage / ATTRIBUTION_FILE, sep="\t", index=False, float_format="%.6g")
        history.to_csv(stage / HISTORY_FILE, sep="\t", index=False, float_format="%.6g")
        write_json_atomic(stage / REPORT_FILE, report)
        model.save(stage)
    return report


def _gene_info(data: Prepared) -> pd.DataFrame:
    return pd.DataFrame({"gene_id": data.features.gene_ids, "gene_name": data.features.gene_names,
                         "chromosome": data.chromosomes, "split": data.split})


def _feature_info(data: Prepared) -> pd.DataFrame:
    f = data.features
    reference = np.array([0.0 if k == REGULATOR else data.dropped["structure_medians"][n]
                          for n, k in zip(f.names, f.kinds)])
    return pd.DataFrame({"feature": f.names, "kind": f.kinds, "source": f.sources,
                         "log1p": data.scaler.log1p, "center": data.scaler.center, "scale": data.scaler.scale,
                         "reference": reference, "genes_bound": (f.values > 0).sum(0)})


def _performance_summary(performance: pd.DataFrame) -> dict:
    """Mean Spearman over the DE targets (tissues), and each named target, per method."""
    out: dict = {}
    for method, rows in performance.groupby("method", sort=False):
        per = rows.set_index("target")
        out[method] = {"mean_spearman": float(per["spearman"].mean()),
                       "spearman": per["spearman"].round(4).to_dict(),
                       "auroc": per["auroc"].dropna().round(4).to_dict()}
    return out


def test_gene_attributions(model: RegulatorModel, test_rows: np.ndarray, observed: np.ndarray, seed: int = 0
                           ) -> tuple[pd.DataFrame, dict]:
    """Per target and feature on the test genes: the network's mean DeepLIFT attribution (best
    seed; in target units), its spread and rank agreement over seeds, and the q-value of the
    head refitted to the observed target on those genes (the trunk never saw them)."""
    scaled = model.scaled(test_rows)
    reference = model.reference()
    chromosomes = model.genes["chromosome"].to_numpy(dtype=object)[test_rows]
    regulators = model.features["kind"].to_numpy() == REGULATOR
    per_seed, unit_means = [], []
    for index in range(len(model.states)):
        net = model.network(index)
        unit_means.append(unit_attribution_means(net.trunk, scaled, reference))  # [units, F]
        per_seed.append((net.head.weight.detach().double().numpy() @ unit_means[-1]) * model.target_sd[:, None])
    per_seed = np.stack(per_seed)  # [seeds, targets, F]
    best_net = model.network()
    with torch.no_grad():
        units = best_net.trunk(torch.as_tensor(scaled)).double().numpy()
    inputs = HeadInputs.build(units, scaled, unit_means[model.best], reference, chromosomes,
                              model.features["kind"].to_numpy() == STRUCTURE)
    tables, checks = [], {"completeness_max_abs": 0.0, "ig_spearman": [], "seed_spearman": []}
    for t, name in enumerate(model.target_names):
        _, check = check_attributions(best_net, scaled, reference, target=t, max_genes=300, seed=seed)
        checks["completeness_max_abs"] = max(checks["completeness_max_abs"], check.completeness_max_abs)
        checks["ig_spearman"].append(check.ig_spearman)
        pairs = [spearmanr(per_seed[a, t, regulators], per_seed[b, t, regulators]).statistic
                 for a in range(len(per_seed)) for b in range(a + 1, len(per_seed))]
        checks["seed_spearman"].append(float(np.mean(pairs)) if pairs else float("nan"))
        known = ~np.isnan(observed[:, t])
        fit = fit_profile(inputs.subset(known), observed[known, t], np.ones(int(known.sum())), seed)
        tables.append(pd.DataFrame({
            "target": name, "feature": model.feature_names, "kind": model.features["kind"].to_numpy(),
            "mean_attribution": per_seed[model.best, t], "seed_sd": per_seed[:, t].std(0),
            "refit_attribution": fit.attribution, "z": fit.z, "p_value": fit.p_value, "q_value": fit.q_value,
        }))
    summary = {"completeness_max_abs": checks["completeness_max_abs"],
               "ig_spearman_median": float(np.median(checks["ig_spearman"])),
               "seed_spearman_median": float(np.nanmedian(checks["seed_spearman"])) if len(per_seed) > 1 else None,
               "per_target": {n: {"ig_spearman": round(a, 4), "seed_spearman": round(b, 4)}
                              for n, a, b in zip(model.target_names, checks["ig_spearman"], checks["seed_spearman"])}}
    return pd.concat(tables, ignore_index=True), summary

