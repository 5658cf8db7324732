"""The NB-VAE as a model of normal tissue (`nofone.models.base.LatentNormalModel`).

- closest normal: the shared latent search started at the encoder's posterior mean given the
  counts (`candidate_starts`, [N, 1, D]; the counts normalised by their median-of-ratios size
  factors against the training reference, genes a sample did not measure left out), refined
  under the standard normal prior (as the DGD's search refines under its mixture);
- one component (the prior is one standard normal): responsibilities are ones [N, 1];
- `relative_means(z)`: the decoder's rho(z), in normalised-count units;
- `default_scaling`: "median", i.e. `nofone.models.scaling.scaling_factor(..., "median")`: the
  median over expressed, measured genes of x_g / rho_g(z). For a sample like the training
  samples this estimates the same quantity as the training offset (a median of ratios whose
  reference is the expected normalised count): it differs in that the reference is the sample's
  own decoded profile instead of the cohort's geometric means, which is what the closest-normal
  test needs (a sample of a tissue unlike most of the cohort is scaled against its own kind). A
  constant factor on rho would cancel (the NB mean is scale x rho), so nothing model-specific is
  needed: `nofone represent` and `nofone de` run unchanged. `size_factors(counts)` gives the
  training-reference factors for comparison.
"""

from __future__ import annotations

import math

import torch

from nofone.models.base import LatentNormalModel
from nofone.models.nbvae.config import PRESETS, NBVAEConfig, load_config
from nofone.models.nbvae.module import NBVAEModule
from nofone.models.nbvae.train import NBVAEPlan

MODEL_TYPE = "nbvae"


class NBVAE(LatentNormalModel):
    """A trained NB-VAE: module + gene table + config + provenance."""

    MODEL_TYPE = MODEL_TYPE
    DISPLAY_NAME = "an NB-VAE"
    CONFIG_CLASS = NBVAEConfig
    MODULE_CLASS = NBVAEModule
    PRESETS = PRESETS
    PLAN = NBVAEPlan
    DEFAULT_PRESET = "default"

    @classmethod
    def settings(cls, preset_or_json: str | None = None, overrides: dict | None = None) -> NBVAEConfig:
        return load_config(preset_or_json or cls.DEFAULT_PRESET, overrides)

    @property
    def n_components(self) -> int:
        return 1

    @classmethod
    def fit_note(cls, summary: dict) -> str:
        return f"{summary['active_latent_dims']} active latent dimensions"

    @property
    def default_scaling(self) -> str:
        return "median"

    def log2_relative_means(self, z: torch.Tensor) -> torch.Tensor:
        """log2 of the decoded normalised expression (the decoder's log link, divided by ln 2)."""
        return self.module.decoder.log_mean(z) / math.log(2.0)

    def responsibilities(self, z: torch.Tensor) -> torch.Tensor:
        return torch.ones(*z.shape[:-1], 1, dtype=z.dtype, device=z.device)

    def candidate_starts(self, counts: torch.Tensor, measured: torch.Tensor | None = None) -> torch.Tensor:
        """[N, 1, D]: the encoder's posterior mean of each sample (unmeasured genes left out)."""
        mean, _ = self.encode(counts, measured)
        return mean.unsqueeze(1)

    # -- beyond the interface --------------------------------------------------------------------

    def size_factors(self, counts: torch.Tensor, measured: torch.Tensor | None = None) -> torch.Tensor:
        """[N] median-of-ratios size factors against the training samples' reference."""
        return self.module.size_factors(counts, measured)

    @torch.no_grad()
    def encode(self, counts: torch.Tensor, measured: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior (mean, log-variance) [N, D] of each sample."""
        device = self.module.input_centre.device
        return self.module.posterior(counts.to(device), None if measured is None else measured.to(device))
