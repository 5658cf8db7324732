"""The count dataset every step reads and writes: a folder of three Parquet tables.

- `counts.parquet`: one row per sample, `sample_id` (string), `counts` (fixed-size list of
  int64, genes in the order of the gene table) and `missing` (list of int32: indices of genes
  that were not measured in that sample; empty for almost every sample). Written in row groups
  of a chunk of samples so that steps stream the cohort instead of loading it.
- `genes.parquet`: `gene_id`, `gene_name`, `biotype` (the last two may be empty).
- `samples.parquet`: `sample_id` then the sample-sheet metadata (`condition`, `tissue`, ...),
  in the same order as `counts.parquet`.

A missing gene holds 0 in `counts` but is flagged in `missing`; consumers must use the mask
(`CountChunk.measured`) instead of treating the 0 as an observation.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from nofone import __version__
from nofone.choices import DEFAULT_CHUNK_SIZE
from nofone.errors import InputError

COUNTS_FILE = "counts.parquet"
GENES_FILE = "genes.parquet"
SAMPLES_FILE = "samples.parquet"
GENE_COLUMNS = ("gene_id", "gene_name", "biotype")


@dataclass
class CountChunk:
    """Counts of a block of samples: `counts[i, g]` for sample `sample_ids[i]`, gene `g`."""

    sample_ids: list[str]
    counts: np.ndarray  # int64 [n_samples, n_genes]
    measured: np.ndarray | None = None  # bool [n_samples, n_genes]; None when all measured

    def __len__(self) -> int:
        return len(self.sample_ids)

    def measured_mask(self) -> np.ndarray:
        """The measured mask, materialised (all True when nothing is missing)."""
        if self.measured is None:
            return np.ones(self.counts.shape, dtype=bool)
        return self.measured

    def select_genes(self, index: np.ndarray) -> CountChunk:
        """The same samples restricted (and reordered) to genes at `index`."""
        measured = None if self.measured is None else self.measured[:, index]
        return CountChunk(self.sample_ids, self.counts[:, index], measured)

    def select_samples(self, rows: np.ndarray) -> CountChunk:
        """The chunk restricted to the rows at `rows` (indices or a boolean mask)."""
        ids = list(np.asarray(self.sample_ids, dtype=object)[rows])
        measured = None if self.measured is None else self.measured[rows]
        return CountChunk(ids, self.counts[rows], measured)


def counts_schema(n_genes: int) -> pa.Schema:
    """Arrow schema of `counts.parquet` for a dataset of `n_genes` genes."""
    return pa.schema(
        [
            pa.field("sample_id", pa.string(), nullable=False),
            pa.field("counts", pa.list_(pa.int64(), n_genes), nullable=False),
            pa.field("missing", pa.list_(pa.int32()), nullable=False),
        ],
        metadata={b"nofone_version": __version__.encode(), b"n_genes": str(n_genes).encode()},
    )


class CountWriter:
    """Append samples to `counts.parquet`, one row group per `chunk_size` samples."""

    def __init__(self, path: str | os.PathLike[str], n_genes: int, chunk_size: int = DEFAULT_CHUNK_SIZE):
        self.path = Path(path)
        self.n_genes = n_genes
        self.chunk_size = chunk_size
        self._writer = pq.ParquetWriter(self.path, counts_schema(n_genes), compression="zstd")
        self._ids: list[str] = []
        self._counts: list[np.ndarray] = []
        self._missing: list[np.ndarray] = []
        self._buffered = 0
        self.n_written = 0

    def write(self, chunk: CountChunk) -> None:
        """Buffer a chunk of samples; full row groups are flushed to disk."""
        counts = np.ascontiguousarray(chunk.counts, dtype=np.int64)
        if counts.ndim != 2 or counts.shape[1] != self.n_genes:
            raise ValueError(f"expected counts of shape [n, {self.n_genes}], got {counts.shape}")
        measured = chunk.measured_mask()
        for i, sample_id in enumerate(chunk.sample_ids):
            self._ids.append(sample_id)
            self._counts.append(counts[i])
            self._missing.append(np.flatnonzero(~measured[i]).astype(np.int32))
        self._buffered += len(chunk.sample_ids)
        while self._buffered >= self.chunk_size:
            self._flush(self.chunk_size)

    def _flush(self, n: int) -> None:
        if n == 0:
            return
        ids, self._ids = self._ids[:n], self._ids[n:]
        rows, self._counts = self._counts[:n], self._counts[n:]
        missing, self._missing = self._missing[:n], self._missing[n:]
        self._buffered -= n
        values = pa.array(np.concatenate(rows), type=pa.int64())
        counts = pa.FixedSizeListArray.from_arrays(values, self.n_genes)
        offsets = np.zeros(n + 1, dtype=np.int32)
        np.cumsum([len(m) for m in missing], out=offsets[1:])
        flat = np.concatenate(missing) if missing else np.zeros(0, np.int32)
        missing_arr = pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, pa.int32()))
        table = pa.Table.from_arrays(
            [pa.array(ids, pa.string()), counts, missing_arr], schema=self._writer.schema
        )
        self._writer.write_table(table)
        self.n_written += n

    def close(self) -> None:
        """Flush what is buffered and finish the file."""
        self._flush(self._buffered)
        self._writer.close()

    def __enter__(self) -> CountWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Dataset:
    """A count dataset folder (see the module docstring), opened for streaming reads."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)
        if self.root.is_file():
            raise InputError(f"{self.root} is a file: give the dataset's folder (made by `nofone ingest`)")
        for name in (COUNTS_FILE, GENES_FILE, SAMPLES_FILE):
            if not (self.root / name).is_file():
                raise InputError(
                    f"{self.root} is not a nofone dataset: {name} is missing "
                    "(make one with `nofone ingest`)"
                )
        self.genes = read_parquet_table(self.root / GENES_FILE, "dataset file").to_pandas()
        self.samples = read_parquet_table(self.root / SAMPLES_FILE, "dataset file").to_pandas()
        try:
            self._file = pq.ParquetFile(self.root / COUNTS_FILE)
            n_genes = self._file.schema_arrow.field("counts").type.list_size
        except (pa.ArrowInvalid, OSError, KeyError, AttributeError) as exc:
            raise InputError(f"dataset file {self.root / COUNTS_FILE} is not a nofone counts table ({exc})") from None
        if "gene_id" not in self.genes or "sample_id" not in self.samples:
            raise InputError(f"{self.root}: genes.parquet needs gene_id and samples.parquet sample_id")
        if n_genes != len(self.genes):
            raise InputError(
                f"{self.root}: counts.parquet has {n_genes} genes but genes.parquet lists "
                f"{len(self.genes)}"
            )
        if self._file.metadata.num_rows != len(self.samples):
            raise InputError(
                f"{self.root}: counts.parquet has {self._file.metadata.num_rows} samples but "
                f"samples.parquet lists {len(self.samples)}"
            )

    @property
    def n_genes(self) -> int:
        return len(self.genes)

    @property
    def n_samples(self) -> int:
        return len(self.samples)

    @property
    def gene_ids(self) -> list[str]:
        return self.genes["gene_id"].astype(str).tolist()

    @property
    def sample_ids(self) -> list[str]:
        return self.samples["sample_id"].astype(str).tolist()

    def iter_chunks(
        self, chunk_size: int = DEFAULT_CHUNK_SIZE, sample_ids: Sequence[str] | None = None
    ) -> Iterator[CountChunk]:
        """Stream the counts in blocks of at most `chunk_size` samples, in file order.

        With `sample_ids`, only those samples are returned (still in file order); unknown ids
        are an error. Memory is bounded by one Parquet row group plus one chunk.
        """
        wanted: set[str] | None = None
        if sample_ids is not None:
            wanted = set(sample_ids)
            unknown = wanted.difference(self.sample_ids)
            if unknown:
                raise InputError(f"{self.root}: unknown sample ids {sorted(unknown)[:5]}")
        pending: list[CountChunk] = []
        n_pending = 0
        for batch in self._file.iter_batches(batch_size=chunk_size):
            chunk = _batch_to_chunk(batch, self.n_genes)
            if wanted is not None:
                keep = np.fromiter((s in wanted for s in chunk.sample_ids), bool, len(chunk))
                if not keep.any():
                    continue
                chunk = chunk.select_samples(keep)
            pending.append(chunk)
            n_pending += len(chunk)
            while n_pending >= chunk_size:
                merged = concat_chunks(pending)
                yield merged.select_samples(np.arange(chunk_size))
                rest = merged.select_samples(np.arange(chunk_size, len(merged)))
                pending, n_pending = ([rest] if len(rest) else []), len(rest)
        if n_pending:
            yield concat_chunks(pending)

    def read(self, sample_ids: Sequence[str] | None = None) -> CountChunk:
        """All (or the named) samples at once: for small cohorts, tests and plots."""
        chunks = list(self.iter_chunks(chunk_size=max(self.n_samples, 1), sample_ids=sample_ids))
        if not chunks:
            return CountChunk([], np.zeros((0, self.n_genes), np.int64), None)
        chunk = concat_chunks(chunks)
        if sample_ids is not None:
            order = {s: i for i, s in enumerate(chunk.sample_ids)}
            chunk = chunk.select_samples(np.array([order[s] for s in sample_ids], dtype=int))
        return chunk


def read_parquet_table(path: Path, what: str) -> pa.Table:
    """A whole Parquet file, or a one-line error saying it is not one."""
    try:
        return pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        text = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise InputError(f"{what} {path} is not a readable Parquet file ({text})") from None


def _batch_to_chunk(batch: pa.RecordBatch, n_genes: int) -> CountChunk:
    ids = batch.column("sample_id").to_pylist()
    counts_col = batch.column("counts")
    values = counts_col.flatten().to_numpy(zero_copy_only=False)
    counts = values.reshape(len(ids), n_genes)
    missing_col = batch.column("missing")
    flat_missing = missing_col.flatten().to_numpy(zero_copy_only=False)
    measured = None
    if len(flat_missing):
        measured = np.ones((len(ids), n_genes), dtype=bool)
        offsets = missing_col.offsets.to_numpy()
        for i in range(len(ids)):
            measured[i, flat_missing[offsets[i] : offsets[i + 1]]] = False
    return CountChunk(ids, counts, measured)


def concat_chunks(chunks: Sequence[CountChunk]) -> CountChunk:
    """Stack chunks of the same genes into one."""
    if len(chunks) == 1:
        return chunks[0]
    ids = [s for c in chunks for s in c.sample_ids]
    counts = np.concatenate([c.counts for c in chunks])
    measured = None
    if any(c.measured is not None for c in chunks):
        measured = np.concatenate([c.measured_mask() for c in chunks])
    return CountChunk(ids, counts, measured)


def write_tables(folder: Path, genes: pd.DataFrame, samples: pd.DataFrame) -> None:
    """Write `genes.parquet` and `samples.parquet` (contract columns first, strings as strings)."""
    genes = genes.copy()
    for column in GENE_COLUMNS:
        if column not in genes:
            genes[column] = pd.Series([None] * len(genes), dtype="string")
    front = list(GENE_COLUMNS)
    genes = genes[front + [c for c in genes.columns if c not in front]]
    genes.to_parquet(folder / GENES_FILE, index=False)
    samples = samples.reset_index(drop=True)
    samples = samples[["sample_id"] + [c for c in samples.columns if c != "sample_id"]]
    samples.to_parquet(folder / SAMPLES_FILE, index=False)


def copy_subset(
    source: Dataset,
    folder: Path,
    *,
    gene_index: np.ndarray | None = None,
    sample_ids: Sequence[str] | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> int:
    """Write a dataset into `folder` with a subset of genes and/or samples, streaming.

    Returns the number of samples written. Sample metadata keeps the source order.
    """
    genes = source.genes if gene_index is None else source.genes.iloc[gene_index]
    samples = source.samples
    if sample_ids is not None:
        keep = set(sample_ids)
        samples = samples[samples["sample_id"].isin(keep)]
    n_genes = len(genes)
    with CountWriter(folder / COUNTS_FILE, n_genes, chunk_size) as writer:
        for chunk in source.iter_chunks(chunk_size, sample_ids=sample_ids):
            writer.write(chunk if gene_index is None else chunk.select_genes(gene_index))
    write_tables(folder, genes.reset_index(drop=True), samples)
    return writer.n_written


class GeneAlignment:
    """Maps a dataset's genes onto a model's genes; model genes the dataset lacks are unmeasured.

    Nothing is zero-filled silently: `align` returns a `measured` mask that is False for them.
    """

    def __init__(self, dataset_gene_ids: Sequence[str], model_gene_ids: Sequence[str], where: str = ""):
        position = {g: i for i, g in enumerate(dataset_gene_ids)}
        self.index = np.array([position.get(g, -1) for g in model_gene_ids], dtype=np.int64)
        self.present = self.index >= 0
        self.n_missing = int((~self.present).sum())
        self.missing = [g for g, ok in zip(model_gene_ids, self.present) if not ok]
        if not self.present.any():
            raise InputError(
                f"{where}none of the model's {len(model_gene_ids)} genes are in the data "
                f"(model genes look like {list(model_gene_ids[:3])}, data genes like "
                f"{list(dataset_gene_ids[:3])}); ingest with --genes <model>/genes.tsv and "
                "--annotation to map ids"
            )

    def align(self, chunk: CountChunk) -> CountChunk:
        """The chunk on the model's genes, in the model's order."""
        safe = np.where(self.present, self.index, 0)
        counts = chunk.counts[:, safe]
        counts[:, ~self.present] = 0
        measured = None
        if self.n_missing or chunk.measured is not None:
            measured = np.broadcast_to(self.present, counts.shape).copy()
            if chunk.measured is not None:
                measured &= chunk.measured[:, safe]
        return CountChunk(chunk.sample_ids, counts, measured)
