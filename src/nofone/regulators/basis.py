"""Piecewise-linear terms of the structure features for the head.

A sample's deviation from its closest normal depends on gene length and GC content in curved
ways (library preparation, degradation, a model's own reconstruction error: held-out normals
show it too). A head that reads those features only linearly leaves the curve in its residual,
where regulators binding GC-rich promoters pick it up. So the head also reads hinges
max(0, x - knot) of every structure feature at its quartiles. A hinge of one input is its own
DeepLIFT attribution (h(x) - h(reference)), so the structure features' attributions, and the
linearity the permutation null uses, stay exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

QUANTILES = (0.25, 0.5, 0.75)


@dataclass
class HingeBasis:
    columns: np.ndarray  # int [B], the feature of each hinge
    knots: np.ndarray  # float [B], scaled units

    @classmethod
    def at_quantiles(cls, scaled: np.ndarray, structure: np.ndarray) -> HingeBasis:
        columns, knots = [], []
        for j in np.flatnonzero(structure):
            for knot in np.unique(np.quantile(scaled[:, j], QUANTILES)):
                columns.append(j)
                knots.append(float(knot))
        return cls(np.array(columns, dtype=np.int64), np.array(knots))

    @classmethod
    def empty(cls) -> HingeBasis:
        return cls(np.zeros(0, np.int64), np.zeros(0))

    def __len__(self) -> int:
        return len(self.columns)

    def values(self, scaled: np.ndarray) -> np.ndarray:
        return np.maximum(np.asarray(scaled, np.float64)[:, self.columns] - self.knots, 0.0)

    def link(self, scaled: np.ndarray, reference: np.ndarray) -> np.ndarray:
        """[F, B]: the mean DeepLIFT attribution of each feature through each hinge (per unit weight)."""
        out = np.zeros((scaled.shape[1], len(self)))
        out[self.columns, np.arange(len(self))] = (self.values(scaled) - self.values(reference[None, :])).mean(0)
        return out


class HingeLayer(nn.Module):
    """x -> sum_b w_b max(0, x[:, column_b] - knot_b), with an nn.ReLU for captum's rescale rule."""

    def __init__(self, basis: HingeBasis, weights: np.ndarray):
        super().__init__()
        self.register_buffer("columns", torch.as_tensor(basis.columns))
        self.register_buffer("knots", torch.as_tensor(basis.knots, dtype=torch.float32))
        self.relu = nn.ReLU()
        self.linear = nn.Linear(len(basis), 1, bias=False)
        with torch.no_grad():
            self.linear.weight.copy_(torch.as_tensor(weights, dtype=torch.float32)[None, :])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.relu(x[:, self.columns] - self.knots))
