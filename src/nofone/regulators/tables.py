"""Reading gene x value tables (features and targets): TSV/CSV (optionally gzipped) or Parquet,
genes in the first column, one numeric column per feature or target.

Every problem names the file and, where there is one, the line (or Parquet row) and column.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from nofone.errors import InputError

#: Cells read as missing values (then an error for features, allowed for targets).
MISSING = ["", "NA", "NaN", "nan", "null", "NULL"]


@dataclass
class NumericTable:
    """A table's gene keys (first column), value column names and values [rows, columns]."""

    path: Path
    key_column: str
    keys: np.ndarray
    columns: list[str]
    values: np.ndarray  # float64
    is_parquet: bool

    @property
    def row_word(self) -> str:
        return "row" if self.is_parquet else "line"

    @property
    def first_row(self) -> int:
        """Number of the first data row as the error messages count it (text: line after the header)."""
        return 1 if self.is_parquet else 2


def read_numeric_table(path: str | Path, what: str, allow_missing: bool = False,
                       select: tuple[str, list[str]] | None = None) -> NumericTable:
    """Read a table whose first column names genes and whose other columns are numbers.

    `select` = (key column, value columns) reads only those, by name (case-insensitive).

    Missing values are an error unless `allow_missing` (targets may lack a value for some genes;
    features may not: a missing binding count is a choice the user must make).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} {path} does not exist")
    parquet = path.suffix.lower() in (".parquet", ".pq")
    try:
        if parquet:
            frame = pd.read_parquet(path)
        else:
            sep = "," if ".csv" in [s.lower() for s in path.suffixes] else "\t"
            header = pd.read_csv(path, sep=sep, nrows=0)
            raw_names = pd.read_csv(path, sep=sep, nrows=1, header=None, dtype=str).iloc[0].tolist()
            frame = pd.read_csv(path, sep=sep, dtype={header.columns[0]: str} if len(header.columns) else None,
                                keep_default_na=False, na_values=MISSING)
    except Exception as exc:
        raise InputError(f"{what} {path}: cannot be read ({type(exc).__name__}: {exc})") from None
    if select is not None:
        frame = _select(frame, *select, where=f"{what} {path}")
        raw_names = [str(c) for c in frame.columns]
    if frame.shape[1] < 2:
        raise InputError(f"{what} {path}: needs a gene column and at least one value column "
                         f"(found columns {list(frame.columns)}; is it tab-separated?)")
    if len(frame) == 0:
        raise InputError(f"{what} {path}: has no rows")
    columns = [str(c) for c in frame.columns] if parquet else [str(c) for c in raw_names]
    duplicated = sorted({c for c in columns[1:] if columns[1:].count(c) > 1})
    if duplicated:
        raise InputError(f"{what} {path}: duplicate column names {duplicated[:5]}")
    row_word, first_row = ("row", 1) if parquet else ("line", 2)
    values = np.empty((len(frame), len(columns) - 1), dtype=np.float64)
    for j in range(1, len(columns)):
        raw = frame.iloc[:, j]
        where = f"{what} {path}, {row_word} {{}}, column {columns[j]!r}"
        if raw.dtype == bool or not (pd.api.types.is_numeric_dtype(raw) or raw.dtype == object):
            raise InputError(f"{what} {path}, column {columns[j]!r}: not numeric ({raw.dtype})")
        numbers = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
        missing = raw.isna().to_numpy()
        bad = np.isnan(numbers) & ~missing
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise InputError(where.format(i + first_row) + f": non-numeric value {raw.iloc[i]!r}")
        if missing.any() and not allow_missing:
            i = int(np.flatnonzero(missing)[0])
            raise InputError(where.format(i + first_row) + ": missing value (fill it, e.g. 0 for no binding)")
        if np.isinf(numbers).any():
            i = int(np.flatnonzero(np.isinf(numbers))[0])
            raise InputError(where.format(i + first_row) + ": infinite value")
        values[:, j - 1] = numbers
    keys = frame.iloc[:, 0].astype(str).str.strip().to_numpy(dtype=object)
    empty = np.flatnonzero((keys == "") | frame.iloc[:, 0].isna().to_numpy())
    if len(empty):
        raise InputError(f"{what} {path}, {row_word} {int(empty[0]) + first_row}: empty gene key in the first column")
    return NumericTable(path, columns[0], keys, columns[1:], values, parquet)


def _select(frame: pd.DataFrame, key: str, values: list[str], where: str) -> pd.DataFrame:
    lower = {str(c).lower(): c for c in frame.columns}
    missing = [c for c in [key, *values] if c.lower() not in lower]
    if missing:
        raise InputError(f"{where}: no column {missing[0]!r} (found {list(frame.columns)[:10]})")
    return frame[[lower[c.lower()] for c in [key, *values]]]
