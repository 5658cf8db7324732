"""The trained regulator model as a nofone artifact (`nofone.io.artifact`: config.json,
weights.safetensors, genes.tsv, checksums; no pickle).

It carries everything `nofone explain` needs, so that explaining a DE profile takes only the
model folder: every seed's network (the best one is used; the others measure stability), the
scaler, the raw feature matrix of the model's genes, and per gene its chromosome and split
(`gene_info.tsv`) and per feature its kind, source and reference (`features.tsv`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from nofone import __version__
from nofone.errors import InputError
from nofone.io.artifact import read_artifact, write_artifact
from nofone.regulators.network import DEcodeNet, NetworkConfig, build_network
from nofone.regulators.scaling import RobustScaler

MODEL_TYPE = "regulators-decode"
FORMAT_VERSION = 1
GENE_INFO = "gene_info.tsv"
FEATURE_INFO = "features.tsv"


@dataclass
class RegulatorModel:
    """Networks of every seed on one feature set, with the genes they know."""

    config: dict
    network_config: NetworkConfig
    genes: pd.DataFrame  # gene_id, gene_name, chromosome, split
    features: pd.DataFrame  # feature, kind, source, log1p, center, scale, reference
    scaler: RobustScaler
    raw_features: np.ndarray  # float32 [genes, features]
    target_names: list[str]
    target_mean: np.ndarray
    target_sd: np.ndarray
    states: list[dict[str, torch.Tensor]]
    best: int  # index into states

    @property
    def n_features(self) -> int:
        return len(self.features)

    @property
    def feature_names(self) -> list[str]:
        return self.features["feature"].tolist()

    def network(self, index: int | None = None) -> DEcodeNet:
        """The network of seed `index` (default: the best), in eval mode."""
        state = self.states[self.best if index is None else index]
        return build_network(state, self.network_config, self.n_features, len(self.target_names))

    def scaled(self, rows: np.ndarray | None = None) -> np.ndarray:
        raw = self.raw_features if rows is None else self.raw_features[rows]
        return self.scaler.transform(raw)

    def reference(self) -> np.ndarray:
        """The scaled no-binding reference: regulators at 0, structure at its training median."""
        return self.scaler.transform(self.features["reference"].to_numpy(np.float64)[None, :])[0]

    def predict(self, rows: np.ndarray | None = None) -> np.ndarray:
        """Predictions of the best network in target units [genes, targets]."""
        with torch.no_grad():
            out = self.network()(torch.as_tensor(self.scaled(rows))).double().numpy()
        return out * self.target_sd + self.target_mean

    def save(self, folder: Path) -> None:
        """Write into `folder` (a staging folder); other files in it are covered by the checksums."""
        folder.mkdir(parents=True, exist_ok=True)
        self.genes.to_csv(folder / GENE_INFO, sep="\t", index=False)
        self.features.to_csv(folder / FEATURE_INFO, sep="\t", index=False)
        tensors = {f"seed{i}.{k}": v for i, state in enumerate(self.states) for k, v in state.items()}
        tensors |= self.scaler.to_tensors()
        tensors["features.raw"] = torch.as_tensor(self.raw_features, dtype=torch.float32)
        tensors["targets.mean"] = torch.as_tensor(self.target_mean, dtype=torch.float64)
        tensors["targets.sd"] = torch.as_tensor(self.target_sd, dtype=torch.float64)
        config = {**self.config, "model_type": MODEL_TYPE, "format_version": FORMAT_VERSION,
                  "nofone_version": __version__, "network": self.network_config.to_dict(),
                  "targets": self.target_names, "n_seeds": len(self.states), "best_seed_index": self.best,
                  "n_genes": len(self.genes), "n_features": self.n_features}
        write_artifact(folder, config, tensors, self.genes)

    @classmethod
    def load(cls, folder: str | os.PathLike[str]) -> RegulatorModel:
        artifact = read_artifact(folder)
        config = artifact.config
        if config.get("model_type") != MODEL_TYPE:
            raise InputError(f"{folder} is not a regulator model (model_type {config.get('model_type')!r}; "
                             "make one with `nofone regulators train`)")
        if config.get("format_version") != FORMAT_VERSION:
            raise InputError(f"{folder}: regulator model format {config.get('format_version')} is not "
                             f"{FORMAT_VERSION}; retrain it with this nofone")
        for name in (GENE_INFO, FEATURE_INFO):
            if not (Path(folder) / name).is_file():
                raise InputError(f"regulator model {folder}: {name} is missing")
        genes = pd.read_csv(Path(folder) / GENE_INFO, sep="\t", dtype=str, keep_default_na=False)
        features = pd.read_csv(Path(folder) / FEATURE_INFO, sep="\t", keep_default_na=False,
                               dtype={"feature": str, "kind": str, "source": str})
        t = artifact.tensors
        states = [{k.split(".", 1)[1]: v for k, v in t.items() if k.startswith(f"seed{i}.")}
                  for i in range(int(config["n_seeds"]))]
        return cls(config, NetworkConfig(**config["network"]), genes, features, RobustScaler.from_tensors(t),
                   t["features.raw"].numpy(), list(config["targets"]), t["targets.mean"].numpy(),
                   t["targets.sd"].numpy(), states, int(config["best_seed_index"]))
