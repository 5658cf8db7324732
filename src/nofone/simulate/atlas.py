"""The simulated atlas: every gene's parameters and the latent -> NB mean map shared by every
sample, and the normal samples drawn from it (constants measured once from a real atlas)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nofone.simulate.config import SimulationConfig

# ---------------------------------------------------------------------------------------------
# Constants measured once from the real atlas (a throwaway script, not part of the package):
# ../shared/data/normal_atlas, the 22 normal files `<tissue>-rsem-count-gtex.txt.gz` and
# `<tcga>-rsem-count-tcga.txt.gz` (the tumour file read-rsem-count-tcga-t excluded): 383 samples
# x 20,242 protein-coding genes, RSEM expected counts rounded, rows aligned on symbol|Entrez.
#
# Per-gene mean count over all 383 normals (library ~5.4e7 over these genes; median library
# 5.36e7): 0.9% of genes are never seen, 7.1% have mean < 0.5, 12.9% < 5, 15.2% < 10; the
# median gene has mean ~780. The table is the quantile function of log(max(mean, 0.01)).
LOG_MEAN_LEVELS = (
    0.0, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.125, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4,
    0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.975, 0.99, 0.995, 0.999, 1.0,
)
LOG_MEAN_QUANTILES = (
    -4.61, -4.61, -4.61, -4.0, -3.11, -1.8, -0.46, 0.66, 1.46, 2.22, 3.43, 4.35, 5.02, 5.57,
    6.01, 6.38, 6.66, 6.91, 7.13, 7.35, 7.55, 7.75, 7.96, 8.21, 8.52, 9.02, 9.56, 10.28, 10.66,
    11.93, 13.93,
)
# Library size: sd of log library size 0.416 over all 383 normals = 0.345 between files
# (tissue/study; sd of the 22 per-file means) and 0.237 within files (pooled).
LIBRARY_TISSUE_SD = 0.345
LIBRARY_WITHIN_SD = 0.237
# Dispersion, method of moments on median-of-ratios-normalised counts within uterus (GTEx, 42
# samples), kirc (37), luad (30), lusc (34): alpha_g = (var - mean * mean(1/s)) / mean^2.
# Median alpha (5%, 25%, 75%, 95% quantiles) by mean count, the four tissues pooled:
#   mean 10-30: 0.55 (0.12, 0.29, 1.25, 4.9)    mean 100-300: 0.22 (0.04, 0.10, 0.54, 1.9)
#   mean 300-1000: 0.087 (0.022, 0.045, 0.20, 0.95)   mean 1000-3000: 0.060 (0.016, 0.034,
#   0.12, 0.47)   mean > 3000: 0.067;   mean 1-3: 0.92.
# The trend a0 + a1/mean fits these medians poorly (log rms 0.49; a0 = 0.076, a1 = 5.6; a
# per-tissue fit of log alpha gave a0 = 0.079-0.097, a1 = 5.1-7.2); a0 + a1/mean^b fits far
# better (log rms 0.30; a0 = 0.038, a1 = 1.9, b = 0.53), so the power is kept. The scatter of
# log alpha around the trend is right-skewed (quartiles -0.66/+0.85, 5%/95% -1.4/+2.4 in log
# units at mean 300-1000; overall residual sd 1.15-1.28), which includes the sampling error of
# a variance from ~35 samples. The values below are the NB dispersion *given the latent*,
# with a split-normal log scatter (sd below, sd above the trend): chosen so that the total
# within-tissue moment dispersion of simulated data (NB noise plus latent variation, 40
# samples per tissue, same estimator) reproduces the quantiles above within ~30%
# (e.g. 0.56 at mean 10-30, 0.10 at 300-1000, 0.07 at 1000-3000; residual sd 1.17-1.22).
DISPERSION_A0 = 0.01
DISPERSION_A1 = 3.0
DISPERSION_POWER = 0.6
DISPERSION_LOG_SD = (0.8, 1.4)
DISPERSION_RANGE = (1e-3, 50.0)

# Latent geometry and tissue effects (design choices, not measurements).
LATENT_RADIUS = 3.0
LATENT_TISSUE_SD = 0.5
HIDDEN_UNITS = 24
HIDDEN_WEIGHT_SD = 0.4
HIDDEN_BIAS_SD = 0.5
#: Per-gene sd (log2) of expression across tissue positions: log-normal, median and log-sd.
#: Gives ~25-30% of expressed genes with |log2FC| > 1 between some pair of 4 tissues (the
#: real atlas has more: a median of 33% per tissue pair, partly GTEx/TCGA batch).
TISSUE_SD_LOG2_MEDIAN = 0.25
TISSUE_SD_LOG2_SPREAD = 0.8
#: Tissue-specific genes: on in one tissue, 2^5-2^10 lower elsewhere (atlas: ~4.5% of expressed
#: genes are > 8x higher in one of 4 random tissues than in the others).
SPECIFIC_FRACTION = 0.03
SPECIFIC_LOG2_DROP = (5.0, 10.0)
SPECIFIC_MIN_LOG_MEAN = np.log(50.0)
LNCRNA_FRACTION = 0.10
#: Generic tissue positions over which each gene's net is centred and scaled.
_REFERENCE_POINTS = 512

# Independent random streams (SeedSequence spawn keys): adding samples never changes genes.
STREAM_GENES, STREAM_SAMPLES, STREAM_BLOCKS, STREAM_CASES = 1, 2, 3, 4


@dataclass
class GeneModel:
    """Gene parameters and the latent -> log-mean map shared by every sample."""

    gene_ids: list[str]
    gene_names: list[str]
    biotypes: list[str]
    tissue_names: list[str]
    tissue_means: np.ndarray  # [K, d]
    radius: float
    w_hidden: np.ndarray  # [H, d]
    b_hidden: np.ndarray  # [H]
    w_out: np.ndarray  # [G, H], already scaled to natural-log units
    b_out: np.ndarray  # [G]: baseline log mean minus the centring of the net
    baseline: np.ndarray  # [G]: log mean count at size factor 1, averaged over tissue positions
    tissue_sd_log2: np.ndarray  # [G]
    specific_tissue: np.ndarray  # [G] tissue index, -1 for none
    specific_drop: np.ndarray  # [G] natural-log drop outside the tissue (0 for none)
    dispersion: np.ndarray  # [G] alpha = 1 / NB size
    library_offsets: np.ndarray  # [K] tissue-level log library offsets

    @property
    def n_genes(self) -> int:
        return len(self.gene_ids)

    @property
    def nb_size(self) -> np.ndarray:
        return 1.0 / self.dispersion


@dataclass
class Samples:
    """Samples that share one count file (the normal matrix) or the cases."""

    ids: list[str]
    tissue: np.ndarray  # int [n]
    condition: list[str]
    batch: list[str]
    z: np.ndarray  # [n, d]
    log_size_factor: np.ndarray  # [n]


def stream(seed: int, *key: int) -> np.random.Generator:
    """A named, independent random stream: the same key always gives the same numbers."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=key)))


def _tissue_means(rng: np.random.Generator, k: int, d: int, radius: float) -> np.ndarray:
    """Tissue centres on a sphere, the best-separated of several random draws.

    Random directions alone can put two tissues close together; keeping the draw with the
    largest minimum distance makes every tissue recoverable without a fixed geometry.
    """
    best, best_gap = None, -1.0
    for _ in range(32):
        points = rng.standard_normal((k, d))
        points *= radius / np.linalg.norm(points, axis=1, keepdims=True)
        if k == 1:
            return points
        gaps = np.linalg.norm(points[:, None] - points[None], axis=2) + np.eye(k) * 1e9
        if gaps.min() > best_gap:
            best, best_gap = points, float(gaps.min())
    assert best is not None
    return best


def _hidden(model: GeneModel, z: np.ndarray) -> np.ndarray:
    return np.tanh(z @ model.w_hidden.T + model.b_hidden)


def _specific_switch(model: GeneModel, z: np.ndarray) -> np.ndarray:
    """[n, K]: ~0 inside a tissue's cloud, ~1 well outside it (a smooth, flat-topped bump)."""
    d = z.shape[1]
    inner = LATENT_TISSUE_SD * (np.sqrt(d) + 1.5)  # beyond the typical within-tissue radius
    width = LATENT_TISSUE_SD / 2
    dist = np.linalg.norm(z[:, None, :] - model.tissue_means[None], axis=2)
    return 1.0 / (1.0 + np.exp(-(dist - inner) / width))


def build_gene_model(config: SimulationConfig) -> GeneModel:
    """Draw every gene parameter: baselines, tissue effects, tissue-specific genes, dispersions."""
    rng = stream(config.seed, STREAM_GENES)
    k, d, g = config.tissues, config.latent_dim, config.genes
    radius = LATENT_RADIUS * max(1.0, np.sqrt(k / (2 * d)))  # room for many tissues
    means = _tissue_means(rng, k, d, radius)
    baseline = np.interp(rng.random(g), LOG_MEAN_LEVELS, LOG_MEAN_QUANTILES)
    w_hidden = rng.normal(0.0, HIDDEN_WEIGHT_SD, (HIDDEN_UNITS, d))
    b_hidden = rng.normal(0.0, HIDDEN_BIAS_SD, HIDDEN_UNITS)
    raw_out = rng.standard_normal((g, HIDDEN_UNITS))
    tissue_sd = np.exp(rng.normal(np.log(TISSUE_SD_LOG2_MEDIAN), TISSUE_SD_LOG2_SPREAD, g))

    # Scale each gene's net so its sd over generic tissue positions is `tissue_sd` (log2) and
    # its mean there is 0: the baseline stays the gene's typical level across tissues.
    directions = rng.standard_normal((_REFERENCE_POINTS, d))
    directions *= radius / np.linalg.norm(directions, axis=1, keepdims=True)
    reference = directions + rng.normal(0.0, LATENT_TISSUE_SD, directions.shape)
    hidden_ref = np.tanh(reference @ w_hidden.T + b_hidden)
    out_ref = hidden_ref @ raw_out.T  # [P, G]
    centre, spread = out_ref.mean(axis=0), out_ref.std(axis=0) + 1e-12
    scale = tissue_sd * np.log(2.0) / spread
    w_out = raw_out * scale[:, None]
    b_out = baseline - centre * scale

    specific = np.full(g, -1, dtype=np.int64)
    drop = np.zeros(g)
    candidates = np.flatnonzero(baseline >= SPECIFIC_MIN_LOG_MEAN)
    n_specific = min(len(candidates), round(SPECIFIC_FRACTION * g)) if k > 1 else 0
    chosen = np.sort(rng.choice(candidates, n_specific, replace=False))
    specific[chosen] = rng.integers(0, k, n_specific)
    drop[chosen] = np.log(2.0) * rng.uniform(*SPECIFIC_LOG2_DROP, n_specific)

    mean = np.exp(baseline)
    trend = DISPERSION_A0 + DISPERSION_A1 * mean**-DISPERSION_POWER
    noise = rng.standard_normal(g)
    noise *= np.where(noise < 0, *DISPERSION_LOG_SD)  # right-skewed, as in the atlas
    dispersion = np.clip(trend * np.exp(noise), *DISPERSION_RANGE)

    # lncRNAs are mostly lowly expressed: prefer genes below the median baseline.
    weights = np.where(baseline < np.median(baseline), 4.0, 1.0)
    n_lnc = round(LNCRNA_FRACTION * g)
    lnc = rng.choice(g, n_lnc, replace=False, p=weights / weights.sum()) if n_lnc else []
    biotypes = np.full(g, "protein_coding", dtype=object)
    biotypes[lnc] = "lncRNA"

    library_offsets = rng.normal(0.0, LIBRARY_TISSUE_SD, k)
    width = max(2, len(str(k)))
    return GeneModel(
        gene_ids=[f"ENSG9{i:010d}" for i in range(1, g + 1)],
        gene_names=[f"SIM{i}" for i in range(1, g + 1)],
        biotypes=[str(b) for b in biotypes],
        tissue_names=[f"tissue{t + 1:0{width}d}" for t in range(k)],
        tissue_means=means,
        radius=float(radius),
        w_hidden=w_hidden,
        b_hidden=b_hidden,
        w_out=w_out,
        b_out=b_out,
        baseline=baseline,
        tissue_sd_log2=tissue_sd,
        specific_tissue=specific,
        specific_drop=drop,
        dispersion=dispersion,
        library_offsets=library_offsets,
    )


def log_means(model: GeneModel, z: np.ndarray, log_size_factor: np.ndarray,
              genes: slice | np.ndarray = slice(None)) -> np.ndarray:
    """True log NB means [n, genes] of samples at latent `z`: the decoder a model must learn."""
    out = _hidden(model, z) @ model.w_out[genes].T + model.b_out[genes]
    specific = model.specific_tissue[genes]
    on = np.flatnonzero(specific >= 0)
    if len(on):
        switch = _specific_switch(model, z)  # [n, K]
        out[:, on] -= switch[:, specific[on]] * model.specific_drop[genes][on]
    return out + log_size_factor[:, None]


def draw_nb(rng: np.random.Generator, mean: np.ndarray, size: np.ndarray) -> np.ndarray:
    """Negative binomial counts as a gamma-Poisson mixture (mean `mean`, size `size`)."""
    shape = np.broadcast_to(size, mean.shape)
    return rng.poisson(rng.gamma(shape, mean / shape))


def draw_normals(config: SimulationConfig, model: GeneModel) -> Samples:
    """Atlas normals and held-out normals of every tissue, in a shuffled column order."""
    rng = stream(config.seed, STREAM_SAMPLES)
    n_width = max(4, len(str(config.samples_per_tissue)))
    h_width = max(2, len(str(config.heldout_per_tissue)))
    ids, tissue, condition = [], [], []
    for t, name in enumerate(model.tissue_names):
        for i in range(config.samples_per_tissue):
            ids.append(f"{name}_N{i + 1:0{n_width}d}")
            tissue.append(t)
            condition.append("normal")
        for i in range(config.heldout_per_tissue):
            ids.append(f"{name}_H{i + 1:0{h_width}d}")
            tissue.append(t)
            condition.append("heldout_normal")
    tissue_arr = np.asarray(tissue, dtype=np.int64)
    n = len(ids)
    z = model.tissue_means[tissue_arr] + rng.normal(0.0, LATENT_TISSUE_SD, (n, config.latent_dim))
    log_sf = model.library_offsets[tissue_arr] + rng.normal(0.0, LIBRARY_WITHIN_SD, n)
    batch = rng.integers(0, config.batches, n)
    order = rng.permutation(n)
    return Samples(
        ids=[ids[i] for i in order],
        tissue=tissue_arr[order],
        condition=[condition[i] for i in order],
        batch=[f"b{batch[i] + 1}" for i in order],
        z=z[order],
        log_size_factor=log_sf[order],
    )
