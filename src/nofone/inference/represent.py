"""Closest-normal representations: the latent point whose decoded NB best explains a sample.

Decoder and GMM are frozen. Every sample starts one candidate at each mixture component's mean
(`model.candidate_starts`); all samples of a chunk and all their candidates are optimised
together with Adam (elementwise, so batching does not change any candidate's path). Gradients
flow to the latent points only: the decoder's weight gradients, which bulkDGD computes and
throws away, are never formed, and no graph outlives its step.

- `two_opt` (the paper): optimise all candidates `steps_first` steps, keep the best per sample,
  then `steps_second` more with a fresh optimiser.
- `one_opt`: keep the best candidate by loss at the start, then `steps_first + steps_second`.

`keep_candidates` prunes hopeless starts for `two_opt`: all starts are scored with one forward
pass and only the best few per sample are optimised. `None` keeps them all (bulkDGD's way).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from nofone.choices import SEARCH_METHODS
from nofone.models.nb import nb_log_prob
from nofone.models.scaling import scaling_factor

METHODS = SEARCH_METHODS


class LatentModel(Protocol):
    """What representation search needs from a generative model of normal expression."""

    def relative_means(self, z: torch.Tensor) -> torch.Tensor: ...
    def dispersion_at(self, z: torch.Tensor) -> torch.Tensor: ...
    def latent_log_prob(self, z: torch.Tensor) -> torch.Tensor: ...
    def responsibilities(self, z: torch.Tensor) -> torch.Tensor: ...
    def candidate_starts(self, counts: torch.Tensor) -> torch.Tensor: ...
    @property
    def default_scaling(self) -> str: ...


@dataclass(frozen=True)
class SearchConfig:
    method: str = "two_opt"
    steps_first: int = 10
    steps_second: int = 50
    lr: float = 0.01
    betas: tuple[float, float] = (0.5, 0.9)
    keep_candidates: int | None = 8
    scaling: str | None = None  # None: the model's own (`model.default_scaling`)

    def for_model(self, model: LatentModel, scaling: str | None) -> SearchConfig:
        """This config with the scaling asked for, or the model's own when none is."""
        from dataclasses import replace

        return replace(self, scaling=scaling or model.default_scaling)


@dataclass
class SearchResult:
    latent: torch.Tensor  # [N, D]
    scale: torch.Tensor  # [N] float64
    count_nll: torch.Tensor  # [N] float64: -sum over measured genes of log NB
    latent_nll: torch.Tensor  # [N] float64: -log density of the latent prior
    responsibilities: torch.Tensor  # [N, K]
    n_measured: torch.Tensor  # [N]


def _objective(model: LatentModel, x: torch.Tensor, measured: torch.Tensor | None, z: torch.Tensor,
               scaling: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-candidate (count NLL, latent NLL, scale) for z of shape [N, C, D]; x is [N, 1, G]."""
    relative = model.relative_means(z)
    scale = scaling_factor(x, relative, measured, scaling)
    if scale.dim() < relative.dim() - 1:
        scale = scale.expand(relative.shape[:-1])
    ll = nb_log_prob(x, relative * scale.unsqueeze(-1), model.dispersion_at(z))
    if measured is not None:
        ll = ll * measured
    latent_ll = model.latent_log_prob(z.reshape(-1, z.shape[-1])).reshape(z.shape[:-1])
    return -ll.sum(-1), -latent_ll.to(torch.float64), scale


def _optimise(model: LatentModel, x: torch.Tensor, measured: torch.Tensor | None, z: torch.Tensor,
              steps: int, config: SearchConfig) -> torch.Tensor:
    z = z.detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([z], lr=config.lr, betas=tuple(config.betas))
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        count_nll, latent_nll, _ = _objective(model, x, measured, z, config.scaling)
        (count_nll + latent_nll).sum().backward()
        optimizer.step()
    return z.detach()


def _best(model, x, measured, z, config) -> torch.Tensor:
    """[N, D]: the candidate with the lowest loss for each sample of z [N, C, D]."""
    with torch.no_grad():
        count_nll, latent_nll, _ = _objective(model, x, measured, z, config.scaling)
        pick = (count_nll + latent_nll).argmin(-1)
    return z[torch.arange(z.shape[0]), pick]


def find_representations(model: LatentModel, counts: torch.Tensor, measured: torch.Tensor | None,
                         config: SearchConfig = SearchConfig()) -> SearchResult:
    """Search the closest-normal latent point of each sample of one chunk.

    `counts` [N, G] and `measured` ([N, G] bool or None) must already be on the model's device.
    Memory grows with N x candidates x G: callers bound it by the chunk size.
    """
    if config.method not in METHODS:
        raise ValueError(f"unknown method {config.method!r}; use one of {METHODS}")
    config = config.for_model(model, config.scaling)
    x = counts.to(torch.float64).unsqueeze(1)  # [N, 1, G]
    mask = None if measured is None or bool(measured.all()) else measured.unsqueeze(1)
    starts = model.candidate_starts(counts).to(counts.device)  # [N, C, D]
    if config.method == "one_opt":
        best = _best(model, x, mask, starts, config).unsqueeze(1)
        best = _optimise(model, x, mask, best, config.steps_first + config.steps_second, config)
    else:
        k = config.keep_candidates
        if k is not None and k < starts.shape[1]:
            with torch.no_grad():
                count_nll, latent_nll, _ = _objective(model, x, mask, starts, config.scaling)
                top = (count_nll + latent_nll).topk(k, dim=-1, largest=False).indices
            starts = torch.gather(starts, 1, top.unsqueeze(-1).expand(-1, -1, starts.shape[-1]))
        optimised = _optimise(model, x, mask, starts, config.steps_first, config)
        best = _best(model, x, mask, optimised, config).unsqueeze(1)
        best = _optimise(model, x, mask, best, config.steps_second, config)
    with torch.no_grad():
        count_nll, latent_nll, scale = _objective(model, x, mask, best, config.scaling)
        z = best[:, 0]
        responsibilities = model.responsibilities(z)
    n_measured = (torch.full((counts.shape[0],), counts.shape[1]) if mask is None
                  else measured.sum(-1))
    return SearchResult(z, scale[:, 0].detach(), count_nll[:, 0], latent_nll[:, 0], responsibilities,
                        n_measured)
