"""`nofone ingest`: a sample sheet of count files in, one streaming Parquet dataset out.

Two passes with memory bounded by a tile and a chunk of samples, never by the cohort:

1. each count file is read once, validated value by value (the error names file, line, gene
   and sample) and spooled to a temporary file sample-major;
2. gene ids are harmonised (versions stripped, symbols/Entrez mapped, duplicates resolved by
   the chosen policy), the target gene set is fixed (a gene list, or the genes every file has)
   and samples are streamed out in chunks to `counts.parquet`.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from nofone import __version__
from nofone.choices import DUPLICATE_POLICIES
from nofone.errors import InputError
from nofone.io.atomic import staged_outdir, write_json_atomic
from nofone.io.dataset import COUNTS_FILE, DEFAULT_CHUNK_SIZE, CountChunk, CountWriter, write_tables
from nofone.io.gene_ids import Annotation, GeneMapping, map_gene_ids, read_gene_list
from nofone.io.readers import Layout, iter_gene_blocks, iter_sample_blocks, sniff
from nofone.io.samplesheet import SampleRow, read_samplesheet
from nofone.io.spool import GeneMajorTable, SampleMajorTable, Spool
from nofone.progress import progress

REPORT_FILE = "ingest_report.json"


@dataclass
class IngestOptions:
    """Options of `nofone ingest` (see the CLI for their meaning)."""

    format: str = "auto"
    strandedness: str = "unstranded"
    round_counts: bool = False
    duplicates: str = "sum"
    annotation: Path | None = None
    genes: Path | None = None
    chunk_size: int = DEFAULT_CHUNK_SIZE
    tile_bytes: int = 16 * 2**20


@dataclass
class ParsedFile:
    """One count file after pass 1: its samples spooled, its gene ids and per-sample tallies."""

    layout: Layout
    rows: list[SampleRow]  # sheet rows, in the order the table stores their samples
    table: GeneMajorTable | SampleMajorTable
    id_columns: dict[str, np.ndarray]
    input_library: np.ndarray  # per sample: sum over every row of the file
    rounded: np.ndarray  # per sample: number of values rounded
    mapping: GeneMapping | None = None
    unique_ids: list[str] = field(default_factory=list)
    row_to_unique: np.ndarray | None = None  # per file row: index into unique_ids, -1 dropped
    duplicates: dict[str, int] = field(default_factory=dict)


def ingest(samplesheet: str | os.PathLike[str], outdir: str | os.PathLike[str],
           options: IngestOptions | None = None) -> dict:
    """Run ingest; returns the report that is also written to `ingest_report.json`."""
    options = options or IngestOptions()
    if options.duplicates not in DUPLICATE_POLICIES:
        raise InputError(f"duplicate policy {options.duplicates!r}: use one of {DUPLICATE_POLICIES}")
    rows = read_samplesheet(samplesheet)
    annotation = Annotation.read(options.annotation) if options.annotation else None
    gene_list = read_gene_list(options.genes) if options.genes else None
    groups: dict[Path, list[SampleRow]] = defaultdict(list)
    for row in rows:
        groups[row.counts].append(row)

    with staged_outdir(outdir) as stage:
        spool = Spool(stage / ".spool.bin", tile_bytes=options.tile_bytes)
        try:
            parsed: list[ParsedFile] = []
            with progress("reading count files", len(groups)) as advance:
                for path, file_rows in groups.items():
                    parsed.append(_parse_file(path, file_rows, options, spool))
                    advance()
            for item in parsed:
                _harmonise(item, annotation, options.duplicates)
            targets, not_in_all = _target_genes(parsed, gene_list)
            if not targets:
                raise InputError(
                    "no genes left after harmonising ids"
                    + (" and applying the gene list" if gene_list else " across the count files")
                )
            report = _write(stage, parsed, targets, annotation, options)
        finally:
            spool.close()
        report.update(
            nofone_version=__version__,
            created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            command=sys.argv,
            samplesheet=str(Path(samplesheet).resolve()),
            options={k: (str(v) if isinstance(v, Path) else v) for k, v in vars(options).items()},
        )
        report["genes"]["dropped"]["not_in_all_files"] = len(not_in_all)
        report["genes"]["not_in_all_files"] = not_in_all[:1000]
        write_json_atomic(stage / REPORT_FILE, _ordered(report))
    return report


def _ordered(report: dict) -> dict:
    front = ["nofone_version", "created", "command", "samplesheet", "options", "n_samples", "n_genes"]
    return {k: report[k] for k in front if k in report} | {k: v for k, v in report.items() if k not in front}


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
    shown = ", ".join(values[:8]) + (" ..." if len(values) > 8 else "")
    raise InputError(
        f"count file {layout.path}: no column {wanted!r} for sample {row.sample!r} "
        f"(sample sheet line {row.line}); the file's sample columns are: {shown}"
    )


def _stem(name: str) -> str:
    base = Path(name).name
    for suffix in (".Aligned.sortedByCoord.out.bam", ".sorted.bam", ".markdup.sorted.bam", ".bam", ".sam"):
        if base.endswith(suffix):
            return base[: -len(suffix)]
    return base


def _parse_file(path: Path, rows: list[SampleRow], options: IngestOptions, spool: Spool) -> ParsedFile:
    formats = {row.format or options.format for row in rows}
    strands = {row.strandedness or options.strandedness for row in rows}
    if len(formats) > 1 or len(strands) > 1:
        lines = ", ".join(str(r.line) for r in rows)
        raise InputError(f"sample sheet lines {lines} share count file {path} but disagree on format/strandedness")
    layout = sniff(path, formats.pop(), strands.pop())
    if layout.orientation == "samples":
        return _parse_samples_by_genes(layout, rows, options, spool)
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
    library = np.zeros(len(rows), dtype=np.float64)
    rounded = np.zeros(len(rows), dtype=np.int64)
    for block in iter_gene_blocks(layout, columns):
        primary = block.ids[layout.id_columns[0]]
        counts, n_rounded = _to_counts(
            block.values, options.round_counts,
            lambda i, j, b=block, p=primary: (
                f"count file {path}, line {b.first_line + i}: gene {p[i]!r}, sample {rows[j].sample!r}"
                f" (column {columns[j]!r})"
            ),
        )
        table.add_genes(counts)
        library += counts.sum(axis=0)
        rounded += n_rounded
        for column, values in block.ids.items():
            ids[column].append(values)
    table.finish()
    if table.n_genes == 0:
        raise InputError(f"count file {path} has no gene rows")
    id_columns = {c: np.concatenate(v) for c, v in ids.items()}
    return ParsedFile(layout, rows, table, id_columns, library, rounded)


def _parse_samples_by_genes(layout: Layout, rows: list[SampleRow], options: IngestOptions,
                            spool: Spool) -> ParsedFile:
    wanted = {(row.column or row.sample): row for row in rows}
    table = spool.sample_major(len(layout.value_columns))
    found: list[SampleRow] = []
    found_ids: set[int] = set()
    library, rounded = [], []
    for block in iter_sample_blocks(layout):
        labels = [str(v).strip() for v in block.labels]
        pick = [i for i, label in enumerate(labels) if label in wanted]
        if not pick:
            continue
        values = block.values[pick]
        picked_rows = [wanted[labels[i]] for i in pick]
        counts, n_rounded = _to_counts(
            values.T, options.round_counts,
            lambda g, j, b=block, p=pick, r=picked_rows: (
                f"count file {layout.path}, line {b.first_line + p[j]}: gene {layout.value_columns[g]!r}, "
                f"sample {r[j].sample!r}"
            ),
        )
        for row in picked_rows:
            if id(row) in found_ids:
                raise InputError(f"count file {layout.path}: sample row {row.column or row.sample!r} appears twice")
            found_ids.add(id(row))
        table.add_samples(np.ascontiguousarray(counts.T))
        found.extend(picked_rows)
        library.extend(counts.sum(axis=0))
        rounded.extend(n_rounded)
    missing = [label for label, row in wanted.items() if id(row) not in found_ids]
    if missing:
        raise InputError(
            f"count file {layout.path}: no row labelled {missing[:5]} (samples-by-genes layout: the "
            "first column names the samples)"
        )
    gene_names = np.asarray(layout.value_columns, dtype=object)
    return ParsedFile(layout, found, table, {"gene": gene_names}, np.asarray(library, np.float64),
                      np.asarray(rounded, np.int64))


def _to_counts(values: np.ndarray, round_counts: bool, where) -> tuple[np.ndarray, np.ndarray]:
    """Validate a [genes, samples] float block and return int64 counts and rounded-per-sample."""
    bad = ~np.isfinite(values)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        kind = "missing or non-numeric value (NA/NaN)" if np.isnan(values[i, j]) else "infinite value"
        raise InputError(f"{where(i, j)}: {kind}")
    negative = values < 0
    if negative.any():
        i, j = np.argwhere(negative)[0]
        raise InputError(f"{where(i, j)}: negative count {values[i, j]:g}")
    rounded = np.rint(values)
    fractional = np.abs(values - rounded) > 1e-9
    n_rounded = fractional.sum(axis=0).astype(np.int64)
    if fractional.any() and not round_counts:
        i, j = np.argwhere(fractional)[0]
        raise InputError(
            f"{where(i, j)}: non-integer count {values[i, j]:g}; models need integer counts. "
            "Use --round-counts for estimated counts (RSEM expected counts, Salmon NumReads)"
        )
    return rounded.astype(np.int64), n_rounded


def _harmonise(item: ParsedFile, annotation: Annotation | None, policy: str) -> None:
    """Canonical ids per row, then duplicates summed, dropped or refused."""
    mapping = map_gene_ids(item.id_columns, annotation)
    item.mapping = mapping
    positions: dict[str, list[int]] = defaultdict(list)
    for row, gene in enumerate(mapping.canonical):
        if gene:
            positions[gene].append(row)
    duplicates = {g: len(r) for g, r in positions.items() if len(r) > 1}
    if duplicates and policy == "error":
        shown = ", ".join(f"{g} ({n} rows)" for g, n in list(duplicates.items())[:10])
        raise InputError(
            f"count file {item.layout.path}: {len(duplicates)} gene ids occur more than once after "
            f"harmonising ids: {shown}. Use --duplicates sum or --duplicates drop"
        )
    row_to_unique = np.full(len(mapping.canonical), -1, dtype=np.int64)
    unique: list[str] = []
    for gene, rows in positions.items():
        if gene in duplicates and policy == "drop":
            continue
        row_to_unique[rows] = len(unique)
        unique.append(gene)
    item.unique_ids, item.row_to_unique, item.duplicates = unique, row_to_unique, duplicates


def _target_genes(parsed: list[ParsedFile], gene_list: list[str] | None) -> tuple[list[str], list[str]]:
    if gene_list is not None:
        return gene_list, []
    common = set(parsed[0].unique_ids)
    for item in parsed[1:]:
        common &= set(item.unique_ids)
    union = dict.fromkeys(g for item in parsed for g in item.unique_ids)
    targets = [g for g in parsed[0].unique_ids if g in common]
    return targets, [g for g in union if g not in common]


def _write(stage: Path, parsed: list[ParsedFile], targets: list[str], annotation: Annotation | None,
           options: IngestOptions) -> dict:
    index = {g: i for i, g in enumerate(targets)}
    n_targets = len(targets)
    names: list[str | None] = [None] * n_targets
    sample_reports, file_reports, metadata = [], [], []
    measured_anywhere = np.zeros(n_targets, dtype=bool)
    n_total = sum(len(item.rows) for item in parsed)
    with CountWriter(stage / COUNTS_FILE, n_targets, options.chunk_size) as writer, \
            progress("writing samples", n_total) as advance:
        for item in parsed:
            assert item.mapping is not None and item.row_to_unique is not None
            unique_target = np.array([index.get(g, -1) for g in item.unique_ids], dtype=np.int64)
            row_target = np.where(item.row_to_unique >= 0, unique_target[item.row_to_unique], -1)
            keep = np.flatnonzero(row_target >= 0)
            matrix = sp.csr_matrix(
                (np.ones(len(keep), np.int64), (row_target[keep], keep)),
                shape=(n_targets, item.table.n_genes),
            )
            measured = np.zeros(n_targets, dtype=bool)
            measured[row_target[keep]] = True
            measured_anywhere |= measured
            for row, t in zip(keep, row_target[keep]):
                if names[t] is None and item.mapping.names[row]:
                    names[t] = str(item.mapping.names[row])
            n = len(item.rows)
            for start in range(0, n, options.chunk_size):
                stop = min(n, start + options.chunk_size)
                raw = item.table.read_samples(start, stop)
                counts = np.ascontiguousarray((matrix @ raw.T).T, dtype=np.int64)
                mask = None if measured.all() else np.broadcast_to(measured, counts.shape)
                ids = [r.sample for r in item.rows[start:stop]]
                writer.write(CountChunk(ids, counts, mask))
                for k, row in enumerate(item.rows[start:stop]):
                    sample_reports.append({
                        "sample_id": row.sample,
                        "library_size": int(counts[k].sum()),
                        "library_size_input": float(item.input_library[start + k]),
                        "genes_detected": int((counts[k] > 0).sum()),
                        "genes_missing": int(n_targets - measured.sum()),
                        "values_rounded": int(item.rounded[start + k]),
                    })
                    metadata.append({"sample_id": row.sample, **row.metadata})
                advance(stop - start)
            file_reports.append(_file_report(item, targets, measured, len(keep)))
    if annotation is not None:
        symbols = annotation.symbol_of(targets)
        names = [s or n for n, s in zip(names, symbols)]  # the annotation's current symbol first
    genes = pd.DataFrame({
        "gene_id": pd.array(targets, dtype="string"),
        "gene_name": pd.array(names, dtype="string"),
        "biotype": pd.array(annotation.biotype_of(targets) if annotation else [None] * n_targets,
                            dtype="string"),
    })
    samples = pd.DataFrame(metadata).astype("string")
    write_tables(stage, genes, samples)
    missing_everywhere = [g for g, m in zip(targets, measured_anywhere) if not m]
    dropped = defaultdict(int)
    for report in file_reports:
        for reason, count in report["dropped"].items():
            dropped[reason] += count
    return {
        "n_samples": n_total,
        "n_genes": n_targets,
        "genes": {
            "gene_list": str(options.genes) if options.genes else None,
            "missing_from_input": missing_everywhere,
            "n_missing_from_input": len(missing_everywhere),
            "dropped": dict(dropped),
        },
        "files": file_reports,
        "samples": sample_reports,
    }


def _file_report(item: ParsedFile, targets: list[str], measured: np.ndarray, n_used: int) -> dict:
    mapping = item.mapping
    assert mapping is not None and item.row_to_unique is not None
    target_set, kept = set(targets), set(item.unique_ids)
    not_targeted = sum(1 for g in item.unique_ids if g not in target_set)
    return {
        "path": str(item.layout.path),
        "format": item.layout.format,
        "id_type": mapping.kind,
        "id_columns": list(item.id_columns),
        "gene_rows": int(item.table.n_genes),
        "gene_rows_used": int(n_used),
        "samples": [r.sample for r in item.rows],
        "unmapped": mapping.unmapped[:1000],
        "ambiguous": dict(list(mapping.ambiguous.items())[:1000]),
        "duplicates": dict(list(item.duplicates.items())[:1000]),
        "missing_target_genes": [g for g, m in zip(targets, measured) if not m][:1000],
        "dropped": {
            "unmapped": len(mapping.unmapped),
            "ambiguous": len(mapping.ambiguous),
            "duplicate_rows_summed": sum(n - 1 for g, n in item.duplicates.items() if g in kept),
            "duplicate_rows_dropped": sum(n for g, n in item.duplicates.items() if g not in kept),
            "not_targeted": not_targeted,
        },
    }
