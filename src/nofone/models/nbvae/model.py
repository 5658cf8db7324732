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
import os
from pathlib import Path

import pandas as pd
import torch

from nofone import __version__
from nofone.errors import InputError
from nofone.io.artifact import read_artifact, write_artifact
from nofone.models.nbvae.config import NBVAEConfig
from nofone.models.nbvae.module import NBVAEModule

MODEL_TYPE = "nbvae"


class NBVAE:
    """A trained NB-VAE: module + gene table + config + provenance."""

    model_type = MODEL_TYPE

    def __init__(self, module: NBVAEModule, genes: pd.DataFrame, info: dict | None = None):
        self.module = module.eval()
        self.module.requires_grad_(False)
        self.genes = genes.reset_index(drop=True)
        self.info = info or {}
        if len(self.genes) != module.n_genes:
            raise ValueError("gene table and module disagree on the number of genes")

    @property
    def config(self) -> NBVAEConfig:
        return self.module.config

    @property
    def gene_ids(self) -> list[str]:
        return self.genes["gene_id"].tolist()

    @property
    def n_components(self) -> int:
        return 1

    @property
    def dispersion(self) -> torch.Tensor:
        return self.module.dispersion.detach()

    @property
    def default_scaling(self) -> str:
        return "median"

    def to(self, device: str) -> NBVAE:
        self.module.to(device)
        return self

    # -- the LatentModel interface ---------------------------------------------------------------

    def relative_means(self, z: torch.Tensor) -> torch.Tensor:
        return self.module.decoder(z)

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

    # -- persistence ---------------------------------------------------------------------------

    def save(self, folder: Path, extra_info: dict | None = None) -> None:
        """Write the artifact into `folder` (extra files should already be there)."""
        config = {
            "model_type": MODEL_TYPE,
            "nofone_version": __version__,
            "n_genes": self.module.n_genes,
            "nbvae": self.config.to_dict(),
            **self.info,
            **(extra_info or {}),
        }
        write_artifact(folder, config, self.module.state_dict(), self.genes)

    @classmethod
    def load(cls, folder: str | os.PathLike[str], device: str = "cpu") -> NBVAE:
        artifact = read_artifact(folder)
        model_type = artifact.config.get("model_type")
        if model_type != MODEL_TYPE:
            raise InputError(f"model {folder} is a {model_type!r} model, not an NB-VAE")
        if "nbvae" not in artifact.config:
            raise InputError(f"model {folder}: config.json has no 'nbvae' settings")
        config = NBVAEConfig.from_dict(artifact.config["nbvae"], where=f"{folder}/config.json")
        module = NBVAEModule(config, len(artifact.genes))
        try:
            module.load_state_dict(artifact.tensors)
        except RuntimeError as exc:
            raise InputError(f"model {folder}: weights do not fit its config ({exc})") from exc
        info = {k: v for k, v in artifact.config.items() if k not in {"model_type", "nbvae", "n_genes"}}
        return cls(module, artifact.genes, info).to(device)
