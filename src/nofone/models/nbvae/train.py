"""Training the NB-VAE: encoder, decoder and gene-wise dispersions by the ELBO.

Loss per batch: mean over its samples of -log NB(x | sf * rho(z)) + beta * KL(q(z|x) || N(0, I)),
with z = mean + exp(log_var / 2) * eps (one draw per sample and step, from the run's own seeded
generator) and beta rising linearly over `kl_warmup_epochs`. The size factors sf are DESeq2's
median of ratios against the training samples' geometric means (fitted once, stored in the
model). Held-out samples never update anything: they give the early-stopping criterion (their
negative ELBO per gene at full KL weight whatever the warm-up's weight, from a fixed-seed set of
posterior draws) and, at the
end, the dispersion calibration (as for the DGD). Checkpoints and exact resume as for the DGD.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nofone.errors import InputError
from nofone.models.nbvae.config import NBVAEConfig, check
from nofone.models.nbvae.module import NBVAEModule
from nofone.models.scaling import scaling_factor
from nofone.models.size_factors import SizeFactorReference
from nofone.models.training import (
    Checkpointing,
    TrainingData,
    TrainingOutcome,
    TrainingState,
    calibrate_on_heldout,
)

log = logging.getLogger(__name__)
#: Adam settings of the representation search (`nofone.inference.represent.SearchConfig`), used
#: for the held-out samples' closest normals before the dispersion calibration.
SEARCH_BETAS = (0.5, 0.9)

__all__ = ["TrainResult", "TrainingData", "kl_weight", "train_nbvae"]


@dataclass(kw_only=True)
class TrainResult(TrainingOutcome):
    module: NBVAEModule
    latent: np.ndarray  # [N, D] posterior means, rows in the order of TrainingData
    log_var: np.ndarray  # [N, D] posterior log-variances
    size_factors: np.ndarray  # [N]
    size_factor_method: str


def kl_weight(epoch: int, warmup: int) -> float:
    """KL weight of (0-based) epoch `epoch`: (epoch + 1) / warmup up to 1; 1 without warm-up."""
    return 1.0 if warmup <= 0 else min(1.0, (epoch + 1) / warmup)


class _State(TrainingState):
    """The NB-VAE's checkpointed state: network and dispersions, each with its optimiser."""

    def __init__(self, module: NBVAEModule, config: NBVAEConfig):
        t = config.training
        betas = tuple(t.betas)
        network = [p for name, p in module.named_parameters() if name != "log_r"]
        super().__init__(module, {
            "network": torch.optim.AdamW(network, lr=t.lr, betas=betas, weight_decay=t.weight_decay),
            "dispersion": torch.optim.Adam([module.log_r], lr=t.lr_dispersion, betas=betas),
        }, t.seed)


def train_nbvae(data: TrainingData, config: NBVAEConfig, *, device: str = "cpu",
                checkpoint_dir: Path | None = None, resume: bool = False,
                on_epoch: Callable[[dict], None] | None = None) -> TrainResult:
    """Fit the NB-VAE to `data` (its `split` says which samples train and which are held out)."""
    check(config)
    t = config.training
    torch.manual_seed(t.seed)
    is_train = np.asarray(data.split) == "train"
    if is_train.sum() == 0:
        raise InputError("no training samples (every sample is in the test split)")
    train_idx = np.flatnonzero(is_train)
    test_idx = np.flatnonzero(~is_train)
    measured_np = None if data.measured is None or data.measured.all() else np.asarray(data.measured, dtype=bool)
    reference = SizeFactorReference.fit(data.counts[train_idx], None if measured_np is None else measured_np[train_idx],
                                        config.size_factors)
    sf_np = reference(data.counts, measured_np, check=True, sample_ids=list(data.sample_ids))
    counts = torch.as_tensor(data.counts, dtype=torch.float64)
    measured = None if measured_np is None else torch.as_tensor(measured_np)
    n_genes = counts.shape[1]
    module = NBVAEModule(config, n_genes)
    module.set_size_factor_reference(reference)
    sf = torch.as_tensor(sf_np, dtype=torch.float64)
    state = _State(module, config)
    checkpoints = Checkpointing(checkpoint_dir, data.fingerprint(), json.dumps(config.to_dict(), sort_keys=True),
                                salt="nbvae")
    resumed_from = checkpoints.resume(state, resume)
    if resumed_from is None:
        _initialise(module, counts[train_idx], sf[train_idx], None if measured is None else measured[train_idx])
    module.to(device)
    x_dev, sf_dev = counts.to(device), sf.to(device)
    m_dev = None if measured is None else measured.to(device)
    train_rows, test_rows = torch.as_tensor(train_idx), torch.as_tensor(test_idx)
    early = t.early_stopping and len(test_idx) > 0
    stopped = state.bad_evaluations >= t.patience if early else False
    while state.epoch < t.epochs and not stopped:
        started = time.perf_counter()
        beta = kl_weight(state.epoch, t.kl_warmup_epochs)
        module.train()
        record = _run_epoch(state, x_dev, sf_dev, m_dev, train_rows, t.batch_size, beta)
        module.eval()  # no dropout in what follows
        state.epoch += 1
        with torch.no_grad():
            if len(test_idx):
                record |= _posterior_mean_loss(module, x_dev, sf_dev, m_dev, test_rows, "test")
            record |= _diagnostics(module, x_dev, sf_dev, m_dev, train_rows)
        evaluate = state.epoch % t.eval_every == 0 or state.epoch == t.epochs
        if early and evaluate:
            loss = heldout_neg_elbo_per_gene(module, x_dev, sf_dev, m_dev, test_rows, t.eval_draws, t.seed)
            record["heldout_neg_elbo_per_gene"] = loss
            stopped = state.observe(loss, t.patience)
        state.end_epoch(record, started, on_epoch)
        checkpoints.save_if_due(state, t.checkpoint_every, last=state.epoch == t.epochs or stopped)
    if early:
        state.restore_best_epoch("held-out negative ELBO")
    module.eval()
    calibration = outlier_null = None
    if t.calibrate_dispersion and len(test_idx):
        x_t = x_dev[test_rows]
        m_t = None if m_dev is None else m_dev[test_rows]
        z, scale = closest_normal(module, x_t, m_t, t.eval_steps, t.lr_representation)
        calibration, outlier_null = calibrate_on_heldout(module, x_t, z, scale, m_t)
    with torch.no_grad():
        mean, log_var = module.encode(x_dev, sf_dev, m_dev)
    return TrainResult(module=module.cpu(), latent=mean.cpu().numpy(), log_var=log_var.cpu().numpy(),
                       size_factors=sf_np, size_factor_method=reference.method, history=state.history,
                       resumed_from=resumed_from, best_epoch=state.best_epoch if early else None,
                       stopped_early=stopped, calibration=calibration, outlier_null=outlier_null,
                       checkpoint_dir=checkpoints.folder)


@torch.no_grad()
def _initialise(module: NBVAEModule, x: torch.Tensor, sf: torch.Tensor, measured: torch.Tensor | None) -> None:
    """Decoder bias at each gene's mean normalised count (log), encoder input centred."""
    normalised = x / sf.unsqueeze(-1)
    weight = torch.ones_like(x) if measured is None else measured.to(x.dtype)
    n = weight.sum(0).clamp_min(1.0)
    module.initialise_output_bias(torch.log((normalised * weight).sum(0) / n + 1e-8))
    centre = (torch.log1p(normalised) * weight).sum(0) / n
    module.input_centre.copy_(centre.to(module.input_centre.dtype))


def _run_epoch(state: _State, x: torch.Tensor, sf: torch.Tensor, measured: torch.Tensor | None,
               train_rows: torch.Tensor, batch_size: int, beta: float) -> dict:
    module, opt = state.module, state.optimizers
    order = torch.randperm(len(train_rows), generator=state.generator)
    totals = {"nb": 0.0, "kl": 0.0}
    for start in range(0, len(order), batch_size):
        rows = train_rows[order[start:start + batch_size]]
        m = None if measured is None else measured[rows]
        for optimizer in opt.values():
            optimizer.zero_grad()
        mean, log_var = module.encode(x[rows], sf[rows], m)
        eps = torch.randn(mean.shape, generator=state.generator).to(mean.device)
        z = mean + torch.exp(0.5 * log_var) * eps
        nb = module.count_log_prob(x[rows], z, sf[rows], m)
        kl = module.kl(mean, log_var).double()
        loss = -(nb.sum() - beta * kl.sum()) / len(rows)
        loss.backward()
        for optimizer in opt.values():
            optimizer.step()
        totals["nb"] -= float(nb.detach().sum())
        totals["kl"] += float(kl.detach().sum())
    n = len(train_rows)
    return {"loss_train": (totals["nb"] + beta * totals["kl"]) / n, "nb_train": totals["nb"] / n,
            "kl_train": totals["kl"] / n, "kl_weight": beta}


def _posterior_mean_loss(module: NBVAEModule, x, sf, measured, rows, part: str) -> dict:
    """NB NLL at the posterior mean plus the full KL, per sample: a cheap deterministic monitor."""
    m = None if measured is None else measured[rows]
    mean, log_var = module.encode(x[rows], sf[rows], m)
    nb = -float(module.count_log_prob(x[rows], mean, sf[rows], m).sum()) / len(rows)
    kl = float(module.kl(mean, log_var).sum()) / len(rows)
    return {f"loss_{part}": nb + kl, f"nb_{part}": nb, f"kl_{part}": kl}


@torch.no_grad()
def heldout_neg_elbo_per_gene(module: NBVAEModule, x, sf, measured, rows, draws: int, seed: int) -> float:
    """Negative ELBO (full KL weight) of the samples at `rows`, per measured count value.

    The expectation uses `draws` posterior draws from a generator seeded afresh each time, so
    that successive evaluations differ only through the model.
    """
    generator = torch.Generator().manual_seed(seed + 1)
    m = None if measured is None else measured[rows]
    mean, log_var = module.encode(x[rows], sf[rows], m)
    nb = torch.zeros(len(rows), dtype=torch.float64, device=x.device)
    for _ in range(draws):
        eps = torch.randn(mean.shape, generator=generator).to(mean.device)
        nb += module.count_log_prob(x[rows], mean + torch.exp(0.5 * log_var) * eps, sf[rows], m)
    neg_elbo = -(nb / draws) + module.kl(mean, log_var).double()
    n_values = float(m.sum()) if m is not None else float(len(rows) * x.shape[1])
    return float(neg_elbo.sum() / n_values)


def closest_normal(module: NBVAEModule, x: torch.Tensor, measured: torch.Tensor | None, steps: int,
                   lr: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(z, scale) as `nofone represent` finds them: the encoder mean refined `steps` Adam steps
    under the N(0, I) prior, with the scale of `scaling_factor(..., "median")`."""
    with torch.no_grad():
        start, _ = module.encode(x, module.size_factors(x, measured), measured)
    z = start.detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([z], lr=lr, betas=SEARCH_BETAS)
    requires = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    try:
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            relative = module.decoder(z)
            scale = scaling_factor(x, relative, measured, "median")
            nb = module.count_log_prob(x, z, scale, measured)
            loss = -(nb.sum() + module.prior_log_prob(z).double().sum())
            loss.backward()
            optimizer.step()
    finally:
        for p, r in zip(module.parameters(), requires):
            p.requires_grad_(r)
    z = z.detach()
    with torch.no_grad():
        scale = scaling_factor(x, module.decoder(z), measured, "median")
    return z, scale


@torch.no_grad()
def _diagnostics(module: NBVAEModule, x, sf, measured, rows) -> dict:
    """Dispersion spread and active latent dimensions (posterior collapse shows as 0)."""
    m = None if measured is None else measured[rows]
    mean, _ = module.encode(x[rows], sf[rows], m)
    r = module.dispersion.detach().cpu().numpy()
    spread = mean.var(0, unbiased=False) if len(rows) > 1 else torch.zeros(mean.shape[1])
    return {
        "active_latent_dims": int((spread > 0.01).sum()),
        "dispersion_median": float(np.median(r)),
        "dispersion_q05": float(np.quantile(r, 0.05)),
        "dispersion_q95": float(np.quantile(r, 0.95)),
    }


def epochs_to_steps(n_train: int, batch_size: int, epochs: int) -> int:
    """Optimiser steps a run will take."""
    return epochs * math.ceil(n_train / batch_size)
