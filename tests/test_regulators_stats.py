"""The statistics under `nofone explain`: DeepLIFT per trunk unit against captum, the linearity that
makes the permutation null cheap, the exact permutation moments against refitting the head on
shuffled profiles, and the calibration of the p-values under the null."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nofone.regulators.attribution import check_attributions, deeplift, unit_attribution_means
from nofone.regulators.head import HeadInputs, fit_profile, permutation_moments
from nofone.regulators.knockout import ProfileModel, knockouts
from nofone.regulators.network import DEcodeNet
from nofone.regulators.scaling import RobustScaler

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def trained_like_net(n_features: int, n_targets: int = 3, layers: int = 2, seed: int = 0) -> DEcodeNet:
    """A network whose batch-norm statistics are not the identity (as after training)."""
    torch.manual_seed(seed)
    net = DEcodeNet(n_features, n_targets, hidden=24, layers=layers)
    net.train()
    with torch.no_grad():
        for _ in range(5):
            net(torch.randn(256, n_features) * 2 + 0.5)
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm1d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
    return net.eval()


def sparse_features(n_genes: int, n_features: int, seed: int = 0, dense: int = 2) -> np.ndarray:
    """Mostly-zero binding columns and a few dense (structure-like) ones, already scaled."""
    rng = np.random.default_rng(seed)
    x = (rng.random((n_genes, n_features)) < 0.1) * rng.exponential(1.0, (n_genes, n_features))
    x[:, -dense:] = rng.normal(size=(n_genes, dense))
    return x.astype(np.float32)


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_unit_attribution_means_equal_captum_deeplift(layers):
    net = trained_like_net(15, layers=layers)
    x = sparse_features(400, 15)
    reference = np.zeros(15, np.float32)
    means = unit_attribution_means(net.trunk, x, reference, chunk=128)
    for unit in (0, 7, 23):
        per_gene, delta = deeplift(net.trunk, x, reference, target=unit)
        assert np.abs(delta).max() < 1e-5  # captum's own completeness
        np.testing.assert_allclose(means[unit], per_gene.mean(0), atol=1e-6, rtol=1e-4)


def test_attribution_of_a_linear_readout_is_the_readout_of_unit_attributions():
    """What the permutation null relies on: DeepLIFT through the head = head weights x unit attributions."""
    net = trained_like_net(12, n_targets=2)
    x = sparse_features(300, 12, seed=1)
    reference = np.zeros(12, np.float32)
    means = unit_attribution_means(net.trunk, x, reference)
    for target in (0, 1):
        per_gene, _ = deeplift(net, x, reference, target=target)
        np.testing.assert_allclose(net.head.weight.detach().double().numpy()[target] @ means, per_gene.mean(0),
                                   atol=1e-6, rtol=1e-4)


def test_checks_report_completeness_and_agreement_with_integrated_gradients():
    net = trained_like_net(10)
    x = sparse_features(300, 10, seed=2)
    attributions, check = check_attributions(net, x, np.zeros(10, np.float32), target=0, max_genes=100)
    assert attributions.shape == (300, 10)
    assert check.completeness_max_abs < 1e-4 * max(1.0, check.prediction_range)
    assert check.ig_spearman > 0.8


def head_inputs(n_genes: int = 800, n_features: int = 20, n_units: int = 8, seed: int = 0,
                chromosomes: int = 6) -> HeadInputs:
    rng = np.random.default_rng(seed)
    scaled = sparse_features(n_genes, n_features, seed).astype(np.float64)
    units = np.tanh(scaled @ rng.normal(0, 0.5, (n_features, n_units)))
    return HeadInputs(units, scaled, rng.normal(0, 0.1, (n_units, n_features)), scaled.mean(0),
                      rng.integers(0, chromosomes, n_genes).astype(str))


def test_permutation_moments_equal_monte_carlo():
    rng = np.random.default_rng(3)
    c = rng.normal(size=(60, 4)) * rng.exponential(1, (60, 1))
    y = rng.standard_t(3, 60)
    strata = rng.integers(0, 3, 60)
    mean, var = permutation_moments(c, y, strata)
    draws = []
    for _ in range(20000):
        permuted = y.copy()
        for s in np.unique(strata):
            rows = np.flatnonzero(strata == s)
            permuted[rows] = rng.permutation(y[rows])
        draws.append(c.T @ permuted)
    draws = np.array(draws)
    np.testing.assert_allclose(mean, draws.mean(0), atol=0.05 * np.sqrt(var).max())
    np.testing.assert_allclose(var, draws.var(0), rtol=0.05)


def test_closed_form_null_is_the_head_refitted_on_shuffled_profiles():
    """For a fixed penalty, refitting the head on profiles shuffled within chromosome gives the
    attribution distribution whose mean and variance fit_profile computes in closed form."""
    inputs = head_inputs(n_genes=300, n_features=8, n_units=4, seed=4)
    rng = np.random.default_rng(5)
    y = inputs.scaled[:, 0] * 0.5 + rng.normal(size=300)
    weights = rng.uniform(0.5, 2.0, 300)
    fit = fit_profile(inputs, y, weights, penalty=0.1)
    refits = []
    for _ in range(600):
        shuffled = y.copy()
        for s in np.unique(inputs.strata):
            rows = np.flatnonzero(inputs.strata == s)
            shuffled[rows] = rng.permutation(y[rows])
        refits.append(fit_profile(inputs, shuffled, weights, penalty=0.1).attribution)
    refits = np.array(refits)
    np.testing.assert_allclose(fit.null_sd, refits.std(0), rtol=0.1)
    np.testing.assert_allclose(fit.null_mean, refits.mean(0), atol=0.15 * fit.null_sd.max())


@pytest.mark.parametrize("use_units", [True, False])
def test_p_values_are_uniform_under_the_null(use_units):
    """Profiles unrelated to the features (heavy-tailed, weighted): about 5% of p < 0.05."""
    p_values = []
    for seed in range(12):
        inputs = head_inputs(n_genes=600, n_features=25, seed=seed)
        if not use_units:
            inputs = inputs.features_only()
        rng = np.random.default_rng(100 + seed)
        y = rng.standard_t(4, 600) * 0.5
        p_values.append(fit_profile(inputs, y, rng.uniform(0.2, 2.0, 600), seed=seed).p_value)
    p = np.concatenate(p_values)  # 300 tests
    assert 0.01 < (p < 0.05).mean() < 0.09
    assert 0.06 < (p < 0.2).mean() < 0.32


def test_a_planted_feature_is_found_and_its_direction_kept():
    inputs = head_inputs(n_genes=1000, n_features=20, seed=7).features_only()
    rng = np.random.default_rng(8)
    y = -0.8 * inputs.scaled[:, 3] + 0.6 * inputs.scaled[:, 11] + rng.normal(0, 0.5, 1000)
    fit = fit_profile(inputs, y, np.ones(1000))
    assert set(np.argsort(fit.p_value)[:2]) == {3, 11}
    assert fit.q_value[3] < 1e-6 and fit.q_value[11] < 1e-6
    assert fit.attribution[3] < 0 < fit.attribution[11]
    assert 0.15 < fit.heldout_spearman <= fit.fitted_spearman  # most genes bind neither: noise alone


def test_knockout_of_a_linear_head_removes_exactly_its_contribution():
    rng = np.random.default_rng(9)
    raw = (rng.random((200, 5)) < 0.3) * rng.poisson(4, (200, 5)).astype(float)
    scaler = RobustScaler.fit(raw)
    scaled = scaler.transform(raw).astype(np.float64)
    y = 0.7 * scaled[:, 2] + rng.normal(0, 0.1, 200)
    inputs = HeadInputs(np.zeros((200, 0)), scaled, np.zeros((0, 5)), scaled.mean(0), np.array(["1"] * 200))
    fit = fit_profile(inputs, y, np.ones(200), penalty=1e-4)
    import pandas as pd

    genes = pd.DataFrame({"gene_id": [f"G{i}" for i in range(200)], "gene_name": [f"N{i}" for i in range(200)]})
    effects, per_gene = knockouts(ProfileModel(None, fit), raw, scaler, np.array([2, 0]), list("abcde"), genes, top=1)
    bound = raw[:, 2] > 0
    expected = fit.feature_weights[2] * (scaler.transform(np.zeros((1, 5)))[0, 2] - scaled[bound, 2])
    assert effects.loc[0, "n_targets"] == bound.sum()
    np.testing.assert_allclose(effects.loc[0, "knockout_mean_change"], expected.mean(), rtol=1e-4)
    assert effects.loc[0, "knockout_mean_change"] < 0  # binding raised the profile; knocking it out lowers it
    assert set(per_gene["feature"]) == {"c"} and len(per_gene) == bound.sum()


def test_robust_scaler_keeps_no_binding_finite_and_structure_median_at_zero():
    rng = np.random.default_rng(10)
    sparse = (rng.random(1000) < 0.05) * rng.poisson(5, 1000)
    dense = rng.lognormal(8, 1, 1000)
    signed = rng.normal(0, 2, 1000)
    scaler = RobustScaler.fit(np.column_stack([sparse, dense, signed]).astype(float))
    assert scaler.log1p.tolist() == [True, True, False]
    assert scaler.scale[0] > 0 and np.isfinite(scaler.scale).all()
    reference = scaler.transform(np.array([[0.0, np.median(dense), np.median(signed)]]))[0]
    assert reference[0] == pytest.approx(0.0)  # a sparse feature's median is "no binding"
    assert reference[1] == pytest.approx(0.0, abs=1e-6) and reference[2] == pytest.approx(0.0, abs=1e-6)
    bound = scaler.transform(np.column_stack([sparse, dense, signed]).astype(float))[sparse > 0, 0]
    assert 0.3 < np.median(bound) < 3  # non-zero binding on a unit scale, not 1/sd of a mostly-zero column
