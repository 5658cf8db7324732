"""The Gaussian part of the denoiser: the exact noise prediction under a factor model.

For y ~ N(0, S) and y_t = sqrt(a) y + sqrt(1 - a) eps, E[eps | y_t] = sqrt(1 - a)
(a S + (1 - a) I)^-1 y_t. With S = W W^T + diag(d) fitted to the training normals (probabilistic
PCA with a residual variance per gene) this is the best denoiser those normals support as a
Gaussian, and it is full rank whatever the network's width. Its rank is chosen on the held-out
normals: the held-out denoising error of the Gaussian part alone, over candidate ranks, at the
same fixed (t, eps) draws as the training's held-out score.
"""

from __future__ import annotations

import torch
from torch import nn

from nofone.models.diffusion.schedule import Schedule, fixed_draws

RANK_CANDIDATES = (0, 1, 2, 4, 8, 16, 32, 64)


class GaussianSkip(nn.Module):
    """E[eps | y_t] = sqrt(1 - a) (a S + (1 - a) I)^-1 y_t for y ~ N(0, S), S = W W^T + diag(d),
    through Woodbury: with A = a d + 1 - a, M^-1 v = v / A - (W / A) K^-1 W^T (v / A),
    K = I / a + W^T diag(1 / A) W (k x k per sample). W [G, k] and d [G] are fitted once on the
    training normals (`fit_factor_model`) and kept fixed."""

    def __init__(self, n_genes: int, rank: int):
        super().__init__()
        self.register_buffer("loadings", torch.zeros(n_genes, rank))
        self.register_buffer("residual_variance", torch.ones(n_genes))

    def forward(self, y: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
        a = alpha_bar.to(y.dtype).unsqueeze(-1)  # [N, 1]
        inv_a = 1.0 / (a * self.residual_variance + 1 - a)  # [N, G]
        v = y * inv_a
        w = self.loadings
        if w.shape[1]:
            k = torch.einsum("gk,ng,gl->nkl", w, inv_a, w)
            k = k + torch.diag_embed((1.0 / a).expand(-1, w.shape[1]))
            v = v - (torch.linalg.solve(k, (v @ w).unsqueeze(-1)).squeeze(-1) @ w.T) * inv_a
        return torch.sqrt(1 - a) * v


def fit_factor_model(y: torch.Tensor, rank: int, min_variance: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
    """(W [G, rank], d [G]) of probabilistic PCA on y [N, G] (rows: samples), with each gene's
    residual variance its own (its variance minus the factors' share, floored)."""
    y = y.double() - y.double().mean(0)
    n, g = y.shape
    variance = (y**2).mean(0)
    rank = min(rank, n - 1, g)
    if rank <= 0:
        return torch.zeros(g, 0), variance.clamp_min(min_variance).float()
    _, s, vt = torch.linalg.svd(y, full_matrices=False)
    eigen = s**2 / n
    rest = (variance.sum() - eigen[:rank].sum()) / max(g - rank, 1)
    w = vt[:rank].T * torch.sqrt((eigen[:rank] - rest).clamp_min(0.0))
    d = (variance - (w**2).sum(1)).clamp_min(min_variance)
    return w.float(), d.float()


@torch.no_grad()
def choose_rank(y_train: torch.Tensor, y_heldout: torch.Tensor, measured: torch.Tensor | None, timesteps: int,
                draws: int, seed: int, candidates: tuple[int, ...] = RANK_CANDIDATES) -> tuple[int, list[dict]]:
    """The rank whose factor model denoises the held-out normals best, and every candidate's score."""
    rows, t, eps = fixed_draws(y_heldout.shape[0], draws, y_heldout.shape[1], timesteps, seed)
    cpu = Schedule(timesteps)
    alpha_bar = cpu.alpha_bar[t]
    noisy = cpu.add_noise(y_heldout.cpu()[rows], t, eps)
    weight = None if measured is None else measured.cpu()[rows].float()
    table = []
    for rank in sorted({min(r, y_train.shape[0] - 1) for r in candidates if r >= 0}):
        skip = GaussianSkip(y_train.shape[1], rank)
        skip.loadings, skip.residual_variance = fit_factor_model(y_train.cpu(), rank)
        err = (skip(noisy, alpha_bar) - eps) ** 2
        score = float((err * weight).sum() / weight.sum()) if weight is not None else float(err.mean())
        table.append({"rank": rank, "heldout_denoising_mse": score})
    best = min(table, key=lambda row: row["heldout_denoising_mse"])
    return best["rank"], table
