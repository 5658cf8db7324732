"""The NB-VAE as a model: save, load, and the interface representation search and `nofone de`
use (`nofone.inference.represent.LatentModel`).

- `candidate_starts(counts)`: the encoder's posterior mean given the counts ([N, 1, D]), the
  counts normalised by their median-of-ratios size factors against the training reference;
- `latent_log_prob(z)`: the standard normal prior, so that representation search refines the
  encoder mean under the prior (as the DGD's search does under its mixture) when it takes steps;
- `responsibilities(z)`: ones [N, 1]; `n_components`: 1;
- `relative_means(z)`: the decoder's rho(z), in normalised-count units;
- `default_scaling`: "median", i.e. `nofone.models.scaling.scaling_factor(..., "median")`: the
  median over expressed, measured genes of x_g / rho_g(z). For a sample like the training
  samples this estimates the same quantity as the training offset (a median of ratios whose
  reference is the expected normalised count): it differs in that the reference is the sample's
  own decoded profile instead of the cohort's geometric means, which is what the closest-normal
  test needs (a sample of a tissue unlike most of the cohort is scaled against its own kind). A
  constant factor on rho would cancel (the NB mean is scale x rho), so nothing model-specific is
  needed: `nofone represent` and `nofone de` run unchanged. `size_factors(counts)` gives the
  training-reference factors for comparison (docs/nbvae.md reports both on simulated data).
"""

from __future__ import annotations

import math

import torch

from nofone.models.base import ArtifactModel
from nofone.models.nbvae.config import NBVAEConfig
from nofone.models.nbvae.module import NBVAEModule

MODEL_TYPE = "nbvae"


class NBVAE(ArtifactModel):
    """A trained NB-VAE: module + gene table + config + provenance."""

    MODEL_TYPE = MODEL_TYPE
    DISPLAY_NAME = "an NB-VAE"
    CONFIG_CLASS = NBVAEConfig
    MODULE_CLASS = NBVAEModule

    @property
    def n_components(self) -> int:
        return 1

    @property
    def default_scaling(self) -> str:
        return "median"

    # -- the LatentModel interface ---------------------------------------------------------------

    def log2_relative_means(self, z: torch.Tensor) -> torch.Tensor:
        """log2 of the decoded normalised expression (the decoder's log link, divided by ln 2)."""
        return self.module.decoder.log_mean(z) / math.log(2.0)

    def latent_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return self.module.prior_log_prob(z)

    def responsibilities(self, z: torch.Tensor) -> torch.Tensor:
        return torch.ones(*z.shape[:-1], 1, dtype=z.dtype, device=z.device)

    @torch.no_grad()
    def candidate_starts(self, counts: torch.Tensor) -> torch.Tensor:
        """[N, 1, D]: the encoder's posterior mean of each sample.

        The counts of genes a sample did not measure arrive as zeros (this interface has no mask);
        they are encoded as such and representation search, which does use the mask, corrects
        the start.
        """
        mean, _ = self.encode(counts)
        return mean.unsqueeze(1)

    # -- beyond the interface --------------------------------------------------------------------

    def size_factors(self, counts: torch.Tensor, measured: torch.Tensor | None = None) -> torch.Tensor:
        """[N] median-of-ratios size factors against the training samples' reference."""
        return self.module.size_factors(counts, measured)

    @torch.no_grad()
    def encode(self, counts: torch.Tensor, measured: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior (mean, log-variance) [N, D] of each sample."""
        counts = counts.to(self.module.input_centre.device)
        sf = self.module.size_factors(counts, measured)
        return self.module.encode(counts, sf, measured)
