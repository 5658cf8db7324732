"""Training the NB-VAE: encoder, decoder and gene-wise dispersions by the ELBO.

Loss per batch: mean over its samples of -log NB(x | sf * rho(z)) + beta * KL(q(z|x) || N(0, I)),
with z = mean + exp(log_var / 2) * eps (one draw per sample and step, from the run's own seeded
generator) and beta rising linearly over `kl_warmup_epochs`. The size factors sf are DESeq2's
median of ratios against the training samples' geometric means (fitted once, stored in the
model). Held-out samples never update anything: they give the early-stopping criterion (their
negative ELBO per gene at full KL weight whatever the warm-up's weight, from a fixed-seed set of
posterior draws) and, at the end, the dispersion calibration at their closest normals (the
encoder mean refined under the prior by the shared search, as for the DGD). `NBVAEPlan` is the
NB-VAE's part in the shared loop (`nofone.models.training.fit`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nofone.inference.represent import SearchConfig, search_latent
from nofone.models.nbvae.config import NBVAEConfig, check
from nofone.models.nbvae.module import NBVAEModule
from nofone.models.size_factors import SizeFactorReference
from nofone.models.training import TrainingData, TrainingOutcome, TrainingPlan, fit

log = logging.getLogger(__name__)

__all__ = ["NBVAEPlan", "TrainResult", "TrainingData", "kl_weight", "train_nbvae"]


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


class NBVAEPlan(TrainingPlan):
    """The NB-VAE's part in the shared loop: network and dispersions, each with its optimiser."""

    score_key = "heldout_neg_elbo_per_gene"
    score_name = "held-out negative ELBO"
    checkpoint_salt = "nbvae"

    def __init__(self, data: TrainingData, config: NBVAEConfig, device: str):
        check(config)
        super().__init__(data, config, device)
        t = config.training
        measured = None if self.measured is None else self.measured.numpy()
        self.reference = SizeFactorReference.fit(data.counts[self.train_idx],
                                                 None if measured is None else measured[self.train_idx],
                                                 config.size_factors)
        self.size_factors = self.reference(data.counts, measured, check=True, sample_ids=list(data.sample_ids))
        module = NBVAEModule(config, self.counts.shape[1])
        module.set_size_factor_reference(self.reference)
        self.module = module.to(device)
        self.sf = torch.as_tensor(self.size_factors, dtype=torch.float64).to(device)
        betas = tuple(t.betas)
        network = [p for name, p in module.named_parameters() if name != "log_r"]
        self.optimizers = {
            "network": torch.optim.AdamW(network, lr=t.lr, betas=betas, weight_decay=t.weight_decay),
            "dispersion": torch.optim.Adam([module.log_r], lr=t.lr_dispersion, betas=betas),
        }

    def initialise(self) -> None:
        rows = self.train_rows
        _initialise(self.module, self.x[rows], self.sf[rows], None if self.m is None else self.m[rows])

    def train_epoch(self, epoch: int, generator: torch.Generator) -> dict:
        t = self.config.training
        beta = kl_weight(epoch, t.kl_warmup_epochs)
        self.module.train()
        record = _run_epoch(self, generator, t.batch_size, beta)
        self.module.eval()  # no dropout in what follows
        if self.has_heldout:
            with torch.no_grad():
                record |= _posterior_mean_loss(self.module, self.x, self.sf, self.m, self.test_rows, "test")
        return record

    def diagnostics(self) -> dict:
        return _diagnostics(self.module, self.x, self.sf, self.m, self.train_rows)

    def heldout_score(self) -> float:
        t = self.config.training
        return heldout_neg_elbo_per_gene(self.module, self.x, self.sf, self.m, self.test_rows, t.eval_draws, t.seed)

    def heldout_closest_normals(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The encoder mean refined `eval_steps` Adam steps under the prior, with the scale of
        `scaling_factor(..., "median")`, as `nofone represent` finds them."""
        t = self.config.training
        x, m = self.heldout()
        search = SearchConfig(method="one_opt", steps_first=t.eval_steps, steps_second=0, lr=t.lr_representation,
                              keep_candidates=None, scaling="median")
        start, _ = self.module.posterior(x, m)
        result = search_latent(self.module, x, m, start.unsqueeze(1), search)
        return result.latent, result.scale

    def trained_points(self) -> tuple[np.ndarray, torch.Tensor]:
        """Posterior means, with the training size factors as the NB scale."""
        return self.posterior()[0], torch.as_tensor(self.size_factors, dtype=torch.float64)

    def posterior(self) -> tuple[np.ndarray, np.ndarray]:
        """Every sample's posterior (mean, log-variance) [N, D]."""
        with torch.no_grad():
            mean, log_var = self.module.encode(self.x, self.sf, self.m)
        return mean.cpu().numpy(), log_var.cpu().numpy()

    def summary(self, final: dict, table) -> dict:
        return {"epochs_run": final["epoch"], "optimizer_steps": self.steps(), "components_used": 1,
                "active_latent_dims": final["active_latent_dims"],
                "size_factors": {"method": self.reference.method,
                                 "reference_genes": self.reference.n_reference_genes}}


def train_nbvae(data: TrainingData, config: NBVAEConfig, *, device: str = "cpu",
                checkpoint_dir: Path | None = None, resume: bool = False,
                on_epoch: Callable[[dict], None] | None = None) -> TrainResult:
    """Fit the NB-VAE to `data` (its `split` says which samples train and which are held out)."""
    plan = NBVAEPlan(data, config, device)
    outcome = fit(plan, checkpoint_dir=checkpoint_dir, resume=resume, on_epoch=on_epoch)
    latent, log_var = plan.posterior()
    return TrainResult(module=plan.module.cpu(), latent=latent, log_var=log_var, size_factors=plan.size_factors,
                       size_factor_method=plan.reference.method, **vars(outcome))


@torch.no_grad()
def _initialise(module: NBVAEModule, x: torch.Tensor, sf: torch.Tensor, measured: torch.Tensor | None) -> None:
    """Decoder bias at each gene's mean normalised count (log), encoder input centred."""
    normalised = x / sf.unsqueeze(-1)
    weight = torch.ones_like(x) if measured is None else measured.to(x.dtype)
    n = weight.sum(0).clamp_min(1.0)
    module.initialise_output_bias(torch.log((normalised * weight).sum(0) / n + 1e-8))
    centre = (torch.log1p(normalised) * weight).sum(0) / n
    module.input_centre.copy_(centre.to(module.input_centre.dtype))


def _run_epoch(plan: NBVAEPlan, generator: torch.Generator, batch_size: int, beta: float) -> dict:
    module, opt = plan.module, plan.optimizers
    x, sf, measured, train_rows = plan.x, plan.sf, plan.m, plan.train_rows
    order = torch.randperm(len(train_rows), generator=generator)
    totals = {"nb": 0.0, "kl": 0.0}
    for start in range(0, len(order), batch_size):
        rows = train_rows[order[start:start + batch_size]]
        m = None if measured is None else measured[rows]
        for optimizer in opt.values():
            optimizer.zero_grad()
        mean, log_var = module.encode(x[rows], sf[rows], m)
        eps = torch.randn(mean.shape, generator=generator).to(mean.device)
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
