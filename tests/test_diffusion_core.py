"""The diffusion model's pieces on their own: the cosine schedule's closed forms, DDIM determinism
and exact inversion at small steps, the factor-model skip, EMA, the count space's round trip,
the per-gene NB fit, the config."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import write
from scipy import optimize, stats

from nofone.errors import InputError
from nofone.models.diffusion.calibrate import fit_gene_nb, plant_changes
from nofone.models.diffusion.config import PRESETS, load_config
from nofone.models.diffusion.gaussian import GaussianSkip, choose_rank, fit_factor_model
from nofone.models.diffusion.schedule import (
    Schedule,
    cosine_alpha_bar,
    cosine_f,
    ddim_denoise,
    ddim_invert,
    fixed_draws,
    step_grid,
)
from nofone.models.diffusion.transform import CountSpace

pytestmark = pytest.mark.usefixtures("one_thread")


# -- the schedule -----------------------------------------------------------------------------------


def test_cosine_alpha_bar_has_its_closed_form_until_the_clip():
    T = 1000
    ab = cosine_alpha_bar(T)
    t = np.arange(T + 1)
    closed = cosine_f(t / T) / cosine_f(0.0)
    assert ab[0] == 1.0
    assert np.all(np.diff(ab) < 0)
    betas = 1 - ab[1:] / ab[:-1]
    assert betas.max() <= 0.999 + 1e-12
    unclipped = np.flatnonzero(betas < 0.999)
    last = unclipped.max()
    np.testing.assert_allclose(ab[: last + 1], closed[: last + 1], rtol=1e-10)
    assert last >= T - 5 and ab[T] < 1e-5  # only the very last steps are clipped


def test_add_noise_and_predict_x0_invert_each_other():
    s = Schedule(100)
    y = torch.randn(5, 7, dtype=torch.float64)
    eps = torch.randn(5, 7, dtype=torch.float64)
    t = torch.tensor([1, 10, 50, 90, 100])
    noisy = s.add_noise(y, t, eps)
    torch.testing.assert_close(s.predict_x0(noisy, t, eps), y)
    a = s.alpha_bar[t].unsqueeze(-1)
    torch.testing.assert_close(noisy, a.sqrt() * y + (1 - a).sqrt() * eps)


def test_step_grid_runs_evenly_without_repeats():
    assert step_grid(10, 0, 5) == [10, 8, 6, 4, 2, 0]
    assert step_grid(0, 3, 10) == [0, 1, 2, 3]
    grid = step_grid(700, 0, 50)
    assert grid[0] == 700 and grid[-1] == 0 and len(grid) == 51


def test_fixed_draws_cover_the_steps_and_repeat_exactly():
    rows, t, eps = fixed_draws(3, 8, 4, 1000, seed=5)
    rows2, t2, eps2 = fixed_draws(3, 8, 4, 1000, seed=5)
    assert torch.equal(t, t2) and torch.equal(eps, eps2) and torch.equal(rows, rows2)
    for i in range(3):  # one step in each eighth of 1..1000
        slices = ((t[rows == i] - 1) // 125).sort().values
        assert slices.tolist() == list(range(8))


def _gaussian(n_genes: int = 12, rank: int = 3, seed: int = 0):
    """A factor model and its exact noise prediction (a smooth eps function for DDIM tests)."""
    g = torch.Generator().manual_seed(seed)
    skip = GaussianSkip(n_genes, rank)
    skip.loadings = (torch.randn(n_genes, rank, generator=g) * 0.8).expand(2, -1, -1).clone()
    skip.residual_variance = (0.2 + torch.rand(n_genes, generator=g)).expand(2, -1).clone()
    schedule = Schedule(1000)

    def eps_fn(y, t):
        return skip(y, t, schedule.alpha_bar)

    return skip, schedule, eps_fn


def test_factor_skip_matches_the_dense_posterior():
    skip, schedule, _ = _gaussian()
    w, d = skip.loadings[0].double(), skip.residual_variance[0].double()
    cov = w @ w.T + torch.diag(d)
    y = torch.randn(4, 12)
    for t in (5, 300, 900):
        a = float(schedule.alpha_bar[t])
        dense = math.sqrt(1 - a) * torch.linalg.solve(a * cov + (1 - a) * torch.eye(12, dtype=torch.float64),
                                                      y.double().T).T
        torch.testing.assert_close(skip(y, torch.full((4,), t), schedule.alpha_bar).double(), dense,
                                   rtol=1e-4, atol=1e-5)


def test_ddim_is_deterministic_and_inverts_exactly_at_small_steps():
    skip, schedule, eps_fn = _gaussian()
    cov = skip.loadings[0] @ skip.loadings[0].T + torch.diag(skip.residual_variance[0])
    y = torch.distributions.MultivariateNormal(torch.zeros(12), cov).sample((6,))
    errors = {}
    for steps in (10, 100, 400):
        latent = ddim_invert(schedule, eps_fn, y, 600, steps)
        back = ddim_denoise(schedule, eps_fn, latent, 600, steps)
        again = ddim_denoise(schedule, eps_fn, ddim_invert(schedule, eps_fn, y, 600, steps), 600, steps)
        assert torch.equal(back, again)
        errors[steps] = float((back - y).abs().max())
    assert errors[400] < errors[100] < errors[10]
    assert errors[10] / errors[100] > 5  # first order in the step size
    assert errors[400] < 0.01 * float(y.abs().max())


def test_ddim_samples_from_the_gaussian_it_was_given():
    skip, schedule, eps_fn = _gaussian(n_genes=6, rank=2, seed=3)
    cov = skip.loadings[0] @ skip.loadings[0].T + torch.diag(skip.residual_variance[0])
    g = torch.Generator().manual_seed(0)
    samples = ddim_denoise(schedule, eps_fn, torch.randn(4000, 6, generator=g), 1000, 100)
    torch.testing.assert_close(torch.cov(samples.T), cov, atol=0.12, rtol=0.1)


def test_factor_model_recovers_the_covariance_and_its_rank_is_chosen_on_heldout():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(40, 3, generator=g)
    data = torch.randn(600, 3, generator=g) @ w.T + 0.5 * torch.randn(600, 40, generator=g)
    loadings, d = fit_factor_model(data[:500], 3)
    cov = torch.cov(data[:500].T, correction=0)
    fitted = loadings @ loadings.T + torch.diag(d)
    assert float((fitted - cov).abs().max() / cov.abs().max()) < 0.15
    rank, table = choose_rank(data[:500], None, data[500:], None, None, 0, 1000, draws=8, seed=0)
    assert rank in (2, 4) and {row["rank"] for row in table} >= {0, 1, 2, 4, 8}


# -- EMA and the count space ---------------------------------------------------------------------------


def test_ema_follows_the_warm_up_formula():
    from nofone.models.diffusion.train import DiffusionPlan

    class Stub:
        pass

    plan = Stub()
    plan.config = PRESETS["cpu"]
    ema, online = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    plan.module = Stub()
    plan.module.denoiser, plan.online = ema, online
    plan.ema_updates = torch.zeros((), dtype=torch.long)
    before = [p.detach().clone() for p in ema.parameters()]
    DiffusionPlan.update_ema(plan)  # n = 0: decay min(0.999, 1 / 10)
    for b, e, o in zip(before, ema.parameters(), online.parameters()):
        torch.testing.assert_close(e, 0.1 * b + 0.9 * o)
    plan.ema_updates.fill_(10**6)
    before = [p.detach().clone() for p in ema.parameters()]
    DiffusionPlan.update_ema(plan)
    for b, e, o in zip(before, ema.parameters(), online.parameters()):
        torch.testing.assert_close(e, 0.999 * b + 0.001 * o)


def _counts(n=40, g=30, seed=0):
    rng = np.random.default_rng(seed)
    mean = np.exp(rng.uniform(0, 7, g))[None] * np.exp(rng.normal(0, 0.3, (n, 1)))
    return rng.negative_binomial(5, 5 / (5 + mean)).astype(np.int64)


def test_count_space_round_trip_and_standardisation():
    counts = _counts()
    space = CountSpace(counts.shape[1], clamp=50.0)
    sf = space.fit(counts, None, "auto", 1e-3)
    x = torch.as_tensor(counts, dtype=torch.float64)
    y = space(x, torch.as_tensor(sf))
    assert y.dtype == torch.float32
    np.testing.assert_allclose(y.double().mean(0).numpy(), 0, atol=1e-5)
    np.testing.assert_allclose(y.double().std(0, unbiased=False).numpy(), 1, atol=1e-4)
    back = space.relative_mean(y) * torch.as_tensor(sf).unsqueeze(-1)
    mask = counts > 0
    np.testing.assert_allclose(back.numpy()[mask], counts[mask], rtol=1e-4)
    torch.testing.assert_close(space.size_factors(x), torch.as_tensor(sf))


def test_count_space_clamps_and_masks():
    counts = _counts()
    space = CountSpace(counts.shape[1], clamp=3.0)
    space.fit(counts, None, "auto", 0.1)
    x = torch.as_tensor(counts, dtype=torch.float64)
    x[0, 0] = 1e9
    measured = torch.ones_like(x, dtype=torch.bool)
    measured[1, :5] = False
    y = space(x, space.size_factors(x, measured), measured)
    assert float(y.abs().max()) <= 3.0 and float(y[0, 0]) == 3.0
    assert torch.all(y[1, :5] == 0)


def test_plant_changes_only_touches_expressed_genes():
    counts = _counts(5, 200)
    sf = np.ones(5)
    planted, mask = plant_changes(counts, sf, 0.1, 4.0, seed=0)
    ratio = planted[mask] / counts[mask]
    assert set(np.round(ratio, 6)) <= {4.0, 0.25}
    assert np.all(counts[mask] >= 10) and np.array_equal(planted[~mask], counts[~mask])


def test_gene_nb_fit_recovers_offsets_and_dispersions():
    rng = np.random.default_rng(2)
    n, g = 400, 6
    r = np.array([0.5, 2.0, 5.0, 20.0, 3.0, 1.0])
    mean = np.exp(rng.uniform(2, 6, (n, g)))
    true_offset = np.array([0.0, 0.3, -0.4, 0.1, 0.0, -0.2])
    x = rng.negative_binomial(r, r / (r + mean * np.exp(true_offset)))
    offset, log_r = fit_gene_nb(torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(mean))
    np.testing.assert_allclose(offset.numpy(), true_offset, atol=0.1)
    np.testing.assert_allclose(np.exp(log_r.numpy()), r, rtol=0.3)
    # against a direct maximum-likelihood fit of one gene (the priors are weak at n = 400)
    j = 2

    def nll(p):
        size = np.exp(p[1])
        return -stats.nbinom.logpmf(x[:, j], size, size / (size + mean[:, j] * np.exp(p[0]))).sum()

    direct = optimize.minimize(nll, [0.0, 1.0], method="Nelder-Mead", options={"xatol": 1e-6, "fatol": 1e-8}).x
    np.testing.assert_allclose([float(offset[j]), float(log_r[j])], direct, atol=0.02)


# -- the config -------------------------------------------------------------------------------------


def test_presets_load_and_unknown_keys_are_errors(tmp_path):
    for name in PRESETS:
        assert load_config(name).training.epochs > 0
    config = load_config(str(write(tmp_path / "c.json", json.dumps({"preset": "gpu", "network": {"blocks": 2}}))))
    assert config.network.blocks == 2 and config.network.hidden == 1024
    with pytest.raises(InputError, match=r"unknown setting.*widht"):
        load_config(str(write(tmp_path / "bad.json", json.dumps({"network": {"widht": 3}}))))
    with pytest.raises(InputError, match="unknown diffusion setting"):
        load_config("cpu", {"training.epoch": 3})
    with pytest.raises(InputError, match=r"bridge\.route"):
        load_config("cpu", {"bridge.route": "teleport"})
    with pytest.raises(InputError, match="neither"):
        load_config("nonexistent-preset")
    assert PRESETS["paper"].hidden_width(16) == 128  # GEMDiff: 8 x genes


def test_class_skip_denoises_towards_the_class_mean():
    g = torch.Generator().manual_seed(4)
    centres = torch.randn(2, 10, generator=g) * 3
    classes = torch.arange(200) % 2
    y = centres[classes] + 0.5 * torch.randn(200, 10, generator=g)
    skip = GaussianSkip(10, 2, n_classes=2)
    skip.fit(y, classes)
    torch.testing.assert_close(skip.means[:2], torch.stack([y[classes == c].mean(0) for c in (0, 1)]))
    torch.testing.assert_close(skip.means[2], y.mean(0))
    schedule = Schedule(1000)
    t = torch.full((200,), 900)
    noisy = schedule.add_noise(y, t, torch.randn(200, 10, generator=g))
    for labels, target in ((classes, centres[classes]), (None, y.mean(0).expand(200, -1))):
        x0 = schedule.predict_x0(noisy, t, skip(noisy, t, schedule.alpha_bar, labels))
        other = centres[1 - classes] if labels is not None else centres[classes]
        assert float(((x0 - target) ** 2).mean()) < float(((x0 - other) ** 2).mean())


def test_in_memory_normals_are_the_ones_simulate_writes(tmp_path):
    import gzip

    from nofone.simulate import SimulationConfig, simulate
    from nofone.simulate.memory import draw_normal_counts

    config = SimulationConfig(tissues=2, samples_per_tissue=4, genes=30, cases=0, heldout_per_tissue=1, seed=2)
    simulate(tmp_path / "sim", config)
    memory = draw_normal_counts(config)
    with gzip.open(tmp_path / "sim" / "counts" / "normals.tsv.gz", "rt") as handle:
        header = handle.readline().rstrip("\n").split("\t")
        rows = [line.rstrip("\n").split("\t") for line in handle]
    written = np.array([[int(v) for v in row[2:]] for row in rows]).T  # samples x genes
    assert header[2:] == memory.sample_ids
    np.testing.assert_array_equal(written, memory.counts)
    assert memory.heldout.sum() == 2 and set(memory.tissue) == set(memory.model.tissue_names)


def test_classifier_free_guidance_and_label_dropout():
    from nofone.models.diffusion.module import NORMAL, DiffusionModule
    from nofone.models.diffusion.train import DiffusionPlan

    config = load_config("cpu", {"network.hidden": 8, "network.blocks": 1, "network.gaussian_rank": 0})
    config = replace(config, labels=replace(config.labels, tissues=("a", "b"), tumour=True))
    module = DiffusionModule(config, 5)
    torch.nn.init.normal_(module.denoiser.output.weight)  # a network whose labels matter
    y, t = torch.randn(4, 5), torch.full((4,), 300)
    condition = module.condition_index(NORMAL, 4)
    tissue = module.tissue_index(["a", "b", None, "zzz"], 4)
    assert tissue.tolist() == [0, 1, 2, 2]  # unknown tissues get the null label
    plain = module.eps(y, t, tissue, condition)
    null = module.eps(y, t, tissue, module.condition_index(None, 4))
    torch.testing.assert_close(module.eps(y, t, tissue, condition, guidance=1.0), plain)
    torch.testing.assert_close(module.eps(y, t, tissue, condition, guidance=3.0), null + 3.0 * (plain - null))
    assert not torch.allclose(plain, null)
    plan = DiffusionPlan.__new__(DiffusionPlan)
    plan.module = module
    plan.tissue = torch.zeros(20000, dtype=torch.long)
    plan.condition = torch.zeros(20000, dtype=torch.long)
    dropped_tissue, dropped_condition = plan._labels(torch.arange(20000), torch.Generator().manual_seed(0), 0.15)
    assert abs(float((dropped_tissue == 2).float().mean()) - 0.15) < 0.01
    assert abs(float((dropped_condition == 2).float().mean()) - 0.15) < 0.01
    assert float(((dropped_tissue == 2) & (dropped_condition == 2)).float().mean()) < 0.04  # independent


def test_x0_clip_keeps_moves_from_the_last_step_bounded():
    schedule = Schedule(1000, x0_clip=3.0)
    y = torch.randn(8, 4)
    wrong = torch.zeros(8, 4)  # a noise prediction that is off by a standard normal at t = T
    out = schedule.move(y, 1000, 999, wrong)
    assert float(out.abs().max()) < 10
    unclipped = Schedule(1000).move(y, 1000, 999, wrong)
    assert float(unclipped.abs().max()) > 20  # what the clamp prevents
