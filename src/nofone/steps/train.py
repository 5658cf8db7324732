"""`nofone train`: fit a model of normal expression to the normal samples of a dataset.

The config's class picks the model (`nofone.models.registry`); every model trains through the
shared loop (`nofone.models.training.fit`) and writes the same artifact layout (config.json with
its `model_type`, weights, genes, checksums, history.tsv, training_representations.parquet with
the same columns).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from nofone.errors import InputError, cuda_memory_guard
from nofone.io.atomic import check_outdir, staged_outdir
from nofone.io.dataset import Dataset
from nofone.io.split import stratified_split
from nofone.models.base import NormalModel
from nofone.models.crossfit import bounded, cross_fit_residuals, heldout_residuals
from nofone.models.nb import nb_log_prob
from nofone.models.registry import HISTORY, TRAIN_REPRESENTATIONS, model_class_for_config
from nofone.models.scaling import scaling_factor
from nofone.models.training import TrainingData, fit
from nofone.progress import progress
from nofone.stats.local_null import LocalNull, fit_local_null, save_local_null
from nofone.steps.common import resolve_device

log = logging.getLogger(__name__)
__all__ = ["HISTORY", "TRAIN_REPRESENTATIONS", "dispersion_range", "nbvae_representation_table",
           "representation_table", "train"]


@cuda_memory_guard("retry with a smaller --batch-size or on a larger GPU")  # building the model; fit() guards training
def train(input_dir: Path, outdir: Path, config: Any, *, condition_column: str = "condition",
          normal_value: str = "normal", stratify: str | None = "tissue", device: str = "auto",
          resume: bool = False, checkpoint_dir: Path | None = None, keep_checkpoints: bool = False,
          cross_fit: int = 0) -> dict:
    """Train the model whose settings `config` is (a DGD, an NB-VAE, ...) on the normal samples
    of `input_dir` and write it to `outdir`, with the local null of its calibration normals
    (the early-stopping ones, or with `cross_fit` K every normal by K fold models:
    `nofone.models.crossfit`)."""
    model_class = model_class_for_config(config)
    check_outdir(outdir)
    device = resolve_device(device)
    data = Dataset(input_dir)
    samples = data.samples
    if stratify and stratify not in samples.columns:
        log.warning("no '%s' column: the test split is not stratified", stratify)
        stratify = None
    split = stratified_split(samples, config.training.test_fraction, config.training.seed, stratify,
                             condition_column, normal_value)
    split = split[split["split"] != "excluded"].reset_index(drop=True)
    ids = split["sample_id"].tolist()
    if cross_fit and not 2 <= cross_fit <= len(ids):
        raise InputError(f"--cross-fit {cross_fit}: use 0 (none) or between 2 and the number of normals ({len(ids)})")
    chunk = data.read(ids)
    tissue = None
    if stratify:
        tissue = samples.set_index("sample_id").loc[ids, stratify].astype(str).to_numpy()
    training = TrainingData(ids, chunk.counts, split["split"].to_numpy(), tissue, chunk.measured)
    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else Path(outdir) / "checkpoints"
    t = config.training
    plan = model_class.training_plan(training, config, device)
    n_train, steps = plan.n_train, plan.steps()
    log.info("training %s on %d samples (%d held out), %d genes, up to %d optimiser steps, device %s",
             model_class.DISPLAY_NAME, n_train, len(ids) - n_train, data.n_genes, steps, device)
    if steps < plan.min_steps:
        log.warning("only %d optimiser steps (%d samples, batch %d, %d epochs): a small cohort "
                    "needs a smaller batch or more epochs to train well", steps, n_train, t.batch_size, t.epochs)
    started = time.perf_counter()
    with progress("training", t.epochs) as advance:
        outcome = fit(plan, checkpoint_dir=checkpoint_dir, resume=resume,
                      on_epoch=_show_epoch(advance, **plan.progress_fields))
    seconds = time.perf_counter() - started
    latent, scale = plan.trained_points()
    genes = data.genes[["gene_id", "gene_name"]].fillna("")
    model = model_class(plan.module, genes)
    local_null, null_source = None, None
    if t.calibrate_dispersion:
        local_null, null_source = _local_null(model_class, model, training, config, genes, device, cross_fit,
                                              checkpoint_dir, resume)
    model.to("cpu")
    table = representation_table(model, training, latent, scale)
    final = outcome.history[-1]
    summary = {
        "model_type": model.model_type,
        "n_train": n_train, "n_test": len(ids) - n_train, "n_genes": data.n_genes, "epochs": t.epochs,
        "seconds": round(seconds, 1), "device": device, "resumed_from_epoch": outcome.resumed_from,
        "final_loss_train": final["loss_train"], "final_loss_test": final.get("loss_test"),
        **plan.summary(final, table),
        "dispersion_range": dispersion_range(model, latent[training.split == "train"]),
        "best_epoch": outcome.best_epoch, "stopped_early": outcome.stopped_early,
        "dispersion_calibration": outcome.calibration, "outlier_null": outcome.outlier_null,
        "local_null": None if local_null is None else local_null.describe() | {"source": null_source},
        "input": str(Path(input_dir).resolve()), "condition": {condition_column: normal_value},
    }
    _write(outdir, model, pd.DataFrame(outcome.history), table, summary, local_null, null_source)
    _drop_checkpoints(outcome.checkpoint_dir, checkpoint_dir, keep_checkpoints)
    if cross_fit:
        _drop_checkpoints(checkpoint_dir / "cross_fit", checkpoint_dir, keep_checkpoints)
    return summary


def _local_null(model_class: type[NormalModel], model: NormalModel, training: TrainingData, config: Any,
                genes: pd.DataFrame, device: str, cross_fit: int, checkpoint_dir: Path,
                resume: bool) -> tuple[LocalNull | None, str | None]:
    """The local null and where its calibration normals come from (None without held-out normals)."""
    if cross_fit:
        with progress("cross-fitting", cross_fit) as advance:
            residuals = cross_fit_residuals(model_class, training, config, cross_fit, genes, device,
                                            checkpoint_dir / "cross_fit", resume, lambda f, info: advance(1))
        source = f"cross-fit-{cross_fit}"
    else:
        residuals, source = heldout_residuals(model, training, device), "heldout"
    if residuals is None:
        return None, None
    residuals = bounded(residuals, config.training.seed)
    null = fit_local_null(residuals.counts, residuals.mean, residuals.dispersion, residuals.measured,
                          seed=config.training.seed)
    log.info("local null from %d calibration normals (%s): tau %.2f, outlier share median %.2f%%",
             null.n_samples, source, null.tau, 100 * float(np.median(null.shares)))
    return null, source


def _show_epoch(advance: Callable[..., None], **extra: str) -> Callable[[dict], None]:
    """The progress bar's per-epoch callback: training loss, held-out loss when there is one, and
    `extra` fields (label=record key)."""
    def on_epoch(record: dict) -> None:
        info = {"loss": record["loss_train"]}
        if "loss_test" in record:
            info["test"] = record["loss_test"]
        advance(1, **info, **{label: record[key] for label, key in extra.items()})
    return on_epoch


def _write(outdir: Path, model, history: pd.DataFrame, table: pd.DataFrame, summary: dict,
           local_null: LocalNull | None, null_source: str | None) -> None:
    with staged_outdir(outdir) as stage:
        history.to_csv(stage / HISTORY, sep="\t", index=False)
        if local_null is not None:
            save_local_null(local_null, stage, null_source or "")
        pq.write_table(pa.Table.from_pandas(table, preserve_index=False), stage / TRAIN_REPRESENTATIONS)
        model.save(stage, {"training": summary})


def _drop_checkpoints(run_dir: Path | None, checkpoint_dir: Path, keep: bool) -> None:
    if not keep and run_dir is not None:
        shutil.rmtree(run_dir, ignore_errors=True)  # only this run's: the folder may be shared
        with contextlib.suppress(OSError):
            checkpoint_dir.rmdir()


@torch.no_grad()
def dispersion_range(model: NormalModel, latent: np.ndarray) -> list[float]:
    """5% and 95% quantiles of r over genes (and over the training samples' closest normals,
    where r depends on the latent point)."""
    r = model.dispersion_values(torch.as_tensor(latent, dtype=torch.float32))
    return [float(v) for v in np.quantile(r.numpy(), (0.05, 0.95))]


def nbvae_representation_table(model: NormalModel, data: TrainingData, latent: np.ndarray,
                               size_factors: np.ndarray) -> pd.DataFrame:
    """The table of a model trained with fixed size factors (the NB-VAE's, `nofone cohort-de`)."""
    return representation_table(model, data, latent, torch.as_tensor(size_factors, dtype=torch.float64))


@torch.no_grad()
def representation_table(model: NormalModel, data: TrainingData, latent: np.ndarray,
                         scale: torch.Tensor | None = None) -> pd.DataFrame:
    """Final point, component and likelihoods of every training and held-out sample; `scale`
    [N] is each sample's NB offset (default: the mean count, as the DGD is trained). A model
    without components has one (probability 1), as in the representation file."""
    z = torch.as_tensor(latent, dtype=torch.float32)
    resp = model.responsibilities(z)
    resp = np.ones((len(z), 1), np.float32) if resp is None else resp.numpy()
    x = torch.as_tensor(data.counts, dtype=torch.float64)
    measured = None if data.measured is None else torch.as_tensor(data.measured)
    relative, r = model.decode(z)
    relative = relative.double()
    if scale is None:
        scale = scaling_factor(x, relative, measured, "mean")
    ll = nb_log_prob(x, relative * scale[:, None], r.double())
    if measured is not None:
        ll = ll * measured
    n_measured = x.shape[1] if measured is None else measured.sum(-1).numpy()
    nll = -ll.sum(-1).numpy()
    table = pd.DataFrame({
        "sample_id": data.sample_ids, "split": data.split,
        "tissue": data.tissue if data.tissue is not None else None,
        "component": resp.argmax(1).astype(np.int32),
        "component_probability": resp.max(1),
        "nll": nll, "nll_per_gene": nll / n_measured,
        "latent_nll": -model.latent_log_prob(z).double().numpy(),
    })
    table["latent"] = list(latent.astype(np.float32))
    return table
