"""Reading a CSV file the way Kaggle, spreadsheets and scripts write them.

Compressed (gzip, zip, bz2, xz) or not, whatever the file is called; UTF-8 with or without a
byte-order mark, UTF-16 with one, else a Windows code page (cp1252, then Latin-1); separated by
commas, semicolons, tabs or bars, and in a file that is not comma-separated a column of decimal
commas ("60,5") reads as numbers. All of it is told from the first 64 KiB, so a plain UTF-8 comma
file costs one small read more than ``pandas.read_csv``. What cannot be read is a one-line
:class:`UserError` naming the file.

``dtype`` gives columns their types up front (``{column: "str" | "float64" | ...}``), as the test
file is read with the types of the training file's columns: a column of text stays text (codes
such as "007" keep their zeros), and no column of one file comes out of another type than in the
other. A file whose values do not fit those types (text in a column of numbers) is read again
without them, so that the checks that follow can name the file, column and row at fault. In a
file that is not comma-separated only the ``str`` types are given: decimal commas are numbers
only once converted.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import lzma
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from pipeline.errors import UserError

HEAD_BYTES = 65536
_MAGIC = ((b"\x1f\x8b", "gzip"), (b"PK\x03\x04", "zip"), (b"BZh", "bz2"), (b"\xfd7zXZ\x00", "xz"))
_OPENERS = {"gzip": gzip.open, "bz2": bz2.open, "xz": lzma.open}
_SEPARATORS = (",", ";", "\t", "|")
_FALLBACK_ENCODINGS = ("cp1252", "latin-1")  # latin-1 decodes any byte: the last resort
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_DECIMAL_COMMA = re.compile(r"^\s*[+-]?(\d+,\d*|,\d+|\d+)([eE][+-]?\d+)?\s*$")
_BROKEN = (OSError, EOFError, zipfile.BadZipFile, lzma.LZMAError)


def read(path: Path, dtype: Mapping[str, str] | None = None) -> pd.DataFrame:
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a folder, not a CSV file")
    if path.exists() and not path.is_file():
        raise UserError(f"{path} is not a regular file (a FIFO, socket or device), not a CSV file")
    if not path.is_file():
        raise UserError(f"missing file: {path}")
    compression = _compression(path)
    head = _head(path, compression)
    if not head.strip():
        raise UserError(f"empty file: {path}")
    if head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<"):
        raise UserError(f"unreadable CSV {path}: it holds markup (XML or HTML), not comma-separated rows")
    if head.startswith(_UTF16_BOMS):
        encoding = "utf-16"
    elif b"\x00" in head:
        raise UserError(f"unreadable CSV {path}: it holds NUL bytes (a binary file, or UTF-16 without a byte-order mark)")
    else:
        encoding = "utf-8"  # pandas drops a UTF-8 byte-order mark itself
    header, whole = _first_line(head, encoding)
    sep = separator(header)
    if whole:  # a header longer than the head: its last name is cut, so no check
        _check_header(path, header, sep)
    if dtype and sep != ",":
        dtype = {column: given for column, given in dtype.items() if given == "str"}
    frame = None
    for attempt in (encoding, *(_FALLBACK_ENCODINGS if encoding == "utf-8" else ())):
        try:
            frame = _read_csv(path, sep=sep, encoding=attempt, compression=compression, dtype=dtype or None)
            break
        except UnicodeDecodeError as exc:
            if attempt == "latin-1" or encoding != "utf-8":
                raise UserError(f"unreadable CSV {path}: {str(exc).splitlines()[0]}") from None
        except pd.errors.EmptyDataError:
            raise UserError(f"empty file: {path}") from None
        except pd.errors.ParserError as exc:
            raise UserError(f"unreadable CSV {path}: {str(exc).strip().splitlines()[0]}") from None
        except _BROKEN as exc:
            raise UserError(f"unreadable CSV {path}: {compression or 'file'} is broken ({exc})") from None
    if frame.empty:
        raise UserError(f"empty file: {path} has a header but no rows")
    return _decimal_commas(frame) if sep != "," else frame


def _read_csv(path: Path, *, dtype: Mapping[str, str] | None, **options) -> pd.DataFrame:
    """``pandas.read_csv`` with ``dtype``, else (a value that does not fit its type) without."""
    if dtype:
        try:
            return pd.read_csv(path, dtype=dict(dtype), **options)
        except (UnicodeDecodeError, pd.errors.EmptyDataError, pd.errors.ParserError):
            raise
        except (ValueError, TypeError, OverflowError):
            pass  # e.g. "could not convert string to float": the checks name the value
    return pd.read_csv(path, **options)


def _compression(path: Path) -> str | None:
    with path.open("rb") as handle:
        magic = handle.read(8)
    return next((kind for prefix, kind in _MAGIC if magic.startswith(prefix)), None)


def _head(path: Path, compression: str | None) -> bytes:
    try:
        if compression is None:
            with path.open("rb") as handle:
                return handle.read(HEAD_BYTES)
        if compression == "zip":
            with zipfile.ZipFile(path) as archive:
                names = [name for name in archive.namelist() if not name.endswith("/")]
                if len(names) != 1:
                    raise UserError(f"unreadable CSV {path}: a zip archive of {len(names)} files, not one")
                with archive.open(names[0]) as handle:
                    return handle.read(HEAD_BYTES)
        with _OPENERS[compression](path) as handle:
            return handle.read(HEAD_BYTES)
    except _BROKEN as exc:
        raise UserError(f"unreadable CSV {path}: {compression or 'file'} is broken ({exc})") from None


def _first_line(head: bytes, encoding: str) -> tuple[str, bool]:
    """The header line, and whether all of it is in ``head``."""
    text = head.decode("utf-8-sig" if encoding == "utf-8" else encoding, errors="replace")
    line, newline, _ = text.lstrip("\ufeff").partition("\n")
    return line.rstrip("\r"), bool(newline)


def separator(header: str) -> str:
    """The separator of a header line: a comma if it has one, else the most frequent of ; tab |."""
    if "," in header:
        return ","
    counts = {sep: header.count(sep) for sep in _SEPARATORS[1:]}
    best = max(counts, key=counts.get)
    return best if counts[best] else ","


def _check_header(path: Path, header: str, sep: str) -> None:
    """pandas renames a repeated column ``x`` to ``x.1``: name the repeat instead."""
    names = next(csv.reader([header], delimiter=sep), [])
    seen: set[str] = set()
    for name in (n.strip() for n in names):
        if name and name in seen:
            raise UserError(f"{path.name}: column {name!r} appears twice in the header")
        seen.add(name)


def _decimal_commas(frame: pd.DataFrame) -> pd.DataFrame:
    """Text columns whose every value is a number written with a decimal comma, as numbers."""
    converted = {}
    for column in frame.columns:
        values = frame[column]
        if pd.api.types.is_numeric_dtype(values) or values.notna().sum() == 0:
            continue
        text = values.dropna().astype(str)
        if text.str.contains(",", regex=False).any() and text.str.match(_DECIMAL_COMMA).all():
            converted[column] = pd.to_numeric(values.astype(str).str.replace(",", ".", regex=False)
                                              .where(values.notna()))
    return frame.assign(**converted) if converted else frame
