"""Per-sample scaling factors: the NB mean of gene g is `scale * relative_mean_g(z)`.

- `mean` (the paper's): the mean of the sample's counts over the model's genes.
- `measured`: for samples where some model genes were not measured. Zero-filling them would
  shrink the scale and produce false down calls, so the measured genes' total is divided by the
  share of expression the model predicts for them:
  `sum_M x / sum_M d(z) * mean_G d(z)`. With nothing missing this equals `mean` exactly, so
  `mean` switches to it automatically for such samples.
- `median`: median over measured genes with x > 0 of `x_g / d_g(z)` (median of ratios): robust to
  a few enormously over-expressed genes, which inflate the mean of a tumour and would otherwise
  make every other gene look down-regulated.
"""

from __future__ import annotations

import torch

from nofone.choices import SCALINGS

_MIN_GENES_FOR_MEDIAN = 20


def scaling_factor(x: torch.Tensor, relative: torch.Tensor | None, measured: torch.Tensor | None,
                   method: str) -> torch.Tensor:
    """[N] float64 scaling factors for counts `x` [N, G] given decoded relative means [N, G].

    `relative` may be None only for `mean` with nothing missing (it does not depend on z).
    Gradients do not flow through the result.
    """
    if method not in SCALINGS:
        raise ValueError(f"unknown scaling {method!r}; use one of {SCALINGS}")
    x = x.to(torch.float64)
    all_measured = measured is None or bool(measured.all())
    if method == "mean" and all_measured:
        return x.mean(-1)
    if relative is None:
        raise ValueError(f"scaling {method!r} needs the decoded relative means")
    d = relative.detach().to(torch.float64)
    mask = torch.ones_like(x, dtype=torch.bool) if measured is None else measured.bool()
    ratio_scale = (x * mask).sum(-1) / (d * mask).sum(-1).clamp_min(1e-300) * d.mean(-1)
    if method in {"mean", "measured"}:
        return ratio_scale
    usable = mask & (x > 0) & (d > 0)
    ratios = torch.where(usable, x / d.clamp_min(1e-300), torch.full_like(x, float("nan")))
    median = torch.nanmedian(ratios, dim=-1).values
    enough = usable.sum(-1) >= _MIN_GENES_FOR_MEDIAN
    return torch.where(enough, median, ratio_scale)
