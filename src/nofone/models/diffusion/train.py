"""Training the diffusion model: noise prediction with MSE, Adam, gradient clipping, EMA.

Each step draws, for every sample of the batch, a step t uniform in 1..T and a noise eps from
the run's own seeded generator, and minimises the mean squared error of the online network's
eps_hat over the measured genes; labels are replaced by the null label with probability
`label_dropout` (classifier-free guidance). After each step the EMA weights (the module's
`denoiser`, which bridging and sampling use) move towards the online weights with decay
min(ema_decay, (1 + n) / (10 + n)) after n updates, so that early evaluations are not stuck at
the initial weights. Every piece of state is a tensor (online weights, EMA weights and update
count, optimiser, generator), so checkpoints resume exactly.

`DiffusionPlan` is the diffusion model's part in the shared loop (`nofone.models.training.fit`):
it builds the module (count space fitted on the training normals, the Gaussian part fitted on
the training samples with its rank chosen on the held-out normals), runs an epoch, scores the
held-out normals (the Gaussian part alone is scored before the first epoch, so early stopping
can keep it), and its `calibrate` hook calibrates the bridge on the held-out normals (t*,
per-gene NB, outlier null, reconstruction error; `calibrate.py`). `train_diffusion` is the
library's way in, with labelled tumours if any.
"""

from __future__ import annotations

import copy
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from nofone.errors import InputError
from nofone.models.diffusion.bridge import BridgeOptions, bridge_points
from nofone.models.diffusion.calibrate import calibrate
from nofone.models.diffusion.config import DiffusionConfig, check
from nofone.models.diffusion.gaussian import choose_rank
from nofone.models.diffusion.module import NORMAL, TUMOUR, DiffusionModule
from nofone.models.diffusion.network import Denoiser
from nofone.models.diffusion.schedule import fixed_draws
from nofone.models.diffusion.transform import CountSpace
from nofone.models.training import TrainingData, TrainingOutcome, TrainingPlan, epochs_to_steps, fit

log = logging.getLogger(__name__)
DEFAULT_RANK = 8  # the factor model's rank when there are no held-out normals to choose it


def prepare_config(config: DiffusionConfig, split: np.ndarray, tissue: np.ndarray | None,
                   tumour: np.ndarray | None) -> DiffusionConfig:
    """The config with the labels the data give: tissues of the training samples, tumours."""
    train = np.asarray(split) == "train"
    tissues: tuple[str, ...] = ()
    if config.labels.condition_on_tissue and tissue is not None:
        tissues = tuple(sorted({str(t) for t in np.asarray(tissue)[train]}))
    has_tumour = tumour is not None and bool(np.asarray(tumour, dtype=bool)[train].any())
    return replace(config, labels=replace(config.labels, tissues=tissues, tumour=has_tumour))


class DiffusionPlan(TrainingPlan):
    """The diffusion model's part in the shared loop.

    `tumour` marks labelled tumours (trained on with the tumour label, never held out);
    `points` gives the samples already in the model's space (data that are not counts, e.g.
    GEMDiff's log2 FPKM: no count space is fitted and nothing can be calibrated)."""

    score_key = "heldout_denoising_mse"
    score_name = "held-out denoising MSE"
    score_before_training = True

    def __init__(self, data: TrainingData, config: DiffusionConfig, device: str, *,
                 tumour: np.ndarray | None = None, points: torch.Tensor | None = None):
        check(config)
        super().__init__(data, config, device)
        split = np.asarray(data.split)
        self.tumour = np.zeros(len(split), dtype=bool) if tumour is None else np.asarray(tumour, dtype=bool)
        if len(self.tumour) != len(split):
            raise ValueError("one tumour flag per sample expected")
        self.checkpoint_salt = "diffusion" + (hashlib.sha256(self.tumour.tobytes()).hexdigest()
                                              if self.tumour.any() else "")
        self.test_idx = np.flatnonzero((split != "train") & ~self.tumour)  # held-out normals only
        self.test_rows = torch.as_tensor(self.test_idx)
        space = None
        if points is None:
            space, self.size_factors, points = self._count_space(data, config)
        else:
            self.size_factors = np.ones(len(split))
        self.is_counts = space is not None
        self.module, self.rank_table = self._module(points, space, data.tissue, config)
        self.config = self.module.config
        t = self.config.training
        dev = self.module.log_r.device
        self.y = points.to(dev)
        self.tissue = self.module.tissue_index(None if data.tissue is None else list(data.tissue), len(split))
        self.condition = self.module.condition_index(NORMAL, len(split))
        if self.condition is not None:
            self.condition[torch.as_tensor(self.tumour, device=dev)] = TUMOUR
        self.train_rows, self.test_rows = self.train_rows.to(dev), self.test_rows.to(dev)
        self.online = copy.deepcopy(self.module.denoiser).requires_grad_(True)
        self.module.denoiser.requires_grad_(False)
        self.ema_updates = torch.zeros((), dtype=torch.long)
        self.optimizers = {"network": torch.optim.AdamW(self.online.parameters(), lr=t.lr, betas=tuple(t.betas),
                                                        weight_decay=t.weight_decay)}
        self._heldout_draws = self._fixed_draws(t.eval_draws, t.seed + 1)  # the rank's draws too

    def _count_space(self, data: TrainingData, config: DiffusionConfig
                     ) -> tuple[CountSpace, np.ndarray, torch.Tensor]:
        """The count space fitted on the training normals; every sample's size factor and point."""
        normal_train = np.setdiff1d(self.train_idx, np.flatnonzero(self.tumour))
        if normal_train.size == 0:
            raise InputError("no normal training samples (every sample is held out or a tumour)")
        measured = None if self.measured is None else self.measured.numpy()
        space = CountSpace(data.counts.shape[1], config.clamp)
        space.fit(data.counts[normal_train], None if measured is None else measured[normal_train],
                  config.size_factors, config.min_scale)
        sf = space.size_factors(self.counts, self.measured)
        return space, sf.numpy(), space(self.counts, sf, self.measured)

    def _module(self, y: torch.Tensor, space: CountSpace | None, tissue: np.ndarray | None,
                config: DiffusionConfig) -> tuple[DiffusionModule, list[dict]]:
        """The module with the labels the data give and the Gaussian part fitted (its rank
        chosen on the held-out normals when the config leaves it -1)."""
        train_idx, heldout_idx = self.train_idx, self.test_idx
        config = prepare_config(config, self.data.split, tissue, self.tumour)
        net, rank_table = config.network, []
        skip_classes = _skip_classes(config, tissue, self.tumour)
        if net.gaussian_skip and net.gaussian_rank < 0:
            if heldout_idx.size:
                held_measured = None if self.measured is None else self.measured[heldout_idx]
                rank, rank_table = choose_rank(y[train_idx], _take(skip_classes, train_idx), y[heldout_idx],
                                               _take(skip_classes, heldout_idx), held_measured, _n_classes(config),
                                               config.timesteps, config.training.eval_draws, config.training.seed + 1)
            else:
                rank = DEFAULT_RANK
            rank = min(rank, max(train_idx.size - 1, 0), y.shape[1])
            config = replace(config, network=replace(net, gaussian_rank=rank))
        torch.manual_seed(config.training.seed)
        module = DiffusionModule(config, y.shape[1])
        if space is not None:
            module.space.load_state_dict(space.state_dict())
        if module.denoiser.skip is not None:
            module.denoiser.skip.fit(y[train_idx], _take(skip_classes, train_idx))
        return module.to(self.device), rank_table

    # -- one epoch --------------------------------------------------------------------------------

    def _labels(self, rows: torch.Tensor, generator: torch.Generator | None, dropout: float):
        tissue = None if self.tissue is None else self.tissue[rows].clone()
        condition = None if self.condition is None else self.condition[rows].clone()
        if dropout > 0 and generator is not None:
            if tissue is not None:
                drop = torch.rand(len(rows), generator=generator).to(tissue.device) < dropout
                tissue[drop] = self.module.denoiser.null_tissue
            if condition is not None:
                drop = torch.rand(len(rows), generator=generator).to(condition.device) < dropout
                condition[drop] = 2
        return tissue, condition

    def _loss(self, network: Denoiser, rows: torch.Tensor, t: torch.Tensor, eps: torch.Tensor,
              tissue, condition) -> torch.Tensor:
        y0 = self.y[rows]
        noisy = self.module.schedule.add_noise(y0, t, eps)
        err = (self.module.eps(noisy, t, tissue, condition, network=network) - eps) ** 2
        if self.m is not None:
            m = self.m[rows].to(err.dtype)
            return (err * m).sum() / m.sum().clamp_min(1.0)
        return err.mean()

    def train_epoch(self, epoch: int, generator: torch.Generator) -> dict:
        t_cfg = self.config.training
        device = self.y.device
        self.online.train()
        order = torch.randperm(len(self.train_rows), generator=generator)
        total, n_batches = 0.0, 0
        for start in range(0, len(order), t_cfg.batch_size):
            rows = self.train_rows[order[start:start + t_cfg.batch_size].to(device)]
            t = torch.randint(1, self.config.timesteps + 1, (len(rows),), generator=generator).to(device)
            eps = torch.randn((len(rows), self.y.shape[1]), generator=generator).to(device)
            tissue, condition = self._labels(rows, generator, self.config.labels.label_dropout)
            loss = self._loss(self.online, rows, t, eps, tissue, condition)
            self.optimizers["network"].zero_grad(set_to_none=True)
            loss.backward()
            if t_cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.online.parameters(), t_cfg.grad_clip)
            self.optimizers["network"].step()
            self.update_ema()
            total += float(loss.detach())
            n_batches += 1
        self.online.eval()
        record = {"loss_train": total / max(n_batches, 1)}
        if self._heldout_draws is not None:  # the online network on one fixed draw per held-out normal
            record["loss_test"] = self._denoising_mse(self.online, self._one_draw_each)
        return record

    @torch.no_grad()
    def update_ema(self) -> None:
        n = float(self.ema_updates)
        decay = min(self.config.training.ema_decay, (1 + n) / (10 + n))
        for ema, online in zip(self.module.denoiser.parameters(), self.online.parameters()):
            ema.mul_(decay).add_(online.detach(), alpha=1 - decay)
        self.ema_updates += 1

    # -- state -----------------------------------------------------------------------------------

    def extra_tensors(self) -> dict[str, torch.Tensor]:
        out = {f"online.{k}": v for k, v in self.online.state_dict().items()}
        return out | {"ema_updates": self.ema_updates}

    def load_extra_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.online.load_state_dict({k[len("online."):]: v for k, v in tensors.items() if k.startswith("online.")})
        self.ema_updates.copy_(tensors["ema_updates"])

    def diagnostics(self) -> dict:
        return {"ema_updates": int(self.ema_updates)}

    # -- the held-out score --------------------------------------------------------------------------

    def _fixed_draws(self, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        if len(self.test_rows) == 0:
            return None
        rows, t, eps = fixed_draws(len(self.test_rows), k, self.y.shape[1], self.config.timesteps, seed)
        device = self.y.device
        self._one_draw_each = torch.arange(len(self.test_rows)) * k + torch.arange(len(self.test_rows)) % k
        return self.test_rows[rows.to(device)], t.to(device), eps.to(device)

    @torch.no_grad()
    def _denoising_mse(self, network: Denoiser, which: torch.Tensor | None = None) -> float:
        rows, t, eps = self._heldout_draws
        if which is not None:
            which = which.to(rows.device)
            rows, t, eps = rows[which], t[which], eps[which]
        total, n = 0.0, 0
        for start in range(0, len(rows), 512):
            part = slice(start, start + 512)
            tissue, condition = self._labels(rows[part], None, 0.0)
            loss = self._loss(network, rows[part], t[part], eps[part], tissue, condition)
            total += float(loss) * len(rows[part])
            n += len(rows[part])
        return total / n

    def heldout_score(self) -> float:
        """The EMA network's denoising MSE on the held-out normals at fixed (t, eps) draws."""
        return float("nan") if self._heldout_draws is None else self._denoising_mse(self.module.denoiser)

    # -- after training ------------------------------------------------------------------------------

    def _tissues(self, rows: np.ndarray) -> list[str] | None:
        """The tissue labels the bridge is given (only when it is calibrated with them)."""
        if not self.module.config.bridge.use_tissue or self.data.tissue is None:
            return None
        return [str(v) for v in np.asarray(self.data.tissue)[rows]]

    def calibrate(self) -> tuple[dict | None, dict | None]:
        """The bridge's calibration on the held-out normals (`calibrate.calibrate`: t*, per-gene
        NB, outlier null, perturb's null, reconstruction error): the card and the outlier null."""
        if not self.is_counts:
            log.warning("the training data are not counts: the bridge is not calibrated")
            return None, None
        x, m = self.heldout()
        normal_train = np.setdiff1d(self.train_idx, np.flatnonzero(self.tumour))
        training = (self.x[normal_train], None if self.m is None else self.m[normal_train],
                    self._tissues(normal_train))
        card = calibrate(self.module, x, m, self._tissues(self.test_idx), training)
        null = card.pop("outlier_null")
        self.card = {"method": "per-gene NB on the bridged normals, log r rescaled to the held-out ones", **card}
        return self.card, null

    @torch.no_grad()
    def trained_points(self) -> tuple[np.ndarray, torch.Tensor]:
        """Every sample bridged to its closest normal (its own point while t* is not calibrated),
        with its size factor as the NB scale."""
        y = self.y
        if self.module.config.bridge.t_star > 0:
            y, _ = bridge_points(self.module, y, BridgeOptions(tissues=self._tissues(np.arange(len(y)))))
        return y.float().cpu().numpy(), torch.as_tensor(self.size_factors, dtype=torch.float64)

    def summary(self, final: dict, table) -> dict:
        bridge = self.module.config.bridge
        t = self.config.training
        steps = epochs_to_steps(self.n_train, t.batch_size, final["epoch"])
        card = getattr(self, "card", None) or {}
        model_card = {"bridge t* (chosen on held-out normals)": bridge.t_star or None}
        if card:
            model_card |= {
                "bridge reconstruction of held-out normals: mean |log2 fold|": card["reconstruction_mean_abs_log2"],
                "bridge reconstruction of held-out normals: RMSE in the model's space": card["reconstruction_rmse"]}
        return {"epochs_run": final["epoch"], "optimizer_steps": steps,
                "gaussian_rank": self.module.config.network.gaussian_rank,
                "gaussian_rank_grid": self.rank_table or None, "t_star": bridge.t_star or None,
                "model_card": model_card}


@dataclass(kw_only=True)
class TrainResult(TrainingOutcome):
    module: DiffusionModule
    size_factors: np.ndarray  # [N] of every sample, against the training normals' reference
    card: dict  # the calibration: t*, its grid, reconstruction error, dispersions, outlier null


def train_diffusion(data: TrainingData, config: DiffusionConfig, *, tumour: np.ndarray | None = None,
                    points: torch.Tensor | None = None, device: str = "cpu", checkpoint_dir: Path | None = None,
                    resume: bool = False, on_epoch: Callable[[dict], None] | None = None) -> TrainResult:
    """Fit the diffusion model to `data` through the shared loop (`split` says which normals
    train and which are held out; `tumour` marks labelled tumours, used in training only;
    `points` as in `DiffusionPlan`), its bridge calibrated on the held-out normals."""
    plan = DiffusionPlan(data, config, device, tumour=tumour, points=points)
    outcome = fit(plan, checkpoint_dir=checkpoint_dir, resume=resume, on_epoch=on_epoch)
    card = {**(outcome.calibration or {}), "outlier_null": outcome.outlier_null,
            "gaussian_rank": plan.module.config.network.gaussian_rank}
    if plan.rank_table:
        card["gaussian_rank_grid"] = plan.rank_table
    if plan.config.training.calibrate_dispersion and plan.is_counts and not plan.has_heldout:
        log.warning("no held-out normals: t*, the dispersions and the outlier null are not calibrated")
    return TrainResult(module=plan.module.cpu(), size_factors=plan.size_factors, card=card, **vars(outcome))


def _n_classes(config: DiffusionConfig) -> int:
    return len(config.labels.tissues) or (2 if config.labels.tumour else 0)


def _skip_classes(config: DiffusionConfig, tissue: np.ndarray | None, tumour: np.ndarray) -> torch.Tensor | None:
    """The class of each sample in the Gaussian part: its tissue, else normal/tumour, else None."""
    if config.labels.tissues and tissue is not None:
        lookup = {t: i for i, t in enumerate(config.labels.tissues)}
        return torch.as_tensor([lookup.get(str(t), len(lookup)) for t in tissue], dtype=torch.long)
    if config.labels.tumour:
        return torch.as_tensor(np.where(tumour, TUMOUR, NORMAL), dtype=torch.long)
    return None


def _take(values: torch.Tensor | None, rows: np.ndarray) -> torch.Tensor | None:
    return None if values is None else values[torch.as_tensor(rows)]
