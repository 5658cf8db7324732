"""The NB-VAE as torch modules: encoder, decoder, gene-wise dispersion, size-factor reference.

- Encoder: log1p of the size-factor-normalised counts, centred on the training samples' mean
  per gene -> Linear/ReLU hidden layers (dropout in training) -> a Gaussian posterior
  q(z | x) = N(mean, diag(exp(log_var))).
- Decoder: z -> Linear/ReLU hidden layers (the encoder's, mirrored) -> Linear -> exp = each gene's
  *relative* mean rho_g(z), in units of a normalised count (the expected count at size factor 1).
  The NB mean of a sample is size_factor x rho_g(z): the size factor is a fixed offset (DESeq2's
  median of ratios against the stored training reference), never learned.

  Why exp and not softplus or softmax x G: rho must be free per gene (median-of-ratios offsets do
  not fix a sample's total: in a lactating mammary gland a few milk-protein genes take a large
  share of the reads, so softmax's fixed total would have to under-predict either them or every
  other gene), and genes span five orders of magnitude in normalised counts, where a softplus in
  count units moves a gene with mean 10^4 a thousand times slower than one with mean 10 under
  Adam. exp of a linear output is the NB GLM's log link (DESeq2's): every gene's log mean is on
  the same footing, and decoded log2 expression is the last layer's output divided by ln 2.
- Dispersion r_g = exp(log_r_g) per gene, learned; variance m + m^2 / r. NB log-likelihood in
  float64 (`nofone.models.nb.nb_log_prob`).
- Prior p(z) = N(0, I); KL(q || p) in closed form.

The module knows nothing of files.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch
from torch import nn

from nofone.models.nb import nb_log_prob
from nofone.models.nbvae.config import NBVAEConfig
from nofone.models.size_factors import SizeFactorReference

LOG_VAR_RANGE = (-12.0, 8.0)
_LOG_2PI = math.log(2 * math.pi)


def _mlp(sizes: tuple[int, ...], dropout: float = 0.0) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(sizes):
        layers += [nn.Linear(a, b), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class Encoder(nn.Module):
    """Normalised log counts -> (posterior mean, posterior log-variance)."""

    def __init__(self, n_genes: int, hidden: tuple[int, ...], latent_dim: int, dropout: float = 0.0):
        super().__init__()
        self.hidden = _mlp((n_genes, *hidden), dropout)
        self.mean = nn.Linear(hidden[-1] if hidden else n_genes, latent_dim)
        self.log_var = nn.Linear(hidden[-1] if hidden else n_genes, latent_dim)

    def forward(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.hidden(y)
        return self.mean(h), self.log_var(h).clamp(*LOG_VAR_RANGE)


class Decoder(nn.Module):
    """z -> Linear/ReLU hidden layers -> Linear -> exp (relative mean per gene)."""

    def __init__(self, latent_dim: int, hidden: tuple[int, ...], n_genes: int, log_range: tuple[float, float]):
        super().__init__()
        self.hidden = _mlp((latent_dim, *hidden))
        self.output = nn.Linear(hidden[-1] if hidden else latent_dim, n_genes)
        self.log_range = log_range

    def log_mean(self, z: torch.Tensor) -> torch.Tensor:
        """Natural log of the relative means (clamped to the configured range)."""
        return self.output(self.hidden(z)).clamp(*self.log_range)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.exp(self.log_mean(z))


class NBVAEModule(nn.Module):
    """Encoder + decoder + dispersions + the size-factor reference (buffers)."""

    def __init__(self, config: NBVAEConfig, n_genes: int):
        super().__init__()
        self.config = config
        self.n_genes = n_genes
        self.encoder = Encoder(n_genes, config.hidden, config.latent_dim, config.dropout)
        self.decoder = Decoder(config.latent_dim, tuple(reversed(config.hidden)), n_genes,
                               (config.log_mean_min, config.log_mean_max))
        self.log_r = nn.Parameter(torch.full((n_genes,), math.log(config.dispersion_init)))
        # the median-of-ratios reference of the training samples and the encoder's input centre
        self.register_buffer("sf_log_geo_means", torch.full((n_genes,), -math.inf, dtype=torch.float64))
        self.register_buffer("sf_log_centre", torch.zeros(1, dtype=torch.float64))
        self.register_buffer("input_centre", torch.zeros(n_genes))

    @property
    def dispersion(self) -> torch.Tensor:
        return torch.exp(self.log_r)

    def dispersion_at(self, z: torch.Tensor) -> torch.Tensor:
        """[..., G]: r at latent points z (one r per gene, broadcast)."""
        return self.dispersion.expand(*z.shape[:-1], -1)

    def relative_means(self, z: torch.Tensor) -> torch.Tensor:
        """[..., G]: rho(z), the decoded expression in normalised-count units."""
        return self.decoder(z)

    def latent_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """[N]: log N(z; 0, I), the prior."""
        return self.prior_log_prob(z)

    def log_dispersion_at(self, z: torch.Tensor) -> torch.Tensor:
        """[..., G]: log r at latent points z (one r per gene, broadcast)."""
        return self.log_r.expand(*z.shape[:-1], self.log_r.shape[0])

    @torch.no_grad()
    def rescale_log_dispersion(self, a: float, b: float) -> None:
        """log r <- a + b log r (the held-out calibration)."""
        self.log_r.copy_((a + b * self.log_r.double()).to(self.log_r.dtype))

    # -- size factors ----------------------------------------------------------------------------

    def size_factor_reference(self) -> SizeFactorReference:
        return SizeFactorReference(self.sf_log_geo_means.detach().cpu().numpy(), float(self.sf_log_centre[0]))

    @torch.no_grad()
    def set_size_factor_reference(self, reference: SizeFactorReference) -> None:
        self.sf_log_geo_means.copy_(torch.as_tensor(reference.log_geo_means, dtype=torch.float64))
        self.sf_log_centre.fill_(reference.log_centre)

    def size_factors(self, x: torch.Tensor, measured: torch.Tensor | None = None) -> torch.Tensor:
        """[N] float64 median-of-ratios size factors of counts `x` against the training reference.

        A sample with no positive count on any reference gene gets 1 (its encoding is then a
        rough start that representation search refines).
        """
        m = None if measured is None else measured.detach().cpu().numpy()
        sf = self.size_factor_reference()(x.detach().cpu().numpy(), m)
        sf = np.where(np.isfinite(sf) & (sf > 0), sf, 1.0)
        return torch.as_tensor(sf, dtype=torch.float64, device=x.device)

    # -- encoder ---------------------------------------------------------------------------------

    def encoder_input(self, x: torch.Tensor, sf: torch.Tensor, measured: torch.Tensor | None = None) -> torch.Tensor:
        """log1p(x / sf) - training centre (0 for unmeasured genes), float32."""
        y = torch.log1p(x.to(torch.float64) / sf.unsqueeze(-1)).to(self.input_centre.dtype) - self.input_centre
        if measured is not None:
            y = y * measured.to(y.dtype)
        return y

    def encode(self, x: torch.Tensor, sf: torch.Tensor, measured: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(self.encoder_input(x, sf, measured))

    @torch.no_grad()
    def posterior(self, x: torch.Tensor, measured: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior (mean, log-variance) [N, D] of counts `x`, scaled by their size factors
        against the training reference: where the closest-normal search starts."""
        return self.encode(x, self.size_factors(x, measured), measured)

    # -- likelihood terms ------------------------------------------------------------------------

    def count_log_prob(self, x: torch.Tensor, z: torch.Tensor, scale: torch.Tensor,
                       measured: torch.Tensor | None = None) -> torch.Tensor:
        """[N] float64: sum over measured genes of log NB(x | scale * rho(z), r)."""
        mean = self.decoder(z).to(torch.float64) * scale.unsqueeze(-1)
        ll = nb_log_prob(x, mean, self.dispersion)
        if measured is not None:
            ll = ll * measured
        return ll.sum(-1)

    @staticmethod
    def kl(mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
        """[N] KL(N(mean, exp(log_var)) || N(0, I)), summed over latent dimensions."""
        return 0.5 * (mean.pow(2) + log_var.exp() - 1.0 - log_var).sum(-1)

    @staticmethod
    def prior_log_prob(z: torch.Tensor) -> torch.Tensor:
        """[N] log N(z; 0, I)."""
        return -0.5 * (z.pow(2).sum(-1) + z.shape[-1] * _LOG_2PI)

    @torch.no_grad()
    def initialise_output_bias(self, log_relative_mean: torch.Tensor) -> None:
        """Start the decoder at each gene's mean normalised expression (log link)."""
        lo, hi = self.decoder.log_range
        self.decoder.output.bias.copy_(log_relative_mean.clamp(lo, hi).to(self.decoder.output.bias.dtype))
