"""Count file readers: every supported format is sniffed into a `Layout`, then parsed by one
streaming parser per orientation.

Supported (auto-detected, or forced with `format`):

==================  ==========================================================================
`two-column`        gene<TAB>count, with or without a header
`htseq`             HTSeq-count output (two columns; `__no_feature` etc. rows dropped)
`featurecounts`     featureCounts (`# Program:featureCounts` line, Geneid..Length, one column/BAM)
`star`              STAR `ReadsPerGene.out.tab` (N_ rows dropped; column by strandedness)
`salmon`            Salmon `quant.genes.sf` (NumReads)
`nfcore`            nf-core/rnaseq merged gene matrices (`gene_id`, `gene_name`, samples...)
`gct`               GCT 1.2 (`#1.2`, dimensions line, Name, Description, samples...)
`matrix`            genes x samples TSV/CSV with one or more leading id columns
`samples-by-genes`  samples x genes CSV (bulkDGD layout: index column, gene columns, metadata)
==================  ==========================================================================

Any of them may be gzip-compressed (detected from the content, not the name).
"""

from __future__ import annotations

import csv
import gzip
import os
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from nofone.choices import FORMATS, STRANDEDNESS
from nofone.errors import InputError
from nofone.io.gene_ids import id_kind
from nofone.io.paths import check_text, compression_of, reason, require_file
from nofone.io.values import NULL_TEXTS

#: Leading columns of a matrix that describe genes. The id-like ones feed gene-id mapping.
ID_COLUMN_NAMES = {
    "gene_id", "geneid", "gene", "genes", "ensgene", "ensembl_gene_id", "ensembl_id", "gene_name",
    "gene_symbol", "symbol", "hugo_symbol", "entrez_gene_id", "entrezgeneid", "entrez", "entrez_id",
    "name", "id", "target_id", "feature", "featureid", "description",
}
ANNOTATION_COLUMN_NAMES = {
    "length", "effectivelength", "effective_length", "chr", "chrom", "chromosome", "start", "end",
    "strand", "biotype", "gene_biotype", "gene_type", "tpm", "width",
}
#: Non-gene columns of a samples-by-genes file (carried as metadata, never parsed as counts).
SAMPLE_METADATA_NAMES = {"tissue", "condition", "batch", "sample", "group", "label", "type"}
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$|^(nan|NaN|NA|inf|-inf|Inf)$")
_STAR_COLUMNS = ["gene_id", "unstranded", "forward", "reverse"]


@dataclass
class Layout:
    """How to parse one count file."""

    path: Path
    format: str
    delimiter: str
    skip_rows: int  # lines before the first data row (header included)
    columns: list[str]  # unique column names in file order
    id_columns: list[str]  # genes-by-samples: gene id columns (primary first); else sample label
    value_columns: list[str]  # sample columns (genes-by-samples) or gene columns (samples-by-genes)
    orientation: str = "genes"  # 'genes': rows are genes; 'samples': rows are samples
    drop_prefixes: tuple[str, ...] = ()
    per_sample: bool = False  # one value column that belongs to whichever sample names the file
    compression: str | None = None
    extra_columns: list[str] = field(default_factory=list)  # samples-by-genes metadata columns
    longest_line: int = 0  # bytes, of the lines sniffed: a CSV block must hold a whole row


def head_lines(path: Path, n: int = 64) -> list[str]:
    """The first `n` lines of a (possibly gzipped) text file, without line endings."""
    opener = gzip.open if compression_of(path) == "gzip" else open
    lines: list[str] = []
    try:
        with opener(path, "rt", encoding="utf-8-sig", errors="replace") as handle:  # type: ignore[operator]
            for line in handle:
                lines.append(line.rstrip("\r\n"))
                if len(lines) >= n:
                    break
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(f"count file {path}: cannot be read ({reason(exc)})") from None
    return lines


def _split(line: str, delimiter: str) -> list[str]:
    fields = next(iter(csv.reader([line], delimiter=delimiter)), [])
    return [f.strip() for f in fields]


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for i, name in enumerate(names):
        base = name or f"column_{i + 1}"
        if base in seen:
            seen[base] += 1
            base = f"{base}.{seen[base]}"
        else:
            seen[base] = 0
        out.append(base)
    return out


def _is_number(value: str) -> bool:
    return bool(_NUMBER.match(value.strip()))


def sniff(path: str | os.PathLike[str], fmt: str = "auto", strandedness: str = "unstranded") -> Layout:
    """Work out the format and layout of a count file from its first lines."""
    layout = _sniff(Path(path), fmt, strandedness)
    layout.longest_line = max((len(line.encode()) + 1 for line in head_lines(layout.path)), default=0)
    return layout


def _sniff(path: Path, fmt: str, strandedness: str) -> Layout:
    path = Path(path)
    if fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r} for {path}; choose one of {', '.join(FORMATS)}")
    require_file(path, "count file")
    if path.stat().st_size == 0:
        raise InputError(f"count file {path} is empty")
    compression = check_text(path)
    lines = head_lines(path)
    if not any(ln.strip() for ln in lines):
        raise InputError(f"count file {path} is empty")
    if not lines[0].strip():
        raise InputError(f"count file {path}: the first line is blank")

    detected = fmt if fmt != "auto" else _detect(lines)
    skip = 0
    if detected == "gct":
        if not lines[0].startswith("#1.2"):
            raise InputError(f"count file {path}: a GCT 1.2 file starts with '#1.2'")
        skip = 2
    elif detected == "featurecounts":
        while skip < len(lines) and lines[skip].startswith("#"):
            skip += 1
    body = lines[skip:]
    if not body:
        raise InputError(f"count file {path}: no header or data lines")
    delimiter = "\t" if "\t" in body[0] else ","
    first = _split(body[0], delimiter)

    if detected == "star":
        if len(first) != 4:
            raise InputError(f"count file {path}: STAR ReadsPerGene.out.tab has 4 columns, found {len(first)}")
        if strandedness not in STRANDEDNESS:
            raise InputError(f"strandedness {strandedness!r}: use one of {', '.join(STRANDEDNESS)}")
        return Layout(path, "star", delimiter, 0, _STAR_COLUMNS, ["gene_id"], [strandedness],
                      drop_prefixes=("N_",), per_sample=True, compression=compression)
    if detected in {"two-column", "htseq"}:
        if len(first) != 2:
            raise InputError(f"count file {path}: expected 2 columns (gene, count), found {len(first)}")
        has_header = not _is_number(first[1])
        columns = _unique(first) if has_header else ["gene_id", "count"]
        return Layout(path, detected, delimiter, int(has_header), columns, [columns[0]], [columns[1]],
                      drop_prefixes=("__",), per_sample=True, compression=compression)

    columns = _unique(first)
    lower = [c.lower() for c in columns]
    if detected == "salmon":
        if "numreads" not in lower or "name" not in lower:
            raise InputError(f"count file {path}: Salmon quant.genes.sf needs Name and NumReads columns")
        return Layout(path, "salmon", delimiter, skip + 1, columns, [columns[lower.index("name")]],
                      [columns[lower.index("numreads")]], per_sample=True, compression=compression)
    if detected == "featurecounts":
        if "length" not in lower:
            raise InputError(f"count file {path}: featureCounts output has a Length column before the counts")
        cut = lower.index("length") + 1
        return Layout(path, "featurecounts", delimiter, skip + 1, columns, [columns[0]], columns[cut:],
                      compression=compression)
    if detected == "gct":
        ids = [columns[0]] + ([columns[1]] if lower[1] == "description" else [])
        return Layout(path, "gct", delimiter, skip + 1, columns, ids, columns[len(ids):], compression=compression)
    if detected == "samples-by-genes":
        return _samples_by_genes(path, delimiter, first, body, compression)
    # nfcore and matrix: leading gene-describing columns, then samples
    data = _split(body[1], delimiter) if len(body) > 1 else []
    n_lead = 1
    while n_lead < len(columns) and (
        lower[n_lead] in ID_COLUMN_NAMES | ANNOTATION_COLUMN_NAMES
        or (n_lead < len(data) and not _is_number(data[n_lead]))
    ):
        n_lead += 1
    leading = columns[:n_lead]
    ids = [c for i, c in enumerate(leading) if i == 0 or c.lower() not in ANNOTATION_COLUMN_NAMES]
    values = columns[n_lead:]
    if not values:
        raise InputError(f"count file {path}: no sample columns after the gene columns {leading}")
    return Layout(path, detected, delimiter, skip + 1, columns, ids, values, compression=compression)


def _detect(lines: list[str]) -> str:
    first = lines[0]
    if first.startswith("#1.2"):
        return "gct"
    if first.startswith("# Program:featureCounts") or (
        first.startswith("#") and len(lines) > 1 and lines[1].split("\t")[0] == "Geneid"
    ):
        return "featurecounts"
    if any(ln.startswith("N_unmapped") for ln in lines[:4]):
        return "star"
    delimiter = "\t" if "\t" in first else ","
    raw_header = _split(first, delimiter)
    header = [h.lower() for h in raw_header]
    if header[:1] == ["name"] and "numreads" in header:
        return "salmon"
    if len(header) == 2:
        return "two-column"
    if header[:2] == ["gene_id", "gene_name"]:
        return "nfcore"
    gene_like = sum(id_kind([h]) == "ensembl" for h in raw_header[1:])
    if gene_like >= max(2, 0.5 * (len(header) - 1)):
        return "samples-by-genes"
    return "matrix"


def _samples_by_genes(path: Path, delimiter: str, header: list[str], body: list[str],
                      compression: str | None) -> Layout:
    columns = _unique(header)
    data = _split(body[1], delimiter) if len(body) > 1 else []
    genes, extra = [], []
    for i, name in enumerate(columns[1:], start=1):
        numeric = i < len(data) and _is_number(data[i])
        if name.lower() in SAMPLE_METADATA_NAMES or not numeric:
            extra.append(name)
        elif not header[i]:
            raise InputError(f"count file {path}, line 1: header column {i + 1} is empty; a gene column needs an id")
        else:
            genes.append(name)
    if not genes:
        raise InputError(f"count file {path}: no gene columns with numbers in the first data row (samples-by-genes)")
    return Layout(path, "samples-by-genes", delimiter, 1, columns, [columns[0]], genes,
                  orientation="samples", compression=compression, extra_columns=extra)


def block_size(layout: Layout) -> int:
    """Bytes of CSV text parsed at a time: small (pyarrow's memory grows with it), but a block
    must hold a whole row, so it grows for files with very long lines."""
    longest = max(layout.longest_line, 32 * len(layout.columns))
    return min(max(1 << 20, 8 * longest), max(4 << 20, 2 * longest))


def _open_reader(layout: Layout, include: list[str], types: dict[str, pa.DataType]) -> pacsv.CSVStreamingReader:
    stream = pa.input_stream(str(layout.path), compression=layout.compression)
    read_options = pacsv.ReadOptions(skip_rows=layout.skip_rows, column_names=layout.columns,
                                     block_size=block_size(layout))
    parse_options = pacsv.ParseOptions(delimiter=layout.delimiter, invalid_row_handler=None)
    convert_options = pacsv.ConvertOptions(
        include_columns=include, column_types=types, null_values=NULL_TEXTS,
        strings_can_be_null=False, quoted_strings_can_be_null=False,
    )
    try:
        return pacsv.open_csv(stream, read_options, parse_options, convert_options)
    except (pa.ArrowInvalid, OSError, EOFError, zlib.error) as exc:
        raise InputError(f"count file {layout.path}: {_arrow_message(exc, include)}") from None


def _arrow_message(exc: Exception, include: list[str]) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    text = text.encode("ascii", "backslashreplace").decode()[:300]  # never echo raw bytes
    match = re.search(r"column #(\d+)", text)
    if match and int(match.group(1)) < len(include):
        text += f" (column {include[int(match.group(1))]!r})"
    return text


def _batches(reader: pacsv.CSVStreamingReader, layout: Layout, include: list[str]) -> Iterator[pa.RecordBatch]:
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            return
        except (pa.ArrowInvalid, OSError, EOFError, zlib.error) as exc:
            raise InputError(f"count file {layout.path}: {_arrow_message(exc, include)}") from None
        yield batch


@dataclass
class GeneBlock:
    """A block of rows of a genes-by-samples file."""

    ids: dict[str, np.ndarray]  # id column -> str array
    values: list[pa.Array]  # per chosen sample column: the counts as text (parsed by `values`)
    lines: np.ndarray  # int64: 1-based line in the file of each row


def iter_gene_blocks(layout: Layout, value_columns: list[str]) -> Iterator[GeneBlock]:
    """Stream a genes-by-samples file: id columns and the chosen sample columns as text."""
    include = list(dict.fromkeys(layout.id_columns + value_columns))
    types = {c: pa.string() for c in include}
    reader = _open_reader(layout, include, types)
    line = layout.skip_rows + 1
    for batch in _batches(reader, layout, include):
        n = batch.num_rows
        ids = {c: np.asarray(batch.column(c).to_pylist(), dtype=object) for c in layout.id_columns}
        lines = np.arange(line, line + n, dtype=np.int64)
        values = [batch.column(c) for c in value_columns]
        if layout.drop_prefixes:
            primary = ids[layout.id_columns[0]]
            keep = ~np.fromiter((str(v).startswith(layout.drop_prefixes) for v in primary), bool, n)
            if not keep.all():
                ids = {c: v[keep] for c, v in ids.items()}
                lines = lines[keep]
                mask = pa.array(keep)
                values = [v.filter(mask) for v in values]
        yield GeneBlock(ids, values, lines)
        line += n


@dataclass
class SampleBlock:
    """A block of rows of a samples-by-genes file."""

    labels: np.ndarray  # str: the index column
    values: list[pa.Array]  # per gene column: the block's counts as text
    metadata: dict[str, np.ndarray]
    first_line: int


def iter_sample_blocks(layout: Layout) -> Iterator[SampleBlock]:
    """Stream a samples-by-genes file: one row per sample, gene columns as text."""
    label = layout.id_columns[0]
    include = [label, *layout.extra_columns, *layout.value_columns]
    types = {c: pa.string() for c in include}
    reader = _open_reader(layout, include, types)
    line = layout.skip_rows + 1
    for batch in _batches(reader, layout, include):
        labels = np.asarray(batch.column(label).to_pylist(), dtype=object)
        values = [batch.column(c) for c in layout.value_columns]
        meta = {c: np.asarray(batch.column(c).to_pylist(), dtype=object) for c in layout.extra_columns}
        yield SampleBlock(labels, values, meta, line)
        line += batch.num_rows

