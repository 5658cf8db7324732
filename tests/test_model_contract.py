"""The contract every registered model of normal tissue passes (docs/development.md): on simulated
data, train a tiny model -> save -> load -> represent -> de -> report (`nofone run`, then `nofone
report`), and resume a killed run to the same end.

Behaviour, not source: the outputs exist with their documented columns, held-out normals get few
calls, planted DE genes rank far above chance, and a resumed run ends where an uninterrupted one
does. A new model adds its tiny settings to `TINY` (the test refuses a registered model without).
"""

from __future__ import annotations

import json
import shutil
from html import escape as html_escape

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from nofone.evaluate.metrics import auroc
from nofone.io.artifact import read_artifact
from nofone.io.ingest import IngestOptions
from nofone.models.base import NormalModel
from nofone.models.registry import MODEL_TYPES, TRAIN_REPRESENTATIONS, model_class
from nofone.report.build import report
from nofone.simulate import SimulationConfig, simulate
from nofone.stats.local_null import NULL_FILE, load_local_null
from nofone.stats.nb_tests import equal_tail_midp
from nofone.steps.common import load_model
from nofone.steps.de import DE_SCHEMA
from nofone.steps.represent import REPRESENTATIONS
from nofone.steps.run import RunOptions, run
from nofone.steps.train import train

#: settings small enough for CI (overrides of the model's default preset, dotted keys)
TINY = {
    "dgd": {"latent_dim": 4, "hidden": [32, 64], "gmm.n_components": 3, "training.epochs": 60,
            "training.batch_size": 16, "training.eval_every": 5, "training.lr_decoder": 3e-3},
    "nbvae": {"latent_dim": 4, "hidden": [64, 16], "training.epochs": 60, "training.batch_size": 16,
              "training.kl_warmup_epochs": 10},
    "diffusion": {"network.hidden": 32, "network.blocks": 1, "training.epochs": 30, "training.batch_size": 16,
                  "training.eval_every": 10, "bridge.t_star_grid": [200, 500, 800], "bridge.draws": 4},
}
REPRESENTATION_COLUMNS = ["sample_id", "latent", "scale", "scaling", "component", "component_probability",
                          "responsibilities", "nll", "nll_per_gene", "latent_nll", "n_measured"]
TRAINING_COLUMNS = ["sample_id", "split", "tissue", "component", "component_probability", "nll", "nll_per_gene",
                    "latent_nll", "latent"]
SUMMARY_COLUMNS = ["sample_id", "n_tested", "n_up", "n_down", "n_de", "n_de_nb", "n_candidate", "n_cannot_call_down",
                   "component",
                   "nll_per_gene", "scale", "model_error_sd"]
ARTIFACT = {"config.json", "weights.safetensors", "genes.tsv", "checksums.sha256", "history.tsv",
            TRAIN_REPRESENTATIONS, NULL_FILE}


def settings(model_type: str, **overrides):
    return model_class(model_type).settings(None, TINY[model_type] | overrides)


def test_every_registered_model_has_tiny_settings():
    assert set(TINY) == set(MODEL_TYPES), "add the new model's tiny settings to TINY"
    for model_type in MODEL_TYPES:
        cls = model_class(model_type)
        assert issubclass(cls, NormalModel)
        assert model_type == cls.MODEL_TYPE
        assert cls.DEFAULT_PRESET in cls.PRESETS


@pytest.fixture(scope="module")
def simulation(tmp_path_factory):
    root = tmp_path_factory.mktemp("contract")
    simulate(root / "sim", SimulationConfig(tissues=3, samples_per_tissue=30, genes=600, cases=6, seed=5))
    return root / "sim"


@pytest.fixture(scope="module", params=MODEL_TYPES)
def model_run(request, simulation, tmp_path_factory):
    """`nofone run` with the model's tiny settings: ingest, filter, train, represent, de."""
    model_type = request.param
    out = tmp_path_factory.mktemp(f"run_{model_type}") / "run"
    options = RunOptions(config=settings(model_type), ingest=IngestOptions(annotation=simulation / "genes.tsv"),
                         device="cpu")
    summary = run(simulation / "samplesheet.csv", out, options)
    return model_type, out, summary


def test_the_artifact_saves_and_loads_with_its_facts(model_run):
    model_type, out, _ = model_run
    assert {p.name for p in (out / "model").iterdir()} == ARTIFACT
    config = read_artifact(out / "model").config
    model = load_model(out / "model")
    assert isinstance(model, model_class(model_type)) and model.model_type == config["model_type"] == model_type
    assert config["n_components"] == model.n_components and config["latent_dim"] == model.latent_dim
    assert config["display_name"]
    again = type(model).load(out / "model")
    assert all(torch.equal(v, again.module.state_dict()[k]) for k, v in model.module.state_dict().items())
    training = pq.read_table(out / "model" / TRAIN_REPRESENTATIONS).to_pandas()
    assert list(training.columns) == TRAINING_COLUMNS and set(training["split"]) == {"train", "test"}
    history = pd.read_csv(out / "model" / "history.tsv", sep="\t")
    assert {"epoch", "loss_train", "loss_test", "seconds"} <= set(history) and history["epoch"].is_monotonic_increasing
    assert config["training"]["outlier_null"]["n_samples"] == config["training"]["n_test"]
    local = load_local_null(out / "model")  # calibrated by the early-stopping normals
    assert local.n_samples == config["training"]["n_test"] == config["training"]["local_null"]["n_samples"]
    assert config["training"]["local_null"]["source"] == "heldout"
    assert local.scores.shape == (local.n_samples, len(model.gene_ids))


def test_represent_and_de_write_the_documented_columns(model_run):
    _, out, _ = model_run
    model = load_model(out / "model")
    table = pq.read_table(out / "representations" / REPRESENTATIONS)
    assert table.column_names[:len(REPRESENTATION_COLUMNS)] == REPRESENTATION_COLUMNS
    reps = table.to_pandas()
    assert all(len(z) == model.latent_dim for z in reps["latent"])
    assert all(len(r) == (model.n_components or 1) for r in reps["responsibilities"])
    assert np.isfinite(reps["nll"]).all() and (reps["scale"] > 0).all()
    de = pq.read_table(out / "de" / "de.parquet")
    assert de.schema.names == DE_SCHEMA.names
    frame = de.to_pandas()
    assert frame["p_value"].between(0, 1).all() and frame["q_value"].between(0, 1).all()
    assert (frame["dispersion"] > 0).all() and (frame["normal_mean"] > 0).all()
    summary = pd.read_csv(out / "de" / "summary.tsv", sep="\t")
    assert list(summary.columns) == SUMMARY_COLUMNS and set(summary["sample_id"]) == set(reps["sample_id"])


def test_the_two_tiers_agree_with_the_tests_they_come_from(model_run):
    """`p_value_nb` is the NB's own equal-tail mid-p; `call` is "abnormal" exactly where the
    null's q and the fold change pass, "candidate" where only the NB's q does; the summary counts them."""
    _, out, _ = model_run
    frame = pq.read_table(out / "de" / "de.parquet").to_pandas()
    expected = equal_tail_midp(frame["count"].to_numpy(), frame["normal_mean"].to_numpy(),
                               frame["dispersion"].to_numpy())
    np.testing.assert_allclose(frame["p_value_nb"], expected, rtol=1e-9, atol=1e-300)
    big = frame["log2_fold_change"].abs() > 1.0
    abnormal = (frame["q_value"] < 0.01) & big
    nb_call = (frame["q_value_nb"] < 0.01) & big
    assert ((frame["call"] == "abnormal") == abnormal).all()
    assert ((frame["call"] == "candidate") == (nb_call & ~abnormal)).all()
    tail = frame["p_value_nb"] < 1e-3  # there the mixture's heavier tails give larger p-values
    assert (frame.loc[tail, "p_value"] >= frame.loc[tail, "p_value_nb"] * (1 - 1e-9)).all()
    summary = pd.read_csv(out / "de" / "summary.tsv", sep="\t").set_index("sample_id")
    by_sample = frame.groupby("sample_id")
    for call, column in (("candidate", "n_candidate"), ("abnormal", "n_de")):
        counted = by_sample["call"].apply(lambda c, call=call: int((c == call).sum()))
        assert counted.reindex(summary.index).tolist() == summary[column].tolist(), column


def test_heldout_normals_get_few_calls_and_planted_genes_rank_high(model_run, simulation):
    model_type, out, summary = model_run
    for group, values in summary["groups"].items():
        if group != "case":  # normals the model never trained on
            assert values["mean_de_genes"] <= 1.0, (model_type, group, values)
    truth = pd.read_csv(simulation / "truth.tsv", sep="\t")
    de = pq.read_table(out / "de" / "de.parquet", columns=["sample_id", "gene_id", "p_value"]).to_pandas()
    cases = de[de["sample_id"].isin(set(truth["sample_id"]))]
    planted = set(zip(truth["sample_id"], truth["gene_id"]))
    is_planted = np.array([k in planted for k in zip(cases["sample_id"], cases["gene_id"])])
    score = -np.log10(cases["p_value"].clip(lower=1e-300).to_numpy())
    area = auroc(score[is_planted], score[~is_planted])
    print(f"{model_type}: AUROC of planted genes {area:.3f} over {is_planted.sum()} planted (sample, gene) pairs")
    assert is_planted.sum() > 50 and area >= 0.8, area  # chance: 0.5


def test_the_report_builds(model_run, tmp_path):
    _, out, _ = model_run
    summary = report(out, tmp_path / "report")
    assert (tmp_path / "report" / "report.html").is_file() and summary["model"]["model_type"] == model_run[0]
    assert summary["model"]["n_components"] == load_model(out / "model").n_components
    html = (tmp_path / "report" / "report.html").read_text()
    card = read_artifact(out / "model").config["training"].get("model_card") or {}
    assert all(html_escape(label) in html for label in card), "the model's card entries are in the report"


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_a_resumed_run_ends_where_an_uninterrupted_one_does(model_type, model_run, tmp_path):
    data = model_run[1] / "filtered"
    config = settings(model_type, **{"training.epochs": 6, "training.checkpoint_every": 1,
                                     "training.eval_every": 2})
    whole = train(data, tmp_path / "whole", config, device="cpu", keep_checkpoints=True)
    run_dir = next((tmp_path / "whole" / "checkpoints").glob("run-*"))
    shutil.rmtree(run_dir / "epoch-000006")  # as if killed during epoch 6
    resumed = train(data, tmp_path / "resumed", config, device="cpu", resume=True,
                    checkpoint_dir=tmp_path / "whole" / "checkpoints")
    assert resumed["resumed_from_epoch"] == 5 and whole["resumed_from_epoch"] is None
    a, b = read_artifact(tmp_path / "whole"), read_artifact(tmp_path / "resumed")
    assert a.tensors.keys() == b.tensors.keys() and all(torch.equal(a.tensors[k], b.tensors[k]) for k in a.tensors)
    history = [pd.read_csv(tmp_path / name / "history.tsv", sep="\t").drop(columns="seconds")
               for name in ("whole", "resumed")]
    pd.testing.assert_frame_equal(*history)
    drop = ("seconds", "resumed_from_epoch", "input")
    assert {k: v for k, v in whole.items() if k not in drop} == {k: v for k, v in resumed.items() if k not in drop}
    assert json.dumps(a.config["n_components"]) == json.dumps(b.config["n_components"])


def test_cuda_out_of_memory_in_training_is_exit_75_and_writes_nothing(model_run, runner, monkeypatch, tmp_path):
    """Nextflow retries exit 75 with more memory; the loop raises CudaOutOfMemory for any model."""
    from nofone.cli.app import app
    from nofone.errors import EXIT_CUDA_OOM

    model_type, out, _ = model_run

    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(model_class(model_type).PLAN, "train_epoch", out_of_memory)
    result = runner.invoke(app, ["train", "--model-type", model_type, "--input", str(out / "filtered"), "--outdir",
                                 str(tmp_path / "m"), "--epochs", "2", "--device", "cpu"])
    assert result.exit_code == EXIT_CUDA_OOM, result.output
    assert "CUDA out of memory" in result.output and "batch size" in result.output
    assert not (tmp_path / "m" / "weights.safetensors").exists()
