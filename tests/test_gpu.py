"""The GPU path: training, representation search and tests on CUDA agree with the CPU.

Users run `nextflow run . -profile slurm,gpu`; these tests are what stands behind that profile.
They need a CUDA GPU and skip without one (CI has none); run them with `pytest -m gpu` on a GPU
machine. The CUDA out-of-memory exit code, which Nextflow's retry strategy relies on, is also
checked without a GPU (last test).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from conftest import write

from nofone.cli.app import app
from nofone.errors import EXIT_CUDA_OOM
from nofone.inference.represent import SearchConfig
from nofone.io.ingest import IngestOptions, ingest
from nofone.models.dgd.config import load_config as load_dgd_config
from nofone.models.nbvae.config import load_config as load_nbvae_config
from nofone.simulate.config import SimulationConfig
from nofone.simulate.write import simulate
from nofone.steps.common import load_model
from nofone.steps.de import DE_FILE, DEOptions, differential_expression
from nofone.steps.represent import REPRESENTATIONS, represent
from nofone.steps.train import train

_no_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible to PyTorch")


def needs_cuda(test):
    """Marked `gpu` (select with -m gpu) and skipped where PyTorch sees no CUDA GPU."""
    return pytest.mark.gpu(_no_cuda(test))


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpu")
    simulate(root / "sim", SimulationConfig(tissues=3, samples_per_tissue=40, genes=1500, cases=6, seed=5))
    ingest(root / "sim" / "samplesheet.csv", root / "data", IngestOptions())
    return root


def _dgd_config(tmp_path, epochs: int = 40):
    settings = {"latent_dim": 4, "hidden": [32, 128], "gmm": {"n_components": 3},
                "training": {"epochs": epochs, "batch_size": 16, "early_stopping": False}}
    return load_dgd_config(str(write(tmp_path / "dgd.json", json.dumps(settings))))


@pytest.fixture(scope="module")
def cpu_model(sim):
    """A DGD trained on the CPU, searched and tested on both devices below."""
    config = _dgd_config(sim, epochs=60)
    train(sim / "data", sim / "model", config, device="cpu")
    return sim / "model"


@needs_cuda
def test_dgd_trains_on_cuda_and_loads_on_cpu(sim, tmp_path):
    summary = train(sim / "data", tmp_path / "m", _dgd_config(tmp_path), device="cuda")
    assert summary["device"] == "cuda"
    history = pd.read_csv(tmp_path / "m" / "history.tsv", sep="\t")
    assert np.isfinite(history["loss_train"]).all() and history["loss_train"].iloc[-1] < history["loss_train"].iloc[0]
    model = load_model(tmp_path / "m", "cpu")  # a model trained on a GPU node is used on a laptop
    assert all(t.device.type == "cpu" for t in model.module.state_dict().values())
    assert summary["components_used"] == 3 and summary["tissue_purity_train"] >= 0.95


@needs_cuda
def test_cuda_and_cpu_training_reach_the_same_loss(sim, tmp_path):
    """Not bit-identical (cuBLAS sums in another order), but the same optimum."""
    config = _dgd_config(tmp_path)
    cpu = train(sim / "data", tmp_path / "cpu", config, device="cpu")
    gpu = train(sim / "data", tmp_path / "gpu", config, device="cuda")
    assert gpu["final_loss_train"] == pytest.approx(cpu["final_loss_train"], rel=0.01)
    assert gpu["final_loss_test"] == pytest.approx(cpu["final_loss_test"], rel=0.02)


@needs_cuda
def test_checkpoint_written_on_cuda_resumes_on_cpu(sim, tmp_path):
    """A GPU job killed by the scheduler may be retried on a CPU node with -resume."""
    short = _dgd_config(tmp_path, epochs=6)
    train(sim / "data", tmp_path / "m", short, device="cuda", keep_checkpoints=True)
    checkpoints = tmp_path / "m" / "checkpoints"
    assert list(checkpoints.glob("run-*/epoch-*")), "no checkpoint written"
    summary = train(sim / "data", tmp_path / "again", short, device="cpu", resume=True, checkpoint_dir=checkpoints)
    assert summary["resumed_from_epoch"] is not None


@needs_cuda
def test_represent_and_de_on_cuda_match_the_cpu(sim, cpu_model):
    out = {}
    for device in ("cpu", "cuda"):
        represent(cpu_model, sim / "data", sim / f"reps_{device}", SearchConfig(), None, chunk_size=16, device=device)
        differential_expression(cpu_model, sim / f"reps_{device}", sim / "data", sim / f"de_{device}",
                                DEOptions(write_tsv=False, device=device))
        reps = pq.read_table(sim / f"reps_{device}" / REPRESENTATIONS).to_pandas().set_index("sample_id")
        de = pq.read_table(sim / f"de_{device}" / DE_FILE).to_pandas().set_index(["sample_id", "gene_id"])
        out[device] = reps, de
    (rc, dc), (rg, dg) = out["cpu"], out["cuda"]
    rg, dg = rg.loc[rc.index], dg.loc[dc.index]
    assert (rc["component"] == rg["component"]).mean() >= 0.95
    nll_c, nll_g = rc["nll"].to_numpy(), rg["nll"].to_numpy()
    assert np.abs(nll_g - nll_c).max() <= 1e-3 * np.abs(nll_c).max()
    calls_c = set(dc.index[dc["q_value"] < 0.01])
    calls_g = set(dg.index[dg["q_value"] < 0.01])
    assert calls_c, "the simulated cases should have calls"
    assert len(calls_c & calls_g) / len(calls_c | calls_g) >= 0.95
    assert np.corrcoef(dc["log2_fold_change"], dg["log2_fold_change"])[0, 1] >= 0.999


@needs_cuda
def test_nbvae_trains_and_scores_on_cuda(sim, tmp_path):
    config = load_nbvae_config(None, {"training.epochs": 20, "latent_dim": 4, "hidden": [64, 16]})
    summary = train(sim / "data", tmp_path / "vae", config, device="cuda")
    assert np.isfinite(summary["final_loss_train"])
    represent(tmp_path / "vae", sim / "data", tmp_path / "reps", SearchConfig(), None, device="cuda")
    reps = pq.read_table(tmp_path / "reps" / REPRESENTATIONS).to_pandas()
    assert np.isfinite(reps["nll"]).all()


@needs_cuda
def test_real_cuda_out_of_memory_exits_75_and_leaves_nothing(sim, cpu_model, runner, tmp_path):
    """Nextflow retries exit 75 with more memory; nothing half-written may be left behind."""
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(2e-5)  # ~3 MB of an H100/H200
    try:
        result = runner.invoke(app, ["represent", "--model", str(cpu_model), "--input", str(sim / "data"),
                                     "--outdir", str(tmp_path / "reps"), "--chunk-size", "256", "--device", "cuda"])
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        torch.cuda.empty_cache()
    assert result.exit_code == EXIT_CUDA_OOM, result.output
    assert "CUDA out of memory" in result.output and "--chunk-size" in result.output
    assert not (tmp_path / "reps").exists()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A dataset and a 2-epoch DGD: enough to reach the search, which the test below replaces."""
    root = tmp_path_factory.mktemp("gpu_tiny")
    simulate(root / "sim", SimulationConfig(tissues=2, samples_per_tissue=12, genes=200, cases=2, seed=5))
    ingest(root / "sim" / "samplesheet.csv", root / "data", IngestOptions())
    train(root / "data", root / "model", _dgd_config(root, epochs=2), device="cpu")
    return root


def test_cuda_out_of_memory_is_exit_75_without_a_gpu(tiny, runner, tmp_path, monkeypatch):
    """The same contract, with the error raised where the search runs (no GPU needed)."""
    import nofone.steps.represent as step

    sim, cpu_model = tiny, tiny / "model"

    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(step, "find_representations", out_of_memory)
    result = runner.invoke(app, ["represent", "--model", str(cpu_model), "--input", str(sim / "data"),
                                 "--outdir", str(tmp_path / "reps"), "--device", "cpu"])
    assert result.exit_code == EXIT_CUDA_OOM, result.output
    assert "CUDA out of memory" in result.output and "--chunk-size" in result.output
    assert not (tmp_path / "reps").exists()
