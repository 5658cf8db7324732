"""The diffusion model as a nofone model artifact, with the two answers the model interface asks.

- `closest_normal(counts, measured, options)`: the bridge (`bridge.closest_normal`): per sample
  the bridged point (`latent`, [N, G] in the model's space), the size factor (`scale`), the count
  NLL, NaN latent NLL (no prior density), no responsibilities, the measured-gene count and the
  per-gene spread over the seeded draws;
- `decode(latent)`: (relative mean [N, G], dispersion [N, G]); NB mean = scale x relative mean.

Saved and loaded as every nofone model (`nofone.models.base.ArtifactModel`): config.json (with
the chosen t* in `diffusion.bridge.t_star`), weights.safetensors (EMA weights, transform,
dispersions, held-out deviations), genes.tsv and checksums.
"""

from __future__ import annotations

import numpy as np
import torch

from nofone.models.base import ArtifactModel
from nofone.models.diffusion import bridge
from nofone.models.diffusion.config import DiffusionConfig, settings
from nofone.models.diffusion.module import DiffusionModule

MODEL_TYPE = "diffusion"


class Diffusion(ArtifactModel):
    """A trained diffusion model: module + gene table + provenance."""

    MODEL_TYPE = MODEL_TYPE
    DISPLAY_NAME = "a diffusion model"
    CONFIG_CLASS = DiffusionConfig
    MODULE_CLASS = DiffusionModule

    settings = staticmethod(settings)

    def closest_normal(self, counts: np.ndarray | torch.Tensor, measured: np.ndarray | None = None,
                       options: bridge.BridgeOptions | None = None) -> dict:
        return bridge.closest_normal(self.module, counts, measured, options)

    def decode(self, latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return bridge.decode(self.module, latent)

    def relative_means(self, z: torch.Tensor) -> torch.Tensor:
        return self.decode(z)[0]
