"""The outlier null of `nofone de` (`--null outlier`, the default where a model has one): its fit,
its exact tails and its use in de."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from scipy import special, stats
from test_represent_de import random_model, write_dataset, write_representations

from nofone.errors import InputError
from nofone.models.dgd.model import DGD
from nofone.stats.lognormal_nb import midp_tails
from nofone.stats.nb_tests import equal_tail_midp
from nofone.stats.outlier_null import (
    FitValues,
    OutlierNull,
    equal_tail_midp_outlier,
    fit_outlier_null,
    min_callable_fold,
    min_pvalue_down_outlier,
)
from nofone.steps.de import DE_FILE, DEOptions, differential_expression


def _draw(rng, pi: float, tau: float, n: int = 10, g: int = 3000):
    mean = np.exp(rng.normal(4, 1.5, (n, g)))
    r = np.exp(rng.normal(np.log(8), 0.5, g))
    off = np.where(rng.uniform(size=mean.shape) < pi, np.exp(rng.normal(0, 1, mean.shape) * tau), 1.0)
    return rng.negative_binomial(r, r / (r + mean * off)), mean, r


def test_fit_recovers_planted_outliers_and_finds_none_in_plain_nb():
    rng = np.random.default_rng(1)
    null = fit_outlier_null(*_draw(rng, 0.03, 1.0))
    assert 0.02 < null.pi < 0.04 and 0.85 < null.tau < 1.15, null
    assert null.n_samples == 10 and null.n_values == 30_000
    plain = fit_outlier_null(*_draw(rng, 0.0, 0.0))
    assert plain.pi < 0.002, plain


def test_fit_likelihood_of_the_lognormal_part_matches_dense_integration():
    """The fit's ln E[NB(x; m e^(tau Z), r)]: narrow NBs (well-expressed genes, where 48 fixed
    nodes were up to 0.42 off on the log scale), wide ones, zeros and far tails, within 1e-5."""
    x = np.array([1998.0, 3740.0, 60_000.0, 0.0, 0.0, 5.0, 419_465.0, 40.0, 300.0])
    m = np.array([1986.0, 4454.0, 5000.0, 3.0, 900.0, 0.2, 130_615.0, 400.0, 10.0])
    r = np.array([86.3, 93.4, 300.0, 2.0, 30.0, 0.5, 0.247, 1e4, 20.0])
    tau = 0.81
    z = np.linspace(-14.0, 14.0, 40_001)
    log_phi = stats.norm.logpdf(z) + np.log(z[1] - z[0])
    expected = [special.logsumexp(stats.nbinom.logpmf(xi, ri, ri / (ri + mi * np.exp(tau * z))) + log_phi)
                for xi, mi, ri in zip(x, m, r, strict=True)]
    values = FitValues(*(torch.as_tensor(a) for a in (x, m, r)))
    got = values.log_lognormal_pmf(torch.tensor(tau, dtype=torch.float64))
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-5)


def test_mixture_pvalues_equal_the_mixture_of_scipys_nb_tails():
    """Equal-tail mid-p of (1 - pi) NB(m, r) + pi NB(m e, r), ln e ~ N(0, tau^2): scipy's NB
    tails mixed with the log-normal part's (whose accuracy tests/test_lognormal_nb.py checks),
    down to p ~ 1e-100."""
    rng = np.random.default_rng(2)
    null = OutlierNull(pi=0.02, tau=0.8)
    for _ in range(30):
        m, r = float(np.exp(rng.uniform(0, 7))), float(np.exp(rng.uniform(-1, 4)))
        for x in {0, int(m), int(m * rng.uniform(0, 3)), int(m * 20 + 30)}:
            p0 = r / (r + m)
            wide_lower, wide_upper = midp_tails(np.array([x]), np.array([m]), np.array([r]), null.tau)
            lower = (1 - null.pi) * (stats.nbinom.cdf(x - 1, r, p0) + 0.5 * stats.nbinom.pmf(x, r, p0))
            upper = (1 - null.pi) * (stats.nbinom.sf(x, r, p0) + 0.5 * stats.nbinom.pmf(x, r, p0))
            expected = min(1.0, 2 * min(lower + null.pi * wide_lower[0], upper + null.pi * wide_upper[0]))
            got = equal_tail_midp_outlier(np.array([x]), np.array([m]), np.array([r]), null)[0]
            if expected > 1e-100:
                assert got == pytest.approx(expected, rel=1e-7), (m, r, x)


def test_no_outliers_is_the_plain_test():
    rng = np.random.default_rng(3)
    x, m, r = _draw(rng, 0.0, 0.0, n=2, g=500)
    np.testing.assert_array_equal(equal_tail_midp_outlier(x, m, r, OutlierNull(0.0, 0.0)), equal_tail_midp(x, m, r))
    down, plain = min_pvalue_down_outlier(m, r, OutlierNull(0.05, 1.0)), equal_tail_midp(np.zeros_like(m), m, r)
    assert (down[plain < 1e-3] > plain[plain < 1e-3]).all()  # a wider null makes a 0 less surprising


def _model_with_null(tmp_path, null: OutlierNull | None):
    model = random_model(seed=4)
    info = {"training": {"outlier_null": null.to_dict()}} if null else {}
    DGD(model.module, model.genes, info).save(tmp_path / "model")
    return DGD.load(tmp_path / "model")


def test_de_with_the_outlier_null_calls_planted_de_but_not_normal_outliers(tmp_path):
    """Normals with 3% outlier genes (log-sd 1): the plain test calls them, the calibrated null
    (the default for a model that has one) hardly does, and a 64-fold change planted in 15 genes
    of a 'tumour' is still called."""
    from nofone.steps.common import model_fingerprint

    model = _model_with_null(tmp_path, OutlierNull(0.03, 1.0, 10, 6000))
    n, rng = 8, np.random.default_rng(5)
    z = model.module.gmm.means[torch.arange(n) % model.n_components]
    scale = np.full(n, 1000.0)
    with torch.no_grad():
        mean = (model.relative_means(z).double() * torch.as_tensor(scale)[:, None]).numpy()
    off = np.where(rng.uniform(size=mean.shape) < 0.03, np.exp(rng.normal(0, 1, mean.shape)), 1.0)
    r = model.dispersion.double().numpy()
    planted = np.flatnonzero((mean[0] > 30) & (r > 5))[:15]
    off[0] = 1.0
    off[0, planted] = 64.0
    counts = rng.negative_binomial(r, r / (r + mean * off))
    ids = ["tumour"] + [f"normal{i}" for i in range(1, n)]
    write_dataset(tmp_path / "data", counts, model.gene_ids, ids)
    write_representations(tmp_path / "reps", model, ids, z, scale, model_fingerprint(tmp_path / "model"))
    plain = differential_expression(tmp_path / "model", tmp_path / "reps", tmp_path / "data", tmp_path / "plain",
                                    DEOptions(null="nb", write_tsv=False, device="cpu")).set_index("sample_id")
    mixture = differential_expression(tmp_path / "model", tmp_path / "reps", tmp_path / "data", tmp_path / "mix",
                                      DEOptions(write_tsv=False, device="cpu")).set_index("sample_id")
    normals = [s for s in ids if s != "tumour"]
    assert plain.loc[normals, "n_de"].mean() > 5 * max(mixture.loc[normals, "n_de"].mean(), 0.5)
    de = pq.read_table(tmp_path / "mix" / DE_FILE).to_pandas()
    called = de[(de["sample_id"] == "tumour") & (de["q_value"] < 0.01) & (de["log2_fold_change"] > 1)]
    assert set(np.asarray(model.gene_ids)[planted]) <= set(called["gene_id"])
    folds = json.loads((tmp_path / "mix" / "de_report.json").read_text())["min_callable_fold"]
    n_genes = len(model.gene_ids)
    assert folds == {"only_call": pytest.approx(min_callable_fold(OutlierNull(0.03, 1.0), 1 / n_genes, 0.01)),
                     "five_percent_called": pytest.approx(min_callable_fold(OutlierNull(0.03, 1.0), 0.05, 0.01))}
    assert 1 < folds["five_percent_called"] < folds["only_call"] < 64  # the planted 64-fold genes are callable
    assert json.loads((tmp_path / "plain" / "de_report.json").read_text())["min_callable_fold"] is None


def test_min_callable_fold_bounds_the_mixtures_pvalues():
    """No gene reaches BH's threshold q k / G with a change below the fold, up or down, however
    narrow or wide its NB; a well-expressed gene (narrow NB) just beyond it does."""
    null, n_genes, q = OutlierNull(0.0231, 0.86), 16_956, 0.01
    for share in (1 / n_genes, 0.05):
        fold = min_callable_fold(null, share, q)
        threshold = q * share
        for m, r in ((1000.0, 1e4), (1000.0, 50.0), (1000.0, 5.0), (1000.0, 1.0), (50.0, 5.0)):
            below = equal_tail_midp_outlier(np.round(m * np.array([0.9 * fold, 1 / (0.9 * fold)])), m, r, null)
            assert (below > threshold).all(), (share, m, r, below)
        above = equal_tail_midp_outlier(np.round(1e4 * np.array([1.15 * fold, 1 / (1.15 * fold)])), 1e4, 1e4, null)
        assert (above <= threshold).all(), (share, above)
    assert min_callable_fold(null, 1 / n_genes, q) == pytest.approx(37.4, abs=0.1)
    assert min_callable_fold(OutlierNull(0.0, 0.0), 0.05, q) == 1.0
    assert min_callable_fold(null, 0.9, 0.5) == 1.0  # a threshold the mixture's floor does not reach


def test_outlier_null_needs_a_calibrated_model_and_the_equal_tail_test(tmp_path):
    """--null outlier on a model without one, or with the density rule, and unknown nulls are
    refused before anything is written; the default (auto) falls back to the NB there and says so."""
    model = _model_with_null(tmp_path, None)
    from nofone.steps.common import model_fingerprint

    z = model.module.gmm.means[:2]
    write_dataset(tmp_path / "data", np.ones((2, model.module.n_genes), np.int64), model.gene_ids, ["a", "b"])
    write_representations(tmp_path / "reps", model, ["a", "b"], z, np.full(2, 100.0),
                          model_fingerprint(tmp_path / "model"))
    args = (tmp_path / "model", tmp_path / "reps", tmp_path / "data")
    with pytest.raises(InputError, match=r"no calibrated outlier null.*--null nb"):
        differential_expression(*args, tmp_path / "e1", DEOptions(null="outlier", device="cpu"))
    for null in ("outlier", "model-error"):
        with pytest.raises(InputError, match=f"--null {null} needs --test equal-tail-midp"):
            differential_expression(*args, tmp_path / "e2", DEOptions(null=null, test="density", device="cpu"))
    with pytest.raises(InputError, match="unknown null 'gamma'; use one of auto, nb, outlier, local, model-error"):
        differential_expression(*args, tmp_path / "e3", DEOptions(null="gamma", device="cpu"))
    assert not any((tmp_path / f"e{i}").exists() for i in (1, 2, 3))
    differential_expression(*args, tmp_path / "auto", DEOptions(write_tsv=False, device="cpu"))
    report = json.loads((tmp_path / "auto" / "de_report.json").read_text())
    assert (report["null"], report["null_requested"], report["outlier_null"]) == ("nb", "auto", None)


def test_the_default_null_is_the_calibrated_one_with_the_equal_tail_test_only(tmp_path):
    """auto: the stored mixture with the equal-tail test (same p-values as --null outlier), the NB
    with the density rule; the report names what was used."""
    from nofone.steps.common import model_fingerprint

    model = _model_with_null(tmp_path, OutlierNull(0.02, 0.8, 30, 1000))
    rng = np.random.default_rng(2)
    z = model.module.gmm.means[:3]
    counts = rng.negative_binomial(5, 0.05, size=(3, model.module.n_genes))
    write_dataset(tmp_path / "data", counts, model.gene_ids, ["a", "b", "c"])
    write_representations(tmp_path / "reps", model, ["a", "b", "c"], z, np.full(3, 100.0),
                          model_fingerprint(tmp_path / "model"))
    args = (tmp_path / "model", tmp_path / "reps", tmp_path / "data")
    runs = {"auto": {}, "outlier": {"null": "outlier"}, "nb": {"null": "nb"}, "density": {"test": "density"}}
    p = {}
    for name, kwargs in runs.items():
        differential_expression(*args, tmp_path / name, DEOptions(write_tsv=False, device="cpu", **kwargs))
        p[name] = pq.read_table(tmp_path / name / DE_FILE).to_pandas()["p_value"].to_numpy()
        report = json.loads((tmp_path / name / "de_report.json").read_text())
        expected = "outlier" if name in ("auto", "outlier") else "nb"
        assert report["null"] == expected, (name, report)
        assert (report["outlier_null"] is not None) == (expected == "outlier")
    np.testing.assert_array_equal(p["auto"], p["outlier"])
    assert (p["auto"] >= 0.98 * p["nb"]).all() and (p["auto"] > p["nb"]).mean() > 0.5


@pytest.mark.parametrize(("args", "message"), [
    (["--null", "gamma"], "unknown null 'gamma'"),
    (["--null", "outlier", "--test", "density"], "--null outlier needs --test equal-tail-midp"),
])
def test_run_refuses_a_null_it_cannot_use_before_any_work(tmp_path, runner, args, message):
    """`nofone run` checks the null before ingest and training, not after an hour of them."""
    from nofone.cli.app import app

    sheet = tmp_path / "sheet.csv"
    sheet.write_text("sample,counts,condition\na,a.tsv,normal\n")
    result = runner.invoke(app, ["run", "--samplesheet", str(sheet), "--outdir", str(tmp_path / "out"), *args])
    assert result.exit_code != 0 and message in result.output, result.output
    assert not (tmp_path / "out").exists()
