"""The DGD as torch modules: decoder, Gaussian-mixture prior, gene-wise dispersion.

The decoder maps a latent point to per-gene *relative* means (softplus output); a sample's NB
mean is that times its scaling factor (bulkDGD v1: the mean of its counts over the model's
genes). Dispersion r_g = exp(log_r_g) is per gene (`config.dispersion == "gene"`, the paper);
with `"latent"` log r is a linear map of the decoder's last hidden layer, so r depends on the
latent point (bulkDGD 2.x's 'nb_full_dispersion'). A gene that varies a lot between tissues
then need not get a wide NB in every tissue. The model knows nothing of files.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn

from nofone.errors import InputError
from nofone.models.dgd.config import DGDConfig
from nofone.models.gmm import GaussianMixture
from nofone.models.nb import nb_log_prob

DISPERSIONS = ("gene", "latent")


class Decoder(nn.Module):
    """latent -> Linear/ReLU hidden layers -> Linear -> softplus (relative mean per gene).

    With `latent_dispersion`, a second Linear head on the last hidden layer gives log r.
    """

    def __init__(self, latent_dim: int, hidden: tuple[int, ...], n_genes: int, latent_dispersion: bool = False):
        super().__init__()
        sizes = (latent_dim, *hidden)
        layers: list[nn.Module] = []
        for a, b in itertools.pairwise(sizes):
            layers += [nn.Linear(a, b), nn.ReLU()]
        self.hidden = nn.Sequential(*layers)
        self.output = nn.Linear(sizes[-1], n_genes)
        self.log_r = nn.Linear(sizes[-1], n_genes) if latent_dispersion else None

    def mean_parameters(self) -> list[nn.Parameter]:
        """Every parameter but the dispersion head's (that one has its own optimiser)."""
        head = set() if self.log_r is None else {id(p) for p in self.log_r.parameters()}
        return [p for p in self.parameters() if id(p) not in head]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return nn.functional.softplus(self.output(self.hidden(z)))

    def decode(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(relative means, log r at z or None when r is per gene only), one hidden pass."""
        h = self.hidden(z)
        return nn.functional.softplus(self.output(h)), (None if self.log_r is None else self.log_r(h))


class DGDModule(nn.Module):
    """Decoder + GMM + dispersions, with the likelihood terms of the DGD loss."""

    def __init__(self, config: DGDConfig, n_genes: int):
        super().__init__()
        self.config = config
        self.n_genes = n_genes
        if config.dispersion not in DISPERSIONS:
            raise InputError(f"DGD config: dispersion {config.dispersion!r} is not one of {DISPERSIONS}")
        latent_dispersion = config.dispersion == "latent"
        self.decoder = Decoder(config.latent_dim, config.hidden, n_genes, latent_dispersion)
        self.gmm = GaussianMixture(config.latent_dim, config.gmm)
        if latent_dispersion:
            self.register_parameter("log_r", None)
            with torch.no_grad():  # start where the per-gene model starts: r = dispersion_init everywhere
                self.decoder.log_r.weight.zero_()
                self.decoder.log_r.bias.fill_(math.log(config.dispersion_init))
        else:
            self.log_r = nn.Parameter(torch.full((n_genes,), math.log(config.dispersion_init)))

    def dispersion_param_groups(self, weight_lr: float) -> list[dict]:
        """What the dispersion optimiser steps: log r per gene, or the decoder's log r head, whose
        weights (hundreds per gene, each moving log r) take `weight_lr`, the decoder's rate."""
        if self.log_r is not None:
            return [{"params": [self.log_r]}]
        head = self.decoder.log_r
        return [{"params": [head.bias]}, {"params": [head.weight], "lr": weight_lr}]

    @property
    def dispersion(self) -> torch.Tensor:
        """[G]: r per gene; a model whose r depends on the latent point refuses (see `dispersion_at`)."""
        if self.log_r is None:
            raise InputError(
                "this DGD's dispersion depends on the latent point (config dispersion 'latent'); "
                "this step uses one dispersion per gene and does not support it yet"
            )
        return torch.exp(self.log_r)

    def relative_means(self, z: torch.Tensor) -> torch.Tensor:
        """[..., G]: the decoded expression relative to the sample's scale."""
        return self.decoder(z)

    def latent_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """[N]: log density of the mixture prior at latent points z [N, D]."""
        return self.gmm.log_prob(z)

    def dispersion_at(self, z: torch.Tensor) -> torch.Tensor:
        """[..., G]: r at latent points z [..., D] (the per-gene r, broadcast, unless r depends on z)."""
        if self.log_r is not None:
            return torch.exp(self.log_r).expand(*z.shape[:-1], self.n_genes)
        return torch.exp(self.log_dispersion_at(z))

    def dispersion_values(self, z: torch.Tensor) -> torch.Tensor:
        """Every r the model has at the points z: [G] when r is per gene, else [..., G] at z."""
        return torch.exp(self.log_r) if self.log_r is not None else self.dispersion_at(z)

    def log_dispersion_at(self, z: torch.Tensor) -> torch.Tensor:
        """[..., G]: log r at latent points z [..., D]."""
        if self.log_r is not None:
            return self.log_r.expand(*z.shape[:-1], self.n_genes)
        return self.decoder.decode(z)[1]

    @torch.no_grad()
    def rescale_log_dispersion(self, a: float, b: float) -> None:
        """log r <- a + b log r at every latent point (for the head: W <- bW, c <- a + bc)."""
        if self.log_r is not None:
            self.log_r.copy_((a + b * self.log_r.double()).to(self.log_r.dtype))
        else:
            head = self.decoder.log_r
            head.weight.mul_(b)
            head.bias.copy_((a + b * head.bias.double()).to(head.bias.dtype))

    def count_log_prob(self, x: torch.Tensor, z: torch.Tensor, scale: torch.Tensor,
                       measured: torch.Tensor | None = None) -> torch.Tensor:
        """[N] float64: sum over measured genes of log NB(x | scale * decoder(z), r)."""
        relative, log_r = self.decoder.decode(z)
        ll = nb_log_prob(x, relative * scale.unsqueeze(-1), torch.exp(self.log_r if log_r is None else log_r))
        if measured is not None:
            ll = ll * measured
        return ll.sum(-1)

    @torch.no_grad()
    def initialise_output_bias(self, relative_mean: torch.Tensor) -> None:
        """Start the decoder at the average relative expression of each gene (inverse softplus)."""
        y = relative_mean.clamp_min(1e-8).to(self.decoder.output.bias.dtype)
        inverse = torch.where(y > 20, y, torch.log(torch.expm1(y)))
        self.decoder.output.bias.copy_(inverse)
