"""The nf-core style sample sheet: one row per sample, naming its count file.

Required columns: `sample`, `counts`. Optional: `condition`, `tissue`, `batch`, `column`
(the sample's column in a multi-sample matrix; default the sample id), `format` (a reader,
default auto-detected) and `strandedness` (STAR: unstranded, forward, reverse). Any further
columns are metadata carried into `samples.parquet`.
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from nofone.errors import InputError

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
    if not SAMPLE_ID_PATTERN.match(sample_id):
        raise InputError(
            f"{where}sample id {sample_id!r} is not allowed: use 1-128 letters, digits, '.', '_' "
            "or '-', starting with a letter or digit (ids become file names)"
        )
    return sample_id


def read_samplesheet(path: str | os.PathLike[str]) -> list[SampleRow]:
    """Parse and validate a sample sheet; every error names the sheet, line and column."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"sample sheet {path} does not exist")
    with open(path, newline="", encoding="utf-8-sig") as handle:
        text = handle.read()
    if not text.strip():
        raise InputError(f"sample sheet {path} is empty")
    delimiter = "\t" if path.suffix.lower() in {".tsv", ".txt"} else ","
    reader = csv.reader(text.splitlines(), delimiter=delimiter)
    header = [h.strip() for h in next(reader)]
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
    for line_no, values in enumerate(reader, start=2):
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
                f"{where}strandedness {strandedness!r} for sample {sample!r}: use unstranded, "
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


def _resolve(value: str, sheet_dir: Path, where: str) -> Path:
    """A count path: absolute, or relative to the sheet's folder, or to the working folder."""
    if _REMOTE.match(value):
        raise InputError(
            f"{where}{value} is a remote path: the nofone CLI reads local files only "
            "(the Nextflow pipeline stages remote files for you)"
        )
    candidate = Path(value).expanduser()
    tried = [candidate] if candidate.is_absolute() else [sheet_dir / candidate, Path.cwd() / candidate]
    for option in tried:
        if option.is_file():
            return option.resolve()
    raise InputError(
        f"{where}count file {value!r} not found (looked in: {', '.join(str(t) for t in tried)})"
    )
