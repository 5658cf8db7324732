"""The interface every model of normal tissue implements, and what their artifacts share.

- `ArtifactModel`: genes, device, saving and loading (a subclass names its `MODEL_TYPE`, the key
  of its settings in config.json, its config class and its torch module class).
- `NormalModel`: what the steps use, whatever the model: its settings and presets, its training
  plan for the shared loop (`nofone.models.training.fit`), `closest_normal` for a chunk of
  samples and `decode` of a stored point back to each gene's NB. How a model finds a sample's
  closest normal is its own (a latent search, an encoder plus refinement, a diffusion bridge).
- `LatentNormalModel`: the shared closest-normal search for models with a low-dimensional
  latent space and a prior over it (`nofone.inference.represent.search_latent`); such a model
  only says where the search starts.

docs/development.md lists what a new model must provide.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import pandas as pd
import torch

from nofone import __version__
from nofone.errors import InputError
from nofone.io.artifact import read_artifact, write_artifact

if TYPE_CHECKING:
    from nofone.inference.represent import SearchConfig
    from nofone.models.training import TrainingData, TrainingPlan

#: model-agnostic facts written as top-level keys of config.json (`nofone.models.registry.model_facts`)
FACT_KEYS = ("display_name", "n_components", "latent_dim")


@dataclass
class ClosestNormal:
    """Each sample's closest normal, for one chunk of N samples (what `nofone represent` stores).

    `latent` is the stored point that `decode` turns back into each gene's NB: a latent point
    [N, D], or for a model without a low-dimensional latent the expression itself (D = G).
    `responsibilities` is None for a model without mixture components (the representation file
    then holds one component of probability 1); `latent_nll` is NaN where the model has no prior
    over its points; `spread` is an optional per-gene uncertainty of the closest normal (e.g. the
    spread of several seeded draws).
    """

    latent: torch.Tensor  # [N, D]
    scale: torch.Tensor  # [N] float64: the sample's NB offset (mean = scale * relative mean)
    count_nll: torch.Tensor  # [N] float64: -sum over measured genes of log NB
    latent_nll: torch.Tensor  # [N] float64: -log prior density of the point, NaN without a prior
    responsibilities: torch.Tensor | None  # [N, K]
    n_measured: torch.Tensor  # [N]
    spread: torch.Tensor | None = None  # [N, G]


class ArtifactModel:
    """A trained model: torch module + gene table + provenance, saved as a nofone artifact."""

    MODEL_TYPE: ClassVar[str]
    DISPLAY_NAME: ClassVar[str]  # in sentences: "a DGD", "an NB-VAE"
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
        """[..., G]: the NB dispersion at latent points z [..., D] (a model whose r depends on z,
        as bulkDGD 2.x's 'nb_full_dispersion', gives r at each point)."""
        return self.module.dispersion_at(z)

    def dispersion_values(self, z: torch.Tensor) -> torch.Tensor:
        """Every r the model has at the points z (here one per gene: [G])."""
        return self.dispersion

    def to(self, device: str) -> ArtifactModel:
        self.module.to(device)
        return self

    def relative_means(self, z: torch.Tensor) -> torch.Tensor:
        """[..., G]: the decoded expression relative to the sample's scale, at latent points z."""
        return self.module.relative_means(z)

    def facts(self) -> dict:
        """The model-agnostic facts written at the top of config.json (`FACT_KEYS`)."""
        return {}

    # -- persistence -------------------------------------------------------------------------
    def save(self, folder: Path, extra_info: dict | None = None) -> None:
        """Write the artifact into `folder` (extra files should already be there)."""
        config = {
            "model_type": self.MODEL_TYPE,
            "nofone_version": __version__,
            "n_genes": self.module.n_genes,
            **self.facts(),
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
        skip = {"model_type", cls.MODEL_TYPE, "n_genes", *FACT_KEYS}
        info = {k: v for k, v in artifact.config.items() if k not in skip}
        return cls(module, artifact.genes, info).to(device)


class NormalModel(ArtifactModel, ABC):
    """A model of normal tissue, as every step uses it (see the module docstring)."""

    #: the model's named settings (`settings` accepts these names or a JSON file laid over one)
    PRESETS: ClassVar[dict[str, Any]]
    DEFAULT_PRESET: ClassVar[str]
    #: the model's `TrainingPlan` class, built from (data, config, device)
    PLAN: ClassVar[type[TrainingPlan]]
    #: True when `closest_normal` gives a per-gene `spread` (represent then stores it)
    gives_spread: ClassVar[bool] = False

    @classmethod
    @abstractmethod
    def settings(cls, preset_or_json: str | None = None, overrides: dict | None = None) -> Any:
        """A checked config: a preset name or a JSON file (None: `DEFAULT_PRESET`), plus overrides
        with dotted keys ({"training.epochs": 50}; None values are ignored)."""

    @classmethod
    def training_plan(cls, data: TrainingData, config: Any, device: str) -> TrainingPlan:
        """What the shared loop (`nofone.models.training.fit`) trains: module, optimisers, the
        epoch's steps, the held-out score, checkpointed extras, diagnostics, the calibration."""
        return cls.PLAN(data, config, device)

    @abstractmethod
    def closest_normal(self, counts: torch.Tensor, measured: torch.Tensor | None,
                       options: SearchConfig) -> ClosestNormal:
        """Each sample's closest normal for one chunk: `counts` [N, G] and `measured` ([N, G]
        bool or None) already on the model's device. `options.scaling` None: the model's own."""

    def decode(self, latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(relative mean [N, G], dispersion [N, G]) of each gene's NB at stored points `latent`
        [N, D] (what `nofone de` tests against; the NB mean is scale x relative mean)."""
        return self.relative_means(latent), self.dispersion_at(latent)

    @property
    @abstractmethod
    def default_scaling(self) -> str:
        """The scaling factor the model was trained with (`nofone.models.scaling`)."""

    @property
    def n_components(self) -> int | None:
        """Mixture components of the model's prior; None for a model without components."""
        return None

    @property
    def latent_dim(self) -> int:
        """Length of a stored point (the number of genes for a model without a latent space)."""
        return self.config.latent_dim

    def latent_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """[N] log prior density at the points z; NaN for a model without a prior over them."""
        return torch.full(z.shape[:-1], float("nan"), dtype=torch.float64, device=z.device)

    def responsibilities(self, z: torch.Tensor) -> torch.Tensor | None:
        """[N, K] posterior probability of each mixture component at z; None without components."""
        return None

    @classmethod
    def fit_note(cls, summary: dict) -> str:
        """A few words on the fit for the `nofone train` result line (e.g. "3 components used")."""
        return ""

    def facts(self) -> dict:
        from nofone.models.registry import MODELS

        entry = MODELS.get(self.MODEL_TYPE)
        return {"display_name": entry.display_name if entry else self.DISPLAY_NAME,
                "n_components": self.n_components, "latent_dim": self.latent_dim}


class LatentNormalModel(NormalModel):
    """A model with a low-dimensional latent space and a prior over it: the closest normal is the
    latent point maximising NB likelihood x prior (`nofone.inference.represent.search_latent`),
    searched from `candidate_starts`. The module gives `relative_means(z)`, `dispersion_at(z)` and
    `latent_log_prob(z)`."""

    @abstractmethod
    def candidate_starts(self, counts: torch.Tensor, measured: torch.Tensor | None = None) -> torch.Tensor:
        """[N, C, D]: where the search starts for each sample (C candidates, the best kept)."""

    def latent_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return self.module.latent_log_prob(z)

    def closest_normal(self, counts: torch.Tensor, measured: torch.Tensor | None,
                       options: SearchConfig) -> ClosestNormal:
        from nofone.inference.represent import search_latent

        options = options.for_model(self, options.scaling)
        starts = self.candidate_starts(counts, measured).to(counts.device)
        result = search_latent(self.module, counts, measured, starts, options)
        with torch.no_grad():
            result.responsibilities = self.responsibilities(result.latent)
        return result

