"""Training: determinism, a killed run resumed to the same end, early stopping, outputs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from conftest import write

from nofone.errors import InputError
from nofone.io.artifact import read_artifact
from nofone.io.ingest import IngestOptions, ingest
from nofone.models.dgd.config import load_config
from nofone.models.dgd.model import DGD
from nofone.simulate.config import SimulationConfig
from nofone.simulate.write import simulate
from nofone.steps.train import train


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("sim")
    simulate(root / "sim", SimulationConfig(tissues=3, samples_per_tissue=20, genes=1500, cases=2, seed=3))
    ingest(root / "sim" / "samplesheet.csv", root / "data", IngestOptions())
    return root / "data"


def _config(tmp_path, **training):
    settings = {"latent_dim": 4, "hidden": [16, 32], "gmm": {"n_components": 3},
                "training": {"epochs": 30, "batch_size": 16, "checkpoint_every": 1, "eval_every": 3} | training}
    return write(tmp_path / "config.json", json.dumps(settings))


@pytest.mark.slow
def test_training_is_deterministic_and_writes_the_artifact(small_data, tmp_path):
    config = load_config(str(_config(tmp_path, epochs=8, early_stopping=False)))
    a = train(small_data, tmp_path / "a", config, device="cpu")
    b = train(small_data, tmp_path / "b", config, device="cpu")
    assert a["final_loss_train"] == b["final_loss_train"]
    wa, wb = DGD.load(tmp_path / "a").module.state_dict(), DGD.load(tmp_path / "b").module.state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    files = {p.name for p in (tmp_path / "a").iterdir()}
    assert files == {"config.json", "weights.safetensors", "genes.tsv", "checksums.sha256", "history.tsv",
                     "training_representations.parquet", "null.safetensors"}
    history = pd.read_csv(tmp_path / "a" / "history.tsv", sep="\t")
    assert list(history["epoch"]) == list(range(1, 9))
    assert {"loss_train", "loss_test", "components_used", "tissue_purity", "dispersion_median"} <= set(history)
    reps = pq.read_table(tmp_path / "a" / "training_representations.parquet").to_pandas()
    assert set(reps["split"]) == {"train", "test"} and len(reps) == 60  # normals only
    assert len(reps["latent"].iloc[0]) == 4
    info = read_artifact(tmp_path / "a").config
    assert info["model_type"] == "dgd" and info["training"]["n_train"] + info["training"]["n_test"] == 60
    # the outlier null of `de` (its default null), fitted on the held-out normals, deterministically
    null = info["training"]["outlier_null"]
    assert set(null) == {"pi", "tau", "n_samples", "n_values"} and 0 <= null["pi"] <= 0.5
    assert null["n_samples"] == info["training"]["n_test"] and null["n_values"] > 0
    assert read_artifact(tmp_path / "b").config["training"]["outlier_null"] == null
    assert not (tmp_path / "a" / "checkpoints").exists()


def test_cross_fitting_gives_every_normal_a_residual_from_a_model_that_never_saw_it(small_data, tmp_path):
    """`--cross-fit 3`: three fold models; the local null is calibrated by all 60 normals (not
    the early-stopping few), `de`'s auto null becomes the local one, and the main model is the
    one trained without cross-fitting."""
    from nofone.stats.local_null import load_local_null, local_null_source
    from nofone.stats.nulls import resolve_null

    config = load_config(str(_config(tmp_path, epochs=6, early_stopping=False)))
    plain = train(small_data, tmp_path / "plain", config, device="cpu")
    crossed = train(small_data, tmp_path / "cross", config, device="cpu", cross_fit=3)
    assert plain["final_loss_train"] == crossed["final_loss_train"]
    assert plain["local_null"]["source"] == "heldout" and plain["local_null"]["n_samples"] == plain["n_test"]
    assert crossed["local_null"]["source"] == local_null_source(tmp_path / "cross") == "cross-fit-3"
    assert load_local_null(tmp_path / "cross").n_samples == 60
    info = read_artifact(tmp_path / "cross").config
    assert resolve_null("auto", "equal-tail-midp", info, tmp_path / "cross").name == "local"
    assert resolve_null("auto", "equal-tail-midp", read_artifact(tmp_path / "plain").config,
                        tmp_path / "plain").name == "outlier"
    assert not (tmp_path / "cross" / "checkpoints").exists()
    with pytest.raises(InputError, match="--cross-fit 61"):
        train(small_data, tmp_path / "too_many", config, device="cpu", cross_fit=61)


@pytest.mark.slow
def test_latent_dependent_dispersion_trains_and_serves_represent_and_de(small_data, tmp_path):
    """`"dispersion": "latent"`: r from a head on the decoder, trained, calibrated on the held-out
    normals, saved, and used at each sample's own closest normal by represent and de."""
    from nofone.inference.represent import SearchConfig
    from nofone.steps.de import DEOptions, differential_expression
    from nofone.steps.represent import represent

    settings = json.loads(_config(tmp_path, epochs=10, early_stopping=False).read_text()) | {"dispersion": "latent"}
    config = load_config(str(write(tmp_path / "latent.json", json.dumps(settings))))
    summary = train(small_data, tmp_path / "m", config, device="cpu")
    model = DGD.load(tmp_path / "m")
    assert model.config.dispersion == "latent"
    with pytest.raises(InputError, match="dispersion depends on the latent point"):
        _ = model.dispersion
    low, high = summary["dispersion_range"]
    assert 0 < low < high and summary["dispersion_calibration"]["applied"]
    assert summary["outlier_null"]["n_samples"] == summary["n_test"]
    reps = pq.read_table(tmp_path / "m" / "training_representations.parquet").to_pandas()
    z = torch.as_tensor(np.stack(reps["latent"].to_numpy()))
    r = model.dispersion_at(z)
    assert (r.std(0) / r.mean(0)).median() > 0.01  # the trained head makes r vary with the latent point
    represent(tmp_path / "m", small_data, tmp_path / "r", SearchConfig(), device="cpu")
    differential_expression(tmp_path / "m", tmp_path / "r", small_data, tmp_path / "e", DEOptions(device="cpu"))
    de = pd.read_parquet(tmp_path / "e" / "de.parquet", columns=["sample_id", "gene_id", "dispersion", "p_value"])
    per_gene = de.pivot(index="gene_id", columns="sample_id", values="dispersion")
    assert (per_gene.std(axis=1) > 0).mean() > 0.9 and de["p_value"].between(0, 1).all()


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_result(small_data, tmp_path):
    config = _config(tmp_path, epochs=40, early_stopping=True, patience=100)
    base = [sys.executable, "-m", "nofone", "-q", "train", "--input", str(small_data), "--config", str(config),
            "--device", "cpu"]
    subprocess.run([*base, "--outdir", str(tmp_path / "whole")], check=True, capture_output=True)
    env = dict(os.environ, NOFONE_PROGRESS="0")
    proc = subprocess.Popen([*base, "--outdir", str(tmp_path / "killed"), "--keep-checkpoints"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoints = tmp_path / "killed" / "checkpoints"
    deadline = time.time() + 120
    while time.time() < deadline and not list(checkpoints.glob("run-*/epoch-000007")):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "training finished before it could be killed"
    assert not (tmp_path / "killed" / "weights.safetensors").exists(), "a killed run must not leave a model"
    resumed = subprocess.run([*base, "--outdir", str(tmp_path / "killed"), "--resume"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    whole = pd.read_csv(tmp_path / "whole" / "history.tsv", sep="\t")
    again = pd.read_csv(tmp_path / "killed" / "history.tsv", sep="\t")
    pd.testing.assert_frame_equal(whole.drop(columns="seconds"), again.drop(columns="seconds"))
    wa = DGD.load(tmp_path / "whole").module.state_dict()
    wb = DGD.load(tmp_path / "killed").module.state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_resume_ignores_checkpoints_of_other_settings(small_data, tmp_path):
    config = load_config(str(_config(tmp_path, epochs=3)))
    train(small_data, tmp_path / "m", config, device="cpu", keep_checkpoints=True)
    other = load_config(str(_config(tmp_path, epochs=3, lr_decoder=0.5)))
    summary = train(small_data, tmp_path / "m2", other, device="cpu", resume=True,
                    checkpoint_dir=tmp_path / "m" / "checkpoints")
    assert summary["resumed_from_epoch"] is None  # started fresh, did not continue the other run
    assert len(list((tmp_path / "m" / "checkpoints").glob("run-*"))) == 1, "the other run's checkpoints stay"


def test_early_stopping_restores_the_best_heldout_epoch(small_data, tmp_path):
    config = load_config(str(_config(tmp_path, epochs=300, patience=3, lr_decoder=0.01)))
    summary = train(small_data, tmp_path / "m", config, device="cpu")
    history = pd.read_csv(tmp_path / "m" / "history.tsv", sep="\t")
    evaluated = history.dropna(subset=["heldout_nll_per_gene"])
    best = evaluated.loc[evaluated["heldout_nll_per_gene"].idxmin()]
    assert len(history) < 300, "a fast learning rate on 54 samples must overfit and stop early"
    assert len(history) == best["epoch"] + 3 * 3  # patience 3 evaluations, every 3 epochs
    assert summary["n_train"] == 54


def test_no_normal_samples_is_a_clear_error(small_data, tmp_path):
    config = load_config(str(_config(tmp_path, epochs=2)))
    with pytest.raises(InputError, match="no normal samples"):
        train(small_data, tmp_path / "m", config, normal_value="healthy", device="cpu")
    assert not (tmp_path / "m").exists() or not any((tmp_path / "m").glob("*.safetensors"))


def test_purity_of_tissue_components(small_data, tmp_path):
    config = load_config(str(_config(tmp_path, epochs=60)))
    summary = train(small_data, tmp_path / "m", config, device="cpu")
    assert summary["tissue_purity_train"] >= 0.9
    assert summary["largest_component_fraction"] < 0.6
    r = DGD.load(tmp_path / "m").dispersion.numpy()
    assert np.quantile(r, 0.95) / np.quantile(r, 0.05) > 2, "dispersions must move away from their start"
