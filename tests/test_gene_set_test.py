"""The per-sample gene-set test on the simulated atlas: its null is calibrated in normals that did
not calibrate it, and coordinated modest shifts no single gene shows are found.

The "model" here is the simulation's own decoder at a latent point halfway between the sample's
and its tissue's centre: its closest normals miss part of every sample's position, so healthy
genes deviate from them *together* (through the latent), as they do from a trained model's.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from nofone.simulate import SimulationConfig
from nofone.simulate.atlas import build_gene_model, draw_nb, draw_normals, log_means
from nofone.stats.gene_set_test import SetTestOptions, gene_set_tests, leading_genes, set_matrix
from nofone.stats.local_null import LocalNull, normal_scores, placement
from nofone.stats.multiple_testing import bh_adjust
from nofone.stats.nb_tests import equal_tail_midp, log2_fold_change

CONFIG = SimulationConfig(tissues=4, samples_per_tissue=110, genes=800, heldout_per_tissue=0, seed=11)
N_CAL = 240  # calibration normals; the other 200 are scored


@pytest.fixture(scope="module")
def atlas():
    model = build_gene_model(CONFIG)
    samples = draw_normals(CONFIG, model)
    true = np.exp(log_means(model, samples.z, samples.log_size_factor))
    centre = model.tissue_means[samples.tissue]
    closest = np.exp(log_means(model, centre + 0.5 * (samples.z - centre), samples.log_size_factor))
    rng = np.random.default_rng(0)
    x = draw_nb(rng, true, model.nb_size).astype(np.float64)
    r = np.broadcast_to(model.nb_size, x.shape)
    centre_, basis, coords = placement(closest[:N_CAL])
    # the calibration normals' scores and places (the outlier shares of `fit_local_null` play no
    # part in the gene-set test, and their fit would take most of the test's time)
    null = LocalNull(tau=0.0, shares=np.zeros(N_CAL), coords=coords, centre=centre_, basis=basis,
                     scores=normal_scores(x[:N_CAL], closest[:N_CAL], r[:N_CAL]).astype(np.float16))
    # sets: every other hidden unit's 30 most positively loaded expressed genes (they move
    # together in healthy samples) and 8 random sets of 25 genes
    expressed = np.flatnonzero(true.mean(0) > 5)
    programmes = [np.sort(expressed[np.argsort(-model.w_out[expressed, h])[:30]])
                  for h in range(0, model.w_out.shape[1], 2)]
    random_sets = [np.sort(rng.choice(expressed, 25, replace=False)) for _ in range(8)]
    return {"model": model, "true": true, "closest": closest, "x": x, "r": r, "null": null,
            "programmes": programmes, "sets": programmes + random_sets, "expressed": expressed}


def _scored(atlas):
    rows = slice(N_CAL, None)
    return atlas["x"][rows], atlas["closest"][rows], atlas["r"][rows], atlas["true"][rows]


def test_the_null_is_calibrated_in_normals_that_did_not_calibrate_it(atlas):
    x, mean, r, _ = _scored(atlas)
    res = gene_set_tests(normal_scores(x, mean, r), mean, atlas["null"], atlas["sets"])
    p = res.p_value.ravel()
    assert 0.02 <= (p < 0.05).mean() <= 0.07
    assert (p < 0.01).mean() <= 0.02
    # each set's p-values over the 200 scored normals: none far from uniform (Bonferroni over sets)
    ks = np.array([stats.kstest(res.p_value[:, s], "uniform").pvalue for s in range(p.size // len(x))])
    assert ks.min() > 0.001 / len(ks)
    # false set calls: BH within a sample keeps the share of normals with any call near the level
    for level in (0.05, 0.01):
        any_call = (res.q_value < level).any(1)
        assert any_call.mean() <= level + 0.04
    assert (res.q_value < 0.01).sum(1).mean() <= 0.05


def test_a_null_that_takes_genes_as_independent_is_not_calibrated(atlas):
    """What the calibration normals are for: the healthy correlation of each programme's genes
    makes its mean score vary several times more than independent genes would."""
    x, mean, r, _ = _scored(atlas)
    z = normal_scores(x, mean, r)
    matrix = set_matrix(atlas["programmes"], np.ones(z.shape[1]))
    naive = (z @ matrix.T) / (z.std(1, keepdims=True) / np.sqrt(30))
    assert (2 * stats.norm.sf(np.abs(naive)) < 0.05).mean() > 0.12  # over twice the nominal share
    res = gene_set_tests(z, mean, atlas["null"], atlas["programmes"])
    assert (res.p_value < 0.05).mean() < 0.08


@pytest.mark.parametrize("fold", [1.5, 1 / 1.5])
def test_planted_modest_shifts_of_a_set_are_found_though_no_gene_is(atlas, fold):
    x, mean, r, true = _scored(atlas)
    rng = np.random.default_rng(7)
    well = atlas["expressed"][true[:, atlas["expressed"]].min(0) > 30]
    well = np.setdiff1d(well, np.concatenate(atlas["programmes"]))
    planted = np.sort(rng.choice(well, 40, replace=False))
    shifted = true.copy()
    shifted[:, planted] *= fold
    x = x.copy()
    x[:, planted] = draw_nb(rng, shifted[:, planted], atlas["model"].nb_size[planted])
    # each gene alone: de's call (the NB test's q < 0.01, BH over the sample's genes, and
    # |log2FC| > 1) catches almost none of them
    q_genes = bh_adjust(equal_tail_midp(x, mean, r), axis=1)
    called = (q_genes < 0.01) & (np.abs(log2_fold_change(x, mean)) > 1)
    assert called[:, planted].mean() < 0.05
    sets = [*atlas["sets"], planted]
    res = gene_set_tests(normal_scores(x, mean, r), mean, atlas["null"], sets)
    found = (res.q_value[:, -1] < 0.01) & (np.sign(res.standardized[:, -1]) == np.sign(np.log(fold)))
    assert found.mean() > 0.8
    # the sets that share no gene with it stay as quiet as in unshifted normals
    apart = [s for s, genes in enumerate(atlas["sets"]) if not np.isin(genes, planted).any()]
    assert len(apart) > 10
    assert (res.q_value[:, apart] < 0.01).sum(1).mean() <= 0.1


def test_unmeasured_genes_leave_the_set_in_the_sample_and_in_its_null(atlas):
    """Exactly so for the plain mean; with centring and healthy factors (the default) an
    unmeasured gene still counts in the calibration normals' centring and factors, so nearly."""
    x, mean, r, _ = _scored(atlas)
    z = normal_scores(x[:4], mean[:4], r[:4])
    measured = np.ones_like(z, dtype=bool)
    gone = atlas["sets"][0][:10]
    measured[1, gone] = False
    z_without = z.copy()
    z_without[1, gone] = 0.0
    kept = [np.setdiff1d(s, gone) for s in atlas["sets"]]
    for options, tolerance in ((SetTestOptions(centred=False, factors=0), 1e-7), (SetTestOptions(), 0.05)):
        both = gene_set_tests(z, mean[:4], atlas["null"], atlas["sets"], measured, options)
        alone = gene_set_tests(z_without[1:2], mean[1:2], atlas["null"], kept, options=options)
        np.testing.assert_allclose(both.standardized[1], alone.standardized[0], rtol=tolerance, atol=tolerance)
        full = gene_set_tests(z[:1], mean[:1], atlas["null"], atlas["sets"], options=options)
        np.testing.assert_allclose(both.p_value[0], full.p_value[0])


def test_options_and_leading_genes(atlas):
    x, mean, r, _ = _scored(atlas)
    z = normal_scores(x[:20], mean[:20], r[:20])
    plain = gene_set_tests(z, mean[:20], atlas["null"], atlas["sets"])
    global_only = gene_set_tests(z, mean[:20], atlas["null"], atlas["sets"], options=SetTestOptions(local_scale=False))
    assert (plain.scale >= global_only.scale - 1e-12).all()  # the local spread only widens the null
    assert plain.df == 119 and global_only.df == N_CAL - 1
    weighted = gene_set_tests(z, mean[:20], atlas["null"], atlas["sets"],
                              options=SetTestOptions(weighting="inverse-sd"))
    assert not np.allclose(weighted.statistic, plain.statistic)
    with pytest.raises(ValueError, match="weighting"):
        gene_set_tests(z, mean[:20], atlas["null"], atlas["sets"], options=SetTestOptions(weighting="other"))
    names = np.array([f"G{i}" for i in range(z.shape[1])])
    genes = atlas["sets"][0]
    top = leading_genes(z[0], genes, 1.0, names, n=3)
    expected = [f"G{g}" for g in genes[np.argsort(-z[0, genes], kind="stable")[:3]] if z[0, g] > 0]
    assert top == expected
