"""The count-aware space the diffusion runs in, and the way back to an NB mean.

y_g = (log(1 + x_g / s) - c_g) / d_g, with s the sample's median-of-ratios size factor against
the training normals' reference (as the NB-VAE's, `nofone.models.size_factors`), c_g and d_g the
mean and standard deviation of log(1 + x_g / s) over the training normals (d_g floored at
`min_scale`), y clamped to +-`clamp`. Unlike GEMDiff's one global min-max of log2(FPKM + 1),
every gene has unit spread among normals, so the noise of the diffusion is on the same footing
for a gene of 10 counts and one of 10^5, and a new sample's scaling cannot depend on the extremes
of the training cohort. Genes a sample did not measure enter as 0 (the training mean).

Back: relative mean m_g(y) = exp(b_g) * max(exp(d_g y_g + c_g) - 1, MIN_RELATIVE_MEAN), the NB
mean of a sample s * m_g. b_g (0 until calibrated) is the per-gene log offset fitted with the
dispersion on held-out normals: exp of a mean of logs is below the mean (Jensen), and b_g puts
the bridged means of normals on their counts.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from nofone.models.size_factors import SizeFactorReference

MIN_RELATIVE_MEAN = 1e-3


class CountSpace(nn.Module):
    """The fitted transform as buffers (saved with the model)."""

    def __init__(self, n_genes: int, clamp: float):
        super().__init__()
        self.clamp = clamp
        self.register_buffer("sf_log_geo_means", torch.full((n_genes,), -math.inf, dtype=torch.float64))
        self.register_buffer("sf_log_centre", torch.zeros(1, dtype=torch.float64))
        self.register_buffer("centre", torch.zeros(n_genes, dtype=torch.float64))
        self.register_buffer("scale", torch.ones(n_genes, dtype=torch.float64))
        self.register_buffer("log_offset", torch.zeros(n_genes, dtype=torch.float64))
        # log size factors of the training normals (mean, sd): what `augment` draws libraries from
        self.register_buffer("log_sf_moments", torch.tensor([0.0, 0.0], dtype=torch.float64))

    # -- fitting -----------------------------------------------------------------------------------

    @torch.no_grad()
    def fit(self, counts: np.ndarray, measured: np.ndarray | None, method: str, min_scale: float) -> np.ndarray:
        """Fit on the training normals; returns their size factors."""
        reference = SizeFactorReference.fit(counts, measured, method)
        self.sf_log_geo_means.copy_(torch.as_tensor(reference.log_geo_means, dtype=torch.float64))
        self.sf_log_centre.fill_(reference.log_centre)
        sf = reference(counts, measured, check=True)
        v = np.log1p(np.asarray(counts, dtype=np.float64) / sf[:, None])
        w = np.ones_like(v) if measured is None else np.asarray(measured, dtype=np.float64)
        n = np.maximum(w.sum(0), 1.0)
        centre = (v * w).sum(0) / n
        sd = np.sqrt(((v - centre) ** 2 * w).sum(0) / n)
        self.centre.copy_(torch.as_tensor(centre))
        self.scale.copy_(torch.as_tensor(np.maximum(sd, min_scale)))
        self.log_sf_moments.copy_(torch.tensor([np.log(sf).mean(), np.log(sf).std()]))
        return sf

    # -- forward and back ----------------------------------------------------------------------------

    def size_factors(self, counts: torch.Tensor, measured: torch.Tensor | None = None) -> torch.Tensor:
        """[N] float64 size factors against the training reference (1 for a sample with no
        positive count on any reference gene, which has no better estimate)."""
        reference = SizeFactorReference(self.sf_log_geo_means.cpu().numpy(), float(self.sf_log_centre[0]))
        m = None if measured is None else measured.detach().cpu().numpy()
        sf = reference(counts.detach().cpu().numpy(), m)
        sf = np.where(np.isfinite(sf) & (sf > 0), sf, 1.0)
        return torch.as_tensor(sf, dtype=torch.float64, device=counts.device)

    def log_normalised(self, counts: torch.Tensor, sf: torch.Tensor) -> torch.Tensor:
        return torch.log1p(counts.to(torch.float64) / sf.unsqueeze(-1))

    def forward(self, counts: torch.Tensor, sf: torch.Tensor, measured: torch.Tensor | None = None) -> torch.Tensor:
        """y [N, G] float32 in the model's space (0 where not measured)."""
        y = ((self.log_normalised(counts, sf) - self.centre) / self.scale).clamp(-self.clamp, self.clamp)
        if measured is not None:
            y = y * measured.to(y.dtype)
        return y.float()

    def relative_mean(self, y: torch.Tensor) -> torch.Tensor:
        """[N, G] float64 relative NB means (NB mean = size factor x this) at points y."""
        raw = torch.expm1(y.to(torch.float64) * self.scale + self.centre).clamp_min(MIN_RELATIVE_MEAN)
        return raw * torch.exp(self.log_offset)

    def log2_normalised(self, counts: torch.Tensor, sf: torch.Tensor) -> torch.Tensor:
        """log2(1 + x / s): the scale the log2 fold changes of `perturb` are reported on."""
        return self.log_normalised(counts, sf) / math.log(2.0)
