"""The diffusion model as a model of normal tissue (`nofone.models.base.NormalModel`).

- `closest_normal(counts, measured, options)`: the bridge (`bridge.closest_normal`): per sample
  the bridged point (`latent`, [N, G] in the model's space: no low-dimensional latent, D = G),
  the size factor against the training normals' reference as the NB scale (the scale the
  calibration used; another `options.scaling` is computed at the bridged point), the count NLL,
  NaN latent NLL (no prior density), no responsibilities (no components), the measured-gene
  count and the per-gene spread over the seeded draws;
- `decode(latent)`: (relative mean [N, G], dispersion [N, G]); NB mean = scale x relative mean.

Trained through the shared loop with `DiffusionPlan`. Saved and loaded as every nofone model
(`nofone.models.base.ArtifactModel`): config.json (with the chosen t* in
`diffusion.bridge.t_star`), weights.safetensors (EMA weights, transform, dispersions, held-out
deviations), genes.tsv and checksums.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from nofone.models.base import ClosestNormal, NormalModel
from nofone.models.diffusion import bridge
from nofone.models.diffusion.config import PRESETS, DiffusionConfig, load_config
from nofone.models.diffusion.module import DiffusionModule
from nofone.models.diffusion.train import DiffusionPlan
from nofone.models.nb import nb_log_prob
from nofone.models.scaling import scaling_factor

if TYPE_CHECKING:
    from nofone.inference.represent import SearchConfig

MODEL_TYPE = "diffusion"
#: the model's own scale: a median of ratios (against the training normals' reference)
OWN_SCALING = "median"


class Diffusion(NormalModel):
    """A trained diffusion model: module + gene table + provenance."""

    MODEL_TYPE = MODEL_TYPE
    DISPLAY_NAME = "a diffusion model"
    CONFIG_CLASS = DiffusionConfig
    MODULE_CLASS = DiffusionModule
    PRESETS = PRESETS
    DEFAULT_PRESET = "cpu"
    PLAN = DiffusionPlan
    gives_spread = True

    @classmethod
    def settings(cls, preset_or_json: str | None = None, overrides: dict | None = None) -> DiffusionConfig:
        return load_config(preset_or_json or cls.DEFAULT_PRESET, overrides)

    @property
    def default_scaling(self) -> str:
        return OWN_SCALING

    @property
    def latent_dim(self) -> int:
        return self.module.n_genes

    @classmethod
    def fit_note(cls, summary: dict) -> str:
        card = summary.get("dispersion_calibration") or {}
        if not card.get("t_star"):
            return "bridge not calibrated (no held-out normals)"
        return (f"bridge t* {card['t_star']}, held-out normals reconstructed to a mean |log2 fold| of "
                f"{card['reconstruction_mean_abs_log2']:.2f}")

    def dispersion_at(self, z: torch.Tensor) -> torch.Tensor:
        return self.module.dispersion.expand(*z.shape[:-1], self.module.n_genes)

    def decode(self, latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return bridge.decode(self.module, latent)

    def relative_means(self, z: torch.Tensor) -> torch.Tensor:
        return self.decode(z)[0]

    def closest_normal(self, counts: torch.Tensor | np.ndarray, measured: torch.Tensor | np.ndarray | None = None,
                       options: SearchConfig | None = None) -> ClosestNormal:
        """The bridge with the model's settings (`config.bridge`); `options` only says the scaling."""
        found = self.bridge(counts, measured)
        scaling = OWN_SCALING if options is None or options.scaling is None else options.scaling
        if scaling != OWN_SCALING:
            x = torch.as_tensor(counts, dtype=torch.float64, device=found["scale"].device)
            m = None if measured is None else torch.as_tensor(measured, dtype=torch.bool, device=x.device)
            relative, r = self.decode(found["latent"])
            found["scale"] = scaling_factor(x, relative, m, scaling)
            ll = nb_log_prob(x, relative * found["scale"].unsqueeze(-1), r)
            found["count_nll"] = -(ll if m is None else ll * m).sum(-1)
        return ClosestNormal(**found)

    def bridge(self, counts: torch.Tensor | np.ndarray, measured: torch.Tensor | np.ndarray | None = None,
               options: bridge.BridgeOptions | None = None) -> dict:
        """`bridge.closest_normal` with per-call bridge settings (route, t*, draws, seed, tissues)."""
        return bridge.closest_normal(self.module, counts, measured, options)
