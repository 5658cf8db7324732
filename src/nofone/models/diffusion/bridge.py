"""The bridge: from a sample to its closest normal through the diffusion's noise.

- `sdedit` (a model of normals): noise the sample's point y to step t* with a seeded draw,
  y_t* = sqrt(abar) y + sqrt(1 - abar) eps, and estimate the clean point under the normal label
  (Meng et al. 2022, SDEdit): by default the denoiser's posterior mean E[y_0 | y_t*] =
  (y_t* - sqrt(1 - abar) eps_hat) / sqrt(abar) (Tweedie's formula: one network call), or the
  end of the deterministic DDIM path from t* (`estimate="ddim"`, a sample-like point). Small t*
  reproduces the sample, disease included; large t* forgets it, tissue included; t* is chosen
  on held-out normals (`calibrate.py`). Several draws are averaged, their spread kept per gene.
  On simulated normals the posterior mean was closer to the true means than the DDIM end point
  at every t* and removed more of a planted change (docs/diffusion.md), at 1/steps the cost.
- `invert` (GEMDiff's route, for a model trained with labelled tumours): deterministic DDIM
  inversion under the source (tumour) label up to t* (T when t* is 0 in the options), then DDIM
  decoding under the normal label. One draw: it has no randomness.

Each sample's noise comes from a generator seeded by the bridge seed, the draw and a hash of the
sample's own point, so a sample bridges the same whatever chunk or order it comes in.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from nofone.errors import InputError
from nofone.models.diffusion.module import NORMAL, TUMOUR, DiffusionModule
from nofone.models.diffusion.schedule import ddim_denoise, ddim_invert
from nofone.models.nb import nb_log_prob


@dataclass(frozen=True)
class BridgeOptions:
    """Per-call settings; None takes the model's (`config.bridge`)."""

    route: str | None = None
    estimate: str | None = None
    t_star: int | None = None
    steps: int | None = None
    draws: int | None = None
    seed: int | None = None
    guidance: float | None = None
    tissues: Sequence[str | None] | None = None  # per sample; None or unknown: no tissue label
    source: int = TUMOUR  # the label inverted under (invert)
    batch_size: int = 256


@dataclass(frozen=True)
class _Plan:
    route: str
    estimate: str
    t_star: int
    steps: int
    draws: int
    seed: int
    guidance: float


def _plan(module: DiffusionModule, options: BridgeOptions) -> _Plan:
    b = module.config.bridge
    route = options.route or b.route
    t_star = b.t_star if options.t_star is None else options.t_star
    if route == "invert":
        if not module.config.labels.tumour:
            raise InputError("the invert bridge needs a model trained with labelled tumours (labels.tumour); "
                             "use the sdedit route")
        t_star = t_star or module.config.timesteps
    if not 0 < t_star <= module.config.timesteps:
        raise InputError(f"bridge t* must be in 1..{module.config.timesteps} (got {t_star}: the model was not "
                         "calibrated; give t_star)")
    draws = 1 if route == "invert" else (options.draws or b.draws)
    return _Plan(route, options.estimate or b.estimate, int(t_star), int(options.steps or b.steps), int(draws),
                 int(b.seed if options.seed is None else options.seed),
                 float(b.guidance if options.guidance is None else options.guidance))


def _keys(y: torch.Tensor) -> list[int]:
    """A 63-bit key per row from its bytes: the same point always gets the same noise."""
    rows = y.detach().cpu().contiguous().numpy()
    return [int.from_bytes(hashlib.blake2b(r.tobytes(), digest_size=8).digest(), "little") >> 1 for r in rows]


def seeded_noise(keys: list[int], seed: int, draw: int, n_genes: int) -> torch.Tensor:
    """[N, G] standard normal noise, row i from its own generator (seed, draw, key i)."""
    out = torch.empty(len(keys), n_genes)
    for i, key in enumerate(keys):
        g = torch.Generator().manual_seed((key ^ (seed * 1_000_003 + draw * 7_919)) % (2**63))
        out[i] = torch.randn(n_genes, generator=g)
    return out


@torch.no_grad()
def bridge_points(module: DiffusionModule, y: torch.Tensor, options: BridgeOptions | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean over draws [N, G], every draw [D, N, G]) of the bridged points of y [N, G]."""
    options = options or BridgeOptions()
    plan = _plan(module, options)
    device = module.log_r.device
    y = y.to(device=device, dtype=torch.float32)
    n = y.shape[0]
    if options.tissues is not None and len(options.tissues) != n:
        raise ValueError("one tissue per sample expected")
    tissue_all = module.tissue_index(options.tissues, n)
    keys = _keys(y)
    schedule = module.schedule
    draws = torch.empty(plan.draws, n, y.shape[1], device=device)
    for start in range(0, n, options.batch_size):
        rows = slice(start, min(n, start + options.batch_size))
        yb = y[rows]
        tissue = None if tissue_all is None else tissue_all[rows]

        def eps_fn(label: int | None, guidance: float, tissue=tissue, m=yb.shape[0]):
            condition = module.condition_index(label, m)
            return lambda v, t: module.eps(v, t, tissue, condition, guidance)

        if plan.route == "invert":
            latent = ddim_invert(schedule, eps_fn(options.source, 1.0), yb, plan.t_star, plan.steps)
            draws[0, rows] = ddim_denoise(schedule, eps_fn(NORMAL, plan.guidance), latent, plan.t_star, plan.steps)
            continue
        ab = float(schedule.alpha_bar[plan.t_star])
        denoiser = eps_fn(NORMAL, plan.guidance)
        t_star = torch.full((yb.shape[0],), plan.t_star, dtype=torch.long, device=device)
        for d in range(plan.draws):
            noise = seeded_noise(keys[rows], plan.seed, d, y.shape[1]).to(device)
            noisy = math.sqrt(ab) * yb + math.sqrt(1 - ab) * noise
            if plan.estimate == "tweedie":
                draws[d, rows] = schedule.predict_x0(noisy, t_star, denoiser(noisy, t_star))
            else:
                draws[d, rows] = ddim_denoise(schedule, denoiser, noisy, plan.t_star, plan.steps)
    return draws.mean(0), draws


# -- the model interface's answers ------------------------------------------------------------------


@torch.no_grad()
def decode(module: DiffusionModule, latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(relative NB mean [N, G] float64, dispersion [N, G]) at bridged points `latent`."""
    latent = latent.to(module.log_r.device)
    relative = module.space.relative_mean(latent)
    return relative, module.dispersion.expand_as(relative)


@torch.no_grad()
def closest_normal(module: DiffusionModule, counts: torch.Tensor | np.ndarray, measured=None,
                   options: BridgeOptions | None = None) -> dict:
    """Per sample of a chunk: the bridged point `latent` [N, G] (in the model's space), `scale` [N]
    (the size factor: NB mean = scale x relative mean), `count_nll` [N] (over measured genes, at
    the calibrated dispersion), `latent_nll` [N] (NaN: no prior density), `responsibilities`
    None, `n_measured` [N] and `spread` [N, G] (sd over the draws of log2 relative mean)."""
    device = module.log_r.device
    x = torch.as_tensor(counts, dtype=torch.float64, device=device)
    m = None if measured is None else torch.as_tensor(measured, dtype=torch.bool, device=device)
    sf = module.space.size_factors(x, m)
    y = module.space(x, sf, m)
    point, draws = bridge_points(module, y, options)
    relative, r = decode(module, point)
    ll = nb_log_prob(x, relative * sf.unsqueeze(-1), r)
    if m is not None:
        ll = ll * m
    spread = torch.zeros(point.shape, device=device)
    if draws.shape[0] > 1:  # sd over the draws, one pass in float32
        total, total2 = torch.zeros_like(spread), torch.zeros_like(spread)
        for d in draws:
            v = torch.log2(module.space.relative_mean(d)).float()
            total += v
            total2 += v * v
        mean = total / draws.shape[0]
        spread = (total2 / draws.shape[0] - mean * mean).clamp_min(0).sqrt()
    n_measured = m.sum(-1) if m is not None else torch.full((x.shape[0],), x.shape[1], device=device)
    return {"latent": point, "scale": sf, "count_nll": -ll.sum(-1), "latent_nll": torch.full_like(sf, math.nan),
            "responsibilities": None, "n_measured": n_measured, "spread": spread.float()}
