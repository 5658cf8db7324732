"""The DGD as torch modules: decoder, Gaussian-mixture prior, gene-wise dispersion.

The decoder maps a latent point to per-gene *relative* means (softplus output); a sample's NB
mean is that times its scaling factor (bulkDGD v1: the mean of its counts over the model's
genes). Dispersion r_g = exp(log_r_g) is per gene. The model knows nothing of files.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn

from nofone.models.dgd.config import DGDConfig
from nofone.models.gmm import GaussianMixture
from nofone.models.nb import nb_log_prob


class Decoder(nn.Module):
    """latent -> Linear/ReLU hidden layers -> Linear -> softplus (relative mean per gene)."""

    def __init__(self, latent_dim: int, hidden: tuple[int, ...], n_genes: int):
        super().__init__()
        sizes = (latent_dim, *hidden)
        layers: list[nn.Module] = []
        for a, b in itertools.pairwise(sizes):
            layers += [nn.Linear(a, b), nn.ReLU()]
        self.hidden = nn.Sequential(*layers)
        self.output = nn.Linear(sizes[-1], n_genes)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return nn.functional.softplus(self.output(self.hidden(z)))


class DGDModule(nn.Module):
    """Decoder + GMM + dispersions, with the likelihood terms of the DGD loss."""

    def __init__(self, config: DGDConfig, n_genes: int):
        super().__init__()
        self.config = config
        self.n_genes = n_genes
        self.decoder = Decoder(config.latent_dim, config.hidden, n_genes)
        self.gmm = GaussianMixture(config.latent_dim, config.gmm)
        self.log_r = nn.Parameter(torch.full((n_genes,), math.log(config.dispersion_init)))

    @property
    def dispersion(self) -> torch.Tensor:
        return torch.exp(self.log_r)

    def count_log_prob(self, x: torch.Tensor, z: torch.Tensor, scale: torch.Tensor,
                       measured: torch.Tensor | None = None) -> torch.Tensor:
        """[N] float64: sum over measured genes of log NB(x | scale * decoder(z), r)."""
        mean = self.decoder(z) * scale.unsqueeze(-1)
        ll = nb_log_prob(x, mean, self.dispersion)
        if measured is not None:
            ll = ll * measured
        return ll.sum(-1)

    @torch.no_grad()
    def initialise_output_bias(self, relative_mean: torch.Tensor) -> None:
        """Start the decoder at the average relative expression of each gene (inverse softplus)."""
        y = relative_mean.clamp_min(1e-8).to(self.decoder.output.bias.dtype)
        inverse = torch.where(y > 20, y, torch.log(torch.expm1(y)))
        self.decoder.output.bias.copy_(inverse)
