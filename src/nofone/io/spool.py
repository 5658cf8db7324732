"""Disk spool that turns gene-row input into sample chunks with bounded memory.

Count matrices arrive one gene (row) at a time, but the dataset is written one sample at a
time. Holding a 20,000 x 20,000 cohort in memory to transpose it is what we must avoid, so rows
are buffered into tiles of at most `tile_bytes`, each tile written sample-major to one temporary
file. Reading the samples `[a, b)` back then costs one contiguous read per tile.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

DEFAULT_TILE_BYTES = 16 * 2**20


class Spool:
    """An append-only temporary file shared by the tables of one ingest run."""

    def __init__(self, path: str | os.PathLike[str], tile_bytes: int = DEFAULT_TILE_BYTES):
        self.path = Path(path)
        self.tile_bytes = tile_bytes
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        self._end = 0

    def _append(self, array: np.ndarray) -> int:
        data = np.ascontiguousarray(array, dtype=np.int64)  # no copy when it already is
        view = memoryview(data).cast("B")
        offset = self._end
        written = 0
        while written < len(view):
            written += os.pwrite(self._fd, view[written:], offset + written)
        self._end += len(view)
        return offset

    def _read(self, offset: int, n_values: int) -> np.ndarray:
        n_bytes = n_values * 8
        buffer = bytearray(n_bytes)
        view = memoryview(buffer)
        got = 0
        while got < n_bytes:
            chunk = os.preadv(self._fd, [view[got:]], offset + got)
            if chunk == 0:
                raise OSError(f"spool {self.path} is truncated")
            got += chunk
        return np.frombuffer(buffer, dtype=np.int64)

    def gene_major(self, n_samples: int) -> GeneMajorTable:
        """A table filled with blocks of genes x all its samples."""
        return GeneMajorTable(self, n_samples)

    def sample_major(self, n_genes: int) -> SampleMajorTable:
        """A table filled with blocks of samples x all its genes."""
        return SampleMajorTable(self, n_genes)

    def close(self) -> None:
        os.close(self._fd)
        self.path.unlink(missing_ok=True)


class GeneMajorTable:
    """Genes arrive in row blocks; samples are read back in column ranges."""

    def __init__(self, spool: Spool, n_samples: int):
        self.spool = spool
        self.n_samples = n_samples
        self.n_genes = 0
        self._tiles: list[tuple[int, int]] = []  # (offset, genes in tile)
        self._pending: list[np.ndarray] = []
        self._pending_genes = 0

    def add_genes(self, block: np.ndarray) -> None:
        """Append a [genes, samples] block of int64 counts."""
        if block.shape[1] != self.n_samples:
            raise ValueError("block has the wrong number of samples")
        self._pending.append(block)
        self._pending_genes += block.shape[0]
        self.n_genes += block.shape[0]
        if self._pending_genes * self.n_samples * 8 >= self.spool.tile_bytes:
            self._write_tile()

    def _write_tile(self) -> None:
        if not self._pending_genes:
            return
        tile = np.empty((self.n_samples, self._pending_genes), dtype=np.int64)  # samples x genes, once
        column = 0
        for block in self._pending:
            tile[:, column:column + block.shape[0]] = block.T
            column += block.shape[0]
        self._pending = []
        self._tiles.append((self.spool._append(tile), self._pending_genes))
        self._pending_genes = 0

    def finish(self) -> None:
        self._write_tile()

    def read_samples(self, start: int, stop: int) -> np.ndarray:
        """Counts of samples `[start, stop)` as a [stop - start, n_genes] int64 array."""
        m = stop - start
        out = np.empty((m, self.n_genes), dtype=np.int64)
        column = 0
        for offset, g in self._tiles:
            values = self.spool._read(offset + start * g * 8, m * g)
            out[:, column : column + g] = values.reshape(m, g)
            column += g
        return out


class SampleMajorTable:
    """Samples arrive in row blocks (samples-by-genes files); read back in row ranges."""

    def __init__(self, spool: Spool, n_genes: int):
        self.spool = spool
        self.n_genes = n_genes
        self.n_samples = 0
        self._tiles: list[tuple[int, int, int]] = []  # (offset, first sample, n samples)

    def add_samples(self, block: np.ndarray) -> None:
        if block.shape[1] != self.n_genes:
            raise ValueError("block has the wrong number of genes")
        if block.shape[0]:
            self._tiles.append((self.spool._append(block), self.n_samples, block.shape[0]))
            self.n_samples += block.shape[0]

    def finish(self) -> None:
        pass

    def read_samples(self, start: int, stop: int) -> np.ndarray:
        out = np.empty((stop - start, self.n_genes), dtype=np.int64)
        for offset, first, k in self._tiles:
            lo, hi = max(start, first), min(stop, first + k)
            if lo >= hi:
                continue
            values = self.spool._read(offset + (lo - first) * self.n_genes * 8, (hi - lo) * self.n_genes)
            out[lo - start : hi - start] = values.reshape(hi - lo, self.n_genes)
        return out
