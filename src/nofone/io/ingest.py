"""`nofone ingest`: a sample sheet of count files in, one streaming Parquet dataset out.

Two passes with memory bounded by a tile and a chunk of samples, never by the cohort:

1. each count file is read once, validated value by value (the error names file, line, gene
   and sample) and spooled to a temporary file sample-major (`ingest_read`);
2. gene ids are harmonised (versions stripped, symbols/Entrez mapped, duplicates resolved by
   the chosen policy), the target gene set is fixed (a gene list, or the genes every file has,
   refused when one file would shrink it to far fewer genes than the others have) and samples
   are streamed out in chunks to `counts.parquet`; a sample whose library is too small to be
   a sample is refused (docs/input.md says why).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from nofone import __version__
from nofone.choices import DUPLICATE_POLICIES
from nofone.errors import InputError
from nofone.io.atomic import check_outdir, staged_outdir, write_json_atomic
from nofone.io.dataset import COUNTS_FILE, DEFAULT_CHUNK_SIZE, CountChunk, CountWriter, write_tables
from nofone.io.gene_ids import Annotation, map_gene_ids, read_gene_list
from nofone.io.ingest_read import ParsedFile, parse_file
from nofone.io.samplesheet import SampleRow, read_samplesheet
from nofone.io.spool import Spool
from nofone.io.values import INT64_MAX, exact_sums
from nofone.progress import progress

log = logging.getLogger(__name__)
REPORT_FILE = "ingest_report.json"
#: Without --intersect-genes, the genes every file has must be at least this share of the genes
#: of the file that has most: one file of a few genes must not shrink the cohort to them.
MIN_SHARED_GENE_FRACTION = 0.5


@dataclass
class IngestOptions:
    """Options of `nofone ingest` (see the CLI for their meaning)."""

    format: str = "auto"
    strandedness: str | None = None  # None: 'unstranded' for STAR files, and no warning elsewhere
    round_counts: bool = False
    duplicates: str = "sum"
    annotation: Path | list[Path] | None = None  # one table or several (Ensembl, NCBI gene aliases)
    genes: Path | None = None
    chunk_size: int = DEFAULT_CHUNK_SIZE
    tile_bytes: int = 16 * 2**20
    min_library_size: int | None = None  # None: one count per gene kept (see docs/input.md)
    intersect_genes: bool = False  # keep the genes every file has even when one file has far fewer


def ingest(samplesheet: str | os.PathLike[str], outdir: str | os.PathLike[str],
           options: IngestOptions | None = None) -> dict:
    """Run ingest; returns the report that is also written to `ingest_report.json`."""
    options = options or IngestOptions()
    if options.duplicates not in DUPLICATE_POLICIES:
        raise InputError(f"duplicate policy {options.duplicates!r}: use one of {DUPLICATE_POLICIES}")
    if options.min_library_size is not None and options.min_library_size < 0:
        raise InputError(f"--min-library-size {options.min_library_size}: use 0 or more")
    check_outdir(outdir)
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
                    parsed.append(parse_file(path, file_rows, options.format, options.strandedness,
                                             options.round_counts, spool))
                    advance()
            for item in parsed:
                _harmonise(item, annotation, options.duplicates)
            targets, not_in_all, by_file = _target_genes(parsed, gene_list, options.intersect_genes)
            if not targets:
                raise InputError(
                    "no genes left after harmonising ids"
                    + (" and applying the gene list" if gene_list else " across the count files")
                )
            report = _write(stage, parsed, targets, annotation, options)
            report["warnings"] = _warnings(parsed, not_in_all, by_file)
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
        report["genes"]["per_file"] = by_file
        write_json_atomic(stage / REPORT_FILE, _ordered(report))
    return report


def _ordered(report: dict) -> dict:
    front = ["nofone_version", "created", "command", "samplesheet", "options", "n_samples", "n_genes", "warnings"]
    return {k: report[k] for k in front if k in report} | {k: v for k, v in report.items() if k not in front}


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


def _target_genes(parsed: list[ParsedFile], gene_list: list[str] | None,
                  intersect: bool) -> tuple[list[str], list[str], list[dict]]:
    """The genes to write, those dropped for not being in every file, and per file how many
    genes it has and how many of the others' it lacks (the file that limits the set first)."""
    sets = [set(item.unique_ids) for item in parsed]
    union = dict.fromkeys(g for item in parsed for g in item.unique_ids)
    by_file = sorted(
        ({"path": str(item.layout.path), "genes": len(genes), "lacks": len(union) - len(genes)}
         for item, genes in zip(parsed, sets)), key=lambda f: -f["lacks"])
    if gene_list is not None:
        return gene_list, [], by_file
    common = set.intersection(*sets)
    if not common and len(parsed) > 1:
        files = ", ".join(f"{item.layout.path} ({len(genes):,} genes, {item.mapping.kind if item.mapping else '?'} ids)"
                          for item, genes in list(zip(parsed, sets))[:6])
        raise InputError(f"no gene is in every count file: {files}; map the ids with --annotation or "
                         "give the genes to keep with --genes")
    largest = max(by_file, key=lambda f: f["genes"])
    if len(parsed) > 1 and len(common) < MIN_SHARED_GENE_FRACTION * largest["genes"] and not intersect:
        limiting = by_file[0]
        raise InputError(
            f"count file {limiting['path']} limits the gene set: it lacks {limiting['lacks']:,} of the genes "
            f"the other files have, so keeping the genes every file has would leave {len(common):,} of the "
            f"{largest['genes']:,} of {largest['path']} ({len(common) / largest['genes']:.0%}). Check that "
            "file (another id type? a filtered table? the wrong file?), give the genes to keep with --genes, "
            f"or pass --intersect-genes to keep the {len(common):,} genes every file has"
        )
    targets = [g for g in parsed[0].unique_ids if g in common]
    return targets, [g for g in union if g not in common], by_file


def _warnings(parsed: list[ParsedFile], not_in_all: list[str], by_file: list[dict]) -> list[str]:
    """What the user should know although the input was accepted; also logged."""
    warnings = [w for item in parsed for w in item.warnings]
    for item in parsed:
        mixed = item.mapping.mixed if item.mapping else []
        if mixed:
            column = next(iter(item.id_columns))
            warnings.append(
                f"count file {item.layout.path}: {len(mixed):,} of {item.table.n_genes:,} ids in column "
                f"{column!r} are not {item.mapping.kind} ids (e.g. {', '.join(map(repr, mixed[:3]))}); "
                "they are kept as they are: pass --annotation to map symbols and Entrez ids to Ensembl"
            )
    if not_in_all:
        limiting = by_file[0]
        warnings.append(
            f"{len(not_in_all):,} genes are not in every count file and were dropped; "
            f"{limiting['path']} lacks the most ({limiting['lacks']:,})"
        )
    for warning in warnings:
        log.warning("%s", warning)
    return warnings


def _write(stage: Path, parsed: list[ParsedFile], targets: list[str], annotation: Annotation | None,
           options: IngestOptions) -> dict:
    index = {g: i for i, g in enumerate(targets)}
    n_targets = len(targets)
    names: list[str | None] = [None] * n_targets
    sample_reports, file_reports, metadata = [], [], []
    too_small: list[str] = []
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
            n_measured = int(measured.sum())
            minimum = n_measured if options.min_library_size is None else options.min_library_size
            for start in range(0, n, options.chunk_size):
                stop = min(n, start + options.chunk_size)
                raw = item.table.read_samples(start, stop)
                counts = _merge_rows(matrix, raw, item, targets)
                mask = None if measured.all() else np.broadcast_to(measured, counts.shape)
                ids = [r.sample for r in item.rows[start:stop]]
                writer.write(CountChunk(ids, counts, mask))
                libraries = exact_sums(counts, axis=1)
                for k, row in enumerate(item.rows[start:stop]):
                    if libraries[k] < minimum:
                        too_small.append(f"{row.sample!r} ({libraries[k]:,} counts; sample sheet line {row.line})")
                    sample_reports.append({
                        "sample_id": row.sample,
                        "library_size": libraries[k],
                        "library_size_input": item.input_library[start + k],
                        "genes_detected": int((counts[k] > 0).sum()),
                        "genes_missing": int(n_targets - measured.sum()),
                        "values_rounded": int(item.rounded[start + k]),
                    })
                    metadata.append({"sample_id": row.sample, **row.metadata})
                advance(stop - start)
            file_reports.append(_file_report(item, targets, measured, len(keep)))
    if too_small:
        threshold = (f"fewer counts than the genes measured ({n_targets:,} kept)" if options.min_library_size is None
                     else f"fewer than --min-library-size {options.min_library_size:,} counts")
        raise InputError(
            f"{len(too_small)} sample(s) have {threshold}, too few to be a sequenced sample (empty, failed, "
            f"or the wrong column?): {', '.join(too_small[:10])}{' ...' if len(too_small) > 10 else ''}. "
            "Remove them from the sample sheet, or pass --min-library-size 0 to keep them (represent "
            "leaves samples without counts out)"
        )
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
        "min_library_size": options.min_library_size if options.min_library_size is not None else "genes measured",
        "genes": {
            "gene_list": str(options.genes) if options.genes else None,
            "missing_from_input": missing_everywhere,
            "n_missing_from_input": len(missing_everywhere),
            "dropped": dict(dropped),
        },
        "files": file_reports,
        "samples": sample_reports,
    }


def _merge_rows(matrix: sp.csr_matrix, raw: np.ndarray, item: ParsedFile, targets: list[str]) -> np.ndarray:
    """Counts on the target genes (rows of one gene summed), refusing a sum beyond int64 rather
    than letting it wrap around."""
    counts = np.ascontiguousarray((matrix @ raw.T).T, dtype=np.int64)
    rows_per_gene = int(np.diff(matrix.indptr).max(initial=1))
    if rows_per_gene > 1 and raw.size and int(raw.max()) > INT64_MAX // rows_per_gene:
        approx = (matrix.astype(np.float64) @ raw.T.astype(np.float64)).T
        if approx.max() >= 2.0**63:
            k, g = np.unravel_index(int(np.argmax(approx)), approx.shape)
            raise InputError(
                f"count file {item.layout.path}: gene {targets[g]!r}, sample {item.rows[k].sample!r}: the sum "
                "of its duplicate rows does not fit a 64-bit integer"
            )
    return counts


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
        "mapped_by": mapping.mapped_by,
        "dropped": {
            "unmapped": len(mapping.unmapped),
            "ambiguous": len(mapping.ambiguous),
            "duplicate_rows_summed": sum(n - 1 for g, n in item.duplicates.items() if g in kept),
            "duplicate_rows_dropped": sum(n for g, n in item.duplicates.items() if g not in kept),
            "not_targeted": not_targeted,
        },
    }
