"""`nofone import-bulkdgd` for the bulkDGD 2.x format: exact agreement with bulkDGD 2.0.1's formulas
(re-implemented here from its source on fabricated tensors), format detection and refusals."""

from __future__ import annotations

import math
import os
import pickle
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import write

from nofone.cli.app import app
from nofone.errors import InputError
from nofone.io.artifact import read_artifact
from nofone.models.dgd.bulkdgd import detect_format
from nofone.models.dgd.config import load_config
from nofone.models.dgd.model import DGD
from nofone.models.scaling import scaling_factor

G, D, K, HIDDEN = 30, 6, 5, (8, 16)
DIAGONAL = ("diag", "spherical", "tied_diag", "tied_spherical")
#: the trained 2.x GMM shipped in the bulkdgd 2.0.1 wheel; not part of this repository
REAL_GMM = Path(os.environ.get("NOFONE_BULKDGD2_GMM", "/tmp/bdgd/x/bulkdgd/data/model/gmm/gmm.pth"))


# -- fabricated bulkDGD 2.x files ------------------------------------------------------------------
def v2_decoder(n_genes: int = G, latent: int = D, hidden=HIDDEN, full: bool = True, seed: int = 0) -> dict:
    """A state dict with the keys of bulkdgd.core.decoders.Decoder (output 'nb_full_dispersion'
    when `full`, else 'nb_feature_dispersion')."""
    g = torch.Generator().manual_seed(seed)
    dec = {
        "main.0.weight": torch.randn(hidden[0], latent, generator=g) * 0.5,
        "main.0.bias": torch.randn(hidden[0], generator=g) * 0.1,
        "main.2.weight": torch.randn(hidden[1], hidden[0], generator=g) * 0.4,
        "main.2.bias": torch.randn(hidden[1], generator=g) * 0.1,
        "nb._layer_means.weight": torch.randn(n_genes, hidden[1], generator=g) * 0.3,
        "nb._layer_means.bias": torch.randn(n_genes, generator=g) * 0.5,
    }
    if full:
        dec["nb._layer_r_values.weight"] = torch.randn(n_genes, hidden[1], generator=g) * 0.2
        dec["nb._layer_r_values.bias"] = torch.randn(n_genes, generator=g) * 0.3 + math.log(2.0)
    else:
        dec["nb._log_r"] = torch.randn(1, n_genes, generator=g) * 0.3 + math.log(2.0)
    return dec


def tgmm_state(ctype: str = "tied_spherical", k: int = K, d: int = D, seed: int = 1) -> dict:
    """A dict as tgmm.GaussianMixture.save_state_dict() writes it (bulkDGD 2.x 'tgmm' latent)."""
    g = torch.Generator().manual_seed(seed)
    covariances = {
        "diag": lambda: torch.rand(k, d, generator=g) * 0.5 + 0.05,
        "spherical": lambda: torch.rand(k, generator=g) * 0.5 + 0.05,
        "tied_diag": lambda: torch.rand(d, generator=g) * 0.5 + 0.05,
        "tied_spherical": lambda: torch.tensor(0.3),
        "full": lambda: torch.eye(d).repeat(k, 1, 1) * 0.3,
        "tied_full": lambda: torch.eye(d) * 0.3,
    }[ctype]()
    weights = torch.softmax(torch.randn(k, generator=g), 0)
    means = torch.randn(k, d, generator=g) * 2
    return {
        "weights_": weights, "means_": means, "covariances_": covariances,
        "initial_weights_": torch.full((k,), 1 / k), "initial_means_": means.clone(),
        "initial_covariances_": covariances.clone(),
        "n_components": k, "n_features": d, "covariance_type": ctype, "tol": 1e-4, "reg_covar": 1e-6,
        "max_iter": 1000, "init_means": "maxdist", "init_weights": "uniform", "init_covariances": "empirical",
        "n_init": 1, "random_state": None, "warm_start": False, "verbose": False, "verbose_interval": 10,
        "cem": False, "fitted_": True, "converged_": True, "n_iter_": 15, "lower_bound_": 30.66,
        "use_weight_prior": False, "use_mean_prior": False, "use_covariance_prior": False,
        "weight_concentration_prior": None, "mean_prior": None, "mean_precision_prior": None,
        "covariance_prior": None, "degrees_of_freedom_prior": None,
    }


def v1_files(n_genes: int = G, latent: int = D, k: int = K) -> tuple[dict, dict]:
    dec = v2_decoder(n_genes, latent, full=False)
    gmm = {"_weights": torch.zeros(k), "_means": torch.randn(k, latent), "_log_var": torch.full((k, latent), -4.6)}
    return dec, gmm


# -- bulkDGD 2.0.1, re-implemented from its source ----------------------------------------------
def bulkdgd_decode(dec: dict, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """core.decoders.Decoder.forward: Linear+ReLU per hidden layer (dropout 0), then the output
    module: m = softplus(_layer_means(h)); 'nb_full_dispersion' also log r = _layer_r_values(h)."""
    h, i = z, 0
    while f"main.{i}.weight" in dec:
        h = torch.relu(h @ dec[f"main.{i}.weight"].T + dec[f"main.{i}.bias"])
        i += 2
    m = torch.nn.functional.softplus(h @ dec["nb._layer_means.weight"].T + dec["nb._layer_means.bias"])
    if "nb._layer_r_values.weight" in dec:
        return m, h @ dec["nb._layer_r_values.weight"].T + dec["nb._layer_r_values.bias"]
    return m, None


def bulkdgd_nb(dec: dict, z: torch.Tensor, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """NB mean and r: OutputModuleBase.rescale(m, mean_exp), mean_exp = GeneExpressionDataset's
    torch.mean(counts, dim=1); r = exp(log r) (per sample) or exp(nb._log_r) (per gene)."""
    m, log_r = bulkdgd_decode(dec, z)
    mean_exp = torch.mean(counts.float(), dim=1).unsqueeze(1)
    r = torch.exp(log_r) if log_r is not None else torch.exp(dec["nb._log_r"]).expand_as(m)
    return m * mean_exp, r


def bulkdgd_nb_log_prob(k: torch.Tensor, m: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """core.outputmodules.OutputModuleNB.log_prob_mass."""
    k, eps = k.double(), 1.0e-10
    c = 1.0 / (r + m + eps)
    return (torch.lgamma(k + r) - torch.lgamma(r) - torch.lgamma(k + 1) + k * torch.log(m * c + eps)
            + r * torch.log(r * c))


def tgmm_score_samples(gmm: dict, z: torch.Tensor) -> torch.Tensor:
    """tgmm.GaussianMixture.score_samples (its _e_step) for the diagonal covariance types."""
    z, means, w, cov = (t.double() for t in (z, gmm["means_"], gmm["weights_"], gmm["covariances_"]))
    d, ctype = z.shape[1], gmm["covariance_type"]
    diff = z.unsqueeze(1) - means.unsqueeze(0)
    if ctype in ("diag", "tied_diag"):
        log_det = torch.log(cov + 1e-20).sum(-1)
        mahal = (diff.pow(2) * (1.0 / (cov + 1e-20))).sum(2)
    else:  # spherical, tied_spherical
        log_det = d * torch.log(cov + 1e-20)
        mahal = diff.pow(2).sum(2) * (1.0 / (cov + 1e-20))
    log_prob = -0.5 * (d * math.log(2 * math.pi) + log_det + mahal) + torch.log(w + 1e-20)
    return torch.logsumexp(log_prob, dim=1)


# -- helpers -----------------------------------------------------------------------------------
def save_files(tmp_path: Path, dec: dict, gmm: dict, n_genes: int = G) -> list[str]:
    torch.save(dec, tmp_path / "dec.pth")
    torch.save(gmm, tmp_path / "gmm.pth")
    write(tmp_path / "genes.txt", "\n".join(f"ENSG{i:011d}" for i in range(n_genes)))
    return ["import-bulkdgd", "--decoder", str(tmp_path / "dec.pth"), "--gmm", str(tmp_path / "gmm.pth"),
            "--genes", str(tmp_path / "genes.txt"), "--outdir", str(tmp_path / "m")]


def probe_points(gmm: dict, n: int = 9) -> torch.Tensor:
    """Latent points near the component means and far from them."""
    g = torch.Generator().manual_seed(5)
    means = gmm["means_"] if "means_" in gmm else gmm["_means"]
    near = means[torch.arange(n) % len(means)] + 0.3 * torch.randn(n, means.shape[1], generator=g)
    return torch.cat([near, 3 * torch.randn(3, means.shape[1], generator=g)])


def assert_matches_bulkdgd(model: DGD, dec: dict, gmm: dict) -> None:
    z = probe_points(gmm)
    counts = torch.poisson(torch.full((len(z), dec["nb._layer_means.bias"].numel()), 40.0),
                           generator=torch.Generator().manual_seed(3))
    want_mean, want_r = bulkdgd_nb(dec, z, counts)
    relative = model.relative_means(z)
    scale = scaling_factor(counts, relative, None, model.default_scaling)
    torch.testing.assert_close((relative * scale[:, None]).float(), want_mean)
    torch.testing.assert_close(model.dispersion_at(z), want_r)
    ll = model.module.count_log_prob(counts.double(), z, scale)
    want_ll = bulkdgd_nb_log_prob(counts, want_mean.double(), want_r.double()).sum(-1)
    torch.testing.assert_close(ll, want_ll, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(model.latent_log_prob(z).double(), tgmm_score_samples(gmm, z), rtol=1e-5, atol=1e-4)


# -- tests -------------------------------------------------------------------------------------
@pytest.mark.parametrize("ctype", DIAGONAL)
def test_v2_import_matches_bulkdgd_formulas(tmp_path, runner, ctype):
    dec, gmm = v2_decoder(), tgmm_state(ctype)
    result = runner.invoke(app, save_files(tmp_path, dec, gmm))
    assert result.exit_code == 0, result.output
    assert "imported bulkDGD v2 (nb_full_dispersion, tgmm " + ctype in result.output
    model = DGD.load(tmp_path / "m")  # from disk: the checked artifact, not the object in memory
    assert (model.config.latent_dim, model.config.hidden, model.n_components) == (D, HIDDEN, K)
    assert model.config.dispersion == "latent" and model.default_scaling == "mean"
    assert_matches_bulkdgd(model, dec, gmm)
    source = read_artifact(tmp_path / "m").config["source"]
    assert source["format"] == "bulkdgd-v2" and source["latent_type"] == "tgmm"
    assert source["output_module"] == "nb_full_dispersion" and source["covariance_type"] == ctype
    assert source["gmm"] == str(tmp_path / "gmm.pth") and "ReLU" in source["assumed"]


def test_v2_feature_dispersion_decoder_with_tgmm(tmp_path, runner):
    dec, gmm = v2_decoder(full=False), tgmm_state("diag")
    result = runner.invoke(app, save_files(tmp_path, dec, gmm))
    assert result.exit_code == 0, result.output
    model = DGD.load(tmp_path / "m")
    assert model.config.dispersion == "gene"
    torch.testing.assert_close(model.dispersion, torch.exp(dec["nb._log_r"][0]))
    assert_matches_bulkdgd(model, dec, gmm)
    assert read_artifact(tmp_path / "m").config["source"]["output_module"] == "nb_feature_dispersion"


def test_format_detection_and_override(tmp_path, runner):
    v1_dec, v1_gmm = v1_files()
    assert detect_format(v1_dec, v1_gmm) == "v1"
    assert detect_format(v2_decoder(), tgmm_state()) == "v2"
    assert detect_format(v1_dec, tgmm_state()) == "v2"  # 2.x 'nb_feature_dispersion' decoder with a tgmm
    assert detect_format(v2_decoder(), v1_gmm) == "v2"  # 2.x 'nb_full_dispersion' decoder with an lgmm
    args = save_files(tmp_path, v1_dec, v1_gmm)
    assert runner.invoke(app, args).exit_code == 0
    assert read_artifact(tmp_path / "m").config["source"]["format"] == "bulkdgd-v1"
    # 2.x 'lgmm' + 'nb_feature_dispersion' files have the v1 layout: --format v2 reads them the same way
    assert runner.invoke(app, [*args[:-1], str(tmp_path / "m2"), "--format", "v2"]).exit_code == 0
    assert read_artifact(tmp_path / "m2").config["source"]["format"] == "bulkdgd-v2"
    torch.testing.assert_close(DGD.load(tmp_path / "m2").dispersion, DGD.load(tmp_path / "m").dispersion)
    # --format v1 on 2.x files, and an unknown format, are refused
    args = save_files(tmp_path, v2_decoder(), tgmm_state())
    result = runner.invoke(app, [*args[:-1], str(tmp_path / "m3"), "--format", "v1"])
    assert result.exit_code == 2 and "has the bulkDGD 2.x keys" in result.output
    assert not (tmp_path / "m3").exists()
    result = runner.invoke(app, [*args[:-1], str(tmp_path / "m3"), "--format", "v3"])
    assert result.exit_code == 2 and "--format" in result.output and not (tmp_path / "m3").exists()


def test_legacy_gmm_with_one_variance_per_component():
    """2.x 'lgmm' with covariance 'isotropic'/'fixed' stores _log_var [K, 1]: shared over dimensions."""
    dec, gmm = v1_files()
    gmm["_log_var"] = torch.tensor([[-1.0], [-2.0], [-0.5], [-3.0], [-1.5]])
    model = DGD.from_bulkdgd(dec, gmm, [f"g{i}" for i in range(G)])
    torch.testing.assert_close(model.module.gmm.log_var, gmm["_log_var"].expand(K, D))
    z = probe_points(gmm)
    # bulkDGD's GaussianMixtureModelLegacy._get_log_prob_comp with log_var_factor = dim * 0.5
    y = -(z.unsqueeze(-2) - gmm["_means"]).square().div(2 * torch.exp(gmm["_log_var"])).sum(-1)
    y = y - 0.5 * D * gmm["_log_var"].sum(-1) - 0.5 * D * math.log(2 * math.pi) + torch.log_softmax(gmm["_weights"], 0)
    torch.testing.assert_close(model.latent_log_prob(z), torch.logsumexp(y, -1), rtol=1e-5, atol=1e-4)


def _without(state: dict, key: str) -> dict:
    return {k: v for k, v in state.items() if k != key}


BAD_INPUTS = {
    "gmm means shape": (lambda: (v2_decoder(), {**tgmm_state(), "means_": torch.zeros(K, D + 1)}),
                        r"gmm.pth: means_ has shape \(5, 7\); expected \(\*, 6\)"),
    "covariances shape": (lambda: (v2_decoder(), {**tgmm_state("diag"), "covariances_": torch.ones(K, K)}),
                          r"covariances_ has shape \(5, 5\); expected \(5, 6\) \(covariance_type 'diag'\)"),
    "weights shape": (lambda: (v2_decoder(), {**tgmm_state(), "weights_": torch.full((K + 1,), 1 / (K + 1))}),
                      r"weights_ has shape \(6,\); expected \(5,\)"),
    "r layer shape": (lambda: ({**v2_decoder(), "nb._layer_r_values.weight": torch.zeros(G, 15)}, tgmm_state()),
                      r"dec.pth: nb._layer_r_values.weight has shape \(30, 15\); expected \(30, 16\)"),
    "hidden chain": (lambda: ({**v2_decoder(), "main.2.weight": torch.zeros(16, 9)}, tgmm_state()),
                     r"main.2.weight has shape \(16, 9\); expected \(\*, 8\)"),
    "missing covariances": (lambda: (v2_decoder(), _without(tgmm_state(), "covariances_")),
                            r"gmm.pth lacks key\(s\) \['covariances_'\]"),
    "missing r bias": (lambda: (_without(v2_decoder(), "nb._layer_r_values.bias"), tgmm_state()),
                       r"dec.pth lacks key\(s\) \['nb._layer_r_values.bias'\]"),
    "unknown decoder key": (lambda: ({**v2_decoder(), "nb._extra": torch.zeros(3)}, tgmm_state()),
                            r"unexpected key\(s\) \['nb._extra'\]"),
    "full covariance": (lambda: (v2_decoder(), tgmm_state("full")), r"covariance_type 'full' is not supported"),
    "tied full covariance": (lambda: (v2_decoder(), tgmm_state("tied_full")),
                             r"covariance_type 'tied_full' is not supported"),
    "tied alias": (lambda: (v2_decoder(), {**tgmm_state("tied_full"), "covariance_type": "tied"}),
                   r"covariance_type 'tied' is not supported"),
    "weights are logits": (lambda: (v2_decoder(), {**tgmm_state(), "weights_": torch.zeros(K)}),
                           r"weights_ must be mixture probabilities"),
    "negative variance": (lambda: (v2_decoder(), {**tgmm_state(), "covariances_": torch.tensor(-0.1)}),
                          r"covariances_ must be positive"),
    "not fitted": (lambda: (v2_decoder(), {**tgmm_state(), "fitted_": False}), r"never fitted"),
    "poisson decoder": (lambda: (_without(_without(v2_decoder(), "nb._layer_r_values.weight"),
                                          "nb._layer_r_values.bias"), tgmm_state()),
                        r"'poisson' output module"),
    "nan weights": (lambda: ({**v2_decoder(), "main.0.bias": torch.full((8,), float("nan"))}, tgmm_state()),
                    r"main.0.bias must hold finite floating-point values"),
    "unknown gmm layout": (lambda: (v2_decoder(), {"mu": torch.zeros(K, D)}),
                           r"neither the bulkDGD v1 GMM keys .* nor the 2.x keys"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_inputs_are_clear_errors(tmp_path, runner, case):
    make, match = BAD_INPUTS[case]
    dec, gmm = make()
    result = runner.invoke(app, save_files(tmp_path, dec, gmm))
    assert result.exit_code == 2, result.output
    assert re.search(match, " ".join(result.output.split())), result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "m").exists() and not list(tmp_path.glob(".m.partial-*"))


def test_gene_count_must_match_the_gene_list(tmp_path, runner):
    args = save_files(tmp_path, v2_decoder(), tgmm_state())
    write(tmp_path / "genes.txt", "\n".join(f"ENSG{i:011d}" for i in range(G - 1)))
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "has 29 genes but decoder" in result.output and "outputs 30" in " ".join(result.output.split())
    assert not (tmp_path / "m").exists()


class _Exploit:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("which", ["decoder", "gmm"])
def test_pickled_code_is_refused_never_run(tmp_path, runner, which):
    marker = tmp_path / "pwned"
    args = save_files(tmp_path, v2_decoder(), tgmm_state())
    target = tmp_path / ("dec.pth" if which == "decoder" else "gmm.pth")
    torch.save({**tgmm_state(), "payload": _Exploit(str(marker))}, target)
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "holds pickled Python objects" in " ".join(result.output.split())
    with open(target, "wb") as handle:  # a plain pickle, not a torch file at all
        pickle.dump({"x": _Exploit(str(marker))}, handle)
    assert runner.invoke(app, args).exit_code == 2
    assert not marker.exists() and not (tmp_path / "m").exists()


def test_latent_dispersion_model_runs_represent_and_de(tmp_path, runner):
    """A 2.x 'nb_full_dispersion' model: one r per gene is refused where it would be wrong
    (`model.dispersion`), while representation search and the tests use r at each
    sample's own closest normal, as bulkDGD 2.x does."""
    from nofone.inference.represent import SearchConfig
    from nofone.io.dataset import COUNTS_FILE, CountChunk, CountWriter, write_tables
    from nofone.steps.de import DEOptions, differential_expression
    from nofone.steps.represent import represent

    dec, gmm = v2_decoder(), tgmm_state()
    result = runner.invoke(app, save_files(tmp_path, dec, gmm))
    assert result.exit_code == 0 and "use r at each sample's closest normal" in " ".join(result.output.split())
    model = DGD.load(tmp_path / "m")
    with pytest.raises(InputError, match="dispersion depends on the latent point"):
        _ = model.dispersion
    with pytest.raises(InputError, match="dispersion must be 'gene'"):
        load_config("small", {"dispersion": "per-sample"})
    # counts drawn from the model at two latent points; represent and de end to end
    z0 = probe_points(gmm, 3)[:3]
    mean, r = bulkdgd_nb(dec, z0, torch.full((3, G), 50.0))
    rng = np.random.default_rng(0)
    counts = rng.negative_binomial(r.double().numpy(), (r / (r + mean)).double().numpy()).astype(np.int64)
    data = tmp_path / "data"
    data.mkdir()
    ids = ["s1", "s2", "s3"]
    with CountWriter(data / COUNTS_FILE, G) as writer:
        writer.write(CountChunk(ids, counts))
    write_tables(data, pd.DataFrame({"gene_id": model.gene_ids, "gene_name": ""}),
                 pd.DataFrame({"sample_id": ids, "condition": "case"}))
    represent(tmp_path / "m", data, tmp_path / "reps", SearchConfig(), device="cpu")
    differential_expression(tmp_path / "m", tmp_path / "reps", data, tmp_path / "de", DEOptions(device="cpu"))
    reps = pd.read_parquet(tmp_path / "reps" / "representations.parquet")
    table = pd.read_parquet(tmp_path / "de" / "de.parquet")
    for i, sample in enumerate(ids):
        z = torch.as_tensor(np.stack(reps.loc[reps["sample_id"] == sample, "latent"].to_numpy()))
        expected = bulkdgd_nb(dec, z, torch.as_tensor(counts[i:i + 1]))[1][0].double().numpy()
        got = table.loc[table["sample_id"] == sample].set_index("gene_id").loc[model.gene_ids, "dispersion"]
        np.testing.assert_allclose(got.to_numpy(), expected, rtol=1e-5)
    assert table["p_value"].between(0, 1).all()


@pytest.mark.skipif(not REAL_GMM.is_file(), reason=f"the bulkDGD 2.0.1 trained GMM is not at {REAL_GMM} "
                    "(it ships in the bulkdgd wheel, not in this repository; set NOFONE_BULKDGD2_GMM)")
def test_import_with_the_real_bulkdgd2_gmm(tmp_path, runner):
    gmm = torch.load(REAL_GMM, map_location="cpu", weights_only=True)
    latent = gmm["means_"].shape[1]
    dec = v2_decoder(n_genes=40, latent=latent, hidden=(6, 10))
    write(tmp_path / "genes.txt", "\n".join(f"ENSG{i:011d}" for i in range(40)))
    torch.save(dec, tmp_path / "dec.pth")
    result = runner.invoke(app, ["import-bulkdgd", "--decoder", str(tmp_path / "dec.pth"), "--gmm", str(REAL_GMM),
                                 "--genes", str(tmp_path / "genes.txt"), "--outdir", str(tmp_path / "m")])
    assert result.exit_code == 0, result.output
    model = DGD.load(tmp_path / "m")
    assert (model.n_components, model.config.latent_dim) == (gmm["n_components"], gmm["n_features"]) == (32, 32)
    assert gmm["covariance_type"] == "tied_spherical"
    torch.testing.assert_close(model.module.gmm.log_var, torch.log(gmm["covariances_"]).expand(32, 32))
    torch.testing.assert_close(torch.softmax(model.module.gmm.logits, 0), gmm["weights_"])
    assert_matches_bulkdgd(model, dec, gmm)
