"""One L-BFGS run on a small parameter vector, as the calibrations on held-out normals use it."""

from __future__ import annotations

from collections.abc import Callable

import torch


def lbfgs(loss: Callable[[torch.Tensor], torch.Tensor], params: torch.Tensor, max_iter: int) -> None:
    """Minimise `loss(params)` in place (strong-Wolfe line search, unit step)."""
    optimizer = torch.optim.LBFGS([params], lr=1, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        value = loss(params)
        value.backward()
        return value

    optimizer.step(closure)
