"""The Gaussian part of the denoiser: the exact noise prediction under a factor model.

For y ~ N(mu, S) and y_t = sqrt(a) y + sqrt(1 - a) eps, E[eps | y_t] = sqrt(1 - a)
(a S + (1 - a) I)^-1 (y_t - sqrt(a) mu). With S = W W^T + diag(d) fitted to the training samples
(probabilistic PCA with a residual variance per gene) this is the best denoiser those samples
support as a Gaussian, and it is full rank whatever the network's width.

Two such models: a pooled one (the null label: mean and covariance of every training sample)
and one per class sharing a within-class covariance, the class being the tissue (models with
tissue labels) or normal/tumour (models with that label only). A sample with a known tissue is
then denoised towards its tissue, and classes can be sampled even where the network adds
nothing. The rank is chosen on the held-out normals: the held-out denoising error of the
Gaussian part alone, over candidate ranks, at the same fixed (t, eps) draws as the training's
held-out score.
"""

from __future__ import annotations

import torch
from torch import nn

from nofone.models.diffusion.schedule import Schedule, fixed_draws

RANK_CANDIDATES = (0, 1, 2, 4, 8, 16, 32, 64)
POOLED, WITHIN = 0, 1


class GaussianSkip(nn.Module):
    """E[eps | y_t, class] by Woodbury: with A = a d + 1 - a, M^-1 v = v / A - (W / A) K^-1 W^T
    (v / A), K = I / a + W^T diag(1 / A) W. Buffers, fitted once (`fit`): `means` [C + 1, G]
    (row C: the pooled mean), `loadings` [2, G, k] and `residual_variance` [2, G] (index 0
    pooled, 1 within-class). K depends on the step only, so K^-1 is computed once for every step
    of the schedule (G k^2 per step; forming it per sample cost as much as the network itself on
    17,000 genes) and kept until the buffers change."""

    def __init__(self, n_genes: int, rank: int, n_classes: int = 0):
        super().__init__()
        self.n_classes = n_classes
        self.register_buffer("means", torch.zeros(n_classes + 1, n_genes))
        self.register_buffer("loadings", torch.zeros(2, n_genes, rank))
        self.register_buffer("residual_variance", torch.ones(2, n_genes))
        self._inverses: dict[tuple, torch.Tensor] = {}

    def _load_from_state_dict(self, *args, **kwargs):
        self._inverses.clear()
        super()._load_from_state_dict(*args, **kwargs)

    def _apply(self, fn, *args, **kwargs):
        self._inverses.clear()
        return super()._apply(fn, *args, **kwargs)

    def k_inverse(self, which: int, alpha_table: torch.Tensor) -> torch.Tensor:
        """[T + 1, k, k]: K^-1 at every step of the schedule `alpha_table` (abar(0..T))."""
        key = (which, alpha_table.data_ptr(), alpha_table.shape[0])
        if key not in self._inverses:
            w, d = self.loadings[which].double(), self.residual_variance[which].double()
            a = alpha_table.double().clamp(1e-12, 1.0).unsqueeze(-1)  # [T + 1, 1]
            inv_a = 1.0 / (a * d + 1 - a)  # [T + 1, G]
            k = torch.cat([torch.einsum("gk,tg,gl->tkl", w, inv_a[i:i + 64], w) for i in range(0, len(a), 64)])
            k = k + torch.diag_embed((1.0 / a).expand(-1, w.shape[1]))
            self._inverses[key] = torch.linalg.inv(k).to(self.loadings.dtype)
        return self._inverses[key]

    @torch.no_grad()
    def fit(self, y: torch.Tensor, classes: torch.Tensor | None) -> None:
        """Fit on training points y [N, G] with class indices [N] (None or C: no class)."""
        self._inverses.clear()
        rank = self.loadings.shape[-1]
        self.means[self.n_classes] = y.mean(0)
        w, d = fit_factor_model(y, rank)
        self.loadings[POOLED], self.residual_variance[POOLED] = w, d
        if self.n_classes and classes is not None:
            residual = y.clone()
            for c in range(self.n_classes):
                rows = classes == c
                if rows.any():
                    self.means[c] = y[rows].mean(0)
                    residual[rows] = y[rows] - self.means[c]
            w, d = fit_factor_model(residual, rank)
            self.loadings[WITHIN], self.residual_variance[WITHIN] = w, d
        else:
            self.loadings[WITHIN] = self.loadings[POOLED]
            self.residual_variance[WITHIN] = self.residual_variance[POOLED]

    def forward(self, y: torch.Tensor, t: torch.Tensor, alpha_table: torch.Tensor,
                classes: torch.Tensor | None = None) -> torch.Tensor:
        """E[eps | y_t] for points y [N, G] at integer steps t [N] of the schedule `alpha_table`."""
        a = alpha_table[t].to(y.dtype).unsqueeze(-1)  # [N, 1]
        if classes is None:
            classes = torch.full((y.shape[0],), self.n_classes, dtype=torch.long, device=y.device)
        centred = y - a.sqrt() * self.means[classes]
        out = torch.empty_like(y)
        pooled = classes == self.n_classes
        for which, rows in ((POOLED, pooled), (WITHIN, ~pooled)):
            if rows.any():
                out[rows] = self._solve(centred[rows], t[rows], a[rows], alpha_table, which)
        return out

    def _solve(self, v: torch.Tensor, t: torch.Tensor, a: torch.Tensor, alpha_table: torch.Tensor,
               which: int) -> torch.Tensor:
        inv_a = 1.0 / (a * self.residual_variance[which] + 1 - a)  # [N, G]
        w = self.loadings[which]
        u = v * inv_a
        if w.shape[1]:
            k_inv = self.k_inverse(which, alpha_table)[t]  # [N, k, k]
            u = u - (torch.bmm(k_inv, (u @ w).unsqueeze(-1)).squeeze(-1) @ w.T) * inv_a
        return torch.sqrt(1 - a) * u


def fit_factor_model(y: torch.Tensor, rank: int, min_variance: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
    """(W [G, rank], d [G]) of probabilistic PCA on y [N, G] (rows: samples), with each gene's
    residual variance its own (its variance minus the factors' share, floored)."""
    y = y.double() - y.double().mean(0)
    n, g = y.shape
    variance = (y**2).mean(0)
    used = min(rank, n - 1, g)
    w = torch.zeros(g, rank, dtype=torch.float64)  # factors beyond what the data allow stay 0
    if used > 0:
        _, s, vt = torch.linalg.svd(y, full_matrices=False)
        eigen = s**2 / n
        rest = (variance.sum() - eigen[:used].sum()) / max(g - used, 1)
        w[:, :used] = vt[:used].T * torch.sqrt((eigen[:used] - rest).clamp_min(0.0))
    d = (variance - (w**2).sum(1)).clamp_min(min_variance)
    return w.float(), d.float()


@torch.no_grad()
def choose_rank(y_train: torch.Tensor, classes_train: torch.Tensor | None, y_heldout: torch.Tensor,
                classes_heldout: torch.Tensor | None, measured: torch.Tensor | None, n_classes: int, timesteps: int,
                draws: int, seed: int, candidates: tuple[int, ...] = RANK_CANDIDATES) -> tuple[int, list[dict]]:
    """The rank whose factor model denoises the held-out normals (with their classes) best, and
    every candidate's score."""
    rows, t, eps = fixed_draws(y_heldout.shape[0], draws, y_heldout.shape[1], timesteps, seed)
    cpu = Schedule(timesteps)
    noisy = cpu.add_noise(y_heldout.cpu()[rows], t, eps)
    weight = None if measured is None else measured.cpu()[rows].float()
    classes = None if classes_heldout is None else classes_heldout.cpu()[rows]
    table = []
    limit = min(y_train.shape[0] - 1, y_train.shape[1])
    for rank in sorted({min(r, limit) for r in candidates if r >= 0}):
        skip = GaussianSkip(y_train.shape[1], rank, n_classes)
        skip.fit(y_train.cpu(), None if classes_train is None else classes_train.cpu())
        err = (skip(noisy, t, cpu.alpha_bar, classes) - eps) ** 2
        score = float((err * weight).sum() / weight.sum()) if weight is not None else float(err.mean())
        table.append({"rank": rank, "heldout_denoising_mse": score})
    best = min(table, key=lambda row: row["heldout_denoising_mse"])
    return best["rank"], table
