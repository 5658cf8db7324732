"""Training the diffusion model: noise prediction with MSE, Adam, gradient clipping, EMA.

Each step draws, for every sample of the batch, a step t uniform in 1..T and a noise eps from
the run's own seeded generator, and minimises the mean squared error of the online network's
eps_hat over the measured genes; labels are replaced by the null label with probability
`label_dropout` (classifier-free guidance). After each step the EMA weights (the module's
`denoiser`, which bridging and sampling use) move towards the online weights with decay
min(ema_decay, (1 + n) / (10 + n)) after n updates, so that early evaluations are not stuck at
the initial weights. Every piece of state is a tensor (online weights, EMA weights and update
count, optimiser, generator), so checkpoints resume exactly.

`DiffusionPlan` is what the shared training loop drives (one epoch, the held-out score, the
extra checkpointed tensors, diagnostics); `train_diffusion` drives it with this package's
checkpointing until that loop exists, then calibrates on the held-out normals.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from nofone.errors import InputError
from nofone.models.diffusion.calibrate import calibrate
from nofone.models.diffusion.config import DiffusionConfig, check
from nofone.models.diffusion.gaussian import choose_rank
from nofone.models.diffusion.module import NORMAL, TUMOUR, DiffusionModule
from nofone.models.diffusion.network import Denoiser
from nofone.models.diffusion.schedule import fixed_draws
from nofone.models.diffusion.transform import CountSpace
from nofone.models.training import Checkpointing, TrainingData, TrainingOutcome, TrainingState

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


class DiffusionPlan:
    """One epoch, the held-out score and the extra state of a diffusion run, on tensors."""

    def __init__(self, module: DiffusionModule, y: torch.Tensor, measured: torch.Tensor | None,
                 tissue: torch.Tensor | None, condition: torch.Tensor | None, train_rows: torch.Tensor,
                 heldout_rows: torch.Tensor):
        config = module.config
        t = config.training
        self.module, self.config = module, config
        self.y, self.measured, self.tissue, self.condition = y, measured, tissue, condition
        self.train_rows, self.heldout_rows = train_rows, heldout_rows
        self.online = copy.deepcopy(module.denoiser).requires_grad_(True)
        module.denoiser.requires_grad_(False)
        self.ema_updates = torch.zeros((), dtype=torch.long)
        self.optimizers = {"network": torch.optim.AdamW(self.online.parameters(), lr=t.lr, betas=tuple(t.betas),
                                                        weight_decay=t.weight_decay)}
        self._heldout_draws = self._fixed_draws(t.eval_draws, t.seed + 1)  # the rank's draws too

    # -- state -----------------------------------------------------------------------------------

    def extra_tensors(self) -> dict[str, torch.Tensor]:
        out = {f"online.{k}": v for k, v in self.online.state_dict().items()}
        return out | {"ema_updates": self.ema_updates}

    def load_extra_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.online.load_state_dict({k[len("online."):]: v for k, v in tensors.items() if k.startswith("online.")})
        self.ema_updates.copy_(tensors["ema_updates"])

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
        if self.measured is not None:
            m = self.measured[rows].to(err.dtype)
            return (err * m).sum() / m.sum().clamp_min(1.0)
        return err.mean()

    def train_epoch(self, generator: torch.Generator) -> dict:
        t_cfg = self.config.training
        device = self.y.device
        self.online.train()
        order = torch.randperm(len(self.train_rows), generator=generator)
        total, n_batches = 0.0, 0
        for start in range(0, len(order), t_cfg.batch_size):
            rows = self.train_rows[order[start:start + t_cfg.batch_size]]
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
        return {"loss_train": total / max(n_batches, 1)}

    @torch.no_grad()
    def update_ema(self) -> None:
        n = float(self.ema_updates)
        decay = min(self.config.training.ema_decay, (1 + n) / (10 + n))
        for ema, online in zip(self.module.denoiser.parameters(), self.online.parameters()):
            ema.mul_(decay).add_(online.detach(), alpha=1 - decay)
        self.ema_updates += 1

    # -- the held-out score --------------------------------------------------------------------------

    def _fixed_draws(self, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        if len(self.heldout_rows) == 0:
            return None
        rows, t, eps = fixed_draws(len(self.heldout_rows), k, self.y.shape[1], self.config.timesteps, seed)
        device = self.y.device
        return self.heldout_rows[rows.to(device)], t.to(device), eps.to(device)

    @torch.no_grad()
    def heldout_score(self) -> float:
        """The EMA network's denoising MSE on the held-out normals at fixed (t, eps) draws."""
        if self._heldout_draws is None:
            return float("nan")
        rows, t, eps = self._heldout_draws
        total, n = 0.0, 0
        for start in range(0, len(rows), 512):
            part = slice(start, start + 512)
            tissue, condition = self._labels(rows[part], None, 0.0)
            loss = self._loss(self.module.denoiser, rows[part], t[part], eps[part], tissue, condition)
            total += float(loss) * len(rows[part])
            n += len(rows[part])
        return total / n

    def diagnostics(self) -> dict:
        out = {"ema_updates": int(self.ema_updates)}
        return out


@dataclass(kw_only=True)
class TrainResult(TrainingOutcome):
    module: DiffusionModule
    size_factors: np.ndarray  # [N] of every sample, against the training normals' reference
    card: dict  # the calibration: t*, its grid, reconstruction error, dispersions, outlier null
    seconds: float = 0.0


def build_plan(data: TrainingData, config: DiffusionConfig, tumour: np.ndarray | None = None,
               device: str = "cpu") -> tuple[DiffusionPlan, np.ndarray, list[dict]]:
    """The module (count space fitted on the training normals, factor model fitted on the
    training samples, its rank chosen on the held-out normals when the config leaves it -1) and
    its plan; the size factors of every sample and the rank table."""
    check(config)
    split = np.asarray(data.split)
    tumour_mask = np.zeros(len(split), dtype=bool) if tumour is None else np.asarray(tumour, dtype=bool)
    normal_train = np.flatnonzero((split == "train") & ~tumour_mask)
    if normal_train.size == 0:
        raise InputError("no normal training samples (every sample is held out or a tumour)")
    measured_np = None if data.measured is None or data.measured.all() else np.asarray(data.measured, dtype=bool)
    space = CountSpace(data.counts.shape[1], config.clamp)
    space.fit(data.counts[normal_train], None if measured_np is None else measured_np[normal_train],
              config.size_factors, config.min_scale)
    counts = torch.as_tensor(data.counts, dtype=torch.float64)
    measured = None if measured_np is None else torch.as_tensor(measured_np)
    sf = space.size_factors(counts, measured)
    y = space(counts, sf, measured)
    plan, rank_table = plan_from_points(y, split, data.tissue, tumour_mask, config, measured, device, space)
    return plan, sf.numpy(), rank_table


def plan_from_points(y: torch.Tensor, split: np.ndarray, tissue: np.ndarray | None, tumour: np.ndarray,
                     config: DiffusionConfig, measured: torch.Tensor | None = None, device: str = "cpu",
                     space: CountSpace | None = None) -> tuple[DiffusionPlan, list[dict]]:
    """A plan for points y [N, G] already in the model's space (`space`: the count transform
    they came from, None for data that are not counts, e.g. GEMDiff's log2 FPKM)."""
    check(config)
    split = np.asarray(split)
    train_idx = np.flatnonzero(split == "train")
    heldout_idx = np.flatnonzero((split != "train") & ~tumour)
    config = prepare_config(config, split, tissue, tumour)
    n_genes = y.shape[1]
    net, rank_table = config.network, []
    skip_classes = _skip_classes(config, tissue, tumour)
    if net.gaussian_skip and net.gaussian_rank < 0:
        if heldout_idx.size:
            rank, rank_table = choose_rank(y[train_idx], _take(skip_classes, train_idx), y[heldout_idx],
                                           _take(skip_classes, heldout_idx),
                                           None if measured is None else measured[heldout_idx], _n_classes(config),
                                           config.timesteps, config.training.eval_draws, config.training.seed + 1)
        else:
            rank = DEFAULT_RANK
        config = replace(config, network=replace(net, gaussian_rank=min(rank, max(train_idx.size - 1, 0), n_genes)))
    torch.manual_seed(config.training.seed)
    module = DiffusionModule(config, n_genes)
    if space is not None:
        module.space.load_state_dict(space.state_dict())
    if module.denoiser.skip is not None:
        module.denoiser.skip.fit(y[train_idx], _take(skip_classes, train_idx))
    tissue_index = module.tissue_index(None if tissue is None else list(tissue), len(split))
    condition = module.condition_index(NORMAL, len(split))
    if condition is not None:
        condition[torch.as_tensor(tumour)] = TUMOUR
    module.to(device)

    def dev(v: torch.Tensor | None) -> torch.Tensor | None:
        return None if v is None else v.to(device)

    plan = DiffusionPlan(module, y.to(device), dev(measured), dev(tissue_index), dev(condition),
                         torch.as_tensor(train_idx, device=device), torch.as_tensor(heldout_idx, device=device))
    return plan, rank_table


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


def run_training(plan: DiffusionPlan, checkpoints: Checkpointing | None = None, resume: bool = False,
                 on_epoch: Callable[[dict], None] | None = None) -> tuple[TrainingState, int | None, bool]:
    """Epochs until the config's count or early stopping (the best epoch restored); the state,
    the epoch resumed from and whether training stopped early."""
    t = plan.config.training
    state = TrainingState(plan, t.seed)
    resumed_from = checkpoints.resume(state, resume) if checkpoints else None
    early = t.early_stopping and len(plan.heldout_rows) > 0
    stopped = state.bad_evaluations >= t.patience if early else False
    if early and state.epoch == 0:  # the Gaussian part alone is the first candidate
        state.observe(plan.heldout_score(), t.patience)
    while state.epoch < t.epochs and not stopped:
        started = time.perf_counter()
        record = plan.train_epoch(state.generator)
        state.epoch += 1
        if state.epoch % t.eval_every == 0 or state.epoch == t.epochs:
            score = plan.heldout_score()
            record["heldout_denoising_mse"] = score
            if early:
                stopped = state.observe(score, t.patience)
        record |= plan.diagnostics()
        state.end_epoch(record, started, on_epoch)
        if checkpoints:
            checkpoints.save_if_due(state, t.checkpoint_every, last=state.epoch == t.epochs or stopped)
    if early:
        state.restore_best_epoch("held-out denoising MSE")
    plan.module.eval()
    return state, resumed_from, stopped


def train_diffusion(data: TrainingData, config: DiffusionConfig, *, tumour: np.ndarray | None = None,
                    device: str = "cpu", checkpoint_dir: Path | None = None, resume: bool = False,
                    on_epoch: Callable[[dict], None] | None = None) -> TrainResult:
    """Fit the diffusion model to `data` (`split` says which normals train and which are held
    out; `tumour` marks labelled tumours, used in training only) and calibrate its bridge."""
    started_all = time.perf_counter()
    plan, sf, rank_table = build_plan(data, config, tumour, device)
    module, t = plan.module, plan.config.training
    salt = "diffusion" + ("" if tumour is None else hashlib.sha256(np.asarray(tumour, bool).tobytes()).hexdigest())
    checkpoints = Checkpointing(checkpoint_dir, data.fingerprint(), json.dumps(plan.config.to_dict(), sort_keys=True),
                                salt=salt)
    state, resumed_from, stopped = run_training(plan, checkpoints, resume, on_epoch)
    early = t.early_stopping and len(plan.heldout_rows) > 0
    card: dict = {}
    if t.calibrate and len(plan.heldout_rows):
        rows = plan.heldout_rows.cpu().numpy()
        measured = None if data.measured is None else torch.as_tensor(data.measured[rows])
        tissues = None
        if module.config.bridge.use_tissue and data.tissue is not None:
            tissues = [str(v) for v in np.asarray(data.tissue)[rows]]
        card = calibrate(module, torch.as_tensor(data.counts[rows]), measured, tissues)
    if rank_table:
        card["gaussian_rank_grid"] = rank_table
    card["gaussian_rank"] = module.config.network.gaussian_rank
    if t.calibrate and not len(plan.heldout_rows):
        log.warning("no held-out normals: t*, the dispersions and the outlier null are not calibrated")
    return TrainResult(module=module.cpu(), size_factors=sf, card=card, history=state.history,
                       resumed_from=resumed_from, best_epoch=state.best_epoch if early else None,
                       stopped_early=stopped, outlier_null=card.get("outlier_null"),
                       checkpoint_dir=checkpoints.folder, seconds=time.perf_counter() - started_all)
