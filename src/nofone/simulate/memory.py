"""The atlas normals of `simulate` in memory, with their truth: for tests and benches that need
counts and true means without writing and ingesting files."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nofone.simulate.atlas import STREAM_BLOCKS, GeneModel, build_gene_model, draw_nb, draw_normals, log_means, stream
from nofone.simulate.config import SimulationConfig
from nofone.simulate.write import _block_genes


@dataclass
class NormalCounts:
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
        rng = stream(config.seed, STREAM_BLOCKS, index)
        genes = slice(start, min(model.n_genes, start + block))
        mean = np.exp(log_means(model, samples.z, samples.log_size_factor, genes))
        counts.append(draw_nb(rng, mean, model.nb_size[genes]))
        means.append(mean)
    return NormalCounts(samples.ids, np.hstack(counts).astype(np.int64),
                        np.array([model.tissue_names[t] for t in samples.tissue]),
                        np.array([c == "heldout_normal" for c in samples.condition]), np.hstack(means), model)


def calibration_split(sim: NormalCounts) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows to train on, their split "train"/"test", never-seen rows): half of each tissue's
    held-out normals calibrate (split "test"), the other half are kept out of training."""
    heldout = np.flatnonzero(sim.heldout)
    calibration, unseen = heldout[::2], heldout[1::2]
    keep = np.setdiff1d(np.arange(len(sim.sample_ids)), unseen)
    return keep, np.where(np.isin(keep, calibration), "test", "train"), unseen
