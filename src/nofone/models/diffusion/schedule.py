"""The cosine noise schedule and deterministic DDIM moves along it.

Steps t = 0..T, with t = 0 the clean data: abar(0) = 1 and, for t >= 1,
abar(t) = prod_{s <= t} (1 - beta_s), beta_s = min(1 - f(s/T) / f((s-1)/T), 0.999),
f(u) = cos^2(((u + 0.008) / 1.008) pi / 2) (Nichol & Dhariwal 2021, the schedule GEMDiff uses).
Without the clip abar(t) = f(t/T) / f(0) exactly; the clip only acts on the last steps, where
abar is already below 1e-5.

Forward: y_t = sqrt(abar_t) y_0 + sqrt(1 - abar_t) eps. The network predicts eps. A DDIM move
from step t to step s (either direction) with eta = 0 is deterministic:
x0_hat = (y_t - sqrt(1 - abar_t) eps_hat) / sqrt(abar_t), y_s = sqrt(abar_s) x0_hat +
sqrt(1 - abar_s) eps_hat. Moving up (s > t) with eps_hat from step t is DDIM inversion, exact in
the limit of small steps. With eta > 0 a move down adds fresh noise (eta = 1 with every step is
DDPM's ancestral sampler).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import numpy as np
import torch

COSINE_OFFSET = 0.008
MAX_BETA = 0.999

#: eps_fn(y, t) -> eps_hat, with t a LongTensor [N] of steps
EpsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def cosine_f(u: np.ndarray | float) -> np.ndarray:
    return np.cos((np.asarray(u, dtype=np.float64) + COSINE_OFFSET) / (1 + COSINE_OFFSET) * math.pi / 2) ** 2


def cosine_alpha_bar(timesteps: int) -> np.ndarray:
    """[T + 1] float64: abar(0) = 1, ..., abar(T)."""
    t = np.arange(1, timesteps + 1)
    betas = np.minimum(1 - cosine_f(t / timesteps) / cosine_f((t - 1) / timesteps), MAX_BETA)
    return np.concatenate([[1.0], np.cumprod(1 - betas)])


class Schedule:
    """abar(t) for t = 0..T as a float64 tensor, with the moves that use it.

    `x0_clip`: every move clamps its estimate of the clean point to +-x0_clip (GEMDiff's
    `clip_denoised`). The clip of the last beta leaves abar(T) = 2.4e-9, so a move from T divides
    the noise-prediction error by sqrt(abar(T)) = 5e-5; without the clamp one such step can throw
    a point thousands of standard deviations away.
    """

    def __init__(self, timesteps: int, device: str | torch.device = "cpu", x0_clip: float | None = None):
        self.timesteps = timesteps
        self.x0_clip = x0_clip
        self.alpha_bar = torch.as_tensor(cosine_alpha_bar(timesteps), dtype=torch.float64, device=device)

    def to(self, device: str | torch.device) -> Schedule:
        self.alpha_bar = self.alpha_bar.to(device)
        return self

    def coefficients(self, t: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """(sqrt(abar_t), sqrt(1 - abar_t)) as [N, 1] columns."""
        a = self.alpha_bar[t.to(self.alpha_bar.device)]
        return a.sqrt().to(dtype).unsqueeze(-1), (1 - a).sqrt().to(dtype).unsqueeze(-1)

    def add_noise(self, y0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """y_t = sqrt(abar_t) y0 + sqrt(1 - abar_t) eps."""
        a, b = self.coefficients(t, y0.dtype)
        return a * y0 + b * eps

    def predict_x0(self, y: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """(y - sqrt(1 - abar_t) eps) / sqrt(abar_t), clamped to +-x0_clip when set."""
        a, b = self.coefficients(t, y.dtype)
        x0 = (y - b * eps) / a
        return x0 if self.x0_clip is None else x0.clamp(-self.x0_clip, self.x0_clip)

    def move(self, y: torch.Tensor, t: int, s: int, eps: torch.Tensor, eta: float = 0.0,
             generator: torch.Generator | None = None) -> torch.Tensor:
        """One DDIM move of y from step t to step s, given eps_hat at (y, t); eta > 0 (down only)
        adds fresh noise of DDIM's sigma."""
        n = y.shape[0]
        tt = torch.full((n,), t, dtype=torch.long, device=y.device)
        x0 = self.predict_x0(y, tt, eps)
        ab_t, ab_s = float(self.alpha_bar[t]), float(self.alpha_bar[s])
        if self.x0_clip is not None and ab_t < 1:  # the noise that the clamped x0 implies
            eps = (y - math.sqrt(ab_t) * x0) / math.sqrt(1 - ab_t)
        sigma = 0.0
        if eta > 0 and s < t:
            sigma = eta * math.sqrt((1 - ab_s) / (1 - ab_t) * (1 - ab_t / ab_s))
        out = math.sqrt(ab_s) * x0 + math.sqrt(max(1 - ab_s - sigma**2, 0.0)) * eps
        if sigma > 0:
            out = out + sigma * torch.randn(y.shape, generator=generator, dtype=y.dtype).to(y.device)
        return out


def fixed_draws(n_samples: int, draws: int, n_genes: int, timesteps: int, seed: int
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(rows, t, eps) of a fixed evaluation: each of `n_samples` rows `draws` times, at steps
    stratified over 1..T (one per equal slice, offset at random per row) with seeded noise, so
    that successive evaluations differ only through the model and the steps cover the range."""
    g = torch.Generator().manual_seed(seed)
    rows = torch.arange(n_samples).repeat_interleave(draws)
    offset = torch.rand(n_samples, 1, generator=g, dtype=torch.float64)
    slices = (torch.arange(draws, dtype=torch.float64).unsqueeze(0) + offset) / draws
    t = (1 + (slices * timesteps).floor().long().clamp_max(timesteps - 1)).reshape(-1)
    eps = torch.randn((len(rows), n_genes), generator=g)
    return rows, t, eps


def step_grid(t_from: int, t_to: int, steps: int) -> list[int]:
    """`steps` + 1 integer steps evenly spaced from t_from to t_to (either direction), no repeats."""
    grid = np.rint(np.linspace(t_from, t_to, steps + 1)).astype(int).tolist()
    return [v for i, v in enumerate(grid) if i == 0 or v != grid[i - 1]]


def _run(schedule: Schedule, eps_fn: EpsFn, y: torch.Tensor, grid: list[int], eta: float = 0.0,
         generator: torch.Generator | None = None) -> torch.Tensor:
    for t, s in itertools.pairwise(grid):
        tt = torch.full((y.shape[0],), t, dtype=torch.long, device=y.device)
        y = schedule.move(y, t, s, eps_fn(y, tt), eta, generator)
    return y


@torch.no_grad()
def ddim_denoise(schedule: Schedule, eps_fn: EpsFn, y: torch.Tensor, t_from: int, steps: int, eta: float = 0.0,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """From step t_from down to 0 in `steps` DDIM moves (deterministic with eta = 0)."""
    if t_from <= 0:
        return y
    return _run(schedule, eps_fn, y, step_grid(t_from, 0, min(steps, t_from)), eta, generator)


@torch.no_grad()
def ddim_invert(schedule: Schedule, eps_fn: EpsFn, y: torch.Tensor, t_to: int, steps: int) -> torch.Tensor:
    """From the data (step 0) up to step t_to in `steps` deterministic DDIM inversion moves."""
    if t_to <= 0:
        return y
    return _run(schedule, eps_fn, y, step_grid(0, t_to, min(steps, t_to)))
