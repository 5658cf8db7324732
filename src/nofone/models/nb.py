"""Negative binomial log-likelihood in float64.

float32 underflow of `r / (m + r)` gave NaN losses in bulkDGD, so every likelihood here is
computed in float64 whatever the decoder's precision.
"""

from __future__ import annotations

import torch


def nb_log_prob(x: torch.Tensor, mean: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """log NB(x; mean, r), elementwise, broadcasting; variance = mean + mean^2 / r.

    lgamma(x+r) - lgamma(r) - lgamma(x+1) + x log(m/(m+r)) + r log(r/(m+r)).
    """
    x = x.to(torch.float64)
    mean = mean.to(torch.float64)
    r = _unbroadcast(r).to(torch.float64)
    log_mr = torch.log(mean + r)
    return (
        torch.lgamma(x + r) - torch.lgamma(r) - torch.lgamma(x + 1.0)
        + torch.xlogy(x, mean) - x * log_mr
        + r * (torch.log(r) - log_mr)
    )


def _unbroadcast(t: torch.Tensor) -> torch.Tensor:
    """`t` without the copies of a broadcast (dimensions of stride 0 become size 1), so that a
    per-gene r expanded over samples gets its log-gamma and log once per gene, not per value."""
    if t.dim() == 0 or all(s != 0 for s in t.stride()):
        return t
    return t[tuple(slice(0, 1) if s == 0 else slice(None) for s in t.stride())]
