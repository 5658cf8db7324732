"""Robust per-feature scaling, fitted on the training genes only.

Binding counts and gene lengths are heavy-tailed (a few promoters hold thousands of peaks, a
few introns are a megabase), so a non-negative feature is first log1p-transformed; then it is
centred on its training median and divided by a robust spread: the interquartile range / 1.349
(the standard deviation for normal data), or, for a sparse feature whose quartiles coincide
(most regulators bind a few percent of genes), the median size of its non-zero deviations. No
value is clipped: the no-binding reference and a knocked-out regulator map to finite inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

IQR_TO_SD = 1.349


@dataclass
class RobustScaler:
    log1p: np.ndarray  # bool [F]
    center: np.ndarray  # float64 [F]
    scale: np.ndarray  # float64 [F]

    @classmethod
    def fit(cls, values: np.ndarray) -> RobustScaler:
        """Fit on raw values [genes, features] (the training genes)."""
        log1p = (values >= 0).all(0)
        v = np.where(log1p, np.log1p(np.maximum(values, 0)), values)
        center = np.median(v, 0)
        q1, q3 = np.quantile(v, [0.25, 0.75], axis=0)
        scale = (q3 - q1) / IQR_TO_SD
        for j in np.flatnonzero(scale <= 0):
            deviation = np.abs(v[:, j] - center[j])
            nonzero = deviation[deviation > 0]
            scale[j] = float(np.median(nonzero)) if len(nonzero) else 1.0
        return cls(log1p, center, scale)

    def transform(self, values: np.ndarray) -> np.ndarray:
        """Raw [n, F] -> scaled float32 [n, F]."""
        v = np.where(self.log1p, np.log1p(np.maximum(values, 0)), values)
        return ((v - self.center) / self.scale).astype(np.float32)

    def to_tensors(self) -> dict[str, torch.Tensor]:
        return {"scaler.log1p": torch.as_tensor(self.log1p.astype(np.uint8)),
                "scaler.center": torch.as_tensor(self.center, dtype=torch.float64),
                "scaler.scale": torch.as_tensor(self.scale, dtype=torch.float64)}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> RobustScaler:
        return cls(tensors["scaler.log1p"].numpy().astype(bool), tensors["scaler.center"].numpy(),
                   tensors["scaler.scale"].numpy())
