"""The denoiser: GEMDiff's network as it really computes, with a projection that lets it scale.

GEMDiff's "transformer" sets its patch size to the gene count, so its attention sees a single
token: softmax over one key is 1 and the attention sub-layer is the linear map W_o W_v. What
remains is a pre-LayerNorm residual MLP: genes -> Linear to width H (8 x genes there) ->
+ sinusoidal time embedding (through Linear 4H, SiLU, Linear H) + label embedding -> blocks of
[h + A LN(h); h + MLP(LN(h))] (LayerNorms without affine, MLP H -> 4H -> GELU -> H) ->
LayerNorm -> GELU -> Linear back to the genes. This module is that network, with:

- a hidden width H chosen by the config instead of 8 x genes (on 17,000 genes GEMDiff's width
  would need 2.3e9 weights in its first layer; H = 256 needs 4.4e6);
- a Gaussian skip: eps_hat = network + E[eps | y_t, class] under a factor model of the
  training samples (`GaussianSkip`; the class is the tissue, or normal/tumour). A network
  narrower than the gene count has an output of rank H; without a skip it could not predict
  the noise in the other G - H directions at all, and DDIM would amplify y_t / sqrt(abar)
  there. The factor model is also the best denoiser a few hundred samples support on their
  own: on simulated normals it beat the network alone by more than the network gained over no
  structure at all (docs/diffusion.md).
  The output layer starts at zero, so training starts from the skip and learns what it misses;
- label embeddings for the tissue and for normal/tumour, each with a null index (the last) that
  classifier-free guidance trains by label dropout and uses for the unconditional prediction.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from nofone.models.diffusion.config import DiffusionConfig
from nofone.models.diffusion.gaussian import GaussianSkip


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """[N, dim] sinusoidal embedding of steps t [N] (cosines then sines, as in DDPM/GEMDiff)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float().unsqueeze(-1) * freqs.unsqueeze(0)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class ResidualBlock(nn.Module):
    """h + A LN(h), then h + MLP(LN(h)) (A: the one-token attention, a linear map)."""

    def __init__(self, width: int, mlp_ratio: int, dropout: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.mix = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, mlp_ratio * width), nn.GELU(), nn.Linear(mlp_ratio * width, width),
                                 nn.Dropout(dropout))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = h + self.mix(self.norm1(h))
        return h + self.mlp(self.norm2(h))


class Denoiser(nn.Module):
    """eps_theta(y_t, t, tissue, condition) for standardised expression y_t [N, G]."""

    def __init__(self, config: DiffusionConfig, n_genes: int):
        super().__init__()
        width = config.hidden_width(n_genes)
        net = config.network
        self.width = width
        self.n_tissues = len(config.labels.tissues)
        self.input = nn.Linear(n_genes, width)
        self.time = nn.Sequential(nn.Linear(width, 4 * width), nn.SiLU(), nn.Linear(4 * width, width))
        # last index of each embedding = the null label
        self.tissue_embedding = nn.Embedding(self.n_tissues + 1, width) if self.n_tissues else None
        self.condition_embedding = nn.Embedding(3, width) if config.labels.tumour else None
        self.blocks = nn.ModuleList(ResidualBlock(width, net.mlp_ratio, net.dropout) for _ in range(net.blocks))
        self.norm = nn.LayerNorm(width)
        self.output = nn.Linear(width, n_genes)
        self.n_skip_classes = self.n_tissues or (2 if config.labels.tumour else 0)
        self.skip = GaussianSkip(n_genes, max(net.gaussian_rank, 0), self.n_skip_classes) if net.gaussian_skip else None
        self._initialise(net.blocks)

    def _initialise(self, n_blocks: int) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=0.02)
        for block in self.blocks:  # GPT-2's scaled residual projections, as GEMDiff
            nn.init.normal_(block.mlp[2].weight, std=0.02 / math.sqrt(2 * max(n_blocks, 1)))
        if self.skip is not None:
            nn.init.zeros_(self.output.weight)

    @property
    def null_tissue(self) -> int:
        return self.n_tissues

    def forward(self, y: torch.Tensor, t: torch.Tensor, alpha_table: torch.Tensor, tissue: torch.Tensor | None = None,
                condition: torch.Tensor | None = None) -> torch.Tensor:
        """eps_hat [N, G] at integer steps t [N]; `alpha_table` is the schedule's abar(0..T) (for
        the skip); labels [N] long, None meaning null for every sample. Steps below 1 are
        embedded as 1 (training never sees 0)."""
        skip = None if self.skip is None else self.skip(y, t, alpha_table, tissue if self.n_tissues else condition)
        t = t.clamp_min(1)
        h = self.input(y) + self.time(timestep_embedding(t, self.width))
        if self.tissue_embedding is not None:
            if tissue is None:
                tissue = torch.full_like(t, self.null_tissue)
            h = h + self.tissue_embedding(tissue)
        if self.condition_embedding is not None:
            if condition is None:
                condition = torch.full_like(t, 2)
            h = h + self.condition_embedding(condition)
        for block in self.blocks:
            h = block(h)
        eps = self.output(nn.functional.gelu(self.norm(h)))
        return eps if skip is None else eps + skip
