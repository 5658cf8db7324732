"""The diffusion model's own steps: `perturb`, `augment` and `screen-gene-sets`.

Each reads a dataset folder (and a diffusion model for the first two), computes with the plain
functions of `nofone.models.diffusion.perturb` / `.augment` and `nofone.evaluate.gene_set_screen`,
and writes its tables atomically (a failed step leaves nothing).
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from nofone import __version__
from nofone.enrichment.gene_sets import match_gene_sets, read_gmt
from nofone.errors import InputError
from nofone.evaluate.gene_set_screen import ScreenOptions, expression_matrix, plot_screen, screen_gene_sets
from nofone.io.atomic import staged_outdir, write_json_atomic
from nofone.io.dataset import Dataset, GeneAlignment
from nofone.models.diffusion.augment import SampleClass, SamplerOptions, default_classes, quality, synthesize
from nofone.models.diffusion.augment import write_dataset as write_synthetic
from nofone.models.diffusion.model import Diffusion
from nofone.models.diffusion.perturb import PerturbOptions, perturb
from nofone.steps.common import resolve_device

log = logging.getLogger(__name__)


def _gene_names(genes: pd.DataFrame) -> list[str]:
    names = genes["gene_name"] if "gene_name" in genes else pd.Series([""] * len(genes))
    return names.astype("string").fillna("").tolist()


def two_groups(data: Dataset, column: str, normal: str, other: str | None) -> tuple[list[str], np.ndarray]:
    """Sample ids and labels ("normal" / the other group): `other` None takes every sample
    whose `column` is not `normal`."""
    others = _select(data, column, normal, other)
    normals = _select(data, column, normal, normal)
    wanted = set(others) | set(normals)
    ids = [s for s in data.sample_ids if s in wanted]
    labels = np.where(np.isin(ids, normals), "normal", other or "other")
    return ids, labels


def _select(data: Dataset, column: str, normal: str, value: str | None) -> list[str]:
    """Samples whose `column` is `value` (None: is not `normal`)."""
    if column not in data.samples.columns:
        raise InputError(f"{data.root}: no '{column}' column in the sample table (have {list(data.samples.columns)})")
    values = data.samples[column].astype("string").fillna("")
    chosen = values == value if value is not None else values != normal
    if not chosen.any():
        want = repr(value) if value is not None else f"other than {normal!r}"
        raise InputError(f"{data.root}: no sample has {column} {want}")
    return data.samples.loc[chosen.to_numpy(), "sample_id"].astype(str).tolist()


def perturb_step(model_dir: Path, input_dir: Path, outdir: Path, *, column: str = "condition",
                 value: str | None = None, normal: str = "normal", gmt: Path | None = None,
                 options: PerturbOptions | None = None, device: str = "auto") -> dict:
    """Bridge the tumours (`column` == `value`, or every sample not `normal`) of a dataset to
    their closest normals and write genes.tsv, sets.tsv, core.tsv and perturb_report.json."""
    options = options or PerturbOptions()
    model = Diffusion.load(model_dir, resolve_device(device))
    data = Dataset(input_dir)
    tumours = _select(data, column, normal, value)
    alignment = GeneAlignment(data.gene_ids, model.gene_ids, where=f"{input_dir}: ")
    chunk = alignment.align(data.read(tumours))
    sets = read_gmt(gmt) if gmt else None
    tables = perturb(model.module, chunk.counts, chunk.measured, model.gene_ids, _gene_names(model.genes), sets,
                     options)
    report = {"nofone_version": __version__, "model": str(Path(model_dir).resolve()), "input": str(input_dir),
              "n_tumours": len(tumours), "gene_sets": str(gmt) if gmt else None, "n_sets": len(tables["sets"]),
              "t_star": model.config.bridge.t_star, "route": options.bridge.route or model.config.bridge.route,
              "k": options.k, "core_k": options.core_k, "alpha": options.alpha,
              "n_rule_core": int(tables["core"]["rule_core"].sum()),
              "n_calibrated_core": int(tables["core"]["calibrated_core"].sum()),
              "missing_model_genes": alignment.n_missing}
    with staged_outdir(outdir) as stage:
        for name, table in tables.items():
            table.to_csv(stage / f"{name}.tsv", sep="\t", index=False)
        write_json_atomic(stage / "perturb_report.json", report)
    return report


def _real(path: Path | None, column: str, model: Diffusion, classes: list[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """(counts on the model's genes, class labels) of the samples of `path` in those classes."""
    if path is None:
        return None
    data = Dataset(path)
    if column not in data.samples.columns:
        raise InputError(f"{path}: no '{column}' column to match the classes {classes}")
    labels = data.samples[column].astype("string").fillna("")
    keep = labels.isin(classes).to_numpy()
    if not keep.any():
        raise InputError(f"{path}: no sample has a '{column}' among the model's classes {classes}")
    ids = data.samples.loc[keep, "sample_id"].astype(str).tolist()
    chunk = GeneAlignment(data.gene_ids, model.gene_ids, where=f"{path}: ").align(data.read(ids))
    if chunk.measured is not None and not chunk.measured.all():
        raise InputError(f"{path}: some of the model's genes are not measured; quality needs every gene")
    return chunk.counts, labels.to_numpy()[keep]


def augment_step(model_dir: Path, outdir: Path, *, n_per_class: int, classes: list[str] | None = None,
                 sampler: SamplerOptions | None = None, real_test: Path | None = None,
                 real_train: Path | None = None, class_column: str = "tissue", quality_seeds: int = 3,
                 permutations: int = 500, device: str = "auto") -> dict:
    """Synthetic samples per class written as a count dataset in `outdir`, with quality.tsv
    against `real_test` (and train-on-real from `real_train`) and augment_report.json."""
    sampler = sampler or SamplerOptions()
    model = Diffusion.load(model_dir, resolve_device(device))
    available = default_classes(model.module)
    chosen: list[SampleClass] = available
    if classes:
        lookup = {c.name: c for c in available}
        unknown = [c for c in classes if c not in lookup]
        if unknown:
            raise InputError(f"unknown class(es) {unknown}; the model has {sorted(lookup)}")
        chosen = [lookup[c] for c in classes]
    if n_per_class < 1:
        raise InputError("--n-per-class must be at least 1")
    names = [c.name for c in chosen]
    test = _real(real_test, class_column, model, names)
    train = _real(real_train, class_column, model, names)
    counts, samples = synthesize(model.module, chosen, n_per_class, sampler)
    table = None
    if test is not None:
        table = quality(model.module, chosen, test, train, n_per_class, list(range(sampler.seed, sampler.seed +
                                                                              quality_seeds)), sampler, permutations)
    report = {"nofone_version": __version__, "model": str(Path(model_dir).resolve()), "classes": names,
              "n_per_class": n_per_class, "sampler": asdict(sampler), "n_samples": len(samples),
              "quality": None if table is None else table.mean(numeric_only=True).to_dict()}
    with staged_outdir(outdir) as stage:
        write_synthetic(stage, counts, samples, model.genes)
        if table is not None:
            table.to_csv(stage / "quality.tsv", sep="\t", index=False)
        write_json_atomic(stage / "augment_report.json", report)
    return report


def screen_step(input_dir: Path, outdir: Path, gmt: Path, *, column: str = "condition", normal: str = "normal",
                other: str | None = None, options: ScreenOptions | None = None) -> dict:
    """Silhouette of normal vs the other group per gene set against random sets of the same
    size; screen.tsv, random_sets.tsv (every random set's silhouette), screen.png and
    screen_report.json."""
    options = options or ScreenOptions()
    data = Dataset(input_dir)
    ids, labels = two_groups(data, column, normal, other)
    chunk = data.read(ids)
    if chunk.measured is not None and not chunk.measured.all():
        raise InputError(f"{input_dir}: some genes are not measured in some samples; screen-gene-sets needs "
                         "complete counts (filter the dataset to common genes)")
    sets = match_gene_sets(read_gmt(gmt), data.gene_ids, _gene_names(data.genes), options.min_size)
    table, random = screen_gene_sets(expression_matrix(chunk.counts), labels, sets, options)
    report = {"nofone_version": __version__, "input": str(input_dir), "gene_sets": str(gmt), "n_sets": len(table),
              "n_samples": len(ids), "groups": {g: int((labels == g).sum()) for g in sorted(set(labels))},
              "options": asdict(options),
              "n_significant": {m: int((table[f"p_{m}"] < 0.05).sum()) for m in options.embeddings}}
    with staged_outdir(outdir) as stage:
        table.to_csv(stage / "screen.tsv", sep="\t", index=False)
        pd.DataFrame([{"embedding": m, "size": size, "silhouette": v} for (m, size), values in random.items()
                      for v in values]).to_csv(stage / "random_sets.tsv", sep="\t", index=False)
        plot_screen(table, stage / "screen.png", options.embeddings)
        write_json_atomic(stage / "screen_report.json", report)
    return report
