"""Shared fixtures: paths to the optional real data, small file writers, a CLI runner."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("NOFONE_SHARED_DATA", REPO.parent / "shared" / "data"))

os.environ.setdefault("NOFONE_PROGRESS", "0")

requires_shared_data = pytest.mark.skipif(
    not SHARED_DATA.is_dir(),
    reason=f"real datasets not found at {SHARED_DATA} (set NOFONE_SHARED_DATA to run these)",
)


def write(path: Path, text: str, gz: bool = False) -> Path:
    """Write a text fixture, gzipped when asked."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        with gzip.open(path, "wt") as handle:
            handle.write(text)
    else:
        path.write_text(text)
    return path


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models train fastest on one thread; `pytest -n 2` runs two workers on two cores, and a
    second OpenMP thread per worker only spins against the other worker."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _quiet_progress():
    from nofone import progress

    progress.set_enabled(False)
    yield


def simulate_two_group_cohort(folder: Path, n_genes: int, per_cell: int, cell_types: dict[str, str],
                              gene_name: str = "G{}", seed: int = 0):
    """A dataset for `nofone cohort-de`: cell types (keys: sample-id prefix, values: the
    `celltype` column) x two groups (ctrl, trt), `per_cell` samples each, NB counts. 20% of genes
    differ between cell types; 15% are planted between groups (+-1 to 3 log2, the same in every
    cell type). Returns the genes (gene_id, gene_name) with their planted `lfc`."""
    import numpy as np
    import pandas as pd

    from nofone.io.dataset import COUNTS_FILE, CountChunk, CountWriter, write_tables

    rng = np.random.default_rng(seed)
    log_mean = rng.uniform(np.log(3), np.log(3000), n_genes)
    cell_effect = np.where(rng.random(n_genes) < 0.2, rng.normal(0, 1.5, n_genes), 0.0) * np.log(2)
    planted = rng.random(n_genes) < 0.15
    lfc = np.where(planted, rng.choice([-1, 1], n_genes) * rng.uniform(1, 3, n_genes), 0.0)
    r = 1 / (0.03 + 1.0 / np.exp(log_mean))  # NB size: dispersion 0.03 + 1 / mean
    rows, samples = [], []
    for cell, name in cell_types.items():
        for group in ("ctrl", "trt"):
            for i in range(per_cell):
                log_mu = log_mean + (cell_effect if cell == "B" else 0) + (lfc * np.log(2) if group == "trt" else 0)
                mean = np.exp(log_mu + rng.normal(0, 0.3))  # the sample's size factor
                rows.append(rng.negative_binomial(r, r / (r + mean)))
                samples.append({"sample_id": f"{cell}_{group}_{i}", "group": group, "celltype": name,
                                "depth": float(rng.uniform(1, 2))})
    genes = pd.DataFrame({"gene_id": [f"ENSG{i:011d}" for i in range(n_genes)],
                          "gene_name": [gene_name.format(i) for i in range(n_genes)]})
    folder.mkdir(parents=True, exist_ok=True)
    with CountWriter(folder / COUNTS_FILE, n_genes) as writer:
        writer.write(CountChunk([s["sample_id"] for s in samples], np.array(rows, dtype=np.int64)))
    write_tables(folder, genes, pd.DataFrame(samples))
    return genes.assign(lfc=lfc)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models train fastest on one thread (and a shared machine's cores are not oversubscribed)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
