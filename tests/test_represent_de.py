"""Representation search and the de step, on models whose truth is known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from scipy import stats

from nofone.errors import InputError
from nofone.inference.represent import SearchConfig, find_representations
from nofone.io.dataset import COUNTS_FILE, CountChunk, CountWriter, Dataset, write_tables
from nofone.models.dgd.config import DGDConfig
from nofone.models.dgd.model import DGD
from nofone.models.dgd.module import DGDModule
from nofone.models.gmm import GMMConfig
from nofone.models.nb import nb_log_prob
from nofone.stats.bulkdgd_reference import bulkdgd_exact_pvalue
from nofone.steps.de import DE_FILE, DEOptions, differential_expression
from nofone.steps.represent import REPRESENTATIONS, represent, representation_schema

N_GENES = 600


def random_model(seed: int = 0, n_genes: int = N_GENES, k: int = 5, latent: int = 4) -> DGD:
    """A DGD with random weights, well-separated components and realistic dispersions.

    Like a trained model (trained with the sample's mean count as its scale), its relative means
    average about 1 over genes at every latent point: the output bias is shifted until they do.
    """
    torch.manual_seed(seed)
    module = DGDModule(DGDConfig(latent_dim=latent, hidden=(16, 32), gmm=GMMConfig(n_components=k)), n_genes)
    with torch.no_grad():
        for layer in module.decoder.modules():
            if isinstance(layer, torch.nn.Linear):
                layer.weight.normal_(0, 1.0 / layer.in_features**0.5 * 1.5)
        module.decoder.output.weight.mul_(0.3)
        module.decoder.output.bias.normal_(0, 1.5)
        module.gmm.means.normal_(0, 2.0)
        for _ in range(30):
            module.decoder.output.bias.sub_(torch.log(module.decoder(module.gmm.means).mean()))
        module.log_r.copy_(torch.log(torch.as_tensor(np.random.default_rng(seed).lognormal(2, 0.8, n_genes))))
    genes = pd.DataFrame({"gene_id": [f"ENSG{i:011d}" for i in range(n_genes)], "gene_name": ""})
    return DGD(module, genes)


def draw(model: DGD, z: torch.Tensor, scale: np.ndarray, seed: int) -> np.ndarray:
    with torch.no_grad():
        mean = (model.relative_means(z).double() * torch.as_tensor(scale)[:, None]).numpy()
    r = model.dispersion.double().numpy()
    return np.random.default_rng(seed).negative_binomial(r, r / (r + mean))


def write_dataset(folder, counts: np.ndarray, gene_ids: list[str], ids: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with CountWriter(folder / COUNTS_FILE, counts.shape[1]) as writer:
        writer.write(CountChunk(ids, counts))
    write_tables(folder, pd.DataFrame({"gene_id": gene_ids}), pd.DataFrame({"sample_id": ids, "condition": "x"}))


def write_representations(folder, model: DGD, ids: list[str], z: torch.Tensor, scale: np.ndarray, fingerprint: str):
    folder.mkdir(parents=True, exist_ok=True)
    k, d = model.n_components, model.config.latent_dim
    schema = representation_schema(d, k, {"model_fingerprint": fingerprint})
    resp = np.full((len(ids), k), 1.0 / k, np.float32)
    table = pa.Table.from_arrays([
        pa.array(ids), pa.FixedSizeListArray.from_arrays(pa.array(z.numpy().astype(np.float32).ravel()), d),
        pa.array(scale), pa.array(["mean"] * len(ids)), pa.array(np.zeros(len(ids), np.int32)),
        pa.array(np.full(len(ids), 1.0 / k, np.float32)), pa.FixedSizeListArray.from_arrays(pa.array(resp.ravel()), k),
        pa.array(np.zeros(len(ids))), pa.array(np.zeros(len(ids))), pa.array(np.zeros(len(ids))),
        pa.array(np.full(len(ids), model.module.n_genes, np.int32)),
    ], schema=schema)
    pq.write_table(table, folder / REPRESENTATIONS)


def badly_modelled(model: DGD, n: int, latent_seed: int, scale: float, seed: int, sd: float = 0.4):
    """n samples near the components whose true means are the model's times a log-normal error of
    sd `sd` per gene: (latent points, scales, counts)."""
    g = torch.Generator().manual_seed(latent_seed)
    z = model.module.gmm.means[torch.arange(n) % model.n_components] + 0.2 * torch.randn(
        n, model.config.latent_dim, generator=g)
    scales = np.full(n, scale)
    with torch.no_grad():
        mean = (model.relative_means(z).double() * torch.as_tensor(scales)[:, None]).numpy()
    rng = np.random.default_rng(seed)
    off = mean * np.exp(rng.normal(0, sd, mean.shape))
    r = model.dispersion.double().numpy()
    return z, scales, rng.negative_binomial(r, r / (r + off))


def write_badly_modelled(saved_model, tmp_path, n: int, prefix: str, latent_seed: int, scale: float,
                         seed: int) -> list[str]:
    """`badly_modelled` samples as a dataset (tmp_path/data) with their true representations
    (tmp_path/reps) for the saved model; their sample ids."""
    from nofone.steps.common import model_fingerprint

    folder, model = saved_model
    z, scales, counts = badly_modelled(model, n, latent_seed, scale, seed)
    ids = [f"{prefix}{i}" for i in range(n)]
    write_dataset(tmp_path / "data", counts, model.gene_ids, ids)
    write_representations(tmp_path / "reps", model, ids, z, scales, model_fingerprint(folder))
    return ids


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model") / "m"
    model = random_model()
    model.save(folder)
    return folder, DGD.load(folder)


def test_pvalues_are_uniform_under_the_models_own_nb(saved_model, tmp_path):
    from nofone.steps.common import model_fingerprint

    folder, model = saved_model
    n = 40
    g = torch.Generator().manual_seed(1)
    z = model.module.gmm.means[torch.randint(0, model.n_components, (n,), generator=g)] + 0.3 * torch.randn(
        n, model.config.latent_dim, generator=g)
    scale = np.full(n, 400.0)
    counts = draw(model, z, scale, seed=2)
    ids = [f"s{i}" for i in range(n)]
    write_dataset(tmp_path / "data", counts, model.gene_ids, ids)
    write_representations(tmp_path / "reps", model, ids, z, scale, model_fingerprint(folder))
    summary = differential_expression(folder, tmp_path / "reps", tmp_path / "data", tmp_path / "de",
                                      DEOptions(q_threshold=0.05, lfc_threshold=0.0, null="nb", device="cpu"))
    de = pq.read_table(tmp_path / "de" / DE_FILE).to_pandas()
    testable = de[de["normal_mean"] >= 20]
    ks = stats.kstest(testable["p_value"], "uniform")
    assert ks.pvalue > 0.001, ks
    assert (de["p_value"] < 0.05).mean() <= 0.05 + 3 * (0.05 * 0.95 / len(de)) ** 0.5
    assert summary["n_de"].sum() / (n * N_GENES) <= 0.05
    assert (tmp_path / "de" / "samples" / "s0.tsv").is_file()
    assert set(de.columns) == {"sample_id", "gene_id", "gene_name", "count", "normal_mean", "dispersion",
                               "log2_fold_change", "p_value", "q_value", "can_call_down", "p_value_nb",
                               "q_value_nb", "call"}
    np.testing.assert_array_equal(de["p_value_nb"], de["p_value"])  # --null nb: both tiers are the NB test
    # the model error is reported without --null model-error too, and a perfectly modelled sample has
    # (almost always) none, so the widened test leaves it alone
    assert (summary["model_error_sd"] == 0).mean() >= 0.9
    widened_summary = differential_expression(
        folder, tmp_path / "reps", tmp_path / "data", tmp_path / "de2",
        DEOptions(q_threshold=0.05, lfc_threshold=0.0, null="model-error", device="cpu"))
    pd.testing.assert_series_equal(widened_summary["model_error_sd"], summary["model_error_sd"])
    widened = pq.read_table(tmp_path / "de2" / DE_FILE).to_pandas()
    unwidened = widened["sample_id"].map(summary.set_index("sample_id")["model_error_sd"]) == 0
    np.testing.assert_array_equal(widened["p_value"][unwidened], de["p_value"][unwidened])
    assert (widened["p_value"] < 0.05).mean() <= (de["p_value"] < 0.05).mean() + 1e-12


def test_model_error_is_reported_always_and_widens_only_when_asked(saved_model, tmp_path):
    """A sample the model fits badly (means off by a log-normal error of sd 0.4) gets its model
    error in summary.tsv either way; only --null model-error changes its p-values."""
    folder = saved_model[0]
    write_badly_modelled(saved_model, tmp_path, 6, "bad", latent_seed=3, scale=800.0, seed=4)
    plain = differential_expression(folder, tmp_path / "reps", tmp_path / "data", tmp_path / "plain",
                                    DEOptions(null="nb", write_tsv=False, device="cpu"))
    widened = differential_expression(folder, tmp_path / "reps", tmp_path / "data", tmp_path / "wide",
                                      DEOptions(null="model-error", write_tsv=False, device="cpu"))
    assert plain["model_error_sd"].between(0.3, 0.5).all(), plain["model_error_sd"]
    pd.testing.assert_series_equal(plain["model_error_sd"], widened["model_error_sd"])
    assert widened["n_de"].sum() < plain["n_de"].sum() / 5


@pytest.mark.parametrize("null", ["nb", "model-error"])
def test_tests_on_several_threads_equal_one_thread_and_tsv_equals_parquet(saved_model, tmp_path, monkeypatch,
                                                                          null):
    """Genes cut into blocks on threads give bit-identical results (plain and widened tests), and
    each sample's TSV holds the Parquet rows to six significant digits."""
    from nofone.stats import parallel

    folder = saved_model[0]
    ids = write_badly_modelled(saved_model, tmp_path, 5, "t", latent_seed=5, scale=600.0, seed=6)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        differential_expression(folder, tmp_path / "reps", tmp_path / "data", tmp_path / "one",
                                DEOptions(null=null, device="cpu"))
        monkeypatch.setattr(parallel, "MIN_BLOCK", 64)
        torch.set_num_threads(3)
        differential_expression(folder, tmp_path / "reps", tmp_path / "data", tmp_path / "three",
                                DEOptions(null=null, device="cpu"))
    finally:
        torch.set_num_threads(threads)
    one = pq.read_table(tmp_path / "one" / DE_FILE).to_pandas()
    pd.testing.assert_frame_equal(one, pq.read_table(tmp_path / "three" / DE_FILE).to_pandas())
    for sample in ids:
        written = pd.read_csv(tmp_path / "three" / "samples" / f"{sample}.tsv", sep="\t",
                              dtype={"gene_name": str}, keep_default_na=False)
        rows = one[one["sample_id"] == sample].drop(columns="sample_id").reset_index(drop=True)
        assert list(written.columns) == list(rows.columns)
        assert (written["gene_id"] == rows["gene_id"]).all() and (written["count"] == rows["count"]).all()
        assert (written["can_call_down"] == rows["can_call_down"]).all()
        for column in ("normal_mean", "dispersion", "log2_fold_change", "p_value", "q_value"):
            np.testing.assert_allclose(written[column], rows[column], rtol=5e-6, atol=0)


def test_density_rule_matches_bulkdgd_exact_rule_with_identical_weights(saved_model, tmp_path):
    from nofone.steps.common import model_fingerprint

    folder, model = saved_model
    z = model.module.gmm.means[:3].clone()
    scale = np.array([300.0, 800.0, 2000.0])
    counts = draw(model, z, scale, seed=5)
    counts[:, :20] *= 6  # some genes far out, so that both tails matter
    ids = ["a", "b", "c"]
    write_dataset(tmp_path / "data", counts, model.gene_ids, ids)
    write_representations(tmp_path / "reps", model, ids, z, scale, model_fingerprint(folder))
    differential_expression(folder, tmp_path / "reps", tmp_path / "data", tmp_path / "de",
                            DEOptions(test="density", device="cpu", write_tsv=False))
    de = pq.read_table(tmp_path / "de" / DE_FILE).to_pandas()
    de = de[de["normal_mean"].between(1, 1e4)]
    reference = bulkdgd_exact_pvalue(de["count"].to_numpy(), de["normal_mean"].to_numpy(), de["dispersion"].to_numpy())
    # bulkDGD sums the pmf only below its 0.99999 quantile and renormalises: at most ~1e-5 apart
    assert np.max(np.abs(de["p_value"].to_numpy() - reference)) < 1e-4


def test_search_finds_a_point_at_least_as_good_as_the_truth(saved_model):
    _, model = saved_model
    g = torch.Generator().manual_seed(7)
    comp = torch.randint(0, model.n_components, (12,), generator=g)
    z_true = model.module.gmm.means[comp] + 0.2 * torch.randn(12, model.config.latent_dim, generator=g)
    counts = torch.as_tensor(draw(model, z_true, np.full(12, 500.0), seed=8))
    result = find_representations(model, counts, None, SearchConfig(steps_second=150))
    scale = counts.double().mean(-1)
    with torch.no_grad():
        truth = -nb_log_prob(counts, model.relative_means(z_true).double() * scale[:, None], model.dispersion).sum(-1)
        truth -= model.latent_log_prob(z_true).double()
    found = result.count_nll + result.latent_nll
    assert (found <= truth + 0.5).all(), (found - truth)
    assert (result.responsibilities.argmax(-1) == comp).float().mean() >= 0.9


def test_pruning_and_one_opt_against_all_candidates(saved_model):
    _, model = saved_model
    g = torch.Generator().manual_seed(11)
    z = model.module.gmm.means[torch.randint(0, model.n_components, (10,), generator=g)]
    counts = torch.as_tensor(draw(model, z + 0.3 * torch.randn(z.shape, generator=g), np.full(10, 500.0), seed=3))
    loss = {}
    for name, config in {"all": SearchConfig(keep_candidates=None), "pruned": SearchConfig(keep_candidates=2),
                         "one_opt": SearchConfig(method="one_opt")}.items():
        r = find_representations(model, counts, None, config)
        loss[name] = (r.count_nll + r.latent_nll).numpy()
    assert np.allclose(loss["pruned"], loss["all"], rtol=1e-3)
    assert np.all(loss["one_opt"] <= loss["all"] * 1.01)


def test_missing_genes_are_not_tested_and_not_zero_filled(saved_model, tmp_path):
    folder, model = saved_model
    g = torch.Generator().manual_seed(4)
    z = model.module.gmm.means[[0, 1, 2, 3, 4, 0]] + 0.2 * torch.randn(6, model.config.latent_dim, generator=g)
    counts = draw(model, z, np.full(6, 500.0), seed=9)
    keep = np.arange(100, N_GENES)  # the first 100 model genes are absent from the data
    ids = [f"m{i}" for i in range(6)]
    write_dataset(tmp_path / "data", counts[:, keep], [model.gene_ids[i] for i in keep], ids)
    report = represent(folder, tmp_path / "data", tmp_path / "reps", SearchConfig(), device="cpu")
    assert report["missing_model_genes"] == 100
    reps = pq.read_table(tmp_path / "reps" / REPRESENTATIONS).to_pandas()
    assert (reps["n_measured"] == N_GENES - 100).all()
    full_scale = counts.mean(1)
    assert np.allclose(reps["scale"], full_scale, rtol=0.15), "the scale must not shrink with missing genes"
    differential_expression(folder, tmp_path / "reps", tmp_path / "data", tmp_path / "de", DEOptions(device="cpu"))
    de = pq.read_table(tmp_path / "de" / DE_FILE).to_pandas()
    assert set(de["gene_id"]).isdisjoint(model.gene_ids[:100])
    assert len(de) == 6 * (N_GENES - 100)
    assert (de["q_value"] < 0.01).mean() < 0.01


def test_de_refuses_representations_of_another_model(saved_model, tmp_path):
    folder, model = saved_model
    counts = draw(model, model.module.gmm.means[:2], np.full(2, 100.0), seed=1)
    write_dataset(tmp_path / "data", counts, model.gene_ids, ["a", "b"])
    write_representations(tmp_path / "reps", model, ["a", "b"], model.module.gmm.means[:2], np.full(2, 100.0),
                          "0000000000000000")
    with pytest.raises(InputError, match="was made with another model"):
        differential_expression(folder, tmp_path / "reps", tmp_path / "data", tmp_path / "de", DEOptions(device="cpu"))
    assert not (tmp_path / "de").exists()
    with pytest.raises(InputError, match="unknown test 'fisher'"):
        differential_expression(folder, tmp_path / "reps", tmp_path / "data", tmp_path / "de", DEOptions(test="fisher"))


def test_represent_and_de_cli(saved_model, tmp_path, runner):
    from nofone.cli.app import app

    folder, model = saved_model
    counts = draw(model, model.module.gmm.means[:4], np.full(4, 300.0), seed=1)
    write_dataset(tmp_path / "data", counts, model.gene_ids, ["a", "b", "c", "d"])
    result = runner.invoke(app, ["represent", "-m", str(folder), "-i", str(tmp_path / "data"), "-o",
                                 str(tmp_path / "reps"), "--sample", "b", "--sample", "d", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert pq.read_table(tmp_path / "reps" / REPRESENTATIONS).column("sample_id").to_pylist() == ["b", "d"]
    result = runner.invoke(app, ["de", "-m", str(folder), "-r", str(tmp_path / "reps"), "-i", str(tmp_path / "data"),
                                 "-o", str(tmp_path / "de"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "de" / "samples").iterdir()) == ["b.tsv", "d.tsv"]
    summary = pd.read_csv(tmp_path / "de" / "summary.tsv", sep="\t")
    assert list(summary["sample_id"]) == ["b", "d"] and (summary["n_tested"] == N_GENES).all()
    result = runner.invoke(app, ["represent", "-m", str(folder), "-i", str(tmp_path / "data"), "-o",
                                 str(tmp_path / "x"), "--sample", "zz"])
    assert result.exit_code == 2 and "unknown sample id(s) ['zz']" in result.output
    result = runner.invoke(app, ["represent", "-m", str(tmp_path / "nomodel"), "-i", str(tmp_path / "data"), "-o",
                                 str(tmp_path / "x")])
    assert result.exit_code == 2 and "does not exist" in result.output


def test_dataset_without_model_genes_is_a_clear_error(saved_model, tmp_path):
    folder, _ = saved_model
    write_dataset(tmp_path / "data", np.ones((2, 3), np.int64), ["TP53", "EGFR", "MYC"], ["a", "b"])
    with pytest.raises(InputError, match="none of the model's 600 genes are in the data"):
        represent(folder, tmp_path / "data", tmp_path / "reps", SearchConfig(), device="cpu")
    assert Dataset(tmp_path / "data").n_genes == 3
