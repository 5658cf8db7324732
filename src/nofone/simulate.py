"""Realistic simulated bulk RNA-seq with known truth, for tests, the demo and benchmarks.

The generative model mirrors what the downstream models assume, so that their failures are
theirs and not the simulator's:

- latent: one Gaussian component per tissue (means spread on a sphere, within-tissue sd 0.5);
- per-gene negative binomial mean `size_factor * exp(b_g + f_g(z))`, where `b_g` is the gene's
  baseline log mean (drawn from the per-gene means of a real atlas) and `f_g` a smooth random
  one-hidden-layer tanh map plus, for a few genes, a switch that turns the gene off outside
  one tissue;
- per-gene dispersion on the mean trend measured in real within-tissue data, with scatter;
- case samples: fresh normals with planted up/down fold changes drawn so that the counts stay
  exactly negative binomial (thinning for down, adding an independent NB for up).

Everything a test needs to check recovery is written beside the counts: the planted DE
(`truth.tsv`), the true latent (`latent.tsv`), the true gene parameters (`gene_params.tsv`).
The normal matrix is generated and written in blocks of genes, each with its own random
stream, so memory stays bounded and the output does not depend on the number of threads.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import os
import zlib
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from nofone import __version__
from nofone.errors import NofoneError
from nofone.io.atomic import staged_outdir, write_json_atomic, write_text_atomic
from nofone.progress import progress

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
#: A planted DE gene must have at least this true mean in its case, so the change is detectable.
DE_MIN_BASE_MEAN = 5.0
#: Values per generated block of the normal matrix (genes x samples): bounds memory.
BLOCK_VALUES = 2_000_000
MAX_BLOCK_GENES = 1000
GZIP_LEVEL = 1
_REFERENCE_POINTS = 512

# Independent random streams (SeedSequence spawn keys): adding samples never changes genes.
_STREAM_GENES, _STREAM_SAMPLES, _STREAM_BLOCKS, _STREAM_CASES = 1, 2, 3, 4

COUNTS_DIR = "counts"
MATRIX_FILE = "normals.tsv.gz"
CASES_DIR = "cases"
SHEET_FILE = "samplesheet.csv"
TRUTH_FILE = "truth.tsv"
GENES_FILE = "genes.tsv"
GENE_PARAMS_FILE = "gene_params.tsv"
LATENT_FILE = "latent.tsv"
SUMMARY_FILE = "simulation.json"
SHEET_COLUMNS = ("sample", "counts", "condition", "tissue", "batch", "column")


@dataclass(frozen=True)
class SimulationConfig:
    """What to simulate (see `nofone simulate --help` for the meaning of each option)."""

    tissues: int = 4
    samples_per_tissue: int = 40
    genes: int = 2000
    cases: int = 8
    heldout_per_tissue: int = 2
    seed: int = 0
    de_fraction: float = 0.05
    lfc_min: float = 1.0
    lfc_max: float = 3.0
    latent_dim: int = 8
    batches: int = 2

    def validate(self) -> None:
        """Refuse options that cannot give a sensible data set, before anything is written."""
        for name in ("tissues", "samples_per_tissue", "genes", "latent_dim", "batches"):
            if getattr(self, name) < 1:
                raise NofoneError(
                    f"--{_flag(name)} must be a positive integer, got {getattr(self, name)}"
                )
        for name in ("cases", "heldout_per_tissue", "seed"):
            if getattr(self, name) < 0:
                raise NofoneError(f"--{_flag(name)} must be >= 0, got {getattr(self, name)}")
        if not 0.0 < self.de_fraction < 1.0:
            raise NofoneError(
                f"--de-fraction must lie strictly between 0 and 1, got {self.de_fraction}"
            )
        if not self.lfc_min > 0:
            raise NofoneError(
                f"--lfc-min must be > 0 (a log2 fold-change magnitude), got {self.lfc_min}"
            )
        if self.lfc_min > self.lfc_max:
            raise NofoneError(
                f"--lfc-min ({self.lfc_min}) is larger than --lfc-max ({self.lfc_max})"
            )
        if self.lfc_max > 20:
            raise NofoneError(f"--lfc-max must be <= 20 (a 2^20-fold change), got {self.lfc_max}")


def _flag(name: str) -> str:
    return name.replace("_", "-")


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


def _rng(seed: int, *key: int) -> np.random.Generator:
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
    rng = _rng(config.seed, _STREAM_GENES)
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
    rng = _rng(config.seed, _STREAM_SAMPLES)
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


def _block_genes(n_samples: int) -> int:
    """Genes per block of the normal matrix: a fixed function of the cohort, for determinism."""
    return int(max(1, min(MAX_BLOCK_GENES, BLOCK_VALUES // max(n_samples, 1))))


def _gzip_member(data: bytes) -> bytes:
    """One complete gzip member (mtime 0, so identical input gives identical bytes).

    Concatenated members are one valid gzip file, so blocks compress independently.
    """
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
    return compressor.compress(data) + compressor.flush()


def _matrix_block(config: SimulationConfig, model: GeneModel, samples: Samples,
                  index: int, start: int, stop: int) -> tuple[bytes, np.ndarray]:
    """Counts of genes [start, stop) for every normal, as gzipped nf-core matrix rows."""
    rng = _rng(config.seed, _STREAM_BLOCKS, index)
    genes = slice(start, stop)
    mean = np.exp(log_means(model, samples.z, samples.log_size_factor, genes))
    counts = draw_nb(rng, mean, model.nb_size[genes])  # [n_samples, block], C order
    del mean
    columns = [pa.array(model.gene_ids[start:stop], pa.string()),
               pa.array(model.gene_names[start:stop], pa.string())]
    columns.extend(pa.array(row) for row in counts)  # one column per sample
    table = pa.Table.from_arrays(columns, names=["gene_id", "gene_name", *samples.ids])
    sink = io.BytesIO()
    options = pacsv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none")
    pacsv.write_csv(table, sink, options)
    return _gzip_member(sink.getvalue()), counts.sum(axis=1)


def write_normal_matrix(path: Path, config: SimulationConfig, model: GeneModel,
                        samples: Samples, workers: int | None = None) -> np.ndarray:
    """Write the nf-core style genes x samples matrix in blocks; returns library sizes.

    Blocks are generated and compressed in worker threads (numpy, Arrow and zlib release the
    GIL) and written in order; at most `2 * workers` blocks are held at once.
    """
    workers = workers or min(4, os.cpu_count() or 1)
    block = _block_genes(len(samples.ids))
    starts = list(range(0, model.n_genes, block))
    library = np.zeros(len(samples.ids), dtype=np.int64)
    header = "\t".join(["gene_id", "gene_name", *samples.ids]) + "\n"
    with open(path, "wb") as handle, ThreadPoolExecutor(workers) as pool, \
            progress("writing normal counts", model.n_genes) as advance:
        handle.write(_gzip_member(header.encode()))
        pending: deque[tuple[int, Future[tuple[bytes, np.ndarray]]]] = deque()

        def drain_one() -> None:
            n, future = pending.popleft()
            data, sums = future.result()
            handle.write(data)
            library[:] += sums
            advance(n)

        for i, start in enumerate(starts):
            stop = min(start + block, model.n_genes)
            future = pool.submit(_matrix_block, config, model, samples, i, start, stop)
            pending.append((stop - start, future))
            if len(pending) >= 2 * workers:
                drain_one()
        while pending:
            drain_one()
    return library


def draw_cases(config: SimulationConfig, model: GeneModel) -> Samples:
    """Case samples: the tissue, latent and library of the fresh normal each one starts from."""
    rng = _rng(config.seed, _STREAM_CASES)
    n = config.cases
    tissue = rng.integers(0, config.tissues, n)
    z = model.tissue_means[tissue] + rng.normal(0.0, LATENT_TISSUE_SD, (n, config.latent_dim))
    log_sf = model.library_offsets[tissue] + rng.normal(0.0, LIBRARY_WITHIN_SD, n)
    batch = rng.integers(0, config.batches, n)
    width = max(3, len(str(n)))
    return Samples(
        ids=[f"case{i + 1:0{width}d}" for i in range(n)],
        tissue=tissue,
        condition=["case"] * n,
        batch=[f"b{b + 1}" for b in batch],
        z=z,
        log_size_factor=log_sf,
    )


def plant_de(rng: np.random.Generator, counts: np.ndarray, mean: np.ndarray, size: np.ndarray,
             genes: np.ndarray, lfc: np.ndarray) -> np.ndarray:
    """Apply log2 fold changes `lfc` to `counts` at `genes`, keeping them exactly NB.

    Down (factor p = 2^lfc < 1): binomial thinning of NB(mu, r) is NB(p mu, r). Up (f = 2^lfc):
    adding an independent NB((f-1) mu, (f-1) r), which has the same success probability,
    gives NB(f mu, f r).
    """
    out = counts.copy()
    factor = np.exp2(lfc)
    down = factor < 1
    g_down = genes[down]
    out[g_down] = rng.binomial(out[g_down], factor[down])
    g_up, extra = genes[~down], factor[~down] - 1.0
    out[g_up] += draw_nb(rng, extra * mean[g_up], extra * size[g_up])
    return out


def _simulate_cases(config: SimulationConfig, model: GeneModel, cases: Samples,
                    folder: Path) -> list[dict]:
    """Write one two-column count file per case; returns the truth rows (planted DE)."""
    truth: list[dict] = []
    size = model.nb_size
    folder.mkdir(parents=True, exist_ok=True)
    ids = np.asarray(model.gene_ids, dtype=object)
    for i, sample in enumerate(cases.ids):
        rng = _rng(config.seed, _STREAM_CASES, i + 1)
        mean = np.exp(log_means(model, cases.z[i : i + 1], cases.log_size_factor[i : i + 1]))[0]
        counts = draw_nb(rng, mean, size)
        eligible = np.flatnonzero(mean >= DE_MIN_BASE_MEAN)
        n_de = max(1, round(config.de_fraction * len(eligible))) if len(eligible) else 0
        genes = np.sort(rng.choice(eligible, n_de, replace=False))
        magnitude = rng.uniform(config.lfc_min, config.lfc_max, n_de)
        lfc = np.where(rng.random(n_de) < 0.5, -magnitude, magnitude)
        counts = plant_de(rng, counts, mean, size, genes, lfc)
        lines = [f"{g}\t{c}" for g, c in zip(ids, counts.tolist(), strict=True)]
        (folder / f"{sample}.tsv").write_text("gene_id\tcount\n" + "\n".join(lines) + "\n")
        source = f"{sample}_source"
        truth.extend(
            {"sample_id": sample, "source_normal": source, "gene_id": model.gene_ids[g],
             "log2_fold_change": float(v), "base_mean": float(mean[g])}
            for g, v in zip(genes.tolist(), lfc, strict=True)
        )
    return truth


def _tsv(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Tab-separated text; floats with 6 significant digits (stable across platforms)."""
    def cell(value: object) -> str:
        if isinstance(value, float | np.floating):
            return f"{value:.6g}"
        return str(value)

    body = ["\t".join(cell(v) for v in row) for row in rows]
    return "\n".join(["\t".join(header), *body]) + "\n"


def _samplesheet(normals: Samples, cases: Samples, model: GeneModel) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(SHEET_COLUMNS)
    matrix = f"{COUNTS_DIR}/{MATRIX_FILE}"
    for i, sample in enumerate(normals.ids):
        tissue = model.tissue_names[normals.tissue[i]]
        writer.writerow([sample, matrix, normals.condition[i], tissue, normals.batch[i], sample])
    for i, sample in enumerate(cases.ids):
        writer.writerow([sample, f"{COUNTS_DIR}/{CASES_DIR}/{sample}.tsv", "case",
                         model.tissue_names[cases.tissue[i]], cases.batch[i], ""])
    return buffer.getvalue()


def _latent_table(normals: Samples, cases: Samples, model: GeneModel) -> str:
    d = normals.z.shape[1]
    header = ["sample_id", "tissue", "condition", "batch", "size_factor",
              *[f"z{j + 1}" for j in range(d)]]
    rows = []
    for group in (normals, cases):
        for i, sample in enumerate(group.ids):
            rows.append([sample, model.tissue_names[group.tissue[i]], group.condition[i],
                         group.batch[i], float(np.exp(group.log_size_factor[i])),
                         *map(float, group.z[i])])
    return _tsv(header, rows)


def _gene_tables(model: GeneModel) -> tuple[str, str]:
    genes = _tsv(["gene_id", "gene_name", "biotype"],
                 list(zip(model.gene_ids, model.gene_names, model.biotypes, strict=True)))
    specific = [model.tissue_names[t] if t >= 0 else "" for t in model.specific_tissue]
    params = _tsv(
        ["gene_id", "log_mean_baseline", "dispersion", "nb_size", "tissue_sd_log2",
         "specific_tissue", "specific_log2_drop"],
        [[gid, float(b), float(a), float(1 / a), float(s), sp, float(dr / np.log(2))]
         for gid, b, a, s, sp, dr in zip(model.gene_ids, model.baseline, model.dispersion,
                                         model.tissue_sd_log2, specific, model.specific_drop,
                                         strict=True)],
    )
    return genes, params


def _per_tissue(samples: Samples, model: GeneModel, condition: str) -> dict[str, int]:
    keep = np.asarray(samples.condition, dtype=object) == condition
    counts = np.bincount(samples.tissue[keep], minlength=len(model.tissue_names))
    return {name: int(c) for name, c in zip(model.tissue_names, counts, strict=True)}


def simulate(outdir: str | os.PathLike[str], config: SimulationConfig | None = None) -> dict:
    """Simulate an atlas of normals, held-out normals and cases with planted DE into `outdir`.

    Returns the summary also written to `simulation.json`. All files appear at once, or none.
    """
    config = config or SimulationConfig()
    config.validate()
    model = build_gene_model(config)
    normals = draw_normals(config, model)
    cases = draw_cases(config, model)
    with staged_outdir(outdir) as stage:
        counts_dir = stage / COUNTS_DIR
        counts_dir.mkdir()
        library = write_normal_matrix(counts_dir / MATRIX_FILE, config, model, normals)
        truth = _simulate_cases(config, model, cases, counts_dir / CASES_DIR)
        write_text_atomic(stage / SHEET_FILE, _samplesheet(normals, cases, model))
        truth_columns = ["sample_id", "source_normal", "gene_id", "log2_fold_change", "base_mean"]
        truth_rows = [[r[c] for c in truth_columns] for r in truth]
        write_text_atomic(stage / TRUTH_FILE, _tsv(truth_columns, truth_rows))
        genes_text, params_text = _gene_tables(model)
        write_text_atomic(stage / GENES_FILE, genes_text)
        write_text_atomic(stage / GENE_PARAMS_FILE, params_text)
        write_text_atomic(stage / LATENT_FILE, _latent_table(normals, cases, model))
        summary = _summary(config, model, normals, cases, library, truth)
        write_json_atomic(stage / SUMMARY_FILE, summary)
    return summary


def _summary(config: SimulationConfig, model: GeneModel, normals: Samples, cases: Samples,
             library: np.ndarray, truth: list[dict]) -> dict:
    n_up = sum(r["log2_fold_change"] > 0 for r in truth)
    return {
        "nofone_version": __version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "seed": config.seed,
        "parameters": asdict(config),
        "n_genes": model.n_genes,
        "n_samples": {
            "normal": _per_tissue(normals, model, "normal"),
            "heldout_normal": _per_tissue(normals, model, "heldout_normal"),
            "case": _per_tissue(cases, model, "case"),
        },
        "library_size": {
            "min": int(library.min()),
            "median": float(np.median(library)),
            "max": int(library.max()),
        },
        "planted_de": {"total": len(truth), "up": n_up, "down": len(truth) - n_up,
                       "min_base_mean": DE_MIN_BASE_MEAN},
        "latent": {
            "dim": config.latent_dim,
            "radius": model.radius,
            "tissue_sd": LATENT_TISSUE_SD,
            "means": {name: model.tissue_means[t].tolist()
                      for t, name in enumerate(model.tissue_names)},
        },
        "genes": {
            "biotypes": {b: model.biotypes.count(b) for b in sorted(set(model.biotypes))},
            "tissue_specific": int((model.specific_tissue >= 0).sum()),
        },
        "constants": {
            "dispersion_a0": DISPERSION_A0, "dispersion_a1": DISPERSION_A1,
            "dispersion_log_sd": DISPERSION_LOG_SD, "library_tissue_sd": LIBRARY_TISSUE_SD,
            "library_within_sd": LIBRARY_WITHIN_SD, "tissue_sd_log2_median": TISSUE_SD_LOG2_MEDIAN,
            "tissue_sd_log2_spread": TISSUE_SD_LOG2_SPREAD, "specific_fraction": SPECIFIC_FRACTION,
        },
        "files": {
            "samplesheet": SHEET_FILE, "normal_matrix": f"{COUNTS_DIR}/{MATRIX_FILE}",
            "cases": f"{COUNTS_DIR}/{CASES_DIR}/", "truth": TRUTH_FILE, "genes": GENES_FILE,
            "gene_params": GENE_PARAMS_FILE, "latent": LATENT_FILE,
        },
    }


@dataclass
class NormalCounts:
    """The atlas normals of `simulate` in memory, with their truth (for tests and benches)."""

    sample_ids: list[str]
    counts: np.ndarray  # int64 [n, G]
    tissue: np.ndarray  # tissue names [n]
    heldout: np.ndarray  # bool [n]: the held-out normals of each tissue
    mean: np.ndarray  # [n, G] true NB means
    model: GeneModel


def draw_normal_counts(config: SimulationConfig) -> NormalCounts:
    """The same normals `simulate` writes (same ids, same counts block by block), in memory."""
    model = build_gene_model(config)
    samples = draw_normals(config, model)
    block = _block_genes(len(samples.ids))
    counts, means = [], []
    for index, start in enumerate(range(0, model.n_genes, block)):
        rng = _rng(config.seed, _STREAM_BLOCKS, index)
        genes = slice(start, min(model.n_genes, start + block))
        mean = np.exp(log_means(model, samples.z, samples.log_size_factor, genes))
        counts.append(draw_nb(rng, mean, model.nb_size[genes]))
        means.append(mean)
    return NormalCounts(samples.ids, np.hstack(counts).astype(np.int64),
                        np.array([model.tissue_names[t] for t in samples.tissue]),
                        np.array([c == "heldout_normal" for c in samples.condition]), np.hstack(means), model)
