"""The DGD as a model (scvi-tools style): save, load, import bulkDGD (v1, 2.x), and the small interface
that representation search and the tests use (`relative_means`, `dispersion`,
`latent_log_prob`, `candidate_starts`).
"""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from nofone.errors import InputError
from nofone.io.paths import require_file
from nofone.models.base import ArtifactModel
from nofone.models.dgd.bulkdgd import Labels, read_bulkdgd
from nofone.models.dgd.config import DGDConfig
from nofone.models.dgd.module import DGDModule

MODEL_TYPE = "dgd"


class DGD(ArtifactModel):
    """A trained DGD: module + gene table + config + provenance."""

    MODEL_TYPE = MODEL_TYPE
    DISPLAY_NAME = "a DGD"
    CONFIG_CLASS = DGDConfig
    MODULE_CLASS = DGDModule

    @property
    def n_components(self) -> int:
        return self.module.gmm.n_components

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

    def dispersion_at(self, z: torch.Tensor) -> torch.Tensor:
        """[..., G]: NB dispersion r at latent points z (per gene unless r depends on z)."""
        return self.module.dispersion_at(z)

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


def as_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()
