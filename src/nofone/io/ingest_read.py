"""Pass 1 of `nofone ingest`: each count file read once, every value checked, samples spooled.

Counts are parsed from their text exactly (`nofone.io.values`); an error names the file, line,
gene and sample. Rows without any gene id are refused with their line. Per sample the file's
total (`input_library`, exact) and the number of values rounded are kept for the report.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from nofone.errors import InputError, shown
from nofone.io.gene_ids import GeneMapping
from nofone.io.readers import Layout, iter_gene_blocks, iter_sample_blocks, sniff
from nofone.io.samplesheet import SampleRow
from nofone.io.spool import GeneMajorTable, SampleMajorTable, Spool
from nofone.io.values import BadCount, exact_sums, parse_counts


@dataclass
class ParsedFile:
    """One count file after pass 1: its samples spooled, its gene ids and per-sample tallies."""

    layout: Layout
    rows: list[SampleRow]  # sheet rows, in the order the table stores their samples
    table: GeneMajorTable | SampleMajorTable
    id_columns: dict[str, np.ndarray]
    input_library: list[int]  # per sample: sum over every row of the file
    rounded: np.ndarray  # per sample: number of values rounded
    warnings: list[str] = field(default_factory=list)
    mapping: GeneMapping | None = None
    unique_ids: list[str] = field(default_factory=list)
    row_to_unique: np.ndarray | None = None  # per file row: index into unique_ids, -1 dropped
    duplicates: dict[str, int] = field(default_factory=dict)


def parse_file(path: Path, rows: list[SampleRow], fmt: str, strandedness: str | None, round_counts: bool,
               spool: Spool) -> ParsedFile:
    """Read one count file (shared by `rows`) into the spool."""
    formats = {row.format or fmt for row in rows}
    strands = {row.strandedness or strandedness for row in rows}
    if len(formats) > 1 or len(strands) > 1:
        lines = ", ".join(str(r.line) for r in rows)
        raise InputError(f"sample sheet lines {lines} share count file {path} but disagree on format/strandedness")
    strand = strands.pop()
    layout = sniff(path, formats.pop(), strand or "unstranded")
    warnings = []
    if strand is not None and layout.format != "star":
        lines = ", ".join(str(r.line) for r in rows if r.strandedness) or "none (--strandedness)"
        warnings.append(
            f"count file {path} ({layout.format}): strandedness {strand!r} is ignored (sample sheet "
            f"line {lines}); only STAR ReadsPerGene.out.tab files have a column per strand"
        )
    if layout.orientation == "samples":
        parsed = _parse_samples_by_genes(layout, rows, round_counts, spool)
    else:
        parsed = _parse_genes_by_samples(layout, rows, round_counts, spool)
    parsed.warnings = warnings + parsed.warnings
    return parsed


def _parse_genes_by_samples(layout: Layout, rows: list[SampleRow], round_counts: bool,
                            spool: Spool) -> ParsedFile:
    path = layout.path
    if layout.per_sample and len(rows) > 1:
        lines = ", ".join(str(r.line) for r in rows)
        raise InputError(
            f"count file {path} ({layout.format}) holds one sample but sample sheet lines {lines} use it"
        )
    columns = [_column_for(layout, row) for row in rows]
    seen: dict[str, SampleRow] = {}
    for row, column in zip(rows, columns):
        if column in seen:
            raise InputError(
                f"count file {path}: samples {seen[column].sample!r} and {row.sample!r} both read column {column!r}"
            )
        seen[column] = row
    table = spool.gene_major(len(rows))
    ids: dict[str, list[np.ndarray]] = defaultdict(list)
    library = [0] * len(rows)
    rounded = np.zeros(len(rows), dtype=np.int64)
    for block in iter_gene_blocks(layout, columns):
        _refuse_empty_ids(layout, block.ids, block.lines)
        primary = block.ids[layout.id_columns[0]]
        counts, was_rounded = to_counts(
            block.values, round_counts,
            lambda i, j, b=block, p=primary: (
                f"count file {path}, line {b.lines[i]}: gene {shown(str(p[i]))}, sample {rows[j].sample!r}"
                f" (column {shown(columns[j])})"
            ),
        )
        table.add_genes(counts)
        library = [a + b for a, b in zip(library, exact_sums(counts, axis=0))]
        rounded += was_rounded.sum(axis=0)
        for column, values in block.ids.items():
            ids[column].append(values)
    table.finish()
    if table.n_genes == 0:
        raise InputError(f"count file {path} has no gene rows")
    id_columns = {c: np.concatenate(v) for c, v in ids.items()}
    return ParsedFile(layout, rows, table, id_columns, library, rounded)


def _refuse_empty_ids(layout: Layout, ids: dict[str, np.ndarray], lines: np.ndarray) -> None:
    """A row without any gene id cannot be placed: refuse it by its line instead of dropping it."""
    empty = np.ones(len(lines), dtype=bool)
    for values in ids.values():
        empty &= np.fromiter((not str(v).strip() for v in values), bool, len(values))
    if empty.any():
        i = int(np.argmax(empty))
        names = ", ".join(repr(c) for c in ids)
        raise InputError(
            f"count file {layout.path}, line {lines[i]}: empty gene id (column {names}); "
            f"{int(empty.sum())} row(s) of this block have none"
        )


def _parse_samples_by_genes(layout: Layout, rows: list[SampleRow], round_counts: bool,
                            spool: Spool) -> ParsedFile:
    wanted = {(row.column or row.sample): row for row in rows}
    table = spool.sample_major(len(layout.value_columns))
    found: list[SampleRow] = []
    found_ids: set[int] = set()
    library: list[int] = []
    rounded: list[int] = []
    for block in iter_sample_blocks(layout):
        labels = [str(v).strip() for v in block.labels]
        pick = [i for i, label in enumerate(labels) if label in wanted]
        if not pick:
            continue
        picked_rows = [wanted[labels[i]] for i in pick]
        taken = pa.array(pick, pa.int64())
        counts, was_rounded = to_counts(
            [column.take(taken) for column in block.values], round_counts,
            lambda j, g, b=block, p=pick, r=picked_rows: (
                f"count file {layout.path}, line {b.first_line + p[j]}: gene {shown(layout.value_columns[g])}, "
                f"sample {r[j].sample!r}"
            ),
        )  # [samples, genes]
        for row in picked_rows:
            if id(row) in found_ids:
                raise InputError(f"count file {layout.path}: sample row {row.column or row.sample!r} appears twice")
            found_ids.add(id(row))
        table.add_samples(np.ascontiguousarray(counts))
        found.extend(picked_rows)
        library.extend(exact_sums(counts, axis=1))
        rounded.extend(int(n) for n in was_rounded.sum(axis=1))
    missing = [label for label, row in wanted.items() if id(row) not in found_ids]
    if missing:
        raise InputError(
            f"count file {layout.path}: no row labelled {missing[:5]} (samples-by-genes layout: the "
            "first column names the samples)"
        )
    gene_names = np.asarray(layout.value_columns, dtype=object)
    return ParsedFile(layout, found, table, {"gene": gene_names}, library, np.asarray(rounded, np.int64))


def to_counts(columns: Sequence[pa.Array], round_counts: bool,
              where: Callable[[int, int], str]) -> tuple[np.ndarray, np.ndarray]:
    """int64 counts [rows, columns] of text columns and which values were rounded; a bad value
    raises InputError with `where(row, column)`."""
    n = len(columns[0]) if columns else 0
    counts = np.empty((n, len(columns)), dtype=np.int64)
    rounded = np.zeros((n, len(columns)), dtype=bool)
    for j, column in enumerate(columns):
        try:
            counts[:, j], mask = parse_counts(column, round_counts)
        except BadCount as bad:
            raise InputError(f"{where(bad.row, j)}: {bad.reason}") from None
        if mask is not None:
            rounded[:, j] = mask
    return counts, rounded


def _column_for(layout: Layout, row: SampleRow) -> str:
    """The file column that holds `row`'s counts."""
    values = layout.value_columns
    if layout.per_sample:
        return values[0]
    wanted = row.column or row.sample
    if wanted in values:
        return wanted
    if wanted in layout.columns:
        raise InputError(
            f"count file {layout.path}: column {wanted!r} (sample {row.sample!r}, sample sheet line {row.line}) "
            f"was read as a gene column ({layout.format} layout); rename it or set the sheet's 'format' column"
        )
    if row.column is None and len(values) == 1:
        return values[0]
    stems = {_stem(v): v for v in values}
    if _stem(wanted) in stems and list(map(_stem, values)).count(_stem(wanted)) == 1:
        return stems[_stem(wanted)]
    listed = ", ".join(shown(v) for v in values[:8]) + (" ..." if len(values) > 8 else "")
    raise InputError(
        f"count file {layout.path}: no column {shown(wanted)} for sample {row.sample!r} "
        f"(sample sheet line {row.line}); the file's sample columns are: {listed}"
    )


def _stem(name: str) -> str:
    base = Path(name).name
    for suffix in (".Aligned.sortedByCoord.out.bam", ".sorted.bam", ".markdup.sorted.bam", ".bam", ".sam"):
        if base.endswith(suffix):
            return base[: -len(suffix)]
    return base
