"""DEcode's network on per-gene regulator totals, and its training.

The published model (stasaki/DEcode, `functions/network.py`, pretrained `Tissue_gene_params.json`)
runs convolutions without activations over 100-nt bins and sum-pools them, so each branch is a
linear map of the per-gene binding totals; then Dense 160 -> ReLU -> BatchNorm twice and a linear
output per target. With per-gene totals as input (what the available tables hold) the
convolutions collapse into the first dense layer, which is what is built here: the trunk
(two blocks of Linear 160, ReLU, BatchNorm) and a linear head.

Training as in the paper's methods: mean squared error on targets standardised over the training
genes, Adam at 1e-3, batches of 128, at most 100 epochs with early stopping after 10 without a
better validation loss, the best epoch kept; repeated over seeds and the seed with the best
validation loss kept. Missing target values are left out of the loss.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from nofone.progress import progress


@dataclass
class NetworkConfig:
    hidden: int = 160
    layers: int = 2
    learning_rate: float = 1e-3
    batch_size: int = 128
    max_epochs: int = 100
    patience: int = 10
    seeds: int = 10

    def to_dict(self) -> dict:
        return asdict(self)


class DEcodeNet(nn.Module):
    """features -> [Linear(hidden), ReLU, BatchNorm1d] x layers (the trunk) -> Linear(targets)."""

    def __init__(self, n_features: int, n_targets: int, hidden: int = 160, layers: int = 2):
        super().__init__()
        blocks: list[nn.Module] = []
        width = n_features
        for _ in range(layers):
            blocks += [nn.Linear(width, hidden), nn.ReLU(), nn.BatchNorm1d(hidden)]
            width = hidden
        self.trunk = nn.Sequential(*blocks)
        self.head = nn.Linear(hidden, n_targets)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))


@dataclass
class FittedNetwork:
    seed: int
    state: dict[str, torch.Tensor]
    validation_loss: float
    best_epoch: int
    history: list[dict]


def masked_mse(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the entries that have a target (NaN = none)."""
    known = ~torch.isnan(target)
    diff = torch.where(known, prediction - torch.nan_to_num(target), torch.zeros_like(prediction))
    return (diff**2).sum() / known.sum().clamp(min=1)


def fit_network(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
                config: NetworkConfig, seed: int) -> FittedNetwork:
    """One training run; `y` already standardised. Returns the weights of the best epoch."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    net = DEcodeNet(x_train.shape[1], y_train.shape[1], config.hidden, config.layers)
    optimiser = torch.optim.Adam(net.parameters(), lr=config.learning_rate)
    xt, yt = torch.as_tensor(x_train, dtype=torch.float32), torch.as_tensor(y_train, dtype=torch.float32)
    xv, yv = torch.as_tensor(x_val, dtype=torch.float32), torch.as_tensor(y_val, dtype=torch.float32)
    n = len(xt)
    best = (float("inf"), 0, {k: v.clone() for k, v in net.state_dict().items()})
    history = []
    for epoch in range(1, config.max_epochs + 1):
        net.train()
        order = torch.randperm(n, generator=generator)
        total, batches = 0.0, 0
        for start in range(0, n, config.batch_size):
            rows = order[start:start + config.batch_size]
            if len(rows) < 2:  # batch norm needs two genes
                continue
            optimiser.zero_grad()
            loss = masked_mse(net(xt[rows]), yt[rows])
            loss.backward()
            optimiser.step()
            total, batches = total + loss.item(), batches + 1
        net.eval()
        with torch.no_grad():
            validation = float(masked_mse(net(xv), yv))
        history.append({"seed": seed, "epoch": epoch, "train_loss": total / max(batches, 1),
                        "validation_loss": validation})
        if validation < best[0]:
            best = (validation, epoch, {k: v.clone() for k, v in net.state_dict().items()})
        elif epoch - best[1] >= config.patience:
            break
    return FittedNetwork(seed, best[2], best[0], best[1], history)


def fit_seeds(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
              config: NetworkConfig, first_seed: int = 0) -> list[FittedNetwork]:
    """`config.seeds` runs; the caller keeps the one with the lowest validation loss."""
    fits = []
    with progress("training DEcode", config.seeds) as advance:
        for seed in range(first_seed, first_seed + config.seeds):
            fit = fit_network(x_train, y_train, x_val, y_val, config, seed)
            fits.append(fit)
            advance(validation=fit.validation_loss)
    return fits


def build_network(state: dict[str, torch.Tensor], config: NetworkConfig, n_features: int,
                  n_targets: int) -> DEcodeNet:
    net = DEcodeNet(n_features, n_targets, config.hidden, config.layers)
    net.load_state_dict(state)
    return net.eval()
