"""The diffusion model trained on a simulated atlas: held-out normals bridge close to themselves,
a planted shift is bridged back toward normal and ranked on top by `perturb`, training is
deterministic and resumes exactly, the artifact round-trips, GEMDiff's inversion route runs on a
tumour-labelled model, and `augment` writes a count dataset with its quality table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from nofone.errors import InputError
from nofone.io.dataset import Dataset
from nofone.models.diffusion.augment import SamplerOptions, default_classes, quality, synthesize, write_dataset
from nofone.models.diffusion.bridge import BridgeOptions, bridge_points, closest_normal, decode
from nofone.models.diffusion.config import load_config
from nofone.models.diffusion.model import Diffusion
from nofone.models.diffusion.module import TUMOUR
from nofone.models.diffusion.perturb import PerturbOptions, perturb, resolve_sets
from nofone.models.diffusion.train import train_diffusion
from nofone.models.training import TrainingData
from nofone.simulate import SimulationConfig
from nofone.simulate.memory import calibration_split, draw_normal_counts

N_GENES = 300
SETTINGS = {"network.hidden": 32, "network.blocks": 1, "training.epochs": 40, "training.eval_every": 10,
            "training.checkpoint_every": 2, "bridge.t_star_grid": [200, 500, 800], "bridge.draws": 4}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def atlas():
    """3 tissues x 40 normals, 6 held out per tissue: half calibrate, half are kept unseen."""
    sim = draw_normal_counts(SimulationConfig(tissues=3, samples_per_tissue=40, genes=N_GENES, seed=3,
                                              heldout_per_tissue=6))
    keep, split, unseen = calibration_split(sim)
    data = TrainingData([sim.sample_ids[i] for i in keep], sim.counts[keep], split, sim.tissue[keep])
    return sim, data, unseen


@pytest.fixture(scope="module")
def trained(atlas):
    _, data, _ = atlas
    return train_diffusion(data, load_config("cpu", SETTINGS))


def _planted(sim, rows, n_genes=15, seed=0):
    """The unseen normals with the same genes changed 4-fold in all of them (a tumour-like shift)."""
    rng = np.random.default_rng(seed)
    relative = sim.mean[rows] / sim.mean[rows].sum(1, keepdims=True)
    expressed = np.flatnonzero(relative.min(0) * 1e6 > 300)
    genes = rng.choice(expressed, n_genes, replace=False)
    fold = np.where(rng.random(n_genes) < 0.5, 4.0, 0.25)
    x = sim.counts[rows].astype(np.float64)
    x[:, genes] = np.round(x[:, genes] * fold)
    return x.astype(np.int64), genes


def test_training_calibrates_the_bridge(trained):
    card = trained.card
    assert card["t_star"] in (200, 500, 800) and trained.module.config.bridge.t_star == card["t_star"]
    grid = pd.DataFrame(card["t_star_grid"])
    assert grid["unplanted_mse"].is_monotonic_increasing  # larger t* forgets more of the sample
    assert grid["planted_survival"].is_monotonic_decreasing  # and removes more of the planted change
    assert 0 <= card["gaussian_rank"] <= 64
    r = trained.module.dispersion
    assert torch.isfinite(r).all() and float(r.min()) > 0 and float(r.max() / r.min()) > 10  # dispersions moved
    assert trained.module.null_deviation.shape == (card["n_heldout"], N_GENES)
    assert np.isfinite(card["reconstruction_rmse"]) and card["outlier_null"]["n_samples"] == card["n_heldout"]


def test_unseen_normals_bridge_close_to_themselves(atlas, trained):
    sim, _, unseen = atlas
    module = trained.module
    out = closest_normal(module, sim.counts[unseen])
    x = torch.as_tensor(sim.counts[unseen], dtype=torch.float64)
    y = module.space(x, out["scale"])
    distance = torch.cdist(out["latent"], y) ** 2 / N_GENES  # [bridged, observed]
    tissue = sim.tissue[unseen]
    other = torch.as_tensor(tissue[:, None] != tissue[None, :])
    nearest_other = distance.masked_fill(~other, float("inf")).min(1).values
    assert bool((distance.diagonal() < nearest_other).all())  # its tissue is kept
    truth = ((torch.log1p(torch.as_tensor(sim.mean[unseen]) / out["scale"].unsqueeze(-1)) - module.space.centre)
             / module.space.scale)
    # closer to the true normal means than the observed counts are (the bridge denoises)
    assert float(((out["latent"] - truth) ** 2).mean()) < 0.6 * float(((y - truth) ** 2).mean())
    relative, r = decode(module, out["latent"])
    assert relative.shape == r.shape == (len(unseen), N_GENES)
    assert out["responsibilities"] is None and torch.isnan(out["latent_nll"]).all()
    assert torch.isfinite(out["count_nll"]).all() and out["spread"].shape == (len(unseen), N_GENES)
    assert torch.equal(out["n_measured"], torch.full((len(unseen),), N_GENES))


def test_planted_shift_is_bridged_back_and_ranked_on_top_by_perturb(atlas, trained):
    sim, _, unseen = atlas
    tumours, genes = _planted(sim, unseen)
    module = trained.module
    x = torch.as_tensor(tumours, dtype=torch.float64)
    y_tumour = module.space(x, module.space.size_factors(x))
    clean = torch.as_tensor(sim.counts[unseen], dtype=torch.float64)
    y_clean = module.space(clean, module.space.size_factors(clean))
    point, _ = bridge_points(module, y_tumour)
    change = (y_tumour - y_clean)[:, genes]
    survival = float(((point - y_clean)[:, genes] / change).mean())
    assert survival < 0.5
    ids = [f"ENSG{i:05d}" for i in range(N_GENES)]
    names = [f"SIM{i}" for i in range(N_GENES)]
    out = perturb(module, tumours, None, ids, names)
    core = out["core"]
    planted_ids = {ids[g] for g in genes}
    assert core.head(len(genes))["gene_id"].isin(planted_ids).mean() >= 0.8
    calibrated = core[core["calibrated_core"]]
    assert calibrated["gene_id"].isin(planted_ids).mean() >= 0.8 and len(calibrated) >= 0.6 * len(genes)
    # gene sets: one holding the planted genes among others, one without any
    sets = {"SHIFTED": [names[g] for g in genes] + names[:20], "QUIET": [names[i] for i in range(150, 190)
                                                                        if i not in set(genes)]}
    by_set = perturb(module, tumours, None, ids, names, sets, PerturbOptions(k=1.0))
    summary = by_set["sets"].set_index("gene_set")
    assert summary.loc["SHIFTED", "n_calibrated_perturbed"] > summary.loc["QUIET", "n_calibrated_perturbed"]
    shifted = by_set["genes"][by_set["genes"]["gene_set"] == "SHIFTED"]
    assert shifted.loc[shifted["rule_perturbed"], "gene_id"].isin(planted_ids).all()
    # unseen normals are quiet under the calibrated rule
    quiet = perturb(module, sim.counts[unseen], None, ids, names)["core"]
    assert quiet["calibrated_core"].sum() <= 3


def test_perturb_gene_sets_match_by_name_or_id_and_refuse_empty():
    sets = resolve_sets({"A": ["g1", "G2", "x"], "B": ["ENS3"]}, ["ENS1", "ENS2", "ENS3"], ["G1", "G2", ""], 1)
    assert sets["A"].tolist() == [0, 1] and sets["B"].tolist() == [2]
    with pytest.raises(InputError, match="no gene set"):
        resolve_sets({"A": ["nothing"]}, ["ENS1"], ["G1"], 1)


def test_bridge_is_seeded_and_does_not_depend_on_the_chunk(atlas, trained):
    sim, _, unseen = atlas
    module = trained.module
    a = closest_normal(module, sim.counts[unseen])
    b = closest_normal(module, sim.counts[unseen[::-1]], options=BridgeOptions(batch_size=2))
    torch.testing.assert_close(a["latent"], b["latent"].flip(0))
    c = closest_normal(module, sim.counts[unseen], options=BridgeOptions(seed=7))
    assert not torch.equal(a["latent"], c["latent"])
    ddim = closest_normal(module, sim.counts[unseen[:2]], options=BridgeOptions(estimate="ddim", steps=10, draws=2))
    assert torch.isfinite(ddim["latent"]).all()


def test_training_is_deterministic_and_resumes_exactly(atlas, tmp_path):
    _, data, _ = atlas
    settings = SETTINGS | {"training.epochs": 4, "training.eval_every": 2, "training.calibrate_dispersion": False}
    config = load_config("cpu", settings)
    straight = train_diffusion(data, config)
    again = train_diffusion(data, config)
    for (k, v), w in zip(straight.module.state_dict().items(), again.module.state_dict().values()):
        assert torch.equal(v, w), k
    with pytest.raises(_Killed):  # killed in epoch 3: the newest checkpoint is epoch 2's
        train_diffusion(data, config, checkpoint_dir=tmp_path / "ck", on_epoch=_stop_after(3))
    resumed = train_diffusion(data, config, checkpoint_dir=tmp_path / "ck", resume=True)
    assert resumed.resumed_from == 2
    for (k, v), w in zip(straight.module.state_dict().items(), resumed.module.state_dict().values()):
        assert torch.equal(v, w), k
    assert [h["loss_train"] for h in resumed.history] == [h["loss_train"] for h in straight.history]


class _Killed(Exception):
    pass


def _stop_after(epoch: int):
    def callback(record: dict) -> None:
        if record["epoch"] == epoch:
            raise _Killed

    return callback


def test_artifact_round_trip(atlas, trained, tmp_path):
    sim, _, unseen = atlas
    genes = pd.DataFrame({"gene_id": [f"ENSG{i:05d}" for i in range(N_GENES)], "gene_name": ""})
    model = Diffusion(trained.module, genes, {"training": {"outlier_null": trained.card["outlier_null"]}})
    model.save(tmp_path / "model")
    loaded = Diffusion.load(tmp_path / "model")
    assert loaded.config.bridge.t_star == trained.card["t_star"]
    assert loaded.module.null_deviation.shape == trained.module.null_deviation.shape
    a = model.closest_normal(sim.counts[unseen])
    b = loaded.closest_normal(torch.as_tensor(sim.counts[unseen]))
    torch.testing.assert_close(a.latent, b.latent)
    torch.testing.assert_close(a.spread, b.spread)
    assert a.responsibilities is None and torch.isnan(a.latent_nll).all()
    torch.testing.assert_close(model.decode(a.latent)[0], loaded.decode(b.latent)[0])
    assert Diffusion.settings("cpu").network.hidden == 256


def test_inversion_route_on_a_tumour_labelled_model(atlas):
    sim, data, unseen = atlas
    tumours, genes = _planted(sim, np.flatnonzero(~sim.heldout)[:40], seed=1)
    n = len(data.sample_ids)
    labelled = TrainingData(data.sample_ids + [f"T{i}" for i in range(len(tumours))],
                            np.vstack([data.counts, tumours]), np.r_[data.split, ["train"] * len(tumours)],
                            np.r_[data.tissue, sim.tissue[np.flatnonzero(~sim.heldout)[:40]]])
    tumour = np.r_[np.zeros(n, bool), np.ones(len(tumours), bool)]
    config = load_config("cpu", SETTINGS | {"training.epochs": 30, "bridge.t_star_grid": [500]})
    result = train_diffusion(labelled, config, tumour=tumour)
    module = result.module
    assert module.config.labels.tumour and module.denoiser.condition_embedding is not None
    test_tumours, _ = _planted(sim, unseen, seed=1)
    x = torch.as_tensor(test_tumours, dtype=torch.float64)
    y = module.space(x, module.space.size_factors(x))
    inverted, draws = bridge_points(module, y, BridgeOptions(route="invert", t_star=600, steps=30, source=TUMOUR))
    assert draws.shape[0] == 1 and torch.isfinite(inverted).all()
    clean = torch.as_tensor(sim.counts[unseen], dtype=torch.float64)
    y_clean = module.space(clean, module.space.size_factors(clean))
    assert float(((inverted - y_clean)[:, genes] ** 2).mean()) < float(((y - y_clean)[:, genes] ** 2).mean())
    guided = bridge_points(module, y, BridgeOptions(guidance=2.0))[0]
    assert torch.isfinite(guided).all()
    with pytest.raises(InputError, match="labelled tumours"):
        untrained = load_config("cpu", SETTINGS | {"training.epochs": 1, "training.calibrate_dispersion": False})
        bridge_points(train_diffusion(data, untrained).module, y, BridgeOptions(route="invert"))


def test_augment_writes_a_count_dataset_with_its_quality(atlas, trained, tmp_path):
    sim, data, unseen = atlas
    module = trained.module
    classes = default_classes(module)
    assert [c.name for c in classes] == sorted(set(sim.tissue))
    options = SamplerOptions(steps=20, seed=1)
    counts, table = synthesize(module, classes, 6, options)
    assert counts.shape == (6 * len(classes), N_GENES) and counts.dtype == np.int64 and counts.min() >= 0
    genes = pd.DataFrame({"gene_id": [f"ENSG{i:05d}" for i in range(N_GENES)]})
    write_dataset(tmp_path / "synthetic", counts, table, genes)
    written = Dataset(tmp_path / "synthetic")
    assert written.n_samples == len(table) and written.samples["synthetic"].all()
    np.testing.assert_array_equal(written.read().counts, counts)
    train_rows = np.flatnonzero(data.split == "train")
    q = quality(module, classes, (sim.counts[unseen], sim.tissue[unseen]),
                (data.counts[train_rows], data.tissue[train_rows]), 10, [0, 1], options, permutations=50)
    assert list(q["seed"]) == [0, 1]
    for column in ("mmd_mmd2", "mmd_p_value", "c2st_auroc", "tstr_accuracy", "tstr_balanced_accuracy",
                   "trtr_accuracy"):
        assert q[column].notna().all(), column
    assert (q["tstr_accuracy"] > 0.5).all()  # three tissues: chance is 1/3


def test_perturb_masks_unmeasured_genes_and_does_not_depend_on_the_chunk(atlas, trained):
    from nofone.models.diffusion.perturb import gene_shifts

    sim, _, unseen = atlas
    measured = np.ones(sim.counts[unseen].shape, dtype=bool)
    measured[0, :10] = False
    whole = gene_shifts(trained.module, sim.counts[unseen], measured)
    chunked = gene_shifts(trained.module, sim.counts[unseen], measured, chunk_size=2)
    np.testing.assert_allclose(whole["deviation"], chunked["deviation"], atol=1e-6, equal_nan=True)
    assert np.isnan(whole["deviation"][0, :10]).all() and np.isfinite(whole["deviation"][1:]).all()
