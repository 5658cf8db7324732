"""Closest normals: `find_representations` (any model, by its own method) and the one latent
search that models with a latent prior share (`search_latent`).

The latent search: decoder and prior are frozen. Every sample starts from the model's candidate
points (`LatentNormalModel.candidate_starts`: the DGD's mixture component means, the NB-VAE's
encoder mean); all samples of a chunk and all their candidates are optimised together with Adam
(elementwise, so batching does not change any candidate's path). Gradients flow to the latent
points only (`torch.autograd.grad`): the decoder's weight gradients, which bulkDGD computes and
throws away, are never formed, and no graph outlives its step. The training loop refines its
held-out normals with the same search.

- `two_opt` (the paper): optimise all candidates `steps_first` steps, keep the best per sample,
  then `steps_second` more with a fresh optimiser.
- `one_opt`: keep the best candidate by loss at the start, then `steps_first + steps_second`.

`keep_candidates` prunes hopeless starts for `two_opt`: all starts are scored with one forward
pass and only the best few per sample are optimised. `None` keeps them all (bulkDGD's way).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol

import torch

from nofone.choices import SEARCH_METHODS
from nofone.models.base import ClosestNormal, NormalModel
from nofone.models.nb import nb_log_prob
from nofone.models.scaling import scaling_factor

METHODS = SEARCH_METHODS


class LatentTerms(Protocol):
    """What the latent search needs from a model's module."""

    def relative_means(self, z: torch.Tensor) -> torch.Tensor: ...
    def dispersion_at(self, z: torch.Tensor) -> torch.Tensor: ...
    def latent_log_prob(self, z: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class SearchConfig:
    """How `nofone represent` looks for closest normals (a model ignores what it does not use)."""

    method: str = "two_opt"
    steps_first: int = 10
    steps_second: int = 50
    lr: float = 0.01
    betas: tuple[float, float] = (0.5, 0.9)
    keep_candidates: int | None = 8
    scaling: str | None = None  # None: the model's own (`model.default_scaling`)

    def for_model(self, model: NormalModel, scaling: str | None = None) -> SearchConfig:
        """This config with the scaling asked for, or the model's own when none is."""
        return replace(self, scaling=scaling or self.scaling or model.default_scaling)


def find_representations(model: NormalModel, counts: torch.Tensor, measured: torch.Tensor | None,
                         config: SearchConfig = SearchConfig()) -> ClosestNormal:
    """The closest normal of each sample of one chunk, by the model's own method.

    `counts` [N, G] and `measured` ([N, G] bool or None) must already be on the model's device.
    Memory grows with the chunk: callers bound it by the chunk size.
    """
    if config.method not in METHODS:
        raise ValueError(f"unknown method {config.method!r}; use one of {METHODS}")
    return model.closest_normal(counts, measured, config.for_model(model, config.scaling))


def _objective(terms: LatentTerms, x: torch.Tensor, measured: torch.Tensor | None, z: torch.Tensor,
               scaling: str | None, fixed_scale: torch.Tensor | None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-candidate (count NLL, latent NLL, scale) for z of shape [N, C, D]; x is [N, 1, G].

    The scale is recomputed at every z by `scaling`, unless `fixed_scale` [N] is given."""
    relative = terms.relative_means(z)
    scale = scaling_factor(x, relative, measured, scaling) if fixed_scale is None else fixed_scale.unsqueeze(-1)
    if scale.dim() < relative.dim() - 1:
        scale = scale.expand(relative.shape[:-1])
    ll = nb_log_prob(x, relative * scale.unsqueeze(-1), terms.dispersion_at(z))
    if measured is not None:
        ll = ll * measured
    latent_ll = terms.latent_log_prob(z.reshape(-1, z.shape[-1])).reshape(z.shape[:-1])
    return -ll.sum(-1), -latent_ll.to(torch.float64), scale


def _optimise(terms: LatentTerms, x, measured, z: torch.Tensor, steps: int, config: SearchConfig,
              fixed_scale: torch.Tensor | None) -> torch.Tensor:
    z = z.detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([z], lr=config.lr, betas=tuple(config.betas))
    for _ in range(steps):
        count_nll, latent_nll, _ = _objective(terms, x, measured, z, config.scaling, fixed_scale)
        (z.grad,) = torch.autograd.grad((count_nll + latent_nll).sum(), [z])
        optimizer.step()
    return z.detach()


def _best(terms, x, measured, z, config, fixed_scale) -> torch.Tensor:
    """[N, 1, D]: the candidate with the lowest loss for each sample of z [N, C, D]."""
    if z.shape[1] == 1:
        return z
    with torch.no_grad():
        count_nll, latent_nll, _ = _objective(terms, x, measured, z, config.scaling, fixed_scale)
        pick = (count_nll + latent_nll).argmin(-1)
    return z[torch.arange(z.shape[0]), pick].unsqueeze(1)


def search_latent(terms: LatentTerms, counts: torch.Tensor, measured: torch.Tensor | None, starts: torch.Tensor,
                  config: SearchConfig, *, fixed_scale: torch.Tensor | None = None) -> ClosestNormal:
    """The closest-normal latent point of each sample, searched from `starts` [N, C, D].

    `config.scaling` must be set (`SearchConfig.for_model`) unless `fixed_scale` [N] gives each
    sample's scale. The result has no responsibilities (the model adds them).
    """
    if config.method not in METHODS:
        raise ValueError(f"unknown method {config.method!r}; use one of {METHODS}")
    x = counts.to(torch.float64).unsqueeze(1)  # [N, 1, G]
    mask = None if measured is None or bool(measured.all()) else measured.unsqueeze(1)
    args = (terms, x, mask)
    if config.method == "one_opt":
        best = _best(*args, starts, config, fixed_scale)
        best = _optimise(*args, best, config.steps_first + config.steps_second, config, fixed_scale)
    else:
        k = config.keep_candidates
        if k is not None and k < starts.shape[1]:
            with torch.no_grad():
                count_nll, latent_nll, _ = _objective(*args, starts, config.scaling, fixed_scale)
                top = (count_nll + latent_nll).topk(k, dim=-1, largest=False).indices
            starts = torch.gather(starts, 1, top.unsqueeze(-1).expand(-1, -1, starts.shape[-1]))
        optimised = _optimise(*args, starts, config.steps_first, config, fixed_scale)
        best = _best(*args, optimised, config, fixed_scale)
        best = _optimise(*args, best, config.steps_second, config, fixed_scale)
    with torch.no_grad():
        count_nll, latent_nll, scale = _objective(*args, best, config.scaling, fixed_scale)
    n_measured = torch.full((counts.shape[0],), counts.shape[1]) if mask is None else measured.sum(-1)
    return ClosestNormal(best[:, 0], scale[:, 0].detach(), count_nll[:, 0], latent_nll[:, 0], None, n_measured)
