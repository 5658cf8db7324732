"""The diffusion model as one torch module: count space, denoiser (EMA weights), calibration.

Everything a trained model needs travels in its state dict: the transform's buffers
(`space.*`), the denoiser's weights (the exponential moving average of the trained weights,
which is what bridging and sampling use), each gene's NB dispersion `log_r` and the held-out
normals' bridge deviations `null_deviation` [n, G] that calibrate `perturb` (its first dimension
is the number of held-out normals, so loading resizes it). The chosen t* is part of the config.
The module knows nothing of files.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from nofone.models.diffusion.config import DiffusionConfig
from nofone.models.diffusion.network import Denoiser
from nofone.models.diffusion.schedule import Schedule
from nofone.models.diffusion.transform import CountSpace

NORMAL, TUMOUR = 0, 1


class DiffusionModule(nn.Module):
    def __init__(self, config: DiffusionConfig, n_genes: int):
        super().__init__()
        self.config = config
        self.n_genes = n_genes
        self.space = CountSpace(n_genes, config.clamp)
        self.denoiser = Denoiser(config, n_genes)
        self.register_buffer("log_r", torch.full((n_genes,), 2.3, dtype=torch.float64))
        self.register_buffer("null_deviation", torch.zeros(0, n_genes))
        self._schedule: Schedule | None = None

    # -- bookkeeping -------------------------------------------------------------------------------

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
        null = state_dict.get("null_deviation")
        if null is not None and null.shape != self.null_deviation.shape:
            self.null_deviation = torch.zeros_like(null, device=self.null_deviation.device)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def set_t_star(self, t_star: int) -> None:
        self.config = replace(self.config, bridge=replace(self.config.bridge, t_star=int(t_star)))

    @property
    def schedule(self) -> Schedule:
        device = self.log_r.device
        if self._schedule is None or self._schedule.alpha_bar.device != device:
            self._schedule = Schedule(self.config.timesteps, device, x0_clip=self.config.clamp)
        return self._schedule

    @property
    def dispersion(self) -> torch.Tensor:
        return torch.exp(self.log_r)

    def log_dispersion_at(self, z: torch.Tensor) -> torch.Tensor:
        return self.log_r.expand(*z.shape[:-1], self.n_genes)

    @torch.no_grad()
    def rescale_log_dispersion(self, a: float, b: float) -> None:
        """log r <- a + b log r (`nofone.models.calibration.calibrate_dispersion`)."""
        self.log_r.mul_(b).add_(a)

    # -- labels ------------------------------------------------------------------------------------

    def tissue_index(self, tissues: Sequence[str | None] | None, n: int) -> torch.Tensor | None:
        """[n] indices of tissue names (unknown or None: the null label); None without tissue labels."""
        names = self.config.labels.tissues
        if not names:
            return None
        lookup = {name: i for i, name in enumerate(names)}
        values = [len(names)] * n if tissues is None else [lookup.get(str(t), len(names)) if t is not None
                                                          else len(names) for t in tissues]
        return torch.as_tensor(values, dtype=torch.long, device=self.log_r.device)

    def condition_index(self, value: int | None, n: int) -> torch.Tensor | None:
        """[n] copies of NORMAL / TUMOUR (None: the null label); None without that label."""
        if not self.config.labels.tumour:
            return None
        return torch.full((n,), 2 if value is None else value, dtype=torch.long, device=self.log_r.device)

    # -- the noise prediction ----------------------------------------------------------------------

    def eps(self, y: torch.Tensor, t: torch.Tensor, tissue: torch.Tensor | None = None,
            condition: torch.Tensor | None = None, guidance: float = 1.0,
            network: Denoiser | None = None) -> torch.Tensor:
        """eps_hat at (y, t); with a condition label and guidance w != 1, classifier-free guidance
        eps(null) + w (eps(label) - eps(null)). `network`: another set of weights (training)."""
        net = network or self.denoiser
        alpha_bar = self.schedule.alpha_bar
        conditional = net(y, t, alpha_bar, tissue, condition)
        if condition is None or guidance == 1.0 or not self.config.labels.tumour:
            return conditional
        unconditional = net(y, t, alpha_bar, tissue, torch.full_like(condition, 2))
        return unconditional + guidance * (conditional - unconditional)
