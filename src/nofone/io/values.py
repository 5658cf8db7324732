"""Count text to exact int64: no float in between where a float could change the number.

A float64 holds every integer only up to 2^53, so a count read as a float and cast back can
silently become another number (a value above int64's range even turns negative). Here a
column of count text is cast to float64 in one vectorised step (Arrow's parser takes decimal
numbers only, as `_DECIMAL` and `_SPECIAL` describe); entries below 2^52 are taken from there
(exact, to a half), larger ones are parsed again from their text with `Decimal`. A value
that is not a number, is missing, negative, non-integer (unless rounding is asked for) or
beyond int64 is refused, by its position, with the text as written.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from nofone.errors import shown

INT64_MAX = 2**63 - 1
#: Texts read as missing values.
NULL_TEXTS = ["", "NA", "N/A", "NaN", "nan", "null", "NULL", "None"]
_DECIMAL = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$"
_SPECIAL = r"^[+-]?(inf|infinity|nan)$"
#: Below 2^52 a float64 holds every integer and every half exactly.
_FLOAT_EXACT = 2.0**52
#: A fractional part below this is noise of a float printed as text, not a fraction.
_INTEGER_TOLERANCE = 1e-9


class BadCount(ValueError):
    """An entry that is not a count: its row in the column and what is wrong with it."""

    def __init__(self, row: int, reason: str):
        super().__init__(reason)
        self.row = row
        self.reason = reason


def parse_counts(column: pa.Array | pa.ChunkedArray, round_counts: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """int64 counts of a column of text, and which were rounded (None: none); raises `BadCount`."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if column.null_count:
        raise BadCount(_first(column.is_null()), "missing value")
    if len(column) == 0:
        return np.zeros(0, np.int64), None
    for text in (column, None):
        if text is None:  # a second try without surrounding blanks
            text = pc.utf8_trim_whitespace(column)
        # float64 first: one fast cast that takes decimal numbers only (no hexadecimal, unlike
        # Arrow's integer parser), exact for every integer below 2^53; larger values are parsed
        # again from their text
        floats = _try_cast(text, pa.float64())
        if floats is not None:
            return _from_floats(text, floats.to_numpy(zero_copy_only=False), round_counts)
    return _refuse(*_first_invalid(text))


def _try_cast(text: pa.Array, to: pa.DataType) -> pa.Array | None:
    try:
        return pc.cast(text, to)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


def _first_invalid(text: pa.Array) -> tuple[int, str]:
    """Why a column of text is not all numbers: its first missing value or non-number."""
    missing = pc.is_in(text, value_set=pa.array(NULL_TEXTS))
    number = pc.or_(pc.match_substring_regex(text, _DECIMAL),
                    pc.match_substring_regex(text, _SPECIAL, ignore_case=True))
    bad = pc.or_(missing, pc.invert(number)).to_numpy(zero_copy_only=False)
    row = int(np.argmax(bad))
    if missing[row].as_py():
        return row, "missing or non-numeric value (NA/NaN)"
    return row, f"not a number: {shown(text[row].as_py())}"


def _from_floats(text: pa.Array, values: np.ndarray, round_counts: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Counts from the float values of a column of decimal text (exact below 2^52; larger ones
    are parsed again from their text)."""
    nan = np.isnan(values)
    if nan.any():
        _refuse(int(np.argmax(nan)), "missing or non-numeric value (NA/NaN)")
    infinite = np.isinf(values)
    if infinite.any():
        row = int(np.argmax(infinite))
        literal = pc.match_substring_regex(text[row:row + 1], _SPECIAL, ignore_case=True)[0].as_py()
        if literal:
            _refuse(row, "infinite value")
    negative = values < 0
    if negative.any():
        row = int(np.argmax(negative))
        _refuse(row, f"negative count {shown(text[row].as_py())[1:-1]}")
    out = np.empty(len(values), dtype=np.int64)
    small = values < _FLOAT_EXACT
    nearest = np.rint(values[small])
    fractional = np.abs(values[small] - nearest) > _INTEGER_TOLERANCE
    if fractional.any() and not round_counts:
        row = int(np.flatnonzero(small)[np.argmax(fractional)])
        _refuse(row, _non_integer(text[row].as_py()))
    out[small] = nearest.astype(np.int64)
    rounded = np.zeros(len(values), dtype=bool)
    rounded[small] = fractional
    for row in np.flatnonzero(~small):
        out[row], rounded[row] = _exact(text[int(row)].as_py(), int(row), round_counts)
    return out, (rounded if rounded.any() else None)


def _exact(text: str, row: int, round_counts: bool) -> tuple[int, bool]:
    """A large count parsed exactly from its text."""
    try:
        number = Decimal(text)
    except InvalidOperation:  # pragma: no cover - the pattern above admits only decimals
        _refuse(row, f"not a number: {shown(text)}")
    integral = number.to_integral_value(rounding=ROUND_HALF_EVEN)
    if integral != number and not round_counts:
        _refuse(row, _non_integer(text))
    if integral > INT64_MAX:
        _refuse(row, f"count {shown(text)} does not fit a 64-bit integer (at most {INT64_MAX})")
    return int(integral), integral != number


def _non_integer(text: str) -> str:
    return (f"non-integer count {shown(text)[1:-1]}; models need integer counts. Use --round-counts for "
            "estimated counts (RSEM expected counts, Salmon NumReads)")


def _refuse(row: int, reason: str):
    raise BadCount(row, reason)


def _first(mask: pa.Array) -> int:
    return int(np.argmax(mask.to_numpy(zero_copy_only=False)))


def exact_sums(counts: np.ndarray, axis: int = 0) -> list[int]:
    """Column (axis 0) or row (axis 1) sums of non-negative int64 counts, exact as Python ints:
    an int64 sum of large counts would wrap around without a sign."""
    if counts.size == 0:
        return [0] * counts.shape[1 - axis]
    n = counts.shape[axis]
    if int(counts.max()) <= INT64_MAX // max(n, 1):
        return [int(v) for v in counts.sum(axis=axis)]
    return [int(v) for v in counts.astype(object).sum(axis=axis)]
