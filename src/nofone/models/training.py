"""What training any model of normal expression shares: its data, the dispersion calibration
on held-out samples, and the diagnostics of its latent space."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np
import torch

from nofone.models.nb import nb_log_prob


@dataclass
class TrainingData:
    """Counts of the normal samples to train on, with their split and (optional) tissue."""

    sample_ids: list[str]
    counts: np.ndarray  # int64 [N, G]
    split: np.ndarray  # "train" / "test" per sample
    tissue: np.ndarray | None = None
    measured: np.ndarray | None = None  # bool [N, G]

    def fingerprint(self) -> str:
        """A hash of what a checkpoint must match to be resumed."""
        h = hashlib.sha256()
        h.update("\n".join(self.sample_ids).encode())
        h.update("\n".join(self.split).encode())
        h.update(str(self.counts.shape).encode())
        h.update(np.ascontiguousarray(self.counts[:, :: max(1, self.counts.shape[1] // 997)]).tobytes())
        return h.hexdigest()[:16]


def calibrate_dispersion(module: torch.nn.Module, x: torch.Tensor, z: torch.Tensor, scale: torch.Tensor,
                         measured: torch.Tensor | None) -> dict:
    """Set log r <- a + b log r, (a, b) maximising the held-out samples' NB likelihood."""
    with torch.no_grad():
        mean = (module.decoder(z) * scale.unsqueeze(-1)).double()
        log_r = module.log_r.detach().double()
    n_values = float(measured.sum()) if measured is not None else float(x.numel())

    def nll(params: torch.Tensor) -> torch.Tensor:
        ll = nb_log_prob(x, mean, torch.exp(params[0] + params[1] * log_r))
        return -(ll * measured).sum() / n_values if measured is not None else -ll.sum() / n_values

    params = torch.tensor([0.0, 1.0], dtype=torch.float64, requires_grad=True)
    before = float(nll(params.detach()))
    optimizer = torch.optim.LBFGS([params], lr=1, max_iter=100, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = nll(params)
        loss.backward()
        return loss

    optimizer.step(closure)
    a, b = (float(v) for v in params.detach())
    after = float(nll(params.detach()))
    if not (np.isfinite(after) and after <= before):
        return {"a": 0.0, "b": 1.0, "nll_before": before, "nll_after": before, "applied": False}
    with torch.no_grad():
        module.log_r.copy_((a + b * module.log_r.double()).to(module.log_r.dtype))
    return {"a": a, "b": b, "nll_before": before, "nll_after": after, "applied": True}


def component_purity(component: np.ndarray, tissue: np.ndarray) -> float:
    """Fraction of samples whose component's majority tissue is their own tissue."""
    total = 0
    for k in np.unique(component):
        _, n = np.unique(tissue[component == k], return_counts=True)
        total += n.max()
    return float(total / len(component))


def epochs_to_steps(n_train: int, batch_size: int, epochs: int) -> int:
    """Decoder optimiser steps a run will take (a small cohort at batch 256 takes few)."""
    return epochs * math.ceil(n_train / batch_size)
