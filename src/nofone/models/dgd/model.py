"""The DGD as a model of normal tissue (`nofone.models.base.LatentNormalModel`): its settings,
training plan, closest-normal search from every mixture component's mean, save, load, and
imports of bulkDGD (v1, 2.x).
"""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from nofone.errors import InputError
from nofone.io.paths import require_file
from nofone.models.base import LatentNormalModel
from nofone.models.dgd.bulkdgd import Labels, read_bulkdgd
from nofone.models.dgd.config import PRESETS, DGDConfig, load_config
from nofone.models.dgd.module import DGDModule
from nofone.models.dgd.train import DGDPlan

MODEL_TYPE = "dgd"


class DGD(LatentNormalModel):
    """A trained DGD: module + gene table + config + provenance."""

    MODEL_TYPE = MODEL_TYPE
    DISPLAY_NAME = "a DGD"
    CONFIG_CLASS = DGDConfig
    MODULE_CLASS = DGDModule
    PRESETS = PRESETS
    PLAN = DGDPlan
    DEFAULT_PRESET = "small"

    @classmethod
    def settings(cls, preset_or_json: str | None = None, overrides: dict | None = None) -> DGDConfig:
        return load_config(preset_or_json or cls.DEFAULT_PRESET, overrides)

    @property
    def n_components(self) -> int:
        return self.module.gmm.n_components

    def responsibilities(self, z: torch.Tensor) -> torch.Tensor:
        return self.module.gmm.responsibilities(z)

    def candidate_starts(self, counts: torch.Tensor, measured: torch.Tensor | None = None) -> torch.Tensor:
        """[N, K, D]: one candidate at every component mean, for every sample."""
        means = self.module.gmm.means.detach()
        return means.unsqueeze(0).expand(counts.shape[0], -1, -1)

    def decode(self, latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        relative, log_r = self.module.decoder.decode(latent)  # one hidden pass for both heads
        return relative, torch.exp(self.module.log_r.expand_as(relative) if log_r is None else log_r)

    @classmethod
    def fit_note(cls, summary: dict) -> str:
        return f"{summary['components_used']} components used"

    @property
    def default_scaling(self) -> str:
        """The scaling the model was trained with (the paper's: the mean count)."""
        return self.config.scaling

    def dispersion_values(self, z: torch.Tensor) -> torch.Tensor:
        """[G] when r is per gene, else r at the points z (for summaries of the spread of r)."""
        return self.module.dispersion_values(z).detach()

    @classmethod
    def from_bulkdgd(cls, decoder: Mapping, gmm: Mapping, gene_ids: list[str], fmt: str = "auto",
                     source: dict | None = None, labels: Labels = Labels()) -> DGD:
        """Build from bulkDGD v1 or 2.x files (see `nofone.models.dgd.bulkdgd`); errors name keys and shapes."""
        imported = read_bulkdgd(decoder, gmm, len(gene_ids), fmt, labels)
        module = DGDModule(imported.config, len(gene_ids))
        module.load_state_dict(imported.state)
        genes = pd.DataFrame({"gene_id": gene_ids, "gene_name": [""] * len(gene_ids)})
        provenance = {**(source or {}), "format": f"bulkdgd-{imported.format}", **imported.details}
        return cls(module, genes, {"source": provenance})

    @classmethod
    def from_bulkdgd_v1(cls, decoder: dict[str, torch.Tensor], gmm: dict[str, torch.Tensor],
                        gene_ids: list[str], source: dict | None = None) -> DGD:
        """Build from the published bulkDGD v1 state dicts (shapes checked, errors name keys)."""
        return cls.from_bulkdgd(decoder, gmm, gene_ids, "v1", source)


def load_torch_state(path: Path, what: str, scalars: bool = False) -> dict[str, Any]:
    """Load a PyTorch state dict safely (`weights_only=True`): tensors only, no code.

    `scalars` also accepts plain values (int, float, str, bool, None) beside the tensors, as in
    a bulkDGD 2.x GMM file.
    """
    require_file(path, what)
    try:
        with warnings.catch_warnings():
            # torch warns about the pickle protocol of files it then refuses; the error below says it
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        with open(path, "rb") as handle:
            head = handle.read(4)
        pickled = head[:1] == b"\x80" and head[1:2] in {b"\x02", b"\x03", b"\x04", b"\x05"}
        if not (head.startswith(b"PK\x03\x04") or pickled):
            raise InputError(
                f"{what} {path} is not a PyTorch file: neither torch.save's zip archive nor a pickle "
                "(corrupted, truncated or another format)"
            ) from None
        raise InputError(
            f"{what} {path} holds pickled Python objects, not only tensors; nofone loads tensors only "
            "(torch.load(weights_only=True)) and never unpickles code: save the model's state_dict() instead"
        ) from exc
    except Exception as exc:
        raise InputError(
            f"{what} {path} cannot be loaded as tensors only ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:200]}); nofone never unpickles arbitrary objects"
        ) from exc
    plain = (int, float, str, bool, type(None)) if scalars else ()
    if not isinstance(state, dict) or not all(torch.is_tensor(v) or isinstance(v, plain) for v in state.values()):
        raise InputError(f"{what} {path} is not a state dict of tensors")
    return state

