"""Gaussian mixture prior over the latent space, with the DGD's three hyper-priors.

- means: "softball" prior, a mollified uniform density on a ball (radius, sharpness);
- log-variances: Gaussian prior centred on the log-variance of a chosen standard deviation
  (bulkDGD v1 had the sign of this centre wrong in its untrained prior; here it is
  `2 * log(sd)`, e.g. -4.6 for sd 0.1);
- mixture weights (softmax of logits): symmetric Dirichlet(alpha).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class GMMConfig:
    n_components: int = 45
    softball_radius: float = 7.0
    softball_sharpness: float = 10.0
    component_sd: float = 0.1  # centre of the log-variance prior: log(sd^2)
    log_var_prior_sd: float = 1.0
    dirichlet_alpha: float = 5.0


class GaussianMixture(nn.Module):
    """Diagonal-covariance Gaussian mixture with learnable means, log-variances and logits."""

    def __init__(self, latent_dim: int, config: GMMConfig):
        super().__init__()
        self.config = config
        self.latent_dim = latent_dim
        k = config.n_components
        self.means = nn.Parameter(torch.zeros(k, latent_dim))
        self.log_var = nn.Parameter(torch.full((k, latent_dim), 2.0 * math.log(config.component_sd)))
        self.logits = nn.Parameter(torch.zeros(k))

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    def component_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """[N, K]: log of weight_k * N(z; mean_k, diag(exp(log_var_k)))."""
        z = z.unsqueeze(-2)  # [N, 1, D]
        inv_var = torch.exp(-self.log_var)
        quad = ((z - self.means) ** 2 * inv_var).sum(-1)
        log_norm = -0.5 * (self.latent_dim * math.log(2 * math.pi) + self.log_var.sum(-1))
        return log_norm - 0.5 * quad + torch.log_softmax(self.logits, dim=0)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """[N]: log density of the mixture at each latent point."""
        return torch.logsumexp(self.component_log_prob(z), dim=-1)

    def responsibilities(self, z: torch.Tensor) -> torch.Tensor:
        """[N, K]: posterior probability of each component."""
        return torch.softmax(self.component_log_prob(z), dim=-1)

    def prior_log_prob(self) -> torch.Tensor:
        """Log density of the hyper-priors at the current parameters (a scalar)."""
        c = self.config
        d = self.latent_dim
        # softball: mollified uniform on the ball of radius R; constant = -log(volume)
        log_volume = d * (math.log(c.softball_radius) + 0.5 * math.log(math.pi)) - math.lgamma(1 + d / 2)
        norm = self.means.norm(dim=-1)
        softball = -log_volume - nn.functional.softplus(c.softball_sharpness * (norm / c.softball_radius - 1))
        centre = 2.0 * math.log(c.component_sd)
        log_var = (
            -0.5 * ((self.log_var - centre) / c.log_var_prior_sd) ** 2
            - math.log(c.log_var_prior_sd) - 0.5 * math.log(2 * math.pi)
        )
        k = self.n_components
        alpha = c.dirichlet_alpha
        dirichlet = math.lgamma(k * alpha) - k * math.lgamma(alpha) + (alpha - 1) * torch.log_softmax(
            self.logits, dim=0
        ).sum()
        return softball.sum() + log_var.sum() + dirichlet

    @torch.no_grad()
    def initialise_from(self, z: np.ndarray, seed: int) -> None:
        """k-means++ on latent points: means at the centroids, variances from the clusters.

        Starting the components where the representations are avoids the collapse seen when
        every component starts far from every sample and one component captures them all.
        """
        from sklearn.cluster import KMeans

        k = self.n_components
        n = len(z)
        if n < k:
            rng = np.random.default_rng(seed)
            centres = z[rng.choice(n, size=k, replace=True)] + rng.normal(0, 0.05, size=(k, z.shape[1]))
            labels = np.argmin(((z[:, None, :] - centres[None]) ** 2).sum(-1), axis=1)
        else:
            fit = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(z)
            centres, labels = fit.cluster_centers_, fit.labels_
        floor = self.config.component_sd**2
        log_var = np.empty_like(centres)
        for j in range(k):
            members = z[labels == j]
            var = members.var(axis=0) if len(members) > 1 else np.full(z.shape[1], floor)
            log_var[j] = np.log(np.maximum(var, floor))
        self.means.copy_(torch.as_tensor(centres, dtype=self.means.dtype))
        self.log_var.copy_(torch.as_tensor(log_var, dtype=self.log_var.dtype))
        self.logits.zero_()
