"""Checks of input paths shared by every reader: the message says what is wrong with the path."""

from __future__ import annotations

import codecs
import gzip
import zlib
from pathlib import Path

from nofone.errors import InputError

#: Bytes of a file's start checked for binary content (NUL and other control bytes, invalid UTF-8).
_TEXT_PROBE = 1 << 16
#: Control bytes that text tables do not hold (tab, line ends, form feed and escape are allowed).
_BINARY_BYTES = [*range(0x00, 0x09), 0x0E, 0x0F, *range(0x10, 0x1B), *range(0x1C, 0x20), 0x7F]


def require_file(path: Path, what: str) -> None:
    """Refuse a path that is missing or a folder, saying which."""
    if path.is_dir():
        raise InputError(f"{what} {path} is a folder, not a file")
    if not path.is_file():
        raise InputError(f"{what} {path} does not exist")


def read_bytes(path: Path, what: str) -> bytes:
    """The whole file, or a one-line error when it cannot be read."""
    require_file(path, what)
    try:
        return path.read_bytes()
    except PermissionError:
        raise InputError(f"{what} {path} cannot be read: permission denied") from None
    except OSError as exc:
        raise InputError(f"{what} {path} cannot be read ({(exc.strerror or str(exc)).lower()})") from None


def read_text(path: Path, what: str) -> str:
    """A small UTF-8 text file (a BOM is dropped); binary or other encodings are refused."""
    data = read_bytes(path, what)
    nul = data.find(b"\x00")
    if nul >= 0:
        raise InputError(f"{what} {path} is not a text file: it holds binary data (a NUL byte at offset {nul})")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{what} {path} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
            "save it as UTF-8 (in a spreadsheet: 'CSV UTF-8')"
        ) from None


def compression_of(path: Path) -> str | None:
    """'gzip' when the file starts with the gzip magic number, whatever its name."""
    with open(path, "rb") as handle:
        return "gzip" if handle.read(2) == b"\x1f\x8b" else None


def check_text(path: Path, what: str = "count file") -> str | None:
    """Refuse a file that cannot be opened or is not text; returns its compression.

    A binary file (BAM, xlsx, zip, an image) is named as such and its bytes are never echoed.
    """
    require_file(path, what)
    try:
        compression = compression_of(path)
        opener = gzip.open if compression == "gzip" else open
        with opener(path, "rb") as handle:  # type: ignore[operator]
            head = handle.read(_TEXT_PROBE)
    except PermissionError:
        raise InputError(f"{what} {path} cannot be read: permission denied") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(f"{what} {path} cannot be read ({reason(exc)})") from None
    nul = head.find(b"\x00")
    controls = sum(head.count(bytes([b])) for b in _BINARY_BYTES)
    if nul >= 0 or controls > 0.005 * len(head):
        where = f"a NUL byte at offset {nul}" if nul >= 0 else f"{controls} control bytes in its first {len(head):,}"
        raise InputError(
            f"{what} {path} is not a text table: it holds binary data ({where}); "
            "give a tab- or comma-separated text file, optionally gzipped"
        )
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=len(head) < _TEXT_PROBE)
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{what} {path} is not UTF-8 text (byte 0x{head[exc.start]:02x} at offset {exc.start}); "
            "save it as UTF-8"
        ) from None
    return compression


def reason(exc: BaseException) -> str:
    """An OS or decompression error in a few words, without the path it repeats."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]
