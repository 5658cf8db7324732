"""Every model of normal tissue nofone knows: `model_type` -> its class, display name and presets.

A new model is one package under `nofone/models/` whose class implements
`nofone.models.base.NormalModel`, plus one line in `MODELS` (docs/development.md). Everything
here is plain strings: the CLI imports this module at start-up for its help texts and must not
pay for torch; the class is imported only when a model is trained or loaded.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nofone.errors import InputError

if TYPE_CHECKING:
    from nofone.models.base import NormalModel

#: the files `nofone train` writes beside the artifact (history per epoch, and every training and
#: held-out sample's point, component and likelihoods)
HISTORY = "history.tsv"
TRAIN_REPRESENTATIONS = "training_representations.parquet"


@dataclass(frozen=True)
class ModelEntry:
    """One registered model; `target` is "module:Class" (imported lazily)."""

    target: str
    display_name: str
    presets: tuple[str, ...]
    default_preset: str


MODELS: dict[str, ModelEntry] = {
    "dgd": ModelEntry("nofone.models.dgd.model:DGD", "DGD", ("small", "paper"), "small"),
    "nbvae": ModelEntry("nofone.models.nbvae.model:NBVAE", "NB-VAE", ("default",), "default"),
    "diffusion": ModelEntry("nofone.models.diffusion.model:Diffusion", "diffusion", ("cpu", "gpu", "paper"), "cpu"),
}
MODEL_TYPES = tuple(MODELS)
DEFAULT_MODEL_TYPE = "dgd"


def presets_help() -> str:
    """"DGD: small (default), paper; NB-VAE: default" for the CLI's --config help."""
    def named(entry: ModelEntry) -> str:
        if len(entry.presets) == 1:
            return entry.presets[0]
        return ", ".join(p + (" (default)" if p == entry.default_preset else "") for p in entry.presets)

    return "; ".join(f"{e.display_name}: {named(e)}" for e in MODELS.values())


def model_class(model_type: str) -> type[NormalModel]:
    """The class of a registered model type (imports its package)."""
    if model_type not in MODELS:
        raise InputError(f"unknown model type {model_type!r} (known: {', '.join(MODEL_TYPES)})")
    module, name = MODELS[model_type].target.split(":")
    return getattr(importlib.import_module(module), name)


def model_class_for_config(config: Any) -> type[NormalModel]:
    """The registered class whose settings `config` is (a config knows its model only by its class)."""
    for model_type in MODELS:
        cls = model_class(model_type)
        if type(config) is cls.CONFIG_CLASS:
            return cls
    raise TypeError(f"{type(config).__name__} is not the config of any registered model")


def load_model(folder: str | os.PathLike[str], device: str = "cpu") -> NormalModel:
    """Load any nofone model artifact by the `model_type` in its config.json."""
    from nofone.io.artifact import read_artifact

    artifact_type = read_artifact(folder, verify=False).config.get("model_type")
    if artifact_type not in MODELS:
        raise InputError(f"model {folder}: unknown model_type {artifact_type!r} (known: {', '.join(MODEL_TYPES)})")
    return model_class(artifact_type).load(folder, device)


def model_facts(config: dict) -> dict:
    """The model-agnostic facts of an artifact's config.json: display name, number of mixture
    components (None: the model has none) and latent dimension (= the number of genes for a model
    whose stored point is the expression itself).

    Artifacts written before these were top-level keys are read from their settings: a "gmm" entry
    gives the components, other nofone models had one standard-normal prior (1 component).
    """
    if "n_components" in config:
        return {"display_name": config.get("display_name"), "n_components": config["n_components"],
                "latent_dim": config.get("latent_dim")}
    model_type = config.get("model_type") or ""
    settings = config.get(model_type) or {}
    entry = MODELS.get(model_type)
    components = (settings["gmm"] or {}).get("n_components") if "gmm" in settings else (1 if settings else None)
    return {"display_name": entry.display_name if entry else model_type or None, "n_components": components,
            "latent_dim": settings.get("latent_dim")}
