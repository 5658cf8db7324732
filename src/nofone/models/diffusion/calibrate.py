"""What the bridge learns from held-out normals after training: t*, per-gene NB, outlier null.

1. t*: each held-out normal gets a planted change (`plant_fraction` of its expressed genes
   multiplied or divided by `plant_fold`); for each t in the grid the planted sample is bridged
   and compared with the clean one in the model's space. Too small a t reproduces the sample,
   planted change included; too large a t forgets the sample. The criterion is the balanced
   error: the mean squared distance to the clean sample over the planted genes and over the
   other genes, averaged with equal weight (a change left in place and a normal feature lost cost
   the same). t* is the grid point with the lowest balanced error; the whole curve, with how
   much of the planted change survives (1: all, 0: none), goes into the model card.
2. Per gene, the NB on the held-out normals bridged at t* like any sample: a log offset b_g of
   the mean (the back-transform's Jensen bias) and the dispersion r_g, by maximum a posteriori
   (b_g ~ N(0, 1); log r_g ~ N(median of a first pass, 2^2): a gene seen in a few dozen normals
   keeps a finite, sensible r), Newton per gene.
3. The outlier null of `nofone de` (`nofone.stats.outlier_null`) on the same bridged normals.
4. The held-out normals' bridge deviations |y - y_hat| per gene: the null of `perturb`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import replace

import numpy as np
import torch

from nofone.models.calibration import calibrate_dispersion
from nofone.models.diffusion.bridge import BridgeOptions, bridge_points, decode
from nofone.models.diffusion.module import DiffusionModule
from nofone.models.nb import nb_log_prob
from nofone.stats.outlier_null import fit_outlier_null

log = logging.getLogger(__name__)
MIN_PLANT_MEAN = 10.0  # a planted gene has at least this normalised count (so the change is visible)
LOG_R_RANGE = (-5.0, 15.0)


def plant_changes(counts: np.ndarray, sf: np.ndarray, fraction: float, fold: float, seed: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(counts with changes planted, bool mask of planted genes) [N, G]."""
    rng = np.random.default_rng(seed)
    x = np.asarray(counts, dtype=np.float64)
    planted = np.zeros(x.shape, dtype=bool)
    out = x.copy()
    for i in range(x.shape[0]):
        eligible = np.flatnonzero(x[i] / sf[i] >= MIN_PLANT_MEAN)
        if eligible.size == 0:
            continue
        genes = rng.choice(eligible, max(1, round(fraction * eligible.size)), replace=False)
        factor = np.where(rng.random(genes.size) < 0.5, fold, 1.0 / fold)
        out[i, genes] = x[i, genes] * factor
        planted[i, genes] = True
    return out, planted


@torch.no_grad()
def choose_t_star(module: DiffusionModule, counts: torch.Tensor, measured: torch.Tensor | None,
                  options: BridgeOptions) -> tuple[int, list[dict]]:
    """The grid point with the lowest balanced error, and the table of the whole grid."""
    b = module.config.bridge
    space = module.space
    sf = space.size_factors(counts, measured)
    y_clean = space(counts, sf, measured)
    planted_counts, planted = plant_changes(counts.cpu().numpy(), sf.cpu().numpy(), b.plant_fraction, b.plant_fold,
                                            b.seed)
    x_planted = torch.as_tensor(planted_counts, dtype=torch.float64, device=counts.device)
    y_planted = space(x_planted, space.size_factors(x_planted, measured), measured)
    mask = torch.as_tensor(planted, device=counts.device)
    use = torch.ones_like(mask) if measured is None else measured.bool()
    change = y_planted - y_clean
    visible = mask & use & (change.abs() > 0.1)
    rows = []
    for t in b.t_star_grid:
        point, _ = bridge_points(module, y_planted, replace(options, t_star=t, route="sdedit"))
        err2 = (point - y_clean) ** 2
        unplanted = float(err2[use & ~mask].mean())
        planted_err = float(err2[visible].mean()) if visible.any() else math.nan
        survival = float(((point - y_clean)[visible] / change[visible]).mean()) if visible.any() else math.nan
        balanced = 0.5 * (unplanted + planted_err) if visible.any() else unplanted
        rows.append({"t": int(t), "unplanted_mse": unplanted, "planted_mse": planted_err,
                     "planted_survival": survival, "balanced_error": balanced})
        log.info("t=%d: unplanted mse %.4f, planted mse %.4f, survival %.3f", t, unplanted, planted_err, survival)
    best = min(rows, key=lambda r: r["balanced_error"])
    return best["t"], rows


def fit_gene_nb(x: torch.Tensor, mean: torch.Tensor, measured: torch.Tensor | None = None,
                offset_sd: float = 1.0, log_r_sd: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(log mean offset b [G], log r [G]) per gene by MAP on counts x [N, G] with model means
    [N, G]: two Newton passes (the second's log r prior centred on the first's median)."""
    x, mean = x.double(), mean.double().clamp_min(1e-12)
    w = torch.ones_like(x) if measured is None else measured.double()
    theta, _ = _newton(x, mean, w, offset_sd, math.log(10.0), 10.0)
    centre = float(theta[:, 1].median())
    theta, converged = _newton(x, mean, w, offset_sd, centre, log_r_sd, start=theta)
    if not converged.all():
        log.warning("the per-gene NB fit did not fully converge in %d genes", int((~converged).sum()))
    return theta[:, 0], theta[:, 1]


def _objective(theta: torch.Tensor, x, mean, w, offset_sd, r_centre, r_sd) -> torch.Tensor:
    """[G] negative log posterior per gene; theta [G, 2] = (b, log r)."""
    ll = nb_log_prob(x, mean * torch.exp(theta[:, 0]), torch.exp(theta[:, 1]))
    prior = 0.5 * (theta[:, 0] / offset_sd) ** 2 + 0.5 * ((theta[:, 1] - r_centre) / r_sd) ** 2
    return -(ll * w).sum(0) + prior


def _derivatives(theta: torch.Tensor, x, mean, w, offset_sd, r_centre, r_sd) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient [G, 2] and Hessian [G, 2, 2] of `_objective` (the NB's derivatives in closed
    form: with m = mean e^b, d/db = r (x - m) / (m + r), d/dr = psi(x + r) - psi(r) + log(r / (m + r))
    + (m - x) / (m + r))."""
    m = mean * torch.exp(theta[:, 0])
    r = torch.exp(theta[:, 1]).expand_as(m)
    mr = m + r
    d_b = r * (x - m) / mr
    d_r = torch.digamma(x + r) - torch.digamma(r) + torch.log(r / mr) + (m - x) / mr
    d_bb = -(x + r) * m * r / mr**2
    d_rr = torch.polygamma(1, x + r) - torch.polygamma(1, r) - 1 / mr - (m - x) / mr**2 + 1 / r
    d_br = (x - m) * m / mr**2
    g_b, g_rho = (w * d_b).sum(0), (w * r * d_r).sum(0)
    h_bb = (w * d_bb).sum(0)
    h_rr = (w * (r * d_r + r**2 * d_rr)).sum(0)
    h_br = (w * r * d_br).sum(0)
    grad = -torch.stack([g_b, g_rho], -1) + torch.stack([theta[:, 0] / offset_sd**2,
                                                          (theta[:, 1] - r_centre) / r_sd**2], -1)
    hess = -torch.stack([torch.stack([h_bb, h_br], -1), torch.stack([h_br, h_rr], -1)], -2)
    hess[:, 0, 0] += 1 / offset_sd**2
    hess[:, 1, 1] += 1 / r_sd**2
    return grad, hess


def _newton(x, mean, w, offset_sd, r_centre, r_sd, start=None, iterations: int = 100
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Damped Newton per gene (2 x 2 systems, all genes at once) with step halving; where the
    Hessian is not positive definite, a scaled gradient step. Each iteration and each halving
    touches only the genes still moving (a few slow genes must not cost every gene's time)."""
    priors = (offset_sd, r_centre, r_sd)
    n_genes = x.shape[1]
    theta = torch.zeros(n_genes, 2, dtype=torch.float64) if start is None else start.clone()
    if start is None:
        theta[:, 1] = r_centre
    value = _objective(theta, x, mean, w, *priors)
    converged = torch.zeros(n_genes, dtype=torch.bool)
    for _ in range(iterations):
        active = torch.nonzero(~converged).squeeze(-1)
        if active.numel() == 0:
            break
        xa, ma, wa = x[:, active], mean[:, active], w[:, active]
        th, val = theta[active], value[active]
        grad, hess = _derivatives(th, xa, ma, wa, *priors)
        det = hess[:, 0, 0] * hess[:, 1, 1] - hess[:, 0, 1] ** 2
        positive = (det > 0) & (hess[:, 0, 0] > 0)
        newton = torch.stack([hess[:, 1, 1] * grad[:, 0] - hess[:, 0, 1] * grad[:, 1],
                              hess[:, 0, 0] * grad[:, 1] - hess[:, 0, 1] * grad[:, 0]], -1) / det.unsqueeze(-1)
        fallback = grad / hess.diagonal(dim1=-2, dim2=-1).abs().clamp_min(1.0)
        step = torch.where(positive.unsqueeze(-1), newton, fallback).clamp(-3.0, 3.0)
        new_th, new_val = th.clone(), val.clone()
        pending = torch.arange(active.numel())
        scale = 1.0
        for _ in range(30):
            trial = th[pending] - scale * step[pending]
            trial[:, 1] = trial[:, 1].clamp(*LOG_R_RANGE)
            trial_value = _objective(trial, xa[:, pending], ma[:, pending], wa[:, pending], *priors)
            better = trial_value <= val[pending] + 1e-12
            new_th[pending[better]], new_val[pending[better]] = trial[better], trial_value[better]
            pending = pending[~better]
            if pending.numel() == 0:
                break
            scale /= 2
        converged[active] = (val - new_val).abs() < 1e-9 * (1 + val.abs())
        theta[active], value[active] = new_th, new_val
    return theta, converged


@torch.no_grad()
def calibrate(module: DiffusionModule, counts: torch.Tensor, measured: torch.Tensor | None,
              tissues=None, training: tuple | None = None) -> dict:
    """All four calibrations on the held-out normals `counts` [N, G]; sets t* (when the config
    leaves it 0), log r, the mean offsets and the null deviations in `module`, returns the card.

    `training` (counts, measured, tissues) of the training normals: the per-gene NB is then
    fitted on them and the held-out normals together, all bridged alike (a few held-out normals
    alone give noisy dispersions), and log r is rescaled affinely to the held-out normals'
    likelihood (`nofone.models.calibration.calibrate_dispersion`: the bridge reconstructs a
    sample it trained on more closely than a new one)."""
    device = module.log_r.device
    counts = counts.to(device=device, dtype=torch.float64)
    measured = None if measured is None else measured.to(device).bool()
    options = BridgeOptions(tissues=tissues, route="sdedit")
    card: dict = {"n_heldout": int(counts.shape[0])}
    if module.config.bridge.t_star == 0:
        t_star, grid = choose_t_star(module, counts, measured, options)
        module.set_t_star(t_star)
        card["t_star_grid"] = grid
    card["t_star"] = module.config.bridge.t_star
    space = module.space
    sf = space.size_factors(counts, measured)
    y = space(counts, sf, measured)
    point, _ = bridge_points(module, y, options)
    space.log_offset.zero_()
    relative, _ = decode(module, point)
    mean = relative * sf.unsqueeze(-1)
    fx, fm, fmask = counts, mean, measured
    if training is not None:
        tx, tmask, ttissues = training
        tx = tx.to(device=device, dtype=torch.float64)
        tmask = None if tmask is None else tmask.to(device).bool()
        tsf = space.size_factors(tx, tmask)
        tpoint, _ = bridge_points(module, space(tx, tsf, tmask), replace(options, tissues=ttissues))
        fx, fm = torch.cat([counts, tx]), torch.cat([mean, decode(module, tpoint)[0] * tsf.unsqueeze(-1)])
        fmask = None if measured is None else torch.cat([measured, tmask])
    offset, log_r = fit_gene_nb(fx.cpu(), fm.cpu(), None if fmask is None else fmask.cpu())
    space.log_offset.copy_(offset.to(device))
    module.log_r.copy_(log_r.to(device))
    mean = mean * torch.exp(space.log_offset)
    if training is not None:
        card["dispersion_rescale"] = calibrate_dispersion(module, counts, mean, point, measured)
    r = module.dispersion
    null = fit_outlier_null(counts.cpu().numpy(), mean.cpu().numpy(), r.cpu().numpy(),
                            None if measured is None else measured.cpu().numpy())
    use = torch.ones_like(y, dtype=torch.bool) if measured is None else measured
    module.null_deviation = ((point - y).abs() * use).float().cpu().to(device)
    ll = nb_log_prob(counts, mean, r)
    lfc = torch.log2((counts + 1) / (mean + 1))
    card.update({
        "reconstruction_rmse": float(((point - y) ** 2)[use].mean().sqrt()),
        "reconstruction_mean_abs_log2": float(lfc.abs()[use].mean()),
        "nll_per_value": float(-ll[use].mean()),
        "dispersion_median": float(r.median()), "dispersion_q05": float(r.quantile(0.05)),
        "dispersion_q95": float(r.quantile(0.95)),
        "log_offset_sd": float(space.log_offset.std()),
        "outlier_null": null.to_dict(),
    })
    log.info("bridge calibrated on %d held-out normals: t*=%d, reconstruction rmse %.3f (model space), "
             "mean |log2 fold| %.3f", counts.shape[0], card["t_star"], card["reconstruction_rmse"],
             card["reconstruction_mean_abs_log2"])
    return card
