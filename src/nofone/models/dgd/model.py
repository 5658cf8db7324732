"""The DGD as a model (scvi-tools style): save, load, import bulkDGD v1, and the small interface
that representation search and the tests use (`relative_means`, `dispersion`,
`latent_log_prob`, `candidate_starts`).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from nofone.errors import InputError
from nofone.models.base import ArtifactModel
from nofone.models.dgd.config import DGDConfig
from nofone.models.dgd.module import DGDModule
from nofone.models.gmm import GMMConfig

MODEL_TYPE = "dgd"


class DGD(ArtifactModel):
    """A trained DGD: module + gene table + config + provenance."""

    MODEL_TYPE = MODEL_TYPE
    DISPLAY_NAME = "a DGD"

    @classmethod
    def config_from_dict(cls, data: dict, where: str) -> DGDConfig:
        return DGDConfig.from_dict(data, where=where)

    @classmethod
    def build_module(cls, config: DGDConfig, n_genes: int) -> DGDModule:
        return DGDModule(config, n_genes)

    @property
    def n_components(self) -> int:
        return self.module.gmm.n_components

    def relative_means(self, z: torch.Tensor) -> torch.Tensor:
        return self.module.decoder(z)

    def latent_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return self.module.gmm.log_prob(z)

    def responsibilities(self, z: torch.Tensor) -> torch.Tensor:
        return self.module.gmm.responsibilities(z)

    def candidate_starts(self, counts: torch.Tensor) -> torch.Tensor:
        """[N, K, D]: one candidate at every component mean, for every sample."""
        means = self.module.gmm.means.detach()
        return means.unsqueeze(0).expand(counts.shape[0], -1, -1)

    @property
    def default_scaling(self) -> str:
        """The scaling the model was trained with (the paper's: the mean count)."""
        return self.config.scaling

    @classmethod
    def from_bulkdgd_v1(cls, decoder: dict[str, torch.Tensor], gmm: dict[str, torch.Tensor],
                        gene_ids: list[str], source: dict | None = None) -> DGD:
        """Build from the published bulkDGD v1 state dicts (shapes checked, errors name keys)."""
        _require(decoder, "decoder", ["main.0.weight", "main.0.bias", "nb._layer_means.weight",
                                      "nb._layer_means.bias", "nb._log_r"])
        _require(gmm, "GMM", ["_weights", "_means", "_log_var"])
        hidden_keys = sorted(
            (k for k in decoder if k.startswith("main.") and k.endswith(".weight")),
            key=lambda k: int(k.split(".")[1]),
        )
        weights = [decoder[k] for k in hidden_keys]
        latent_dim = weights[0].shape[1]
        hidden = tuple(w.shape[0] for w in weights)
        for a, b, key in zip(weights[:-1], weights[1:], hidden_keys[1:]):
            if b.shape[1] != a.shape[0]:
                raise InputError(f"decoder {key} has shape {tuple(b.shape)}; expected [*, {a.shape[0]}]")
        out_w = decoder["nb._layer_means.weight"]
        n_genes = out_w.shape[0]
        if out_w.shape[1] != hidden[-1]:
            raise InputError(
                f"decoder nb._layer_means.weight has shape {tuple(out_w.shape)}; expected [G, {hidden[-1]}]"
            )
        log_r = decoder["nb._log_r"].reshape(-1)
        if log_r.numel() != n_genes or decoder["nb._layer_means.bias"].numel() != n_genes:
            raise InputError(f"decoder: nb._log_r / nb._layer_means.bias do not have {n_genes} genes")
        if len(gene_ids) != n_genes:
            raise InputError(f"gene list has {len(gene_ids)} genes but the decoder outputs {n_genes}")
        k, d = gmm["_means"].shape
        if d != latent_dim:
            raise InputError(f"GMM _means has shape {(k, d)} but the decoder takes a {latent_dim}-d latent")
        if tuple(gmm["_log_var"].shape) != (k, d) or gmm["_weights"].numel() != k:
            raise InputError(f"GMM _log_var must be [{k}, {d}] and _weights [{k}]")
        config = replace(DGDConfig(), latent_dim=latent_dim, hidden=hidden,
                         gmm=replace(GMMConfig(), n_components=k))
        module = DGDModule(config, n_genes)
        state = {}
        for i, key in enumerate(hidden_keys):
            index = key.split(".")[1]
            state[f"decoder.hidden.{2 * i}.weight"] = decoder[key]
            state[f"decoder.hidden.{2 * i}.bias"] = decoder[f"main.{index}.bias"]
        state["decoder.output.weight"] = out_w
        state["decoder.output.bias"] = decoder["nb._layer_means.bias"]
        state["log_r"] = log_r
        state["gmm.means"] = gmm["_means"]
        state["gmm.log_var"] = gmm["_log_var"]
        state["gmm.logits"] = gmm["_weights"].reshape(-1)
        module.load_state_dict({k: v.to(torch.float32) for k, v in state.items()})
        genes = pd.DataFrame({"gene_id": gene_ids, "gene_name": [""] * n_genes})
        return cls(module, genes, {"source": source or {"format": "bulkdgd-v1"}})


def _require(state: dict, what: str, keys: list[str]) -> None:
    missing = [k for k in keys if k not in state]
    if missing:
        raise InputError(f"bulkDGD {what} file lacks key(s) {missing}; found {sorted(state)[:12]}")


def load_torch_state(path: Path, what: str) -> dict[str, torch.Tensor]:
    """Load a PyTorch state dict safely (`weights_only=True`): tensors only, no code."""
    if not path.is_file():
        raise InputError(f"{what} {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(
            f"{what} {path} cannot be loaded as tensors only ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:200]}); nofone never unpickles arbitrary objects"
        ) from exc
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise InputError(f"{what} {path} is not a state dict of tensors")
    return state


def as_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()
