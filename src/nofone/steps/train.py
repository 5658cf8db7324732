"""`nofone train`: fit a model of normal expression to the normal samples of a dataset.

The config's type picks the model: a `DGDConfig` trains the DGD, an `NBVAEConfig` the NB-VAE.
Both write the same artifact layout (config.json with its `model_type`, weights, genes,
checksums, history.tsv, training_representations.parquet with the same columns).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from nofone.io.atomic import check_outdir, staged_outdir
from nofone.io.dataset import Dataset
from nofone.io.split import stratified_split
from nofone.models.base import ArtifactModel
from nofone.models.dgd.config import DGDConfig
from nofone.models.dgd.model import DGD
from nofone.models.dgd.train import train_dgd
from nofone.models.nb import nb_log_prob
from nofone.models.nbvae.config import NBVAEConfig
from nofone.models.nbvae.model import NBVAE
from nofone.models.nbvae.train import epochs_to_steps as nbvae_steps
from nofone.models.nbvae.train import train_nbvae
from nofone.models.scaling import scaling_factor
from nofone.models.training import TrainingData, component_purity, epochs_to_steps
from nofone.progress import progress
from nofone.steps.common import resolve_device

log = logging.getLogger(__name__)
HISTORY = "history.tsv"
TRAIN_REPRESENTATIONS = "training_representations.parquet"


def train(input_dir: Path, outdir: Path, config: DGDConfig | NBVAEConfig, *, condition_column: str = "condition",
          normal_value: str = "normal", stratify: str | None = "tissue", device: str = "auto",
          resume: bool = False, checkpoint_dir: Path | None = None, keep_checkpoints: bool = False) -> dict:
    """Train a DGD or an NB-VAE (by the type of `config`) on the normal samples of `input_dir`
    and write the model to `outdir`."""
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
    chunk = data.read(ids)
    tissue = None
    if stratify:
        tissue = samples.set_index("sample_id").loc[ids, stratify].astype(str).to_numpy()
    training = TrainingData(ids, chunk.counts, split["split"].to_numpy(), tissue, chunk.measured)
    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else Path(outdir) / "checkpoints"
    if isinstance(config, NBVAEConfig):
        return _train_nbvae(training, data, input_dir, outdir, config, device=device, resume=resume,
                            checkpoint_dir=checkpoint_dir, keep_checkpoints=keep_checkpoints,
                            condition={condition_column: normal_value})
    n_train = int((training.split == "train").sum())
    steps = epochs_to_steps(n_train, config.training.batch_size, config.training.epochs)
    log.info("training on %d samples (%d held out), %d genes, %d decoder steps, device %s",
             n_train, len(ids) - n_train, data.n_genes, steps, device)
    if steps < 1000:
        log.warning("only %d decoder optimiser steps (%d samples, batch %d, %d epochs): a small cohort "
                    "needs a smaller batch or more epochs to train well", steps, n_train,
                    config.training.batch_size, config.training.epochs)
    started = time.perf_counter()
    with progress("training", config.training.epochs) as advance:
        result = train_dgd(training, config, device=device, checkpoint_dir=checkpoint_dir, resume=resume,
                           on_epoch=_show_epoch(advance, comps="components_used"))
    seconds = time.perf_counter() - started
    model = DGD(result.module, data.genes[["gene_id", "gene_name"]].fillna(""))
    table = representation_table(model, training, result.latent)
    history = pd.DataFrame(result.history)
    final = result.history[-1]
    summary = {
        "n_train": n_train, "n_test": len(ids) - n_train, "n_genes": data.n_genes,
        "epochs": config.training.epochs, "decoder_steps": steps, "seconds": round(seconds, 1),
        "device": device, "resumed_from_epoch": result.resumed_from,
        "final_loss_train": final["loss_train"], "final_loss_test": final.get("loss_test"),
        "components_used": final["components_used"],
        "largest_component_fraction": final["largest_component_fraction"],
        "tissue_purity_train": final.get("tissue_purity"),
        "tissue_purity_test": _purity(table, "test") if tissue is not None else None,
        "dispersion_range": dispersion_range(model, result.latent[training.split == "train"]),
        "best_epoch": result.best_epoch, "stopped_early": result.stopped_early,
        "dispersion_calibration": result.calibration, "outlier_null": result.outlier_null,
        "input": str(Path(input_dir).resolve()), "condition": {condition_column: normal_value},
        "model_type": model.model_type,
    }
    if final["largest_component_fraction"] > 0.9 and model.n_components > 1:
        log.warning("%.0f%% of training samples sit in one mixture component: the GMM may have "
                    "collapsed", 100 * final["largest_component_fraction"])
    _write(outdir, model, history, table, summary)
    _drop_checkpoints(result.checkpoint_dir, checkpoint_dir, keep_checkpoints)
    return summary


def _show_epoch(advance: Callable[..., None], **extra: str) -> Callable[[dict], None]:
    """The progress bar's per-epoch callback: training loss, held-out loss when there is one, and
    `extra` fields (label=record key)."""
    def on_epoch(record: dict) -> None:
        info = {"loss": record["loss_train"]}
        if "loss_test" in record:
            info["test"] = record["loss_test"]
        advance(1, **info, **{label: record[key] for label, key in extra.items()})
    return on_epoch


def _write(outdir: Path, model, history: pd.DataFrame, table: pd.DataFrame, summary: dict) -> None:
    with staged_outdir(outdir) as stage:
        history.to_csv(stage / HISTORY, sep="\t", index=False)
        pq.write_table(pa.Table.from_pandas(table, preserve_index=False), stage / TRAIN_REPRESENTATIONS)
        model.save(stage, {"training": summary})


def _drop_checkpoints(run_dir: Path | None, checkpoint_dir: Path, keep: bool) -> None:
    if not keep and run_dir is not None:
        shutil.rmtree(run_dir, ignore_errors=True)  # only this run's: the folder may be shared
        with contextlib.suppress(OSError):
            checkpoint_dir.rmdir()


def _train_nbvae(training: TrainingData, data: Dataset, input_dir: Path, outdir: Path, config: NBVAEConfig, *,
                 device: str, resume: bool, checkpoint_dir: Path, keep_checkpoints: bool, condition: dict) -> dict:
    """The NB-VAE branch of `train`: same split, same outputs, its own summary."""
    t = config.training
    n_train = int((training.split == "train").sum())
    steps = nbvae_steps(n_train, t.batch_size, t.epochs)
    log.info("training an NB-VAE on %d samples (%d held out), %d genes, up to %d optimiser steps, device %s",
             n_train, len(training.sample_ids) - n_train, data.n_genes, steps, device)
    started = time.perf_counter()
    with progress("training", t.epochs) as advance:
        result = train_nbvae(training, config, device=device, checkpoint_dir=checkpoint_dir, resume=resume,
                             on_epoch=_show_epoch(advance))
    seconds = time.perf_counter() - started
    model = NBVAE(result.module, data.genes[["gene_id", "gene_name"]].fillna(""))
    table = nbvae_representation_table(model, training, result.latent, result.size_factors)
    final = result.history[-1]
    summary = {
        "model_type": model.model_type,
        "n_train": n_train, "n_test": len(training.sample_ids) - n_train, "n_genes": data.n_genes,
        "epochs": t.epochs, "epochs_run": len(result.history), "optimizer_steps": steps,
        "seconds": round(seconds, 1), "device": device, "resumed_from_epoch": result.resumed_from,
        "final_loss_train": final["loss_train"], "final_loss_test": final.get("loss_test"),
        "components_used": 1, "active_latent_dims": final["active_latent_dims"],
        "dispersion_range": dispersion_range(model, result.latent),
        "best_epoch": result.best_epoch, "stopped_early": result.stopped_early,
        "dispersion_calibration": result.calibration, "outlier_null": result.outlier_null,
        "size_factors": {"method": result.size_factor_method,
                         "reference_genes": model.module.size_factor_reference().n_reference_genes},
        "input": str(Path(input_dir).resolve()), "condition": condition,
    }
    _write(outdir, model, pd.DataFrame(result.history), table, summary)
    _drop_checkpoints(result.checkpoint_dir, checkpoint_dir, keep_checkpoints)
    return summary


@torch.no_grad()
def dispersion_range(model: ArtifactModel, latent: np.ndarray) -> list[float]:
    """5% and 95% quantiles of r over genes (and over the training samples' closest normals,
    where r depends on the latent point)."""
    r = model.dispersion_values(torch.as_tensor(latent, dtype=torch.float32))
    return [float(v) for v in np.quantile(r.numpy(), (0.05, 0.95))]


def nbvae_representation_table(model: NBVAE, data: TrainingData, latent: np.ndarray,
                               size_factors: np.ndarray) -> pd.DataFrame:
    """The DGD's columns for an NB-VAE: posterior mean, one component, NLL at the training offset."""
    return representation_table(model, data, latent, torch.as_tensor(size_factors, dtype=torch.float64))


def _purity(table: pd.DataFrame, part: str) -> float | None:
    rows = table[table["split"] == part]
    if rows.empty:
        return None
    return component_purity(rows["component"].to_numpy(), rows["tissue"].astype(str).to_numpy())


@torch.no_grad()
def representation_table(model: ArtifactModel, data: TrainingData, latent: np.ndarray,
                         scale: torch.Tensor | None = None) -> pd.DataFrame:
    """Final latent, component and likelihoods of every training and held-out sample; `scale`
    [N] is each sample's NB offset (default: the mean count, as the DGD is trained)."""
    z = torch.as_tensor(latent, dtype=torch.float32)
    resp = model.responsibilities(z).numpy()
    x = torch.as_tensor(data.counts, dtype=torch.float64)
    measured = None if data.measured is None else torch.as_tensor(data.measured)
    relative = model.relative_means(z).double()
    if scale is None:
        scale = scaling_factor(x, relative, measured, "mean")
    ll = nb_log_prob(x, relative * scale[:, None], model.dispersion_at(z).double())
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
