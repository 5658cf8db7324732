"""Case samples: fresh normals with planted up and down fold changes, kept exactly negative binomial."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nofone.simulate.atlas import (
    LATENT_TISSUE_SD,
    LIBRARY_WITHIN_SD,
    STREAM_CASES,
    GeneModel,
    Samples,
    draw_nb,
    log_means,
    stream,
)
from nofone.simulate.config import SimulationConfig

#: A planted DE gene must have at least this true mean in its case, so the change is detectable.
DE_MIN_BASE_MEAN = 5.0


def draw_cases(config: SimulationConfig, model: GeneModel) -> Samples:
    """Case samples: the tissue, latent and library of the fresh normal each one starts from."""
    rng = stream(config.seed, STREAM_CASES)
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


def simulate_cases(config: SimulationConfig, model: GeneModel, cases: Samples,
                    folder: Path) -> list[dict]:
    """Write one two-column count file per case; returns the truth rows (planted DE)."""
    truth: list[dict] = []
    size = model.nb_size
    folder.mkdir(parents=True, exist_ok=True)
    ids = np.asarray(model.gene_ids, dtype=object)
    for i, sample in enumerate(cases.ids):
        rng = stream(config.seed, STREAM_CASES, i + 1)
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
