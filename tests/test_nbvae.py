"""The NB-VAE: size factors, ELBO and KL warm-up, determinism, resume, the artifact, and
`nofone represent` / `nofone de` unchanged on an NB-VAE model (planted DE found, held-out
normals quiet)."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from conftest import SHARED_DATA, requires_shared_data, write

from nofone.errors import InputError
from nofone.inference.represent import SearchConfig, find_representations
from nofone.io.artifact import read_artifact
from nofone.io.dataset import Dataset
from nofone.io.ingest import IngestOptions, ingest
from nofone.models.nbvae.config import NBVAEConfig, load_config
from nofone.models.nbvae.model import NBVAE
from nofone.models.nbvae.module import NBVAEModule
from nofone.models.nbvae.train import kl_weight, train_nbvae
from nofone.models.scaling import scaling_factor
from nofone.models.size_factors import SizeFactorReference, log_geometric_means
from nofone.models.training import TrainingData
from nofone.simulate.config import SimulationConfig
from nofone.simulate.write import simulate
from nofone.steps.common import load_model
from nofone.steps.de import DE_FILE, DEOptions, differential_expression
from nofone.steps.represent import REPRESENTATIONS, represent
from nofone.steps.run import score_against_truth
from nofone.steps.train import TRAIN_REPRESENTATIONS, train

SETTINGS = {"hidden": [64, 32], "training": {"epochs": 200, "batch_size": 16, "eval_every": 5, "patience": 6,
                                             "checkpoint_every": 50}}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models train fastest on one thread; `pytest -n 2` runs two workers on two cores, and a
    second OpenMP thread per worker only spins against the other worker."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def atlas(tmp_path_factory):
    """3 tissues x 40 normals (+2 held out each), 6 cases with planted DE, 800 genes."""
    root = tmp_path_factory.mktemp("atlas")
    simulate(root / "sim", SimulationConfig(tissues=3, samples_per_tissue=40, genes=800, cases=6, seed=1))
    ingest(root / "sim" / "samplesheet.csv", root / "data", IngestOptions(annotation=root / "sim" / "genes.tsv"))
    return root


@pytest.fixture(scope="module")
def trained(atlas):
    config = load_config(str(write(atlas / "nbvae.json", json.dumps(SETTINGS))))
    summary = train(atlas / "data", atlas / "model", config, device="cpu")
    return atlas / "model", summary


def _config(tmp_path, **training) -> NBVAEConfig:
    settings = {"latent_dim": 3, "hidden": [16], "training": {"epochs": 4, "batch_size": 16, "eval_every": 1,
                                                              "checkpoint_every": 1, "kl_warmup_epochs": 3} | training}
    return load_config(str(write(tmp_path / "c.json", json.dumps(settings))))


def _training_data(atlas, n: int = 48) -> TrainingData:
    data = Dataset(atlas / "data")
    normals = data.samples.loc[data.samples["condition"] == "normal", "sample_id"].tolist()[:n]
    chunk = data.read(normals)
    split = np.where(np.arange(len(normals)) % 6 == 0, "test", "train")
    return TrainingData(normals, chunk.counts, split)


# -- size factors ---------------------------------------------------------------------------------


@requires_shared_data
def test_size_factors_match_r_deseq2_on_airway():
    counts = pd.read_csv(SHARED_DATA / "airway" / "airway_rawcounts.csv", index_col=0)
    r = pd.read_csv(SHARED_DATA / "reference" / "airway_size_factors_R.tsv", sep="\t", index_col=0)["size_factor"]
    reference = SizeFactorReference.fit(counts.T.to_numpy())
    assert reference.method == "ratio"
    np.testing.assert_allclose(reference(counts.T.to_numpy()), r.loc[counts.columns].to_numpy(), rtol=1e-12)
    # a new sample is scaled against the stored reference: twice the counts, twice the factor
    doubled = reference(2 * counts.T.to_numpy()[:1])
    np.testing.assert_allclose(doubled, 2 * r.loc[counts.columns[0]], rtol=1e-12)


def test_size_factors_by_hand_and_their_zeros():
    counts = np.array([[10, 0, 4, 8], [20, 5, 8, 16], [40, 3, 16, 0]])
    log_geo = log_geometric_means(counts, method="ratio")
    assert np.isfinite(log_geo).tolist() == [True, False, True, False]  # genes with a zero have no reference
    reference = SizeFactorReference.fit(counts, method="ratio")
    sf = reference(counts)
    expected = np.exp(np.median(np.log(counts[:, [0, 2]]) - log_geo[[0, 2]], axis=1))
    np.testing.assert_allclose(sf, expected)
    assert sf[1] / sf[0] == pytest.approx(2.0) and sf[2] / sf[1] == pytest.approx(2.0)
    # every gene has a zero somewhere: auto falls back to poscounts, whose factors R centres at 1
    sparse = np.array([[0, 4, 9, 1], [3, 0, 7, 2], [6, 8, 0, 5]] * 2)
    fitted = SizeFactorReference.fit(sparse)
    assert fitted.method == "poscounts"
    sf = fitted(sparse)
    assert np.exp(np.mean(np.log(sf))) == pytest.approx(1.0)
    geo = np.array([np.exp(np.log(g[g > 0]).sum() / len(g)) for g in sparse.T])  # R's geoMeanNZ
    raw = np.exp(np.nanmedian(np.log(np.where(sparse > 0, sparse, np.nan)) - np.log(geo), axis=1))
    np.testing.assert_allclose(sf, raw / np.exp(np.mean(np.log(raw))))
    # unmeasured genes are left out of a sample's median; a sample with nothing usable is refused
    measured = np.ones(counts.shape, bool)
    measured[0, 0] = False
    assert reference(counts, measured)[0] == pytest.approx(np.exp(np.log(4) - log_geo[2]))
    with pytest.raises(InputError, match="no positive count"):
        reference(np.zeros((1, 4), int), check=True, sample_ids=["empty"])
    with pytest.raises(InputError, match="every gene is zero"):
        SizeFactorReference.fit(np.zeros((3, 4), int))


# -- ELBO, warm-up, determinism, resume ----------------------------------------------------------


def test_kl_warmup_is_linear_and_the_elbo_terms_are_right():
    assert [kl_weight(e, 4) for e in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert kl_weight(0, 0) == 1.0
    module = NBVAEModule(NBVAEConfig(latent_dim=2, hidden=(4,)), 5)
    mean, log_var = torch.tensor([[0.0, 0.0], [1.0, -2.0]]), torch.tensor([[0.0, 0.0], [0.5, -1.0]])
    q = torch.distributions.Normal(mean, torch.exp(0.5 * log_var))
    p = torch.distributions.Normal(torch.zeros(2), torch.ones(2))
    torch.testing.assert_close(module.kl(mean, log_var), torch.distributions.kl_divergence(q, p).sum(-1))
    z = torch.randn(3, 2)
    torch.testing.assert_close(module.prior_log_prob(z), p.log_prob(z).sum(-1))


def test_training_is_deterministic_and_warms_up(atlas, tmp_path):
    config = _config(tmp_path, early_stopping=False, calibrate_dispersion=False)
    data = _training_data(atlas)
    a, b = train_nbvae(data, config), train_nbvae(data, config)
    wa, wb = a.module.state_dict(), b.module.state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    np.testing.assert_array_equal(a.latent, b.latent)
    assert [h["kl_weight"] for h in a.history] == pytest.approx([1 / 3, 2 / 3, 1.0, 1.0])
    assert a.history[-1]["nb_train"] < a.history[0]["nb_train"]
    other = train_nbvae(data, load_config(str(write(tmp_path / "s.json", json.dumps(
        {"latent_dim": 3, "hidden": [16], "training": {"epochs": 4, "batch_size": 16, "seed": 7,
                                                       "early_stopping": False, "calibrate_dispersion": False}})))))
    assert not torch.equal(other.module.state_dict()["log_r"], wa["log_r"])


def test_resume_from_a_checkpoint_ends_where_an_uninterrupted_run_does(atlas, tmp_path):
    config = _config(tmp_path, epochs=6, patience=100)
    data = _training_data(atlas)
    whole = train_nbvae(data, config, checkpoint_dir=tmp_path / "ck")
    run = whole.checkpoint_dir
    shutil.rmtree(run / "epoch-000006")  # as if killed during epoch 6 (epoch 5 is the newest left)
    resumed = train_nbvae(data, config, checkpoint_dir=tmp_path / "ck", resume=True)
    assert resumed.resumed_from == 5
    wa, wb = whole.module.state_dict(), resumed.module.state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    drop = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert drop(whole.history) == drop(resumed.history)


# -- the artifact -----------------------------------------------------------------------------------


def test_artifact_round_trip_and_the_dgds_layout(trained):
    folder, summary = trained
    files = {p.name for p in folder.iterdir()}
    assert files == {"config.json", "weights.safetensors", "genes.tsv", "checksums.sha256", "history.tsv",
                     "training_representations.parquet", "null.safetensors"}
    info = read_artifact(folder).config
    assert info["model_type"] == "nbvae" and info["nbvae"]["hidden"] == [64, 32]
    assert info["training"]["n_train"] + info["training"]["n_test"] == 120
    assert info["training"]["size_factors"]["method"] == "ratio"
    model = load_model(folder)
    assert isinstance(model, NBVAE) and model.n_components == 1 and model.default_scaling == "median"
    again = NBVAE.load(folder)
    assert all(torch.equal(v, again.module.state_dict()[k]) for k, v in model.module.state_dict().items())
    reps = pq.read_table(folder / TRAIN_REPRESENTATIONS).to_pandas()
    assert list(reps.columns) == ["sample_id", "split", "tissue", "component", "component_probability", "nll",
                                  "nll_per_gene", "latent_nll", "latent"]
    assert (reps["component"] == 0).all() and (reps["component_probability"] == 1).all()
    history = pd.read_csv(folder / "history.tsv", sep="\t")
    assert {"loss_train", "loss_test", "kl_weight", "heldout_neg_elbo_per_gene", "active_latent_dims"} <= set(history)
    assert summary["best_epoch"] is not None and summary["active_latent_dims"] >= 2
    # the LatentModel interface: shapes, the prior, the encoder's start
    counts = torch.as_tensor(Dataset(folder.parent / "data").read().counts[:5])
    starts = model.candidate_starts(counts)
    assert starts.shape == (5, 1, 10)
    torch.testing.assert_close(model.responsibilities(starts[:, 0]), torch.ones(5, 1))
    torch.testing.assert_close(model.latent_log_prob(torch.zeros(1, 10)), torch.tensor([-5 * np.log(2 * np.pi)]),
                               check_dtype=False)


def test_median_scaling_estimates_the_training_size_factors(trained):
    """`nofone represent`'s default scaling for the NB-VAE ("median" against the decoded profile)
    and the size factors it was trained with estimate the same thing."""
    folder, _ = trained
    model = NBVAE.load(folder)
    data = Dataset(folder.parent / "data")
    reps = pq.read_table(folder / TRAIN_REPRESENTATIONS).to_pandas()
    counts = torch.as_tensor(data.read(reps["sample_id"].tolist()).counts)
    z = torch.as_tensor(np.stack(reps["latent"].to_numpy()))
    median = scaling_factor(counts, model.relative_means(z), None, "median")
    ratio = (median / model.size_factors(counts)).numpy()
    assert 0.9 < np.median(ratio) < 1.05 and ratio.std() < 0.03, np.quantile(ratio, [0, 0.5, 1])


def test_represent_and_de_run_unchanged_on_an_nbvae(trained, tmp_path):
    folder, _ = trained
    root = folder.parent
    data = Dataset(root / "data")
    samples = data.samples
    targets = samples.loc[samples["condition"] != "normal", "sample_id"].tolist()
    represent(folder, root / "data", tmp_path / "reps", SearchConfig(), targets, device="cpu")
    reps = pq.read_table(tmp_path / "reps" / REPRESENTATIONS).to_pandas()
    assert (reps["scaling"] == "median").all() and len(reps["responsibilities"].iloc[0]) == 1
    summary = differential_expression(folder, tmp_path / "reps", root / "data", tmp_path / "de",
                                      DEOptions(device="cpu"))
    group = samples.set_index("sample_id").loc[summary["sample_id"], "condition"].to_numpy()
    heldout = summary[group == "heldout_normal"]
    assert len(heldout) == 6 and heldout["n_de"].mean() <= 1.0, heldout
    cases = summary.loc[group == "case", "sample_id"].tolist()
    scores = score_against_truth(tmp_path / "de" / DE_FILE, root / "sim" / "truth.tsv", cases, 0.01, 1.0)
    print(f"NB-VAE: held-out normals {heldout['n_de'].mean():.2f} calls; planted DE recall "
          f"{scores['recall_abs_lfc_ge_1']:.3f}, observed FDR {scores['observed_fdr']:.3f}")
    # the oracle (true means and dispersions) recalls ~0.61 of these planted genes at q < 0.01
    assert scores["recall_abs_lfc_ge_1"] >= 0.45
    assert scores["observed_fdr"] <= 0.05 and scores["direction_correct"] >= 0.99


def test_search_refines_the_encoder_start_under_the_prior(trained):
    folder, _ = trained
    model = NBVAE.load(folder)
    counts = torch.as_tensor(Dataset(folder.parent / "data").read().counts[:6])
    none = find_representations(model, counts, None, SearchConfig(steps_first=0, steps_second=0))
    refined = find_representations(model, counts, None, SearchConfig())
    torch.testing.assert_close(none.latent, model.candidate_starts(counts)[:, 0])
    assert ((refined.count_nll + refined.latent_nll) <= (none.count_nll + none.latent_nll) + 1e-6).all()


# -- configs and the command line ---------------------------------------------------------------------


def test_bad_configs_are_clear_errors(tmp_path):
    assert load_config().latent_dim == 10 and load_config("default").training.kl_warmup_epochs == 50
    with pytest.raises(InputError, match=r"unknown setting\(s\) \['latnet_dim'\]"):
        load_config(str(write(tmp_path / "a.json", '{"latnet_dim": 2}')))
    with pytest.raises(InputError, match="latent_dim and hidden sizes must be positive"):
        load_config(None, {"latent_dim": 0})
    with pytest.raises(InputError, match="size_factors must be one of"):
        load_config(str(write(tmp_path / "b.json", '{"size_factors": "tmm"}')))
    with pytest.raises(InputError, match="not valid JSON"):
        load_config(str(write(tmp_path / "c.json", "{")))
    with pytest.raises(InputError, match="neither an NB-VAE preset"):
        load_config("small")
    with pytest.raises(InputError, match="kl_warmup_epochs"):
        load_config(None, {"training.kl_warmup_epochs": -1})
    with pytest.raises(InputError, match="unknown NB-VAE setting"):
        load_config(None, {"training.epoch": 3})


def test_cli_trains_an_nbvae_and_refuses_bad_model_types(atlas, tmp_path, runner):
    from nofone.cli.app import app

    config = write(tmp_path / "v.json", json.dumps({"model_type": "nbvae", "latent_dim": 2, "hidden": [8],
                                                    "training": {"epochs": 2}}))
    result = runner.invoke(app, ["train", "--input", str(atlas / "data"), "--outdir", str(tmp_path / "m"),
                                 "--config", str(config), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert read_artifact(tmp_path / "m").config["model_type"] == "nbvae"
    result = runner.invoke(app, ["train", "--model-type", "nbvae", "--input", str(atlas / "data"), "--outdir",
                                 str(tmp_path / "m2"), "--epochs", "1", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert read_artifact(tmp_path / "m2").config["nbvae"]["training"]["epochs"] == 1
    for args, message in ((["--model-type", "vae"], "use one of dgd, nbvae"),
                          (["--model-type", "dgd", "--config", str(config)], "is a nbvae config"),
                          (["--model-type", "nbvae", "--config", "paper"], "neither an NB-VAE preset")):
        result = runner.invoke(app, ["train", "--input", str(atlas / "data"), "--outdir", str(tmp_path / "x"),
                                     *args])
        text = re.sub(r"[│╭╮╰╯─\s]+", " ", result.output)  # typer's error box wraps lines
        assert result.exit_code == 2 and message in text, result.output
        assert not (tmp_path / "x").exists()
