"""What every model artifact class shares: genes, device, saving and loading.

A subclass names its `MODEL_TYPE` (the key of its settings in config.json), its config class
and its torch module class; the maths lives in the module.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd
import torch

from nofone import __version__
from nofone.errors import InputError
from nofone.io.artifact import read_artifact, write_artifact


class ArtifactModel:
    """A trained model: torch module + gene table + provenance, saved as a nofone artifact."""

    MODEL_TYPE: ClassVar[str]
    DISPLAY_NAME: ClassVar[str]
    #: the settings class (with `from_dict(data, where=...)` and `to_dict()`) and the torch
    #: module built from (config, n_genes) when an artifact is loaded
    CONFIG_CLASS: ClassVar[type]
    MODULE_CLASS: ClassVar[type[torch.nn.Module]]

    def __init__(self, module: torch.nn.Module, genes: pd.DataFrame, info: dict | None = None):
        self.module = module.eval()
        self.module.requires_grad_(False)
        self.genes = genes.reset_index(drop=True)
        self.info = info or {}
        if len(self.genes) != module.n_genes:
            raise ValueError("gene table and module disagree on the number of genes")

    @property
    def model_type(self) -> str:
        return self.MODEL_TYPE

    @property
    def config(self) -> Any:
        return self.module.config

    @property
    def gene_ids(self) -> list[str]:
        return self.genes["gene_id"].tolist()

    @property
    def dispersion(self) -> torch.Tensor:
        """[G]: one NB dispersion per gene (models whose r depends on the latent point refuse)."""
        return self.module.dispersion.detach()

    def dispersion_at(self, z: torch.Tensor) -> torch.Tensor:
        """[..., G]: the NB dispersion at latent points z [..., D]; what inference and tests use,
        so that a model whose r depends on z (bulkDGD 2.x 'nb_full_dispersion') serves too."""
        return self.dispersion.expand(*z.shape[:-1], -1)

    def dispersion_values(self, z: torch.Tensor) -> torch.Tensor:
        """Every r the model has at the points z (here one per gene: [G])."""
        return self.dispersion

    def to(self, device: str) -> ArtifactModel:
        self.module.to(device)
        return self

    def relative_means(self, z: torch.Tensor) -> torch.Tensor:
        """[..., G]: the decoded expression relative to the sample's scale, at latent points z."""
        return self.module.decoder(z)

    # -- persistence -------------------------------------------------------------------------
    def save(self, folder: Path, extra_info: dict | None = None) -> None:
        """Write the artifact into `folder` (extra files should already be there)."""
        config = {
            "model_type": self.MODEL_TYPE,
            "nofone_version": __version__,
            "n_genes": self.module.n_genes,
            self.MODEL_TYPE: self.config.to_dict(),
            **self.info,
            **(extra_info or {}),
        }
        write_artifact(folder, config, self.module.state_dict(), self.genes)

    @classmethod
    def load(cls, folder: str | os.PathLike[str], device: str = "cpu") -> ArtifactModel:
        artifact = read_artifact(folder)
        model_type = artifact.config.get("model_type")
        if model_type != cls.MODEL_TYPE:
            raise InputError(f"model {folder} is a {model_type!r} model, not {cls.DISPLAY_NAME}")
        if cls.MODEL_TYPE not in artifact.config:
            raise InputError(f"model {folder}: config.json has no '{cls.MODEL_TYPE}' settings")
        config = cls.CONFIG_CLASS.from_dict(artifact.config[cls.MODEL_TYPE], where=f"{folder}/config.json")
        module = cls.MODULE_CLASS(config, len(artifact.genes))
        try:
            module.load_state_dict(artifact.tensors)
        except RuntimeError as exc:
            raise InputError(f"model {folder}: weights do not fit its config ({exc})") from exc
        info = {k: v for k, v in artifact.config.items() if k not in {"model_type", cls.MODEL_TYPE, "n_genes"}}
        return cls(module, artifact.genes, info).to(device)
