"""Training the DGD: decoder, mixture prior, dispersions and one representation per sample.

Loss: sum over samples and genes of -log NB + sum over samples of -log GMM(z) - log prior of
the GMM parameters (counted once per epoch: each batch carries its share). Decoder, dispersions
and GMM step once per batch; representations accumulate their gradients over the epoch and
step once per epoch (as in the paper). Held-out samples get representations of their own that
are optimised against the frozen decoder and GMM: they never update either (bulkDGD v1 stepped
both on test batches too).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nofone.errors import InputError
from nofone.models.dgd.config import DGDConfig
from nofone.models.dgd.module import DGDModule
from nofone.models.scaling import scaling_factor
from nofone.models.training import (
    Checkpointing,
    TrainingData,
    TrainingOutcome,
    TrainingState,
    calibrate_on_heldout,
    component_purity,
)

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class TrainResult(TrainingOutcome):
    module: DGDModule
    latent: np.ndarray  # [N, D], rows in the order of TrainingData


class _State(TrainingState):
    """The DGD's checkpointed state: with its training and held-out representations."""

    def __init__(self, module: DGDModule, z_train: torch.nn.Parameter, z_test: torch.nn.Parameter,
                 config: DGDConfig):
        t = config.training
        betas = tuple(t.betas)
        super().__init__(module, {
            "decoder": torch.optim.AdamW(module.decoder.mean_parameters(), lr=t.lr_decoder, betas=betas,
                                         weight_decay=t.weight_decay),
            "dispersion": torch.optim.Adam(module.dispersion_param_groups(t.lr_decoder), lr=t.lr_dispersion,
                                           betas=betas),
            "gmm": torch.optim.Adam(module.gmm.parameters(), lr=t.lr_gmm, betas=betas),
            "z_train": torch.optim.Adam([z_train], lr=t.lr_representation, betas=betas),
            "z_test": torch.optim.Adam([z_test], lr=t.lr_representation, betas=betas),
        }, t.seed)
        self.z_train, self.z_test = z_train, z_test

    def extra_tensors(self) -> dict[str, torch.Tensor]:
        return {"z_train": self.z_train, "z_test": self.z_test}

    def load_extra_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.z_train.copy_(tensors["z_train"])
        self.z_test.copy_(tensors["z_test"])


def train_dgd(data: TrainingData, config: DGDConfig, *, device: str = "cpu",
              checkpoint_dir: Path | None = None, resume: bool = False,
              on_epoch: Callable[[dict], None] | None = None) -> TrainResult:
    """Fit the DGD to `data`; checkpoints every `training.checkpoint_every` epochs."""
    t = config.training
    torch.manual_seed(t.seed)
    is_train = data.split == "train"
    if is_train.sum() == 0:
        raise InputError("no training samples (every normal sample is in the test split)")
    counts = torch.as_tensor(data.counts, dtype=torch.float64)
    measured = None if data.measured is None or data.measured.all() else torch.as_tensor(data.measured)
    n_genes = counts.shape[1]
    module = DGDModule(config, n_genes).to(device)
    train_idx = np.flatnonzero(is_train)
    test_idx = np.flatnonzero(~is_train)
    scale = scaling_factor(counts, None if measured is None else torch.ones_like(counts),
                           measured, "mean")
    if (scale <= 0).any():
        bad = [data.sample_ids[i] for i in np.flatnonzero((scale <= 0).numpy())[:5]]
        raise InputError(f"samples with no counts over the model's genes: {bad}")
    z0 = _initial_latent(counts, scale, train_idx, config)
    z_train = torch.nn.Parameter(z0[train_idx].clone().to(device))
    z_test = torch.nn.Parameter(z0[test_idx].clone().to(device))
    state = _State(module, z_train, z_test, config)
    checkpoints = Checkpointing(checkpoint_dir, data.fingerprint(), json.dumps(config.to_dict(), sort_keys=True))
    resumed_from = checkpoints.resume(state, resume)
    if resumed_from is None:
        with torch.no_grad():
            relative = (counts[train_idx] / scale[train_idx, None]).mean(0)
            module.initialise_output_bias(relative.to(device))
            if t.init == "pca":
                module.gmm.initialise_from(z_train.detach().cpu().numpy(), t.seed)
            else:
                _softball_means(module, t.seed)
    module.train()
    x_dev = counts.to(device)
    scale_dev = scale.to(device)
    m_dev = None if measured is None else measured.to(device)
    n_train = len(train_idx)
    train_rows = torch.as_tensor(train_idx)
    test_rows = torch.as_tensor(test_idx)
    early = t.early_stopping and len(test_idx) > 0
    stopped = state.bad_evaluations >= t.patience if early else False
    while state.epoch < t.epochs and not stopped:
        started = time.perf_counter()
        record = _run_epoch(state, x_dev, scale_dev, m_dev, train_rows, test_rows, n_train, t.batch_size,
                            t.latent_noise)
        state.epoch += 1
        record |= _diagnostics(state, data.tissue, train_idx)
        if early and (state.epoch % t.eval_every == 0 or state.epoch == t.epochs):
            nll = _evaluate_heldout(state, x_dev, scale_dev, m_dev, test_rows, t)
            record["heldout_nll_per_gene"] = nll
            stopped = state.observe(nll, t.patience)
        state.end_epoch(record, started, on_epoch)
        checkpoints.save_if_due(state, t.checkpoint_every, last=state.epoch == t.epochs or stopped)
    if early:
        state.restore_best_epoch("held-out NLL")
    calibration = outlier_null = None
    if t.calibrate_dispersion and len(test_idx):
        _evaluate_heldout(state, x_dev, scale_dev, m_dev, test_rows, t)
        calibration, outlier_null = calibrate_on_heldout(module, x_dev[test_rows], state.z_test.detach(),
                                                         scale_dev[test_rows],
                                           None if m_dev is None else m_dev[test_rows])
    module.eval()
    latent = torch.empty(len(data.sample_ids), config.latent_dim)
    latent[train_idx] = z_train.detach().cpu()
    latent[test_idx] = z_test.detach().cpu()
    return TrainResult(module=module.cpu(), latent=latent.numpy(), history=state.history, resumed_from=resumed_from,
                       best_epoch=state.best_epoch if early else None, stopped_early=stopped,
                       calibration=calibration, outlier_null=outlier_null, checkpoint_dir=checkpoints.folder)


def _run_epoch(state: _State, x: torch.Tensor, scale: torch.Tensor, measured: torch.Tensor | None,
               train_rows: torch.Tensor, test_rows: torch.Tensor, n_train: int, batch_size: int,
               noise: float = 0.0) -> dict:
    module, opt = state.module, state.optimizers
    order = torch.randperm(len(train_rows), generator=state.generator)
    opt["z_train"].zero_grad()
    totals = {"nb": 0.0, "latent": 0.0}
    for start in range(0, len(order), batch_size):
        local = order[start:start + batch_size]
        rows = train_rows[local]
        for name in ("decoder", "dispersion", "gmm"):
            opt[name].zero_grad()
        z = state.z_train[local.to(state.z_train.device)]
        z_decoded = z
        if noise > 0:
            z_decoded = z + noise * torch.randn(z.shape, generator=state.generator).to(z.device)
        nb = module.count_log_prob(x[rows], z_decoded, scale[rows], None if measured is None else measured[rows])
        latent = module.gmm.log_prob(z)
        prior = module.gmm.prior_log_prob() * (len(local) / n_train)
        loss = -(nb.sum() + latent.sum().double() + prior.double())
        loss.backward()
        for name in ("decoder", "dispersion", "gmm"):
            opt[name].step()
        totals["nb"] -= float(nb.detach().sum())
        totals["latent"] -= float(latent.detach().sum())
    opt["z_train"].step()
    record = {
        "loss_train": (totals["nb"] + totals["latent"]) / n_train,
        "nb_train": totals["nb"] / n_train,
        "latent_train": totals["latent"] / n_train,
    }
    if len(test_rows):
        record |= _test_epoch(state, x, scale, measured, test_rows, batch_size)
    return record


def _test_epoch(state: _State, x, scale, measured, test_rows, batch_size) -> dict:
    """Optimise held-out representations against the frozen decoder and GMM."""
    module, optimizer = state.module, state.optimizers["z_test"]
    optimizer.zero_grad()
    grad = torch.zeros_like(state.z_test)
    nb_total = latent_total = 0.0
    for start in range(0, len(test_rows), batch_size):
        rows = test_rows[start:start + batch_size]
        z = state.z_test[start:start + batch_size]
        nb = module.count_log_prob(x[rows], z, scale[rows], None if measured is None else measured[rows])
        latent = module.gmm.log_prob(z)
        loss = -(nb.sum() + latent.sum().double())
        (g,) = torch.autograd.grad(loss, [state.z_test])
        grad += g
        nb_total -= float(nb.detach().sum())
        latent_total -= float(latent.detach().sum())
    state.z_test.grad = grad
    optimizer.step()
    n = len(test_rows)
    return {"loss_test": (nb_total + latent_total) / n, "nb_test": nb_total / n, "latent_test": latent_total / n}


def _evaluate_heldout(state: _State, x, scale, measured, test_rows, t) -> float:
    """Refine the held-out representations against the frozen model; their NLL per gene."""
    module = state.module
    optimizer = torch.optim.Adam([state.z_test], lr=t.lr_representation, betas=tuple(t.betas))
    m = None if measured is None else measured[test_rows]
    for _ in range(t.eval_steps):
        optimizer.zero_grad()
        nb = module.count_log_prob(x[test_rows], state.z_test, scale[test_rows], m)
        loss = -(nb.sum() + module.gmm.log_prob(state.z_test).sum().double())
        (grad,) = torch.autograd.grad(loss, [state.z_test])
        state.z_test.grad = grad
        optimizer.step()
    state.z_test.grad = None
    with torch.no_grad():
        nb = module.count_log_prob(x[test_rows], state.z_test, scale[test_rows], m)
    n_values = float(m.sum()) if m is not None else nb.numel() * x.shape[1]
    return float(-nb.sum() / n_values)


@torch.no_grad()
def _diagnostics(state: _State, tissue: np.ndarray | None, train_idx: np.ndarray) -> dict:
    """Component occupancy, tissue purity and dispersion spread: the collapse warnings."""
    module = state.module
    component = module.gmm.component_log_prob(state.z_train).argmax(-1).cpu().numpy()
    counts = np.bincount(component, minlength=module.gmm.n_components)
    r = module.dispersion_values(state.z_train).cpu().numpy()
    out = {
        "components_used": int((counts > 0).sum()),
        "largest_component_fraction": float(counts.max() / max(1, counts.sum())),
        "dispersion_median": float(np.median(r)),
        "dispersion_q05": float(np.quantile(r, 0.05)),
        "dispersion_q95": float(np.quantile(r, 0.95)),
    }
    if tissue is not None:
        out["tissue_purity"] = component_purity(component, tissue[train_idx])
    return out


def _initial_latent(counts: torch.Tensor, scale: torch.Tensor, train_idx: np.ndarray,
                    config: DGDConfig) -> torch.Tensor:
    """PCA of log-normalised counts (fit on the training samples), or zeros (the paper)."""
    n, d = counts.shape[0], config.latent_dim
    if config.training.init == "zeros":
        return torch.zeros(n, d)
    logx = torch.log1p(counts / scale[:, None]).to(torch.float32)
    centre = logx[train_idx].mean(0)
    centred = logx - centre
    k = min(d, len(train_idx) - 1, counts.shape[1])
    z = torch.zeros(n, d)
    if k >= 1:
        torch.manual_seed(config.training.seed)
        _, _, v = torch.pca_lowrank(centred[train_idx], q=k, center=False, niter=4)
        projected = centred @ v[:, :k]
        sd = projected[train_idx, 0].std().clamp_min(1e-6)
        z[:, :k] = projected / sd
    return z


def _softball_means(module: DGDModule, seed: int) -> None:
    """The paper's start: component means drawn uniformly from the softball's ball."""
    g = torch.Generator().manual_seed(seed)
    gmm = module.gmm
    k, d = gmm.means.shape
    direction = torch.randn(k, d, generator=g)
    direction /= direction.norm(dim=-1, keepdim=True)
    radius = gmm.config.softball_radius * torch.rand(k, 1, generator=g) ** (1.0 / d)
    with torch.no_grad():
        gmm.means.copy_(direction * radius)
