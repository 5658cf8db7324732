"""The model interface serves a model unlike the DGD and the NB-VAE: no latent space (its stored
point is the expression itself, D = G), no mixture components, no prior, a per-gene spread, and
dispersions fitted per gene on held-out normals by its own calibration hook (what the diffusion
model of issue 19 will be). A toy model of that shape, registered for the test only, trains
through the shared loop and runs through represent -> de -> report unchanged.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from typing import ClassVar

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from torch import nn

from nofone.inference.represent import SearchConfig
from nofone.io.artifact import read_artifact
from nofone.io.ingest import IngestOptions, ingest
from nofone.models import config_io, registry
from nofone.models.base import ClosestNormal, NormalModel
from nofone.models.calibration import fit_null
from nofone.models.nb import nb_log_prob
from nofone.models.scaling import scaling_factor
from nofone.models.training import TrainingPlan
from nofone.report.build import report
from nofone.simulate import SimulationConfig, simulate
from nofone.stats.optimise import lbfgs
from nofone.steps.common import load_model
from nofone.steps.de import DEOptions, differential_expression
from nofone.steps.represent import REPRESENTATIONS, read_representations, represent

SHRINK = 0.1  # how far the stored point moves from the normal profile toward the sample


@dataclass(frozen=True)
class ProfileTraining:
    epochs: int = 12
    batch_size: int = 16
    lr: float = 0.1
    seed: int = 0
    test_fraction: float = 0.15
    early_stopping: bool = True
    eval_every: int = 2
    patience: int = 3
    checkpoint_every: int = 4
    calibrate_dispersion: bool = True


@dataclass(frozen=True)
class ProfileConfig:
    dispersion_init: float = 5.0
    training: ProfileTraining = field(default_factory=ProfileTraining)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict, where: str = "config") -> ProfileConfig:
        data = dict(data)
        training = config_io.build(ProfileTraining, data.pop("training", {}), f"{where}.training")
        return replace(config_io.build(cls, data, where, skip={"training"}), training=training)


class ProfileModule(nn.Module):
    """One log relative mean and one log dispersion per gene."""

    def __init__(self, config: ProfileConfig, n_genes: int):
        super().__init__()
        self.config, self.n_genes = config, n_genes
        self.log_mu = nn.Parameter(torch.zeros(n_genes, dtype=torch.float64))
        self.register_buffer("log_r", torch.full((n_genes,), math.log(config.dispersion_init), dtype=torch.float64))

    @property
    def dispersion(self) -> torch.Tensor:
        return torch.exp(self.log_r)

    def relative_means(self, point: torch.Tensor) -> torch.Tensor:
        return torch.exp(point)

    def dispersion_at(self, point: torch.Tensor) -> torch.Tensor:
        return self.dispersion.expand(*point.shape[:-1], -1)

    def stored_point(self, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """[N, G]: the profile moved `SHRINK` of the way toward each sample (log scale)."""
        own = torch.log((x + 0.5) / scale.unsqueeze(-1))
        return self.log_mu + SHRINK * (own - self.log_mu)


class ProfilePlan(TrainingPlan):
    score_key = "heldout_nll_per_gene"
    score_name = "held-out NLL"
    checkpoint_salt = "profile"
    calibrated_with: ClassVar[list[str]] = []

    def __init__(self, data, config, device):
        super().__init__(data, config, device)
        self.module = ProfileModule(config, self.counts.shape[1]).to(device)
        self.scale = self.x.mean(-1)
        self.optimizers = {"profile": torch.optim.Adam([self.module.log_mu], lr=config.training.lr)}

    def initialise(self) -> None:
        with torch.no_grad():
            rows = self.train_rows
            self.module.log_mu.copy_(torch.log((self.x[rows] / self.scale[rows, None]).mean(0) + 1e-3))

    def _nll(self, rows: torch.Tensor, point: torch.Tensor | None = None) -> torch.Tensor:
        point = self.module.log_mu if point is None else point
        mean = self.module.relative_means(point) * self.scale[rows, None]
        return -nb_log_prob(self.x[rows], mean, self.module.dispersion).sum(-1)

    def train_epoch(self, epoch: int, generator: torch.Generator) -> dict:
        order = self.train_rows[torch.randperm(self.n_train, generator=generator)]
        total = 0.0
        for start in range(0, len(order), self.config.training.batch_size):
            rows = order[start:start + self.config.training.batch_size]
            self.optimizers["profile"].zero_grad()
            loss = self._nll(rows).sum()
            loss.backward()
            self.optimizers["profile"].step()
            total += float(loss.detach())
        with torch.no_grad():
            test = float(self._nll(self.test_rows).mean()) if self.has_heldout else None
        return {"loss_train": total / self.n_train} | ({"loss_test": test} if test is not None else {})

    def heldout_score(self) -> float:
        with torch.no_grad():
            return float(self._nll(self.test_rows).sum() / self.x[self.test_rows].numel())

    def calibrate(self) -> tuple[dict, dict]:
        """Per-gene r fitted on the held-out normals at their stored points (not a rescale)."""
        ProfilePlan.calibrated_with.append("per-gene")
        x, m = self.heldout()
        scale = self.scale[self.test_rows]
        with torch.no_grad():
            mean = self.module.relative_means(self.module.stored_point(x, scale)) * scale[:, None]
        log_r = self.module.log_r.detach().clone().requires_grad_(True)
        lbfgs(lambda p: -nb_log_prob(x, mean, torch.exp(p)).sum() / x.numel(), log_r, max_iter=50)
        with torch.no_grad():
            self.module.log_r.copy_(log_r.clamp(-3, 8))
        return {"method": "per-gene", "applied": True}, fit_null(x, mean, self.module.dispersion.expand_as(x), m)

    def trained_points(self):
        with torch.no_grad():
            return self.module.stored_point(self.x, self.scale).float().cpu().numpy(), None


class ProfileModel(NormalModel):
    MODEL_TYPE = "profile"
    DISPLAY_NAME = "a profile model"
    CONFIG_CLASS = ProfileConfig
    MODULE_CLASS = ProfileModule
    PRESETS: ClassVar[dict] = {"default": ProfileConfig()}
    DEFAULT_PRESET = "default"
    PLAN = ProfilePlan
    gives_spread = True

    @classmethod
    def settings(cls, preset_or_json=None, overrides=None) -> ProfileConfig:
        return config_io.load(preset_or_json or "default", cls.PRESETS, ProfileConfig.from_dict, ProfileConfig.to_dict,
                              overrides, "profile", "default")

    @property
    def default_scaling(self) -> str:
        return "mean"

    @property
    def latent_dim(self) -> int:
        return self.module.n_genes

    def closest_normal(self, counts, measured, options: SearchConfig) -> ClosestNormal:
        x = counts.to(torch.float64)
        scale = scaling_factor(x, None, None, "mean")
        point = self.module.stored_point(x, scale)
        ll = nb_log_prob(x, self.module.relative_means(point) * scale[:, None], self.module.dispersion)
        return ClosestNormal(latent=point.float(), scale=scale, count_nll=-ll.sum(-1),
                             latent_nll=torch.full((len(x),), float("nan"), dtype=torch.float64),
                             responsibilities=None, n_measured=torch.full((len(x),), x.shape[1]),
                             spread=(SHRINK * (point - self.module.log_mu)).abs().float())


@pytest.fixture
def profile_registered(monkeypatch):
    entry = registry.ModelEntry(f"{__name__}:ProfileModel", "profile model", ("default",), "default")
    monkeypatch.setitem(registry.MODELS, "profile", entry)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("profile")
    simulate(root / "sim", SimulationConfig(tissues=1, samples_per_tissue=60, genes=300, cases=3, seed=2))
    ingest(root / "sim" / "samplesheet.csv", root / "data", IngestOptions(annotation=root / "sim" / "genes.tsv"))
    return root


def test_a_model_without_latent_space_or_components_runs_every_step(profile_registered, data, tmp_path):
    from nofone.steps.train import train

    ProfilePlan.calibrated_with.clear()
    summary = train(data / "data", tmp_path / "model", ProfileModel.settings(), device="cpu")
    assert ProfilePlan.calibrated_with == ["per-gene"], "the shared loop calls the model's calibration hook"
    assert summary["dispersion_calibration"]["method"] == "per-gene" and summary["outlier_null"]["n_samples"] > 0
    config = read_artifact(tmp_path / "model").config
    assert (config["model_type"], config["n_components"], config["latent_dim"]) == ("profile", None, 300)
    model = load_model(tmp_path / "model")
    assert isinstance(model, ProfileModel)

    samples = pd.read_parquet(data / "data" / "samples.parquet")
    targets = samples.loc[samples["condition"] != "normal", "sample_id"].tolist()
    represent(tmp_path / "model", data / "data", tmp_path / "reps", SearchConfig(), targets, device="cpu")
    table = pq.read_table(tmp_path / "reps" / REPRESENTATIONS).to_pandas()
    assert all(len(z) == 300 for z in table["latent"])  # the stored point is the expression: D = G
    assert (table["component"] == 0).all() and (table["component_probability"] == 1).all()
    assert all(list(r) == [1.0] for r in table["responsibilities"])  # no components: one, of probability 1
    assert table["latent_nll"].isna().all()  # no prior
    _, columns = read_representations(tmp_path / "reps" / REPRESENTATIONS)
    assert columns["spread"].shape == (len(targets), 300) and (columns["spread"] >= 0).all()

    differential_expression(tmp_path / "model", tmp_path / "reps", data / "data", tmp_path / "de",
                            DEOptions(device="cpu"))
    de = pq.read_table(tmp_path / "de" / "de.parquet").to_pandas()
    first = de[de["sample_id"] == targets[0]]
    np.testing.assert_allclose(first["dispersion"].to_numpy(), model.dispersion.numpy(), rtol=1e-12)
    point = torch.as_tensor(np.stack(table.loc[table["sample_id"] == targets[0], "latent"].to_numpy()))
    scale = float(table.loc[table["sample_id"] == targets[0], "scale"].iloc[0])
    np.testing.assert_allclose(first["normal_mean"].to_numpy(), (torch.exp(point.double()) * scale).numpy()[0],
                               rtol=1e-6)  # de decodes the G-dimensional stored point
    assert json.loads((tmp_path / "de" / "de_report.json").read_text())["null"] == "outlier"

    run = tmp_path / "run"
    run.mkdir()
    for name, folder in (("model", "model"), ("representations", "reps"), ("de", "de")):
        (run / name).symlink_to(tmp_path / folder)
    (run / "data").symlink_to(data / "data")
    summary = report(run, tmp_path / "report")
    assert summary["model"]["n_components"] is None and summary["model"]["latent_dim"] == 300
    assert (tmp_path / "report" / "report.html").is_file()
