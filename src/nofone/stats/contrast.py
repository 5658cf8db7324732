"""The contrast maths of `nofone cohort-de`: per-sample weights, the generative log2 fold change
with its posterior draws, the group means and the replicate interval.

The contrast of decoded values y_i (log2 normalised expression of sample i) is LFC = sum_i w_i y_i:
within each cell of covariate levels holding both groups, the level's mean minus the
reference's, averaged over the cells with equal weights (cells lacking either group weigh 0
and are reported).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch

#: Values decoded at once when drawing from the posteriors (draws x samples x genes).
DRAW_BLOCK_VALUES = 20_000_000


class Decoder(Protocol):
    """What the contrast needs of a model: its genes and log2 rho(z), the decoded log2
    normalised expression at latent points z [..., D] -> [..., G]."""

    gene_ids: Sequence[str]

    def log2_relative_means(self, z: torch.Tensor) -> torch.Tensor: ...


def contrast_weights(group: Sequence[str], cells: Sequence[str], level: str, reference: str
                     ) -> tuple[np.ndarray, list[dict]]:
    """Per-sample weights w with LFC = sum_i w_i y_i, and the cells of covariate levels used.

    Within each cell holding both groups: +1 / (n_cells n_level) for its level samples,
    -1 / (n_cells n_reference) for its reference samples; other samples weigh 0.
    """
    group = np.asarray(group, dtype=object).astype(str)
    cells = np.asarray(cells, dtype=object).astype(str)
    used, skipped = [], []
    for cell in sorted(set(cells)):
        in_cell = cells == cell
        n_level = int((in_cell & (group == level)).sum())
        n_ref = int((in_cell & (group == reference)).sum())
        entry = {"cell": cell, "n_level": n_level, "n_reference": n_ref}
        (used if n_level and n_ref else skipped).append(entry)
    weights = np.zeros(len(group))
    for entry in used:
        in_cell = cells == entry["cell"]
        weights[in_cell & (group == level)] = 1.0 / (len(used) * entry["n_level"])
        weights[in_cell & (group == reference)] = -1.0 / (len(used) * entry["n_reference"])
    for entry in used:
        entry["used"] = True
    for entry in skipped:
        entry["used"] = False
    return weights, used + skipped


@torch.no_grad()
def generative_lfc(model: Decoder, mean: np.ndarray, log_var: np.ndarray, weights: np.ndarray, draws: int,
                   seed: int, device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """(point estimate [G], draws [S, G]) of sum_i w_i log2 rho(z_i).

    Point: z_i at the posterior means. Draws: z_i ~ N(mean_i, exp(log_var_i)), independently per
    sample and draw, from a generator seeded with `seed`.
    """
    rows = np.flatnonzero(weights != 0)
    mu = torch.as_tensor(mean[rows], dtype=torch.float32, device=device)
    sd = torch.exp(0.5 * torch.as_tensor(log_var[rows], dtype=torch.float32, device=device))
    w = torch.as_tensor(weights[rows], dtype=torch.float64, device=device)
    point = (w @ model.log2_relative_means(mu).double()).cpu().numpy()
    n_genes = len(model.gene_ids)
    out = np.empty((draws, n_genes), dtype=np.float64)
    generator = torch.Generator().manual_seed(seed)
    block = max(1, DRAW_BLOCK_VALUES // max(1, len(rows) * n_genes))
    for start in range(0, draws, block):
        k = min(block, draws - start)
        eps = torch.randn((k, *mu.shape), generator=generator).to(device)
        y = model.log2_relative_means(mu + sd * eps).double()  # [k, n, G]
        out[start:start + k] = torch.einsum("n,kng->kg", w, y).cpu().numpy()
    return point, out


def group_means(y: np.ndarray, labels: np.ndarray, cells: np.ndarray, cell_table: list[dict], level: str,
                reference: str) -> tuple[np.ndarray, np.ndarray]:
    """Mean decoded log2 expression [G] of the level and of the reference, each the mean over the
    cells used of the cell's group mean."""
    used = [c["cell"] for c in cell_table if c["used"]]
    out = []
    for name in (level, reference):
        per_cell = [y[(cells == cell) & (labels == name)].mean(0) for cell in used]
        out.append(np.mean(per_cell, axis=0))
    return out[0], out[1]


def replicate_interval(y: np.ndarray, labels, cells, cell_table: list[dict], level: str, reference: str,
                       latent_sd: np.ndarray, coverage: float = 0.95
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(low, high, se, df): a t interval for the contrast of the decoded values `y` [N, G].

    Pooled within-group variance over every (cell, level) group of the contrast, df = samples -
    groups; var = s^2 sum_c (1/n_level,c + 1/n_reference,c) / C^2 + latent_sd^2. NaN when df = 0.
    """
    from scipy import stats

    labels = np.asarray(labels, dtype=object).astype(str)
    cells = np.asarray(cells, dtype=object).astype(str)
    used = [c for c in cell_table if c["used"]]
    ss = np.zeros(y.shape[1])
    df = 0
    factor = 0.0
    point = np.zeros(y.shape[1])
    for entry in used:
        means = []
        for name in (level, reference):
            rows = (cells == entry["cell"]) & (labels == name)
            group = y[rows]
            means.append(group.mean(0))
            ss += ((group - means[-1]) ** 2).sum(0)
            df += int(rows.sum()) - 1
        point += (means[0] - means[1]) / len(used)
        factor += (1.0 / entry["n_level"] + 1.0 / entry["n_reference"]) / len(used) ** 2
    if df == 0:
        nan = np.full(y.shape[1], np.nan)
        return nan, nan, nan, 0
    se = np.sqrt(ss / df * factor + np.asarray(latent_sd) ** 2)
    t = float(stats.t.ppf(0.5 + coverage / 2, df))
    return point - t * se, point + t * se, se, df


def posterior_interval(draws: np.ndarray, quantiles: tuple[float, float] = (0.025, 0.975)
                       ) -> tuple[np.ndarray, np.ndarray]:
    """The equal-tailed credible interval [G] of the draws [S, G]: their 2.5% and 97.5% quantiles."""
    low, high = np.quantile(draws, list(quantiles), axis=0)
    return low, high
