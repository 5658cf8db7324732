"""The nf-core style sample sheet: one row per sample, naming its count file.

Required columns: `sample`, `counts`. Optional: `condition`, `tissue`, `batch`, `column`
(the sample's column in a multi-sample matrix; default the sample id), `format` (a reader,
default auto-detected) and `strandedness` (STAR: unstranded, forward, reverse). Any further
columns are metadata carried into `samples.parquet`.
"""

from __future__ import annotations

import csv
import io
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from nofone.errors import InputError, shown
from nofone.io.paths import read_text

REQUIRED_COLUMNS = ("sample", "counts")
#: Columns that steer ingest and are not copied into the sample metadata.
CONTROL_COLUMNS = ("counts", "column", "format", "strandedness")
#: Sample ids become file names and reach shell commands: letters, digits, `.`, `_`, `-`.
SAMPLE_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_REMOTE = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)


@dataclass
class SampleRow:
    """One sample of the sheet, its count file resolved to a local path."""

    sample: str
    counts: Path
    line: int
    column: str | None = None
    format: str | None = None
    strandedness: str | None = None
    metadata: dict[str, str | None] = field(default_factory=dict)


def validate_sample_id(sample_id: str, where: str = "") -> str:
    """Return `sample_id` if it is safe for file names and shells, else raise InputError."""
    if not SAMPLE_ID_PATTERN.fullmatch(sample_id):
        raise InputError(
            f"{where}sample id {shown(sample_id, 60)} is not allowed: use 1-128 letters, digits, '.', '_' "
            "or '-', starting with a letter or digit (ids become file names)"
        )
    return sample_id


def read_samplesheet(path: str | os.PathLike[str]) -> list[SampleRow]:
    """Parse and validate a sample sheet; every error names the sheet, line and column."""
    path = Path(path)
    text = read_text(path, "sample sheet")
    if not text.strip():
        raise InputError(f"sample sheet {path} is empty")
    delimiter = "\t" if path.suffix.lower() in {".tsv", ".txt"} else ","
    records = _records(path, text, delimiter)
    header = [h.strip() for h in next(records)[1]]
    duplicated = sorted({h for h in header if header.count(h) > 1})
    if duplicated:
        raise InputError(f"sample sheet {path}: duplicate column(s) {duplicated}")
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise InputError(
            f"sample sheet {path}: missing required column(s) {missing}; found {header}. "
            "The header must include 'sample,counts'"
        )
    rows: list[SampleRow] = []
    first_line: dict[str, int] = {}
    for line_no, values in records:
        if not any(v.strip() for v in values):
            continue
        if len(values) != len(header):
            raise InputError(
                f"sample sheet {path}, line {line_no}: {len(values)} fields, header has "
                f"{len(header)}"
            )
        record = {h: (v.strip() or None) for h, v in zip(header, values)}
        where = f"sample sheet {path}, line {line_no}: "
        sample = record["sample"]
        if sample is None:
            raise InputError(f"{where}empty 'sample'")
        validate_sample_id(sample, where)
        if sample in first_line:
            raise InputError(
                f"{where}duplicate sample id {sample!r} (first on line {first_line[sample]})"
            )
        first_line[sample] = line_no
        if record["counts"] is None:
            raise InputError(f"{where}empty 'counts' for sample {sample!r}")
        counts = _resolve(record["counts"], path.parent, where)
        strandedness = record.get("strandedness")
        if strandedness is not None and strandedness not in {"unstranded", "forward", "reverse"}:
            raise InputError(
                f"{where}strandedness {shown(strandedness)} for sample {sample!r}: use unstranded, "
                "forward or reverse"
            )
        metadata = {
            k: v for k, v in record.items() if k not in CONTROL_COLUMNS and k != "sample"
        }
        rows.append(
            SampleRow(
                sample=sample,
                counts=counts,
                line=line_no,
                column=record.get("column"),
                format=record.get("format"),
                strandedness=strandedness,
                metadata=metadata,
            )
        )
    if not rows:
        raise InputError(f"sample sheet {path} has a header but no samples")
    return rows


def _records(path: Path, text: str, delimiter: str):
    """(first line, fields) of each record; a field holding a line break is refused (a quoted
    id with a newline in it would otherwise become another id)."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    first = 1
    while True:
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise InputError(f"sample sheet {path}, line {reader.line_num}: {exc}") from None
        broken = next((v for v in values if "\n" in v or "\r" in v), None)
        if broken is not None:
            raise InputError(
                f"sample sheet {path}, line {first}: the quoted field {shown(broken, 60)} holds a line break; "
                "ids, paths and metadata must each be on one line"
            )
        yield first, values
        first = reader.line_num + 1


def _resolve(value: str, sheet_dir: Path, where: str) -> Path:
    """A count path: absolute, or relative to the sheet's folder, or to the working folder."""
    if _REMOTE.match(value):
        raise InputError(
            f"{where}{shown(value, 200)} is a remote path: the nofone CLI reads local files only "
            "(the Nextflow pipeline stages remote files for you)"
        )
    try:
        candidate = Path(value).expanduser()
        tried = [candidate] if candidate.is_absolute() else [sheet_dir / candidate, Path.cwd() / candidate]
        for option in tried:
            if option.is_file():
                return option.resolve()
        folder = next((t for t in tried if t.is_dir()), None)
    except (OSError, RuntimeError, ValueError) as exc:  # a name too long, an unknown ~user
        reason = getattr(exc, "strerror", None) or str(exc)
        raise InputError(f"{where}count file {shown(value, 200)} cannot be used ({reason})") from None
    if folder is not None:
        raise InputError(f"{where}count file {shown(value, 200)} is a folder ({folder}), not a file")
    raise InputError(
        f"{where}count file {shown(value, 200)} not found (looked in: {', '.join(str(t) for t in tried)})"
    )
