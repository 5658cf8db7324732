"""Writing a simulation: the normal matrix in independently seeded blocks, the case files, the
sample sheet, the truth tables and simulation.json, all at once or none (`simulate`)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import os
import zlib
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from nofone import __version__
from nofone.io.atomic import staged_outdir, write_json_atomic, write_text_atomic
from nofone.progress import progress
from nofone.simulate.atlas import (
    DISPERSION_A0,
    DISPERSION_A1,
    DISPERSION_LOG_SD,
    LATENT_TISSUE_SD,
    LIBRARY_TISSUE_SD,
    LIBRARY_WITHIN_SD,
    SPECIFIC_FRACTION,
    STREAM_BLOCKS,
    TISSUE_SD_LOG2_MEDIAN,
    TISSUE_SD_LOG2_SPREAD,
    GeneModel,
    Samples,
    build_gene_model,
    draw_nb,
    draw_normals,
    log_means,
    stream,
)
from nofone.simulate.cases import DE_MIN_BASE_MEAN, draw_cases, simulate_cases
from nofone.simulate.config import SimulationConfig

#: Values per generated block of the normal matrix (genes x samples): bounds memory.
BLOCK_VALUES = 2_000_000
MAX_BLOCK_GENES = 1000
GZIP_LEVEL = 1

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
    rng = stream(config.seed, STREAM_BLOCKS, index)
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
        truth = simulate_cases(config, model, cases, counts_dir / CASES_DIR)
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
