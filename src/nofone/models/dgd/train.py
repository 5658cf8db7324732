"""Training the DGD: decoder, mixture prior, dispersions and one representation per sample.

Loss: sum over samples and genes of -log NB + sum over samples of -log GMM(z) - log prior of
the GMM parameters (counted once per epoch: each batch carries its share). Decoder, dispersions
and GMM step once per batch; representations accumulate their gradients over the epoch and
step once per epoch (as in the paper). Held-out samples get representations of their own that
are optimised against the frozen decoder and GMM: they never update either (bulkDGD v1 stepped
both on test batches too). `DGDPlan` is the DGD's part in the shared loop
(`nofone.models.training.fit`).
"""

from __future__ import annotations

import logging
from typing import ClassVar

import numpy as np
import torch

from nofone.errors import InputError
from nofone.inference.represent import SearchConfig, search_latent
from nofone.models.dgd.config import DGDConfig
from nofone.models.dgd.module import DGDModule
from nofone.models.scaling import scaling_factor
from nofone.models.training import TrainingData, TrainingPlan, component_purity

log = logging.getLogger(__name__)


class DGDPlan(TrainingPlan):
    """The DGD's part in the shared loop: its optimisers, representations and epoch."""

    score_key = "heldout_nll_per_gene"
    score_name = "held-out NLL"
    progress_fields: ClassVar[dict[str, str]] = {"comps": "components_used"}
    min_steps = 1000

    def __init__(self, data: TrainingData, config: DGDConfig, device: str):
        super().__init__(data, config, device)
        t = config.training
        self.module = module = DGDModule(config, self.counts.shape[1]).to(device)
        scale = scaling_factor(self.counts, None if self.measured is None else torch.ones_like(self.counts),
                               self.measured, "mean")
        if (scale <= 0).any():
            bad = [data.sample_ids[i] for i in np.flatnonzero((scale <= 0).numpy())[:5]]
            raise InputError(f"samples with no counts over the model's genes: {bad}")
        self.scale = scale.to(device)
        self._scale_cpu = scale
        z0 = _initial_latent(self.counts, scale, self.train_idx, config)
        self.z_train = torch.nn.Parameter(z0[self.train_idx].clone().to(device))
        self.z_test = torch.nn.Parameter(z0[self.test_idx].clone().to(device))
        betas = tuple(t.betas)
        self.optimizers = {
            "decoder": torch.optim.AdamW(module.decoder.mean_parameters(), lr=t.lr_decoder, betas=betas,
                                         weight_decay=t.weight_decay),
            "dispersion": torch.optim.Adam(module.dispersion_param_groups(t.lr_decoder), lr=t.lr_dispersion,
                                           betas=betas),
            "gmm": torch.optim.Adam(module.gmm.parameters(), lr=t.lr_gmm, betas=betas),
            "z_train": torch.optim.Adam([self.z_train], lr=t.lr_representation, betas=betas),
            "z_test": torch.optim.Adam([self.z_test], lr=t.lr_representation, betas=betas),
        }

    def initialise(self) -> None:
        t, module = self.config.training, self.module
        with torch.no_grad():
            relative = (self.counts[self.train_idx] / self._scale_cpu[self.train_idx, None]).mean(0)
            module.initialise_output_bias(relative.to(self.device))
            if t.init == "pca":
                module.gmm.initialise_from(self.z_train.detach().cpu().numpy(), t.seed)
            else:
                _softball_means(module, t.seed)

    def extra_tensors(self) -> dict[str, torch.Tensor]:
        return {"z_train": self.z_train, "z_test": self.z_test}

    def load_extra_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.z_train.copy_(tensors["z_train"])
        self.z_test.copy_(tensors["z_test"])

    def train_epoch(self, epoch: int, generator: torch.Generator) -> dict:
        self.module.train()
        t = self.config.training
        return _run_epoch(self, generator, t.batch_size, t.latent_noise)

    def diagnostics(self) -> dict:
        return _diagnostics(self.module, self.z_train, self.data.tissue, self.train_idx)

    def heldout_score(self) -> float:
        """Refine the held-out representations against the frozen model; their NLL per gene."""
        result = self._refine_heldout()
        _, m = self.heldout()
        n_values = float(m.sum()) if m is not None else result.count_nll.numel() * self.x.shape[1]
        return float(result.count_nll.sum() / n_values)

    def heldout_closest_normals(self) -> tuple[torch.Tensor, torch.Tensor]:
        self._refine_heldout()
        return self.z_test.detach(), self.scale[self.test_rows]

    def _refine_heldout(self):
        """`eval_steps` steps of the closest-normal search from the held-out representations,
        at their training scale; the representations take the result."""
        t = self.config.training
        x, m = self.heldout()
        search = SearchConfig(method="one_opt", steps_first=t.eval_steps, steps_second=0, lr=t.lr_representation,
                              betas=tuple(t.betas), keep_candidates=None)
        result = search_latent(self.module, x, m, self.z_test.detach().unsqueeze(1), search,
                               fixed_scale=self.scale[self.test_rows])
        with torch.no_grad():
            self.z_test.copy_(result.latent)
        return result

    def trained_points(self) -> tuple[np.ndarray, None]:
        latent = torch.empty(len(self.data.sample_ids), self.config.latent_dim)
        latent[self.train_idx] = self.z_train.detach().cpu()
        latent[self.test_idx] = self.z_test.detach().cpu()
        return latent.numpy(), None

    def summary(self, final: dict, table) -> dict:
        out = {"decoder_steps": self.steps(), "components_used": final["components_used"],
               "largest_component_fraction": final["largest_component_fraction"],
               "tissue_purity_train": final.get("tissue_purity"),
               "tissue_purity_test": _purity(table, "test") if self.data.tissue is not None else None}
        if final["largest_component_fraction"] > 0.9 and self.module.gmm.n_components > 1:
            log.warning("%.0f%% of training samples sit in one mixture component: the GMM may have "
                        "collapsed", 100 * final["largest_component_fraction"])
        return out


def _run_epoch(plan: DGDPlan, generator: torch.Generator, batch_size: int, noise: float = 0.0) -> dict:
    module, opt = plan.module, plan.optimizers
    x, scale, measured, train_rows, n_train = plan.x, plan.scale, plan.m, plan.train_rows, plan.n_train
    order = torch.randperm(len(train_rows), generator=generator)
    opt["z_train"].zero_grad()
    totals = {"nb": 0.0, "latent": 0.0}
    for start in range(0, len(order), batch_size):
        local = order[start:start + batch_size]
        rows = train_rows[local]
        for name in ("decoder", "dispersion", "gmm"):
            opt[name].zero_grad()
        z = plan.z_train[local.to(plan.z_train.device)]
        z_decoded = z
        if noise > 0:
            z_decoded = z + noise * torch.randn(z.shape, generator=generator).to(z.device)
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
    if plan.has_heldout:
        record |= _test_epoch(plan, batch_size)
    return record


def _test_epoch(plan: DGDPlan, batch_size: int) -> dict:
    """Optimise held-out representations against the frozen decoder and GMM."""
    module, optimizer = plan.module, plan.optimizers["z_test"]
    x, scale, measured, test_rows = plan.x, plan.scale, plan.m, plan.test_rows
    optimizer.zero_grad()
    grad = torch.zeros_like(plan.z_test)
    nb_total = latent_total = 0.0
    for start in range(0, len(test_rows), batch_size):
        rows = test_rows[start:start + batch_size]
        z = plan.z_test[start:start + batch_size]
        nb = module.count_log_prob(x[rows], z, scale[rows], None if measured is None else measured[rows])
        latent = module.gmm.log_prob(z)
        loss = -(nb.sum() + latent.sum().double())
        (g,) = torch.autograd.grad(loss, [plan.z_test])
        grad += g
        nb_total -= float(nb.detach().sum())
        latent_total -= float(latent.detach().sum())
    plan.z_test.grad = grad
    optimizer.step()
    n = len(test_rows)
    return {"loss_test": (nb_total + latent_total) / n, "nb_test": nb_total / n, "latent_test": latent_total / n}


def _purity(table, part: str) -> float | None:
    """Tissue purity of the components of the samples of one split (`table`: the training
    representation table)."""
    rows = table[table["split"] == part]
    if rows.empty:
        return None
    return component_purity(rows["component"].to_numpy(), rows["tissue"].astype(str).to_numpy())


@torch.no_grad()
def _diagnostics(module: DGDModule, z_train: torch.Tensor, tissue: np.ndarray | None, train_idx: np.ndarray) -> dict:
    """Component occupancy, tissue purity and dispersion spread: the collapse warnings."""
    component = module.gmm.component_log_prob(z_train).argmax(-1).cpu().numpy()
    counts = np.bincount(component, minlength=module.gmm.n_components)
    r = module.dispersion_values(z_train).cpu().numpy()
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
