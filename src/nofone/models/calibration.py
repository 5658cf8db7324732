"""What training calibrates on the held-out normals: the NB dispersions and the outlier null.

Dispersions fitted to the training samples are optimistic (the model has fitted their noise):
`calibrate_dispersion` rescales log r affinely to maximise the held-out samples' likelihood at
their closest normals, 2 parameters, robust with a few dozen samples. It is the default of
`TrainingPlan.calibrate`; a model whose dispersions are not its own parameters (a diffusion
model fits each gene's on held-out normals bridged as test samples will be) overrides that hook
and calls `fit_null` with its own means and dispersions.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from nofone.models.nb import nb_log_prob
from nofone.stats.optimise import lbfgs

log = logging.getLogger(__name__)


def calibrate_dispersion(module: torch.nn.Module, x: torch.Tensor, mean: torch.Tensor, z: torch.Tensor,
                         measured: torch.Tensor | None) -> dict:
    """Set log r <- a + b log r, (a, b) maximising the held-out samples' NB likelihood at their
    means `mean` (float64) and closest normals z.

    `module` gives `log_dispersion_at(z)` and `rescale_log_dispersion(a, b)`; r may be per gene
    or depend on the latent point."""
    with torch.no_grad():
        log_r = module.log_dispersion_at(z).detach().double()
    n_values = float(measured.sum()) if measured is not None else float(x.numel())

    def nll(params: torch.Tensor) -> torch.Tensor:
        ll = nb_log_prob(x, mean, torch.exp(params[0] + params[1] * log_r))
        return -(ll * measured).sum() / n_values if measured is not None else -ll.sum() / n_values

    params = torch.tensor([0.0, 1.0], dtype=torch.float64, requires_grad=True)
    before = float(nll(params.detach()))
    lbfgs(nll, params, max_iter=100)
    a, b = (float(v) for v in params.detach())
    after = float(nll(params.detach()))
    if not (np.isfinite(after) and after <= before):
        return {"a": 0.0, "b": 1.0, "nll_before": before, "nll_after": before, "applied": False}
    module.rescale_log_dispersion(a, b)
    return {"a": a, "b": b, "nll_before": before, "nll_after": after, "applied": True}


def fit_null(x: torch.Tensor, mean: torch.Tensor, r: torch.Tensor, measured: torch.Tensor | None) -> dict:
    """The outlier null of `nofone de` (its default null; `nofone.stats.outlier_null`) fitted on
    held-out normals: counts `x`, their closest normals' NB means and dispersions [N, G]."""
    from nofone.stats.outlier_null import fit_outlier_null

    null = fit_outlier_null(x.cpu().numpy(), mean.cpu().numpy(), r.cpu().numpy(),
                            None if measured is None else measured.cpu().numpy())
    return null.to_dict()


def calibrate_on_heldout(module: torch.nn.Module, x: torch.Tensor, z: torch.Tensor, scale: torch.Tensor,
                         measured: torch.Tensor | None) -> tuple[dict, dict]:
    """Both calibrations on the held-out normals at their closest normals z: the dispersion
    (`calibrate_dispersion`), then the outlier null with the calibrated dispersion.

    `module` gives `relative_means(z)` besides what `calibrate_dispersion` needs."""
    with torch.no_grad():
        mean = (module.relative_means(z) * scale.unsqueeze(-1)).double()  # the calibration changes r only
    calibration = calibrate_dispersion(module, x, mean, z, measured)
    with torch.no_grad():
        r = torch.exp(module.log_dispersion_at(z).detach().double())
    null = fit_null(x, mean, r, measured)
    log.info("dispersion calibrated on %d held-out samples: log r -> %.3f + %.3f log r (NLL/gene %.4f -> %.4f); "
             "outlier null: %.2f%% of genes off by log-sd %.2f", x.shape[0], calibration["a"], calibration["b"],
             calibration["nll_before"], calibration["nll_after"], 100 * null["pi"], null["tau"])
    return calibration, null
