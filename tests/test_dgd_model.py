"""The DGD's maths, config, artifact and bulkDGD import."""

from __future__ import annotations

import json
import math
import pickle

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA, requires_shared_data, write
from scipy import stats

from nofone.errors import InputError
from nofone.io.artifact import WEIGHTS, read_artifact
from nofone.models.dgd.config import PRESETS, DGDConfig, load_config
from nofone.models.dgd.model import DGD, load_torch_state
from nofone.models.dgd.module import DGDModule
from nofone.models.gmm import GaussianMixture, GMMConfig
from nofone.models.nb import nb_log_prob
from nofone.models.scaling import scaling_factor


def test_nb_log_prob_matches_scipy():
    rng = np.random.default_rng(0)
    m = rng.lognormal(3, 2, 500)
    r = rng.lognormal(0, 1.5, 500)
    x = rng.negative_binomial(r, r / (r + m))
    ours = nb_log_prob(torch.as_tensor(x), torch.as_tensor(m), torch.as_tensor(r)).numpy()
    np.testing.assert_allclose(ours, stats.nbinom.logpmf(x, r, r / (r + m)), rtol=1e-10, atol=1e-10)
    assert nb_log_prob(torch.tensor(0.0), torch.tensor(0.0), torch.tensor(2.0)).item() == 0.0
    assert nb_log_prob(torch.tensor([3.0]), torch.tensor([1e-30]), torch.tensor([2.0])).dtype == torch.float64


def test_gmm_density_and_priors():
    torch.manual_seed(0)
    gmm = GaussianMixture(3, GMMConfig(n_components=4))
    with torch.no_grad():
        gmm.means.normal_()
        gmm.log_var.uniform_(-2, 0)
        gmm.logits.normal_()
    z = torch.randn(7, 3)
    w = torch.softmax(gmm.logits, 0).detach().numpy()
    means, variances = gmm.means.detach().numpy(), np.exp(gmm.log_var.detach().numpy())
    expected = np.log(sum(w[k] * stats.multivariate_normal(means[k], np.diag(variances[k])).pdf(z.numpy())
                          for k in range(4)))
    np.testing.assert_allclose(gmm.log_prob(z).detach().numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(gmm.responsibilities(z).sum(-1).detach().numpy(), 1.0, rtol=1e-6)
    # prior: Dirichlet(5) density at uniform weights, softball ~ uniform inside the ball
    c = gmm.config
    with torch.no_grad():
        gmm.means.zero_()
        gmm.log_var.fill_(2 * math.log(c.component_sd))
        gmm.logits.zero_()
    k, d = 4, 3
    dirichlet = stats.dirichlet(np.full(k, c.dirichlet_alpha)).logpdf(np.full(k, 1 / k))
    ball = -(d * (math.log(c.softball_radius) + 0.5 * math.log(math.pi)) - math.lgamma(1 + d / 2))
    ball -= math.log1p(math.exp(-c.softball_sharpness))
    log_var = stats.norm(0, c.log_var_prior_sd).logpdf(0.0) * k * d
    assert gmm.prior_log_prob().item() == pytest.approx(dirichlet + k * ball + log_var, rel=1e-6)


def test_configs_presets_json_and_errors(tmp_path):
    assert load_config("paper") == PRESETS["paper"]
    assert load_config("paper").hidden == (500, 8000) and load_config("paper").gmm.n_components == 45
    path = write(tmp_path / "c.json", json.dumps({"latent_dim": 5, "training": {"epochs": 3, "betas": [0.4, 0.8]}}))
    config = load_config(str(path), {"training.seed": 7})
    assert (config.latent_dim, config.training.epochs, config.training.seed) == (5, 3, 7)
    assert config.training.betas == (0.4, 0.8) and config.hidden == PRESETS["small"].hidden
    with pytest.raises(InputError, match=r"unknown setting\(s\) \['latnt_dim'\]"):
        load_config(str(write(tmp_path / "bad.json", '{"latnt_dim": 5}')))
    with pytest.raises(InputError, match="neither a DGD preset"):
        load_config("huge")
    with pytest.raises(InputError, match=r"training\.init"):
        load_config("small", {"training.init": "random"})
    with pytest.raises(InputError, match="not valid JSON"):
        load_config(str(write(tmp_path / "broken.json", "{")))


def test_scaling_mean_measured_and_median():
    rng = np.random.default_rng(2)
    d = torch.as_tensor(rng.lognormal(0, 1, (3, 400)))
    x = torch.as_tensor(rng.poisson(d.numpy() * 50.0))
    mean = scaling_factor(x, d, None, "mean")
    torch.testing.assert_close(mean, x.double().mean(-1))
    # with nothing missing, `measured` is exactly the paper's mean
    torch.testing.assert_close(scaling_factor(x, d, torch.ones_like(x, dtype=torch.bool), "measured"), mean)
    measured = torch.ones_like(x, dtype=torch.bool)
    measured[:, :100] = False
    kept = scaling_factor(x, d, measured, "measured")
    zero_filled = (x * measured).double().mean(-1)
    # the model-based estimate stays near the full-data mean; zero-filling shrinks it by a quarter
    assert torch.allclose(kept, mean, rtol=0.1)
    assert (zero_filled < 0.85 * mean).all()
    assert torch.allclose(scaling_factor(x, d, measured, "mean"), kept)
    median = scaling_factor(x, d, None, "median")
    assert torch.allclose(median, torch.full_like(median, 50.0), rtol=0.1)


def _v1_state(n_genes: int, latent: int = 50, hidden=(500, 8000), k: int = 45, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    dec = {
        "main.0.weight": torch.randn(hidden[0], latent, generator=g) * 0.1, "main.0.bias": torch.zeros(hidden[0]),
        "main.2.weight": torch.randn(hidden[1], hidden[0], generator=g) * 0.05, "main.2.bias": torch.zeros(hidden[1]),
        "nb._layer_means.weight": torch.randn(n_genes, hidden[1], generator=g) * 0.01,
        "nb._layer_means.bias": torch.zeros(n_genes), "nb._log_r": torch.full((1, n_genes), math.log(2.0)),
    }
    gmm = {"_weights": torch.ones(k), "_means": torch.randn(k, latent, generator=g) * 0.5,
           "_log_var": torch.full((k, latent), -4.6)}
    return dec, gmm


def test_import_bulkdgd_fabricated_v1(tmp_path, runner):
    from nofone.cli.app import app

    dec, gmm = _v1_state(30, latent=6, hidden=(8, 16), k=5)
    torch.save(dec, tmp_path / "dec.pth")
    torch.save(gmm, tmp_path / "gmm.pth")
    write(tmp_path / "genes.txt", "\n".join(f"ENSG{i:011d}.3" for i in range(30)))
    result = runner.invoke(app, ["import-bulkdgd", "--decoder", str(tmp_path / "dec.pth"), "--gmm",
                                 str(tmp_path / "gmm.pth"), "--genes", str(tmp_path / "genes.txt"),
                                 "--outdir", str(tmp_path / "m")])
    assert result.exit_code == 0, result.output
    model = DGD.load(tmp_path / "m")
    assert model.gene_ids[0] == "ENSG00000000000" and model.n_components == 5
    assert model.config.hidden == (8, 16) and model.config.latent_dim == 6
    z = torch.randn(4, 6)
    # our decoder equals bulkDGD's forward: Linear-ReLU-Linear-ReLU-Linear-softplus
    h = torch.relu(z @ dec["main.0.weight"].T + dec["main.0.bias"])
    h = torch.relu(h @ dec["main.2.weight"].T + dec["main.2.bias"])
    expected = torch.nn.functional.softplus(h @ dec["nb._layer_means.weight"].T + dec["nb._layer_means.bias"])
    torch.testing.assert_close(model.relative_means(z), expected)
    torch.testing.assert_close(model.dispersion, torch.full((30,), 2.0))
    assert read_artifact(tmp_path / "m").config["source"]["format"] == "bulkdgd-v1"


@pytest.mark.parametrize(("mutate", "match"), [
    (lambda d, g: d.pop("nb._log_r"), r"lacks key\(s\) \['nb._log_r'\]"),
    (lambda d, g: d.__setitem__("main.2.weight", torch.zeros(16, 9)), r"main.2.weight has shape \(16, 9\)"),
    (lambda d, g: g.__setitem__("_means", torch.zeros(5, 7)), r"_means has shape \(5, 7\)"),
    (lambda d, g: d.__setitem__("nb._log_r", torch.zeros(1, 29)), r"nb._log_r has shape \(1, 29\); expected \(1, 30\)"),
])
def test_import_bulkdgd_shape_errors(mutate, match):
    dec, gmm = _v1_state(30, latent=6, hidden=(8, 16), k=5)
    mutate(dec, gmm)
    with pytest.raises(InputError, match=match):
        DGD.from_bulkdgd_v1(dec, gmm, [f"g{i}" for i in range(30)])
    dec, gmm = _v1_state(30, latent=6, hidden=(8, 16), k=5)
    with pytest.raises(InputError, match="gene list has 29 genes"):
        DGD.from_bulkdgd_v1(dec, gmm, [f"g{i}" for i in range(29)])


class _Exploit:
    def __reduce__(self):
        return (open, ("/tmp/nofone-pwned", "w"))


def test_pickled_code_is_never_executed(tmp_path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as handle:
        pickle.dump({"x": _Exploit()}, handle)
    torch.save({"w": torch.zeros(1), "payload": _Exploit()}, tmp_path / "evil2.pth")
    for p in (path, tmp_path / "evil2.pth"):
        with pytest.raises(InputError, match=r"holds pickled Python objects|cannot be loaded as tensors only"):
            load_torch_state(p, "decoder")
    import os

    assert not os.path.exists("/tmp/nofone-pwned")


def test_artifact_round_trip_and_tampering(tmp_path):
    module = DGDModule(DGDConfig(latent_dim=3, hidden=(4,), gmm=GMMConfig(n_components=2)), 5)
    import pandas as pd

    model = DGD(module, pd.DataFrame({"gene_id": list("abcde"), "gene_name": list("ABCDE")}))
    model.save(tmp_path / "m")
    again = DGD.load(tmp_path / "m")
    for (k, v), (_, w) in zip(model.module.state_dict().items(), again.module.state_dict().items()):
        torch.testing.assert_close(v, w, msg=k)
    raw = bytearray((tmp_path / "m" / WEIGHTS).read_bytes())
    raw[-1] ^= 0xFF
    (tmp_path / "m" / WEIGHTS).write_bytes(bytes(raw))
    with pytest.raises(InputError, match="does not match its checksum"):
        DGD.load(tmp_path / "m")
    with pytest.raises(InputError, match="does not exist"):
        DGD.load(tmp_path / "nowhere")


@requires_shared_data
@pytest.mark.realdata
def test_import_with_the_published_gmm(tmp_path):
    gmm = load_torch_state(SHARED_DATA / "bulkdgd" / "gmm_v1.pth", "GMM")
    genes = (SHARED_DATA / "bulkdgd" / "genes_v1.txt").read_text().split()
    dec, _ = _v1_state(len(genes), hidden=(4, 8))
    model = DGD.from_bulkdgd_v1(dec, gmm, genes)
    assert model.n_components == 45 and len(model.gene_ids) == 16_883
    weights = torch.softmax(gmm["_weights"], 0)
    torch.testing.assert_close(torch.softmax(model.module.gmm.logits, 0), weights)
    # the trained log-variances are log(0.1^2): the prior's centre, with the correct sign
    assert abs(float(gmm["_log_var"].mean()) - 2 * math.log(0.1)) < 0.05
    model.save(tmp_path / "m")
    assert DGD.load(tmp_path / "m").n_components == 45


@pytest.mark.parametrize("dispersion", ["gene", "latent"])
def test_dispersion_calibration_rescales_log_r_at_every_latent_point(dispersion):
    """The held-out calibration log r -> a + b log r must hold wherever r is evaluated: for a
    latent-dependent r that means rescaling the head (W -> bW, c -> a + bc), not one vector."""
    torch.manual_seed(0)
    config = load_config("small", {"latent_dim": 3, "hidden": [5, 7], "dispersion": dispersion,
                                   "gmm.n_components": 2})
    module = DGDModule(config, 11)
    z = torch.randn(4, 3)
    # a fresh head starts where the per-gene model starts: r = dispersion_init everywhere
    torch.testing.assert_close(module.dispersion_at(z), torch.full((4, 11), config.dispersion_init))
    if dispersion == "latent":
        with torch.no_grad():
            module.decoder.log_r.weight.normal_()
        assert module.log_dispersion_at(z).std(0).min() > 0  # r differs between latent points
        names = {n for n, _ in module.named_parameters()}
        head = {id(p) for g in module.dispersion_param_groups(1e-3) for p in g["params"]}
        mean = {id(p) for p in module.decoder.mean_parameters()}
        assert not head & mean and len(head | mean) == len(names) - len(list(module.gmm.parameters()))
    before = module.log_dispersion_at(z).detach().double()
    module.rescale_log_dispersion(-0.4, 1.3)
    torch.testing.assert_close(module.log_dispersion_at(z).detach().double(), -0.4 + 1.3 * before,
                               rtol=1e-5, atol=1e-5)
