"""The local null (`nofone.stats.local_null`): each calibration normal's own outlier share, the
shares of a sample's nearest calibration normals, its storage in the model folder, the registry
of nulls that `de` uses, and cross-fitting in `nofone train --cross-fit`."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from test_represent_de import random_model, write_dataset, write_representations

from nofone.errors import InputError
from nofone.io.artifact import CHECKSUMS
from nofone.models.dgd.model import DGD
from nofone.stats.local_null import NULL_FILE, fit_local_null, load_local_null, save_local_null
from nofone.stats.nb_tests import equal_tail_midp
from nofone.stats.nulls import resolve_null
from nofone.stats.outlier_null import OutlierNull, equal_tail_midp_outlier
from nofone.steps.de import DE_FILE, DEOptions, differential_expression

GENES = 2000


def _normals(rng, n: int, profile: np.ndarray, pi: float, tau: float = 1.0):
    """n normals around one expression profile, a share `pi` of genes off by exp(N(0, tau^2))."""
    mean = profile * rng.lognormal(0, 0.05, (n, 1)) * 20
    r = np.full(profile.shape, 10.0)
    off = np.where(rng.uniform(size=mean.shape) < pi, np.exp(rng.normal(0, tau, mean.shape)), 1.0)
    return rng.negative_binomial(r, r / (r + mean * off)), mean, np.broadcast_to(r, mean.shape)


@pytest.fixture(scope="module")
def two_tissues():
    """Calibration normals of two tissues: one fits its model well (0.2% of genes off), the other
    badly (5% off)."""
    rng = np.random.default_rng(3)
    quiet, noisy = rng.lognormal(0, 1.2, GENES), rng.lognormal(0, 1.2, GENES)
    a, b = _normals(rng, 30, quiet, 0.002), _normals(rng, 30, noisy, 0.05)
    x, mean, r = (np.concatenate(parts) for parts in zip(a, b))
    return x, mean, r, quiet, noisy


def test_each_normal_gets_its_own_share_and_a_sample_those_of_its_neighbours(two_tissues):
    x, mean, r, quiet, noisy = two_tissues
    null = fit_local_null(x, mean, r, k=3)
    assert 0.8 < null.tau < 1.25, null.tau
    assert np.median(null.shares[:30]) < 0.01 and 0.03 < np.median(null.shares[30:]) < 0.07, null.shares
    near_noisy = null.shares_for(noisy[None, :] * 25)
    near_quiet = null.shares_for(quiet[None, :] * 25)
    assert near_noisy[0] > 5 * near_quiet[0]
    assert set(null.neighbours(noisy[None, :] * 25)[0]) <= set(range(30, 60))


def test_local_pvalues_are_the_outlier_mixture_at_each_samples_share(two_tissues):
    x, mean, r, *_ = two_tissues
    null = fit_local_null(x, mean, r)
    share = np.array([0.0, 0.03])
    p = null.pvalues(x[:2], mean[:2], r[:2], share)
    np.testing.assert_allclose(p[0], equal_tail_midp(x[0], mean[0], r[0]), rtol=1e-10)
    np.testing.assert_allclose(p[1], equal_tail_midp_outlier(x[1], mean[1], r[1], OutlierNull(0.03, null.tau)),
                               rtol=1e-10)


def test_pvalues_of_calibration_normals_are_calibrated_in_new_normals(two_tissues):
    """New normals of the noisy tissue: the local null calls about what the FDR allows, the NB far more."""
    x, mean, r, _, noisy = two_tissues
    null = fit_local_null(x, mean, r)
    nx, nmean, nr = _normals(np.random.default_rng(11), 20, noisy, 0.05)
    p_local = null.pvalues(nx, nmean, nr, null.shares_for(nmean))
    p_nb = equal_tail_midp(nx, nmean, nr)
    assert (p_local < 1e-4).mean() < 0.002 < (p_nb < 1e-4).mean()


def _model_with_local_null(folder, source: str, seed: int = 4):
    """A random DGD saved with a local null fitted on normals drawn from it."""
    model = random_model(seed=seed)
    rng = np.random.default_rng(seed)
    z = model.module.gmm.means[rng.integers(0, model.n_components, 40)]
    with torch.no_grad():
        mean = (model.relative_means(z).double() * 200).numpy()
    r = np.broadcast_to(model.dispersion.double().numpy(), mean.shape)
    off = np.where(rng.uniform(size=mean.shape) < 0.03, np.exp(rng.normal(0, 1.0, mean.shape)), 1.0)
    x = rng.negative_binomial(r, r / (r + mean * off))
    folder.mkdir(parents=True)
    save_local_null(fit_local_null(x, mean, r), folder, source)
    info = {"training": {"outlier_null": OutlierNull(0.03, 1.0, 40, 1000).to_dict()}}
    DGD(model.module, model.genes, info).save(folder)
    return DGD.load(folder)


def test_stored_null_round_trips_and_tampering_is_refused(tmp_path, two_tissues):
    x, mean, r, *_ = two_tissues
    null = fit_local_null(x, mean, r)
    model = random_model(seed=1, n_genes=GENES)
    (tmp_path / "model").mkdir()
    save_local_null(null, tmp_path / "model", "cross-fit-5")
    model.save(tmp_path / "model")  # the checksums cover the null's file
    stored = load_local_null(tmp_path / "model")
    np.testing.assert_array_equal(stored.shares, null.shares)
    np.testing.assert_allclose(stored.coords, null.coords, rtol=1e-6)
    assert (stored.tau, stored.k, stored.scores.shape) == (null.tau, null.k, (60, GENES))
    assert load_local_null(tmp_path / "elsewhere") is None  # no null file: no local null
    path = tmp_path / "model" / NULL_FILE
    path.write_bytes(path.read_bytes()[:-8] + b"x" * 8)
    with pytest.raises(InputError, match=f"{NULL_FILE} does not match its checksum"):
        load_local_null(tmp_path / "model")


@pytest.mark.parametrize(("source", "expected"), [("cross-fit-5", "local"), ("heldout", "outlier")])
def test_auto_is_local_only_when_cross_fitted(tmp_path, source, expected):
    """Tens of early-stopping normals are too few to say which samples sit in noisy places
    (docs/null.md): auto takes the local null only when every normal calibrated it."""
    model = _model_with_local_null(tmp_path / "model", source)
    assert resolve_null("auto", "equal-tail-midp", model.info, tmp_path / "model").name == expected
    assert resolve_null("local", "equal-tail-midp", model.info, tmp_path / "model").local is not None
    assert resolve_null("auto", "density", model.info, tmp_path / "model").name == "nb"
    with pytest.raises(InputError, match="--null local needs --test equal-tail-midp"):
        resolve_null("local", "density", model.info, tmp_path / "model")


def test_de_with_the_local_null_tests_each_sample_at_its_neighbours_share(tmp_path):
    from nofone.steps.common import model_fingerprint

    model = _model_with_local_null(tmp_path / "model", "cross-fit-5")
    null = load_local_null(tmp_path / "model")
    rng = np.random.default_rng(8)
    z = model.module.gmm.means[:3]
    with torch.no_grad():
        mean = (model.relative_means(z).double() * 200).numpy()
    r = model.dispersion.double().numpy()
    counts = rng.negative_binomial(r, r / (r + mean))
    ids = ["a", "b", "c"]
    write_dataset(tmp_path / "data", counts, model.gene_ids, ids)
    write_representations(tmp_path / "reps", model, ids, z, np.full(3, 200.0), model_fingerprint(tmp_path / "model"))
    differential_expression(tmp_path / "model", tmp_path / "reps", tmp_path / "data", tmp_path / "de",
                            DEOptions(write_tsv=False, device="cpu"))
    report = json.loads((tmp_path / "de" / "de_report.json").read_text())
    assert report["null"] == "local" and report["local_null"]["n_samples"] == 40
    frame = pq.read_table(tmp_path / "de" / DE_FILE).to_pandas()
    for sample in ids:
        part = frame[frame["sample_id"] == sample]
        share = null.shares_for(part["normal_mean"].to_numpy()[None, :])
        expected = null.pvalues(part["count"].to_numpy()[None, :], part["normal_mean"].to_numpy()[None, :],
                                part["dispersion"].to_numpy()[None, :], share)[0]
        np.testing.assert_allclose(part["p_value"], expected, rtol=1e-9, err_msg=sample)


def test_a_model_without_a_local_null_is_refused_for_null_local(tmp_path):
    model = random_model(seed=2)
    DGD(model.module, model.genes, {}).save(tmp_path / "model")
    with pytest.raises(InputError, match=r"no local null.*--cross-fit"):
        resolve_null("local", "equal-tail-midp", {}, tmp_path / "model")
    assert (tmp_path / "model" / CHECKSUMS).is_file()
