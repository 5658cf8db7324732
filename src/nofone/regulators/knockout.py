"""The fitted profile model as a torch module, and in-silico knockouts of regulators.

A knockout sets one regulator's binding to 0 in every gene it binds (its targets) and asks the
profile model how the prediction of those genes changes: the paper's in-silico KO, here on the
sample's own fitted head, so the change is in the profile's units (log2 fold change against the
closest normal).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn

from nofone.regulators.basis import HingeLayer
from nofone.regulators.head import ProfileFit


class ProfileModel(nn.Module):
    """trunk units, features and structure hinges -> one prediction: the head of `ProfileFit`."""

    def __init__(self, trunk: nn.Module | None, fit: ProfileFit):
        super().__init__()
        self.trunk = trunk
        n_units, n_features = len(fit.unit_weights), len(fit.feature_weights)
        self.units = nn.Linear(n_units, 1, bias=False) if n_units else None
        self.skip = nn.Linear(n_features, 1)
        with torch.no_grad():
            if self.units is not None:
                self.units.weight.copy_(torch.as_tensor(fit.unit_weights, dtype=torch.float32)[None, :])
            self.skip.weight.copy_(torch.as_tensor(fit.feature_weights, dtype=torch.float32)[None, :])
            self.skip.bias.fill_(fit.intercept)
        self.hinges = HingeLayer(fit.basis, fit.hinge_weights) if len(fit.basis) else None
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.skip(x)
        if self.units is not None and self.trunk is not None:
            out = out + self.units(self.trunk(x))
        if self.hinges is not None:
            out = out + self.hinges(x)
        return out

    def predict(self, x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self(torch.as_tensor(x, dtype=torch.float32))[:, 0].double().numpy()


def knockouts(model: ProfileModel, raw: np.ndarray, scale, regulators: np.ndarray, names: list[str],
              genes: pd.DataFrame, top: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """For each regulator column in `regulators`: its targets (genes with binding > 0), the mean
    predicted change when its binding is zeroed, and the target most reduced and most raised.
    With `top` > 0, also per gene for the first `top` regulators of `regulators` (in that order).

    `raw` [G, F] raw features of the genes, `scale` the model's RobustScaler, `genes` gene_id and
    gene_name of the rows.
    """
    base = model.predict(scale.transform(raw))
    rows, per_gene = [], []
    for rank, j in enumerate(regulators):
        targets = np.flatnonzero(raw[:, j] > 0)
        if len(targets) == 0:
            rows.append({"feature": names[j], "n_targets": 0, "knockout_mean_change": np.nan})
            continue
        knocked = raw[targets].copy()
        knocked[:, j] = 0.0
        change = model.predict(scale.transform(knocked)) - base[targets]
        rows.append({"feature": names[j], "n_targets": len(targets), "knockout_mean_change": float(change.mean()),
                     "knockout_most_down": genes["gene_name"].iloc[targets[np.argmin(change)]]
                     or genes["gene_id"].iloc[targets[np.argmin(change)]],
                     "knockout_most_up": genes["gene_name"].iloc[targets[np.argmax(change)]]
                     or genes["gene_id"].iloc[targets[np.argmax(change)]]})
        if rank < top:
            per_gene.append(pd.DataFrame({
                "feature": names[j], "gene_id": genes["gene_id"].iloc[targets].to_numpy(),
                "gene_name": genes["gene_name"].iloc[targets].to_numpy(), "binding": raw[targets, j],
                "predicted": base[targets], "predicted_knockout": base[targets] + change, "change": change,
            }).sort_values("change", key=np.abs, ascending=False))
    genes_table = pd.concat(per_gene, ignore_index=True) if per_gene else pd.DataFrame(
        columns=["feature", "gene_id", "gene_name", "binding", "predicted", "predicted_knockout", "change"])
    return pd.DataFrame(rows), genes_table
