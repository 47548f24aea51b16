"""Readers for interaction logs and item/user metadata in CSV or Parquet files."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from twotower.data.interactions import (INT_ID, Interactions, check_time_unit,
                                        check_unit_unread, coarsest_times, datetime_counts,
                                        datetime_seconds,
                                        integral_as_int, negative_times_text,
                                        numbers_as_times)
from twotower.data.vocabulary import Vocabulary
from twotower.errors import ConfigError, DataError
from twotower.models.config import CATALOGUES

_PARQUET = {".parquet", ".pq"}
_CSV = {".csv", ".tsv", ".txt"}


def check_sep(sep: str | None, what: str = "--sep") -> str | None:
    """``sep`` as one character (None: the file type's default). ``\\t`` typed as two
    characters (a shell's ``'\t'``) is a tab.

    Raises:
        ConfigError: any other separator of more or less than one character.
    """
    if sep is None:
        return None
    if sep in ("\\t", "tab"):
        return "\t"
    if not isinstance(sep, str) or len(sep) != 1:
        raise ConfigError(f"{what}: a field separator is one character ('\\t' for a tab), "
                          f"got {sep!r}")
    if sep in ("\n", "\r", '"'):  # line ends and the quote character cannot split fields
        raise ConfigError(f"{what}: a field separator cannot be a line end or the quote "
                          f"character '\"', got {sep!r}")
    if not sep.isascii():  # both CSV parsers split on one byte (pandas, Arrow)
        raise ConfigError(f"{what}: a field separator must be an ASCII character (one "
                          f"byte: ',', ';', '|', a tab, ...), got {sep!r}")
    return sep


def not_a_file(p: Path) -> str:
    """Why ``p`` cannot be read as a file (for a message after its flag)."""
    if p.is_dir():
        return f"{p} is a directory; expected a file"
    return f"file not found: {p}"


def read_id_file(path: str | Path, name: str, what: str, empty_ok: bool = False
                 ) -> tuple[list[str], list[int], Path]:
    """A text file of one id a line (blank lines skipped, whitespace around an id
    stripped, a byte order mark ignored): its ids, the line each was read from, and the
    file as messages name it (``<stdin>`` for ``-``, which reads standard input).

    Args:
        path: the file, or ``-``.
        name: what messages call it (a flag, ``--deny``, or an argument, ```deny_file```).
        what: the kind of id (``item``, ``user``), for the message of an empty file.
        empty_ok: a file of no id is fine (else a DataError).

    Raises:
        DataError: the file is missing, unreadable, not UTF-8 (naming the line), or empty
            when that is not ``empty_ok``.
    """
    p = Path(path)
    if str(path) == "-":
        if sys.stdin is None or sys.stdin.closed:
            raise DataError(f"{name} -: there is no standard input to read ids from")
        raw, p = sys.stdin.buffer.read(), Path("<stdin>")
    elif p.is_dir() or not p.exists():
        raise DataError(f"{name}: {not_a_file(p)}")
    else:
        try:
            raw = p.read_bytes()
        except OSError as exc:
            raise DataError(f"{name}: cannot read {p} ({exc.strerror or exc})") from None
    try:  # utf-8-sig: a byte order mark (Excel, Notepad) is not part of the first id
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = exc.object[:exc.start].count(b"\n") + 1
        raise DataError(f"{name}: {p}, line {line}: not UTF-8 text (byte "
                        f"0x{exc.object[exc.start]:02x}, {exc.reason}): save the file as "
                        "UTF-8") from None
    ids, lines = [], []
    for n, ln in enumerate(text.splitlines(), 1):
        if ln.strip():
            ids.append(ln.strip())
            lines.append(n)
    if not ids and not empty_ok:
        raise DataError(f"{name}: {p} holds no {what} id (expected one id a line)")
    return ids, lines, p


_COMPRESSED = {".gz", ".bz2", ".xz", ".zst", ".zip"}


def unknown_type(p: Path, what: str) -> DataError:
    """The error for a file of a type no reader takes; a compressed text file is told how
    to be read (``clicks.csv.gz``: decompress it, or write it as Parquet, which compresses
    its columns itself)."""
    suffix = p.suffix.lower()
    if suffix in _COMPRESSED:
        tool = {".gz": "gunzip -k", ".bz2": "bunzip2 -k", ".xz": "xz -dk", ".zst": "zstd -d",
                ".zip": "unzip"}[suffix]
        return DataError(f"{what}: {p}: a compressed file ({suffix}) is not read; "
                         f"decompress it first (e.g. `{tool} {p.name}`), or save it as "
                         "Parquet (compressed by column, and read faster)")
    return DataError(f"{what}: {p}: unknown file type {suffix!r}; expected .csv, .tsv or "
                     ".parquet")


def read_table(path: str | Path, columns: dict[str, str | None], *, what: str = "file",
               sep: str | None = None) -> pd.DataFrame:
    """Read the named columns of a CSV/Parquet file as strings.

    Args:
        path: ``.csv``/``.tsv``/``.txt`` or ``.parquet`` file.
        columns: role -> column name in the file (None: role absent).
        what: the CLI flag or argument that named the file, for messages.
        sep: CSV separator; default "," (tab for ``.tsv``).

    Returns:
        A DataFrame with one column per present role (renamed to the role).

    Raises:
        DataError: file missing, unknown suffix, a named column absent, or a malformed row
            (the message names file, line and column).
    """
    p = Path(path)
    sep = check_sep(sep)
    if not p.is_file():
        raise DataError(f"{what}: {not_a_file(p)}")
    wanted = {role: col for role, col in columns.items() if col}
    roles_of: dict[str, list[str]] = {}
    for role, col in wanted.items():
        roles_of.setdefault(col, []).append(role)
    for col, roles in roles_of.items():
        if len(roles) > 1:
            raise DataError(f"{what}: column {col!r} is named for several roles "
                            f"({', '.join(roles)}); each role needs a column of its own")
    suffix = p.suffix.lower()
    if suffix in _PARQUET:
        names = list(_parquet_schema(p, what).names)
        check_columns(p, what, wanted, names, sep=None)
        check_unique_columns(p, what, wanted, names)
        import pyarrow as pa
        try:
            df = pd.read_parquet(p, columns=list(wanted.values()))
        except (pa.ArrowException, OSError) as exc:  # a damaged data page (the footer read)
            raise DataError(f"{what}: {p} is not a readable Parquet file ({exc})") from None
    elif suffix in _CSV:
        sep = sep or ("\t" if suffix == ".tsv" else ",")
        encoding = csv_encoding(p, what)
        try:
            header = pd.read_csv(p, sep=sep, nrows=0, encoding=encoding).columns.tolist()
        except pd.errors.EmptyDataError as exc:
            raise DataError(f"{what}: {p} has no readable header line ({exc})") from None
        except pd.errors.ParserError as exc:  # e.g. a quote opened and never closed
            raise DataError(f"{what}: {p}: malformed CSV: {_parser_error(p, sep, exc)}"
                            ) from None
        # the header as written: pandas renames a repeated name (``item_id.1``), which
        # would read the first of two ``item_id`` columns and accept the made-up name
        raw = csv_header(p, sep, encoding)
        check_columns(p, what, wanted, raw, sep)
        check_unique_columns(p, what, wanted, raw)
        try:
            df = pd.read_csv(p, sep=sep, usecols=list(wanted.values()), dtype=str,
                             keep_default_na=False, on_bad_lines="error", engine="c",
                             encoding=encoding, lineterminator=_bare_cr(p))
        except pd.errors.ParserError as exc:
            check_ragged(p, what, sep, len(header))  # names the lines, where it can
            raise DataError(f"{what}: {p}: malformed CSV: {_parser_error(p, sep, exc)}"
                            ) from None
        check_ragged(p, what, sep, len(header))
    else:
        raise unknown_type(p, what)
    return df.rename(columns={col: role for role, col in wanted.items()})


def check_unique_columns(p: Path, what: str, wanted: dict[str, str], have: list[str]
                         ) -> None:
    """A file may name a column twice (a Parquet schema, a CSV header as written): which
    one is meant cannot be told, so it is refused."""
    for role, col in wanted.items():
        if have.count(col) > 1:
            raise DataError(f"{what}: {p} has {have.count(col)} columns named {col!r} (the "
                            f"{role} column); rename all but one")


def csv_header(p: Path, sep: str, encoding: str) -> list[str]:
    """A CSV file's first record as written (``encoding`` as ``csv_encoding`` gives it; a
    UTF-8 byte-order mark dropped); empty for an empty file."""
    import csv
    text = "utf-8-sig" if encoding == "utf-8" else encoding
    with p.open("r", encoding=text, errors="replace", newline="") as fh, \
            _csv_fields_unbounded():
        # blank lines before the header are skipped, as pandas' reader skips them
        return next((row for row in csv.reader(fh, delimiter=sep) if row), [])


def _bare_cr(p: Path) -> str | None:
    """``"\\r"`` for a file whose lines end in a bare carriage return (old Mac style),
    else None (any line end). pandas' C parser, left to guess, shifts a row's fields
    left after a blank line when its first field is empty."""
    with p.open("rb") as fh:
        head = fh.read(1 << 16)
    return "\r" if b"\r" in head and b"\n" not in head else None


def _parquet_schema(p: Path, what: str) -> Any:
    try:
        import pyarrow.parquet as pq
        return pq.read_schema(p)
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise DataError(f"{what}: {p} is not a readable Parquet file ({exc})") from None


def csv_encoding(p: Path, what: str) -> str:
    """``utf-8``, or ``latin-1`` (with a warning naming the first line that is not UTF-8)
    for a text file that is not valid UTF-8, e.g. MovieLens' own ``.dat``/``u.item`` files.
    One streaming pass over the bytes per file version (cached: the header and the body
    readers ask for the same file, and it warns once)."""
    st = p.stat()
    return _encoding(str(p), st.st_size, st.st_mtime_ns, what)


@functools.lru_cache(maxsize=64)
def _encoding(path: str, size: int, mtime_ns: int, what: str, chunk: int = 1 << 20) -> str:
    import codecs
    p = Path(path)
    decoder = codecs.getincrementaldecoder("utf-8")()
    lines = 0
    bom = False
    with open(p, "rb") as f:
        while True:
            block = f.read(chunk)
            bom = bom or (lines == 0 and block.startswith(codecs.BOM_UTF8))
            if b"\x00" in block:  # no text id or number holds one: UTF-16/32, or binary
                at = block.index(b"\x00")
                line = lines + block[:at].count(b"\n") + 1
                head = block[:256]
                utf16 = (lines == 0 and head[:2] in (b"\xff\xfe", b"\xfe\xff")) or (
                    head.count(b"\x00") >= len(head) // 4)  # ASCII as UTF-16: half NUL
                kind = ("it looks UTF-16 encoded (as spreadsheet programs save 'Unicode text'); "
                        "save it as UTF-8 (e.g. `iconv -f UTF-16 -t UTF-8`)" if utf16 else
                        "no text id holds one: is it a text file? A CSV/TSV is read as UTF-8 or "
                        "latin-1 text")
                raise DataError(f"{what}: {p} holds a NUL byte (line {line}): {kind}")
            try:
                decoder.decode(block, final=not block)
            except UnicodeDecodeError as exc:
                line = lines + block[:exc.start].count(b"\n") + 1
                if bom:  # as latin-1, the mark would become "ï»¿", part of the first name
                    raise DataError(f"{what}: {p} starts with a UTF-8 byte-order mark but "
                                    f"line {line} is not UTF-8 ({exc.reason} at byte "
                                    f"{exc.object[exc.start:exc.start + 1]!r}): it mixes "
                                    "two encodings; save it as UTF-8") from None
                warnings.warn(f"{what}: {p} is not UTF-8 (line {line}: {exc.reason} at "
                              f"byte {exc.object[exc.start:exc.start + 1]!r}); reading it "
                              "as latin-1", stacklevel=4)
                return "latin-1"
            if not block:
                return "utf-8"
            lines += block.count(b"\n")


def check_columns(p: Path, what: str, wanted: dict[str, str], have: list[str],
                  sep: str | None = ",") -> None:
    """``sep``: the separator a text file was read with (None: not a text file)."""
    for role, col in wanted.items():
        if col not in have:
            other = next((c for c in (",", ";", "\t", "|") if sep is not None
                          and c != sep and len(have) == 1 and c in str(have[0])), None)
            if other is not None:  # e.g. a spreadsheet's ';' export read as one column
                raise DataError(f"{what}: {p} reads as one column {have[0]!r}: its fields "
                                f"seem to be separated by {other!r}, not {sep!r}; give the "
                                "separator with --sep")
            flag, arg = (("--items-id-col", "item_id_col") if what == "--items"
                         and role == "item" else (f"--{role}-col", f"{role}_col"))
            raise DataError(
                f"{what}: {p} has no column {col!r} (the {role} column); "
                f"columns are {have}; name the right one with {flag} ({arg}= in Python)"
            )


@contextlib.contextmanager
def _csv_fields_unbounded() -> Iterator[None]:
    """Python's ``csv`` module refuses a field over 131,072 characters (its default
    ``field_size_limit``); pandas and pyarrow read such a field (a long description):
    lifted while a file is checked, then restored."""
    import csv
    old = csv.field_size_limit()
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # a C long (32 bits on Windows)
    try:
        yield
    finally:
        csv.field_size_limit(old)


def _parser_error(p: Path, sep: str, exc: Exception) -> str:
    """pandas' parser error, with the line where a quote opened and never closed (its
    "EOF inside string starting at row 3" counts records from the header, not lines)."""
    text = str(exc)
    if "EOF inside string" not in text:
        return text
    import csv
    try:
        with p.open("r", encoding="utf-8", errors="replace", newline="") as fh, \
                _csv_fields_unbounded():
            reader = csv.reader(fh, delimiter=sep, strict=True)
            start = 1
            for _ in reader:
                start = reader.line_num + 1
    except csv.Error as bad:  # (strict: a record reaching the file's end inside a quote)
        if "end of data" in str(bad):
            return (f"a quote opened on line {start} is never closed (the rest of the file "
                    "would be one field)")
    except OSError:
        pass
    return text


def check_ragged(p: Path, what: str, sep: str, n_fields: int) -> None:
    # pandas pads short rows and, with usecols, drops extra fields: both are malformed rows.
    import csv
    with p.open("r", encoding="utf-8", errors="replace", newline="") as fh, \
            _csv_fields_unbounded():
        reader = csv.reader(fh, delimiter=sep)
        next(reader, None)
        start = reader.line_num + 1
        for row in reader:
            if row and len(row) != n_fields:
                # a record may span lines (a quoted line break, or a quote never closed)
                where = (f"line {start}" if reader.line_num == start
                         else f"lines {start}-{reader.line_num} (one record: a quote "
                              "opened there is closed only there, or never)")
                raise DataError(
                    f"{what}: {p}, {where}: expected {n_fields} fields "
                    f"separated by {sep!r}, got {len(row)}: {sep.join(row)[:80]!r}"
                )
            start = reader.line_num + 1


def beyond_int64_message(p: Path, what: str, col: str, n: int, total: int, first: Any,
                         row: int | None = None) -> str:
    """The warning for an id column holding integers beyond int64 (a Parquet uint64 column
    from 2**63 on; 19-20 digits of text), read as text ids: ``n`` of ``total`` ids (rows)
    are such; ``first``: the first (at data row ``row``, 0-based) or, with no row (the
    streamed scan keeps none), an example. One message, in memory and streamed."""
    at = f"first: {first}, data row {row + 1:,}" if row is not None else f"e.g. {first}"
    return (f"{what}: {p}, column {col!r}: {n:,} of {total:,} ids are integers beyond int64 "
            f"({at}), so every id of the column is read as text (the id 2 is then '2')")


def not_plain_message(p: Path, what: str, col: str, n: int, total: int, first: Any,
                      row: int | None = None) -> str:
    """The warning for an id column whose ids are mostly plain integers but ``n`` of
    ``total`` (rows) are not (``abc``, ``007``), so that every id is read as text:
    ``first``, the first such id (at data row ``row``, 0-based) or, with no row (the
    streamed scan keeps none), an example. One message, in memory and streamed."""
    at = f"first: {first!r}, data row {row + 1:,}" if row is not None else f"e.g. {first!r}"
    return (f"{what}: {p}, column {col!r}: {n:,} of {total:,} ids are not plain integers "
            f"({at}), so every id of the column is read as text (7 and 007 are then two ids)")


def float_ids_as_text(num: np.ndarray) -> tuple[bool, np.ndarray] | None:
    """Why a float id column is read as text ids, if it is: ``(True, mask)`` for values
    with a fraction (likely not an id column), else ``(False, mask)`` for whole values of
    2**53 or more, or inf, which a float does not hold exactly; None when every value is
    a whole number below 2**53 (integer ids: ``integral_as_int``) or missing."""
    num = np.asarray(num, dtype=np.float64)
    frac = np.isfinite(num) & (num != np.floor(num))
    if frac.any():  # (a float column is ints when every value is whole)
        return True, frac
    # whole, but past what a float holds exactly (or inf): text ids such as
    # '1.2345678901234568e+18', every other one '2.0', with no word before
    huge = ~np.isnan(num) & ~(np.abs(num) < 2**53)
    return (False, huge) if huge.any() else None


def float_ids_message(p: Path, what: str, col: str, role: str, first: str, fraction: bool,
                      where: str | None = None) -> str:
    """The warning for a float id column read as text (``float_ids_as_text``): ``first``,
    the first such value as text, at ``where`` (``row 2 (1-based)``) or, with None (the
    streamed scan keeps no row), an example. One message, in memory and streamed."""
    at = f"{first} at {where}" if where is not None else f"e.g. {first}"
    if fraction:
        return (f"{what}: {p}, column {col!r}: {role} ids are numbers with fractions ({at}): "
                f"every id is read as text ({first!r}, and 1.0 as '1.0'); is {col!r} the "
                f"{role} id column?")
    return (f"{what}: {p}, column {col!r}: {role} ids are floats of 2**53 or more, where a "
            f"float skips integers ({at}; two ids may have become one): every id is read as "
            f"text ({first!r}, and 2.0 as '2.0'); store the ids as integers (int64) or text")


#: what ``warn_once`` said: (file, size, modification time, message)
_SAID: set[tuple[str, int, int, str]] = set()


def warn_once(p: Path, message: str, stacklevel: int = 2) -> None:
    """``warnings.warn(message)`` unless this process said it already of this version of
    file ``p`` (its size and modification time): a second scan of one file (a second pass,
    another stream over it) repeats no warning. Python's own once-per-place registry is
    reset by any change of the warning filters (a ``catch_warnings``), so it did."""
    try:
        st = p.stat()
        key = (str(p), st.st_size, st.st_mtime_ns, message)
    except OSError:
        key = None
    if key is not None and key in _SAID:
        return
    if key is not None:
        _SAID.add(key)
    warnings.warn(message, stacklevel=stacklevel + 1)


def _ids(values: pd.Series, where: tuple[Path, str, str, str | None] | None = None
         ) -> np.ndarray:
    """Ints when every id is an integer written the one way an int prints (so ``007`` and
    ``7`` stay two ids: strings), or an integral float (Parquet); else strings. ``where``
    (file, what, column, sep): warn when most ids are such integers but a few are not, as
    a typo turns the whole column into text ids."""
    if values.dtype.kind == "f" and (ints := integral_as_int(values.to_numpy())) is not None:
        return ints
    s = values.astype(str).str.strip()
    plain = s.str.fullmatch(INT_ID.pattern).to_numpy(bool)
    if plain.all():
        try:
            return s.astype(np.int64).to_numpy()
        except (OverflowError, ValueError):  # 19 digits beyond int64: text ids
            pass
    if where is not None and (plain.all() or (
            plain.mean() > 0.5 and s[~plain].str.fullmatch(r"-?[1-9][0-9]{19,}").all())):
        # integers beyond int64 (a Parquet uint64 column, 2**63 and up; 20 digits of text):
        # said as such (silent, or "not plain integers", before 2026-12-07)
        p, what, col, sep = where
        big = s.str.len().to_numpy() >= 19
        big[big] = [not -2**63 <= int(v) < 2**63 for v in s[big]]
        row = int(np.argmax(big))
        warnings.warn(beyond_int64_message(p, what, col, int(big.sum()), len(s),
                                           s.iloc[row], row), stacklevel=3)
    elif where is not None and plain.mean() > 0.5:
        p, what, col, sep = where
        row = int(np.argmin(plain))
        # the data row, not the line: finding a CSV line reads the file again (errors only)
        warnings.warn(not_plain_message(p, what, col, int((~plain).sum()), len(s),
                                        s.iloc[row], row), stacklevel=3)
    return s.to_numpy(dtype=object)


def _numeric(p: Path, what: str, df: pd.DataFrame, role: str, col: str,
             sep: str | None = None) -> np.ndarray:
    raw = df[role]
    if isinstance(raw.dtype, pd.DatetimeTZDtype) or raw.dtype.kind == "M":
        # a timestamp column (Parquet): times, and no rating (as streamed reading says)
        vals = (datetime_seconds(raw) if role == "time"
                else np.full(len(raw), np.nan))
    elif raw.dtype.kind in "iuf":
        vals = raw.to_numpy(dtype=np.float64)
    else:
        text = raw.astype(str).str.strip()
        vals = pd.to_numeric(text, errors="coerce").to_numpy(np.float64)
        if role == "time" and len(vals) and not np.isfinite(vals).all():
            # e.g. 2024-03-01T12:30:00Z, a common export; read as the form most values
            # have, so that an error names a value of the other form, not a good one
            iso = _iso_seconds(text)
            if np.isfinite(iso).sum() > np.isfinite(vals).sum():
                vals = iso
    bad = ~np.isfinite(vals)
    if bad.any():
        row = int(np.argmax(bad))
        got = shown_cell(raw.iloc[row])
        hint = ("; times are numbers (seconds since the epoch; --time-unit for ms, us, ns "
                "or 20240301 dates), ISO 8601 text (2024-03-01T12:30:00Z; no zone: UTC), or "
                "a Parquet timestamp column"
                if role == "time" else RATING_HINT if role == "rating" else "")
        if role == "time" and np.isfinite(vals).any() and reads_as_time(raw.iloc[row]):
                hint = ("; the column mixes numbers (seconds since the epoch) with ISO "
                        "8601 text: write every time in one of the two forms")
        raise DataError(f"{what}: {p}, {where_in_file(p, row, sep)}, column {col!r}: expected "
                        f"{'a time' if role == 'time' else 'a finite number'}, got {got}{hint}")
    return vals


def shown_cell(cell: Any) -> str:
    """A cell that is no number or time as an error shows it, in every reader: its repr, a
    null (or NaN) as ``nothing (null)``, a list cell (a Parquet list column; pd.isna of
    one was a traceback) as ``a list, [1, 2]``."""
    import datetime
    if isinstance(cell, (list, tuple, np.ndarray)):
        return f"a list, {list(np.asarray(cell).tolist())!r}"
    if pd.isna(cell):
        return "nothing (null)"
    if isinstance(cell, datetime.datetime):  # pandas' Timestamp or arrow's datetime alike
        return f"a time, {cell.isoformat(sep=' ')}"
    return repr(cell.item() if hasattr(cell, "item") else cell)


def line_break_in_id(where: str, col: str, role: str, value: str) -> str:
    """The warning, in every reader, for a CSV id holding a line break: almost always a
    quote opened and closed only lines later (``"SKU,9`` with its closing quote lost), which
    reads those lines as part of one id instead of as rows."""
    shown = value if len(value) <= 80 else value[:77] + "..."
    return (f"{where}, column {col!r}: {'an' if role == 'item' else 'a'} {role} id holds "
            f"a line break ({shown!r}): a quote opened in this field is closed only on a "
            "later line, so the lines between were read as part of one id, not as rows; "
            "close the quote (a quote inside a quoted field is written twice: \"\"), or "
            "ignore this if ids do hold line breaks")


#: the end of a bad-rating error, in every reader
RATING_HINT = ("; an objective that does not read ratings (all but mse, unless "
               "--interaction-weights rating) can leave the column out: --rating-col none "
               "(rating_col=None in Python)")


def _iso_seconds(text: pd.Series) -> np.ndarray:
    """ISO 8601 date-times (``2024-03-01``, ``2024-03-01 12:30:00``, ``...T12:30:00+01:00``,
    ``...Z``; one without a zone is UTC) as float seconds since the epoch; NaN where a
    value is not one."""
    return (_iso_datetimes(text) - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy(
        np.float64)


def _iso_datetimes(text: pd.Series) -> pd.Series:
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pandas' mixed-zone notes: converted to UTC below
        return pd.to_datetime(text, errors="coerce", utc=True, format="ISO8601")


def _iso_times(text: pd.Series) -> tuple[np.ndarray, str, np.ndarray]:
    """ISO 8601 date-times as ``_iso_seconds`` reads them, exactly (fractions of a second
    to the nanosecond): ``datetime_counts``' int64 counts, their unit and the mask of the
    values that are none."""
    return datetime_counts(_iso_datetimes(text))


def reads_as_time(x: Any) -> bool:
    """Whether ``x`` is text that reads as one time (a number, or ISO 8601): an error then
    says the times mix the two forms, or names the first value that is neither."""
    if not isinstance(x, str):
        return False
    one = pd.Series([x.strip()])
    return bool(np.isfinite(pd.to_numeric(one, errors="coerce").to_numpy(np.float64))[0]
                or np.isfinite(_iso_seconds(one))[0])


def _times(p: Path, what: str, df: pd.DataFrame, col: str, sep: str | None,
           unit: str) -> tuple[np.ndarray, str]:
    """The time column as exact int64 counts since the epoch, and their unit (the coarsest
    of s, ms, us, ns that holds every one: ``coarsest_times``): numbers counting ``unit``
    (``numbers_as_times``), ISO 8601 text, or a timestamp column (Parquet)."""
    raw = df["time"]

    def at(row: int | None) -> str:
        return (f"{what}: {p}, column {col!r}" if row is None else
                f"{what}: {p}, {where_in_file(p, row, sep)}, column {col!r}")
    if isinstance(raw.dtype, pd.DatetimeTZDtype) or raw.dtype.kind == "M":
        check_unit_unread(unit, at(None), f"a timestamp column ({raw.dtype})")
        counts, kept, missing = datetime_counts(raw)
        if missing.any():
            _numeric(p, what, df, "time", col, sep)  # raises, naming the first missing one
        return coarsest_times(counts, kept)
    if isinstance(raw.dtype, np.dtype) and raw.dtype.kind in "iu":
        vals = raw.to_numpy()  # ints as they are: nanoseconds beyond float64's 2**53 exact
        if vals.dtype.kind == "u":
            vals = vals.astype(np.float64)  # (beyond int64's: refused as such)
    elif raw.dtype.kind in "iuf":
        vals = _numeric(p, what, df, "time", col, sep)  # a float or nullable column
    else:  # text: all numbers, or all ISO 8601 text
        text = raw.astype(str).str.strip()
        nums = pd.to_numeric(text, errors="coerce")
        if nums.dtype.kind == "i":  # exact, as int64 (nanoseconds beyond float64's 2**53)
            vals = nums.to_numpy(np.int64)
        else:
            vals = nums.to_numpy(np.float64)
            if len(vals) and not np.isfinite(vals).all():
                counts, kept, missing = _iso_times(text)
                if not missing.any():
                    check_unit_unread(unit, at(None), "ISO 8601 text (e.g. "
                                      f"{text.iloc[0]!r})")
                    return coarsest_times(counts, kept)
                _numeric(p, what, df, "time", col, sep)  # raises, naming the first bad one
    out = numbers_as_times(vals, unit, at)
    negative = np.asarray(vals) < 0
    if negative.any():  # (a date before 1970 as ISO text or a timestamp says so itself)
        row = int(np.argmax(negative))
        warnings.warn(negative_times_message(p, what, col, int(negative.sum()), len(vals),
                                             str(raw.iloc[row]).strip(),
                                             where_in_file(p, row, sep)), stacklevel=3)
    return out


def negative_times_message(p: Path, what: str, col: str, n: int, total: int, first: Any,
                           where: str | None = None) -> str:
    """The warning for a time column holding negative numbers (``n`` of ``total`` rows),
    ``negative_times_text`` for column ``col`` of file ``p`` (``where``: ``line 3``, ``row
    2 (1-based)``; None: a reader that keeps no row). One message for every reader."""
    return negative_times_text(f"{what}: {p}, column {col!r}", n, total, first, where)


def where_in_file(p: Path, row: int, sep: str | None = None) -> str:
    """Row ``row`` (0-based, of the data) as a CSV line number or a 1-based Parquet row.
    The line is found by reading the file as CSV (an error path only): blank lines, which
    the readers skip, and quoted fields over several lines count as the file has them."""
    if p.suffix.lower() not in _CSV:
        return f"row {row + 1} (1-based)"
    import csv
    sep = sep or ("\t" if p.suffix.lower() == ".tsv" else ",")
    try:
        with p.open("r", encoding="utf-8", errors="replace", newline="") as fh, \
                _csv_fields_unbounded():
            reader = csv.reader(fh, delimiter=sep)
            next(reader, None)  # the header
            start, n = reader.line_num + 1, 0
            for record in reader:
                if record:  # a blank line is no row
                    if n == row:
                        return f"line {start}"
                    n += 1
                start = reader.line_num + 1
    except (OSError, csv.Error):
        pass
    return f"line {row + 2}"


def repeated_header(where: str, names: Sequence[str]) -> DataError:
    """The error, in every reader, for a CSV row whose fields are the header's names: two
    files joined with their header lines (``cat a.csv b.csv``), whose second header would
    otherwise be read as an interaction (a user ``user_id``, integer ids turned to text)."""
    return DataError(f"{where}: the header line again ({', '.join(map(repr, names))}): "
                     "files joined with their header lines? delete it")


def header_forms(name: str) -> list[str]:
    """A column name as a repeated header line holds it: as written, or after the
    byte-order mark that opened the file joined there (``cat`` keeps each file's)."""
    return [name.strip(), "\ufeff" + name.strip()]


def check_repeated_header(p: Path, what: str, sep: str | None,
                          columns: Sequence[tuple[pd.Series, str]]) -> None:
    """Refuse a CSV row whose every one of ``columns`` (values as text, spaces around them
    stripped; column name) holds its name (the first one after a byte-order mark too: a
    joined file's own)."""
    if p.suffix.lower() not in _CSV or len(columns) < 2:
        return
    same = np.ones(len(columns[0][0]), bool)
    for values, name in columns:
        same &= values.isin(header_forms(str(name))).to_numpy(bool)
    if same.any():
        where = f"{what}: {p}, {where_in_file(p, int(np.argmax(same)), sep)}"
        raise repeated_header(where, [name for _, name in columns])


def read_interactions(path: str | Path, *, user_col: str = "user_id", item_col: str = "item_id",
                      rating_col: str | None = None, time_col: str | None = None,
                      items: str | Path | None = None, item_id_col: str | None = None,
                      title_col: str | None = "title", genres_col: str | None = "genres",
                      item_columns: Sequence[str] = (), sep: str | None = None,
                      what: str = "--data", time_unit: str = "auto",
                      catalogue: str = "interactions", event_col: str | None = None,
                      event_weights: Mapping[str, float] | None = None) -> Interactions:
    """Read an interaction log (CSV/Parquet) with caller-named columns.

    Args:
        path: the interactions file.
        user_col, item_col: id columns (string or integer ids).
        rating_col, time_col: optional numeric columns.
        items: optional item metadata file (same formats) with ``item_id_col`` (defaults
            to ``item_col``) and optional ``title_col``/``genres_col`` (genres separated
            by ``|``, or a Parquet list column).
        item_columns: other columns of ``items`` to keep (e.g. those ``item_features``
            names: ``price``, ``brand``), where the file has them (``read_item_info``).
        sep: CSV separator.
        what: the flag or argument that named the file, for messages.
        time_unit: what a number in ``time_col`` counts: ``auto`` (read off the values:
            about 1.7e9 seconds, 1.7e12 milliseconds, 1.7e15 microseconds, 1.7e18
            nanoseconds since 1970, 20240301 a date; a warning says which when they are not
            seconds), ``s``, ``ms``, ``us``, ``ns`` or ``yyyymmdd``. ISO 8601 text and
            Parquet timestamp columns carry their own (another unit than ``auto`` is
            refused for them: ConfigError). Times are kept exactly, as int64
            counts of the coarsest of s, ms, us, ns that holds them (the result's
            ``time_unit``): events within one second keep the order their times give.
        catalogue: the items of the catalogue (the item vocabulary): ``interactions``, those
            of the log; ``items``, also every item of ``items`` the log lacks (no
            interaction: a model with item features places them by their features, see
            ``ModelConfig.catalogue``). Without ``items`` both are the log's.
        event_col, event_weights: a column of event names (``view``, ``transaction``)
            and the weight of each name (``ModelConfig.event_weights``; the key ``"*"``:
            every other name's): each row's weight goes in ``ratings``, read once here,
            for ``ModelConfig.interaction_weights = "event"``. Not with ``rating_col``.

    Returns:
        Interactions with vocabularies in sorted id order.

    Raises:
        DataError: among others, an event name ``event_weights`` lacks (without
            ``"*"``), naming the file, its line, the name and the known names.

    Example:
        >>> x = read_interactions("ratings.csv", user_col="userId", item_col="movieId",
        ...                       rating_col="rating", time_col="timestamp")  # doctest: +SKIP
    """
    p = Path(path)
    time_unit = check_time_unit(time_unit)
    if time_col is None and time_unit != "auto":  # (it was ignored without a word)
        raise ConfigError(f"{what}: {p}: time_unit (--time-unit) {time_unit} is never read: "
                          "no time column is read (time_col None: --time-col none, or no "
                          "'timestamp' column in the file); give the time column, or leave "
                          "the unit out")
    if catalogue not in CATALOGUES:
        raise DataError(f"`catalogue` must be one of {list(CATALOGUES)}, got {catalogue!r}")
    if (event_col is None) != (event_weights is None):
        raise DataError("read_interactions: `event_col` (the column of event names) and "
                        "`event_weights` (their weights) go together; got "
                        + ("event_col alone" if event_weights is None
                           else "event_weights alone"))
    if event_col is not None and rating_col is not None:
        raise DataError(f"read_interactions: `event_col` ({event_col!r}) gives each row its "
                        f"weight, in place of `rating_col` ({rating_col!r}): one source of "
                        "ratings at a time; give one of the two")
    df = read_table(p, {"user": user_col, "item": item_col, "rating": rating_col,
                        "time": time_col, "event": event_col}, what=what, sep=sep)
    if len(df) == 0:
        raise DataError(f"{what}: {p} has no rows")
    stripped = []
    for role, col in (("user", user_col), ("item", item_col)):
        col_values = df[role]
        if isinstance(col_values.dtype, pd.CategoricalDtype):  # dictionary-encoded Parquet
            col_values = col_values.cat.categories.to_series()
        kind = pd.api.types.infer_dtype(col_values, skipna=True)
        if kind not in ("string", "integer", "floating", "mixed-integer-float", "empty",
                        "decimal"):
            # a Parquet list or bool column became text ids ("[1 2]", "True")
            first = df[role].iloc[0]  # as the user wrote it: True, not np.True_
            first = first.item() if isinstance(first, np.generic) else first
            raise DataError(f"{what}: {p}, column {col!r}: {role} ids must be text or "
                            f"integers, got {kind} values (e.g. {first!r})")
        if kind in ("floating", "mixed-integer-float"):
            num = pd.to_numeric(df[role], errors="coerce").to_numpy(np.float64)
            if (odd := float_ids_as_text(num)) is not None:
                fraction, mask = odd
                row = int(np.argmax(mask))
                warnings.warn(float_ids_message(p, what, col, role, str(df[role].iloc[row]),
                                                fraction, where_in_file(p, row, sep)),
                              stacklevel=2)
        s = df[role].astype(str).str.strip()
        stripped.append((s, col))
        # a null (Parquet) or an empty field; the text "nan" or "NA" is an id like any other
        empty = (df[role].isna() | (s == "")).to_numpy(bool)
        if empty.any():
            row = int(np.argmax(empty))
            raise DataError(f"{what}: {p}, {where_in_file(p, row, sep)}, column {col!r}: "
                            f"empty {role} id")
        if p.suffix.lower() in _CSV:
            broken = s.str.contains("[\r\n]", regex=True).to_numpy(bool)
            if broken.any():
                row = int(np.argmax(broken))
                warnings.warn(line_break_in_id(f"{what}: {p}, {where_in_file(p, row, sep)}",
                                               col, role, s.iloc[row]), stacklevel=2)
    check_repeated_header(p, what, sep, stripped)
    ratings = _numeric(p, what, df, "rating", rating_col, sep) if rating_col else None
    if event_col is not None:
        ratings = event_values(df["event"], event_weights or {}, lambda row: (
            f"{what}: {p}, {where_in_file(p, row, sep)}, column {event_col!r}"))
    if ratings is not None:
        from twotower.data.interactions import as_float32_ratings
        ratings = as_float32_ratings("ratings", ratings, lambda row: (
            f"{what}: {p}, {where_in_file(p, row, sep)}, column {rating_col!r}"))
    times, kept = _times(p, what, df, time_col, sep, time_unit) if time_col else (None, "auto")
    item_info = None
    if items is not None:
        item_info = read_item_info(items, id_col=item_id_col or item_col, title_col=title_col,
                                   genres_col=genres_col, columns=item_columns, sep=sep)
    user_ids, item_ids = (_ids(df["user"], (p, what, user_col, sep)),
                          _ids(df["item"], (p, what, item_col, sep)))
    item_vocab = None
    if item_info is not None:  # the rows of the data's items (the CLI reports the rest)
        ids = np.unique(item_ids)
        if catalogue == "items":  # and the listed items the log lacks
            ids = listed_catalogue(item_info, ids, items)
            item_vocab = Vocabulary(ids, name="item")
        # (an items-file id that matches none: said by listed_catalogue)
        item_info = catalogue_info(item_info, ids, items, p, warn=catalogue != "items")
    x = Interactions.from_ids(user_ids, item_ids, ratings, item_info=item_info,
                              item_vocab=item_vocab)
    # the times are counts already (``_times``: their negatives said, naming the line):
    # not read again by from_ids, which would say them again, naming a position
    return x if times is None else dataclasses.replace(x, timestamps=times, time_unit=kept)


def event_values(names: pd.Series, weights: Mapping[str, float], where: Any) -> np.ndarray:
    """``[n] float32``: each row's event name as its weight in ``weights`` (the key
    ``"*"``: every name not listed; names compared stripped, case kept).

    Raises:
        DataError: an empty name, or one ``weights`` lacks (without ``"*"``), naming the
            row (``where(row)``), the name and the known names.
    """
    text = names.astype(str).str.strip()
    empty = (names.isna() | (text == "")).to_numpy(bool)
    if empty.any():
        known = sorted(k for k in weights if k != "*")
        need = (f"each row needs one of {known}" if "*" not in weights else
                # (it said "each row needs one of []" beside {"*": 1})
                "*=W weighs every other name, not a missing one, as a missing rating is "
                "refused rather than guessed (an empty cell may be a row cut short)")
        raise DataError(f"{where(int(np.argmax(empty)))}: empty event name ({need}); give "
                        "the row its event's name")
    # each distinct name once (a log holds a handful of names over millions of rows)
    uniq, inverse = np.unique(text.to_numpy(dtype=str), return_inverse=True)
    default = weights.get("*")
    known = sorted(k for k in weights if k != "*")
    table = np.empty(len(uniq), dtype=np.float32)
    for j, name in enumerate(uniq):
        w = weights.get(name, default)
        if w is None:
            row = int(np.argmax(inverse == j))
            raise DataError(f"{where(row)}: event {str(name)!r} has no weight; the weights name "
                            f"{known} (model.event_weights, --event-weights): add "
                            f"{str(name)}=W, or *=W for every other event (*=0: they teach "
                            "nothing)")
        table[j] = w
    return table[inverse.reshape(-1)]


#: Cells of a CSV column of numbers read as missing (``read_item_info``), as pandas does.
_MISSING_TEXT = frozenset({"nan", "-nan", "na", "n/a", "#n/a", "null", "none", "<na>"})


def read_item_info(path: str | Path, *, id_col: str, title_col: str | None = "title",
                   genres_col: str | None = "genres", columns: Sequence[str] = (),
                   sep: str | None = None) -> pd.DataFrame:
    """Item metadata indexed by external item id, with ``title`` and ``genres`` (list),
    and those of ``columns`` the file has (others are left to the caller to report: a
    model's ``item_features`` warns, listing the columns there are). A CSV's such column
    is numbers when every non-empty value is one (an empty field, or ``NaN``/``NA``/
    ``null`` beside numbers: missing), else text."""
    p = Path(path)
    header = read_header(p, "--items", sep)
    for name, col, default in (("title_col", title_col, "title"),
                               ("genres_col", genres_col, "genres")):
        if col is not None and col != default and col not in header:
            # a column named on purpose is not left out in silence (the defaults may be)
            raise DataError(f"--items: {p} has no column {col!r} ({name}); its columns: "
                            f"{', '.join(map(str, header))}")
    cols = {"item": id_col,
            "title": title_col if title_col in header else None,
            "genres": genres_col if genres_col in header else None}
    extra = [c for c in dict.fromkeys(columns)
             if c in header and c not in cols.values() and c not in ("title", "genres")]
    read = {**cols, **{f"extra:{c}": c for c in extra}}
    df = read_table(p, read, what="--items", sep=sep)
    if len(df) == 0:
        raise DataError(f"--items: {p} has no rows (its header only); give a file with one "
                        "row per item, or leave --items out")
    check_repeated_header(p, "--items", sep, [(df[role].astype(str).str.strip(), col)
                                              for role, col in read.items() if col])
    empty = df["item"].isna().to_numpy() | (df["item"].astype(str).str.strip() == "").to_numpy()
    if empty.any():  # as --data refuses one (it was read as an id, and warned of as unused)
        raise DataError(f"--items: {p}, {where_in_file(p, int(np.argmax(empty)), sep)}, "
                        f"column {id_col!r}: empty item id")
    ids = df["item"].astype(str).str.strip()
    if p.suffix.lower() in _CSV:  # a quote not closed on its line, as --data's ids
        broken = ids.str.contains("[\r\n]", regex=True).to_numpy(bool)
        if broken.any():
            row = int(np.argmax(broken))
            warnings.warn(line_break_in_id(f"--items: {p}, {where_in_file(p, row, sep)}",
                                           id_col, "item", ids.iloc[row]), stacklevel=2)
    out = pd.DataFrame(index=pd.Index(ids.tolist()))
    if "title" in df:
        out["title"] = df["title"].astype(str).to_numpy()
    if "genres" in df:
        out["genres"] = [genre_list(x) for x in df["genres"]]
    text_file = p.suffix.lower() in _CSV  # every field is text; Parquet keeps its types
    for c in extra:
        v = df[f"extra:{c}"]
        if text_file:
            v = v.astype(str).str.strip().mask(lambda t: t == "")
            num = pd.to_numeric(v, errors="coerce")
            # "NaN" (numpy, Spark) or "NA" among numbers is a missing price, not text:
            # as text, the whole column became one category per distinct price
            blank = v.isna() | v.str.lower().isin(_MISSING_TEXT)
            if num.notna().any() and (num.notna() == ~blank).all():
                v = num
        out[c] = v.to_numpy()
    dup = out.index.duplicated()
    if dup.any():
        warnings.warn(f"--items: {p}: {int(dup.sum()):,} row(s) repeat an item id (first: "
                      f"{out.index[dup][0]!r}, {where_in_file(p, int(np.argmax(dup)), sep)}); "
                      "each item keeps its first row", stacklevel=2)
    return out[~dup]


def genre_list(cell: Any) -> list[str]:
    """A genres cell as a list: text split on ``|``, a list cell's values (a Parquet list
    column: its text form, ``"['a' 'b']"``, was one genre), a null none (it was the genre
    ``nan`` or ``None``)."""
    if isinstance(cell, (list, tuple, np.ndarray)):
        return [str(g) for g in cell if not isinstance(g, (list, tuple, np.ndarray))
                and not pd.isna(g) and str(g)]
    if cell is None or (not isinstance(cell, str) and pd.isna(cell)):
        return []
    return [g for g in str(cell).split("|") if g]


def read_header(path: str | Path, what: str = "file", sep: str | None = None) -> list[str]:
    """The column names of a CSV/Parquet file (``what`` names it in errors)."""
    p = Path(path)
    sep = check_sep(sep)
    if not p.is_file():
        raise DataError(f"{what}: {not_a_file(p)}")
    if p.suffix.lower() in _PARQUET:
        return list(_parquet_schema(p, what).names)
    if p.suffix.lower() not in _CSV:
        raise unknown_type(p, what)
    sep = sep or ("\t" if p.suffix.lower() == ".tsv" else ",")
    try:
        return pd.read_csv(p, sep=sep, nrows=0, encoding=csv_encoding(p, what)
                           ).columns.tolist()
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{what}: {p} has no readable header line ({exc})") from None
    except pd.errors.ParserError as exc:  # e.g. a quote opened and never closed
        raise DataError(f"{what}: {p}: malformed CSV: {_parser_error(p, sep, exc)}"
                        ) from None


def match_info(info: pd.DataFrame, ids: np.ndarray) -> pd.DataFrame:
    """Metadata ``info`` indexed by a file's ids, re-keyed to match the catalogue's
    ``ids`` (``catalogue_keys``), one row per key (the first: ``7`` and ``7.0`` are one)."""
    out = info.copy()
    out.index = catalogue_keys(info.index, ids)
    return out[~out.index.duplicated()]


def listed_catalogue(info: pd.DataFrame, ids: np.ndarray, items: Any) -> np.ndarray:
    """The sorted union of the log's item ``ids`` and the ids of metadata ``info`` (read
    from ``items``), matched as ``match_info`` does: against int ids, a listed id that is
    no integer (``abc``, ``007``) matches no item and is left out with a warning."""
    keys = match_info(info, ids).index
    if ids.dtype == np.int64:
        odd = np.array([not isinstance(k, int) for k in keys], dtype=bool)
        if odd.any():
            warnings.warn(f"--items: {int(odd.sum()):,} of the {len(keys):,} ids in {items} "
                          f"are no integer like the log's item ids (e.g. "
                          f"{keys[np.argmax(odd)]!r}); they are left out of the catalogue",
                          stacklevel=3)
            keys = keys[~odd]
        extra = np.asarray(list(keys), dtype=np.int64)
    else:
        extra = np.asarray([str(k) for k in keys], dtype=object)
    return np.unique(np.concatenate([ids, extra.astype(ids.dtype)]))


def catalogue_info(info: pd.DataFrame, ids: np.ndarray, items: Any, data: Any,
                   streamed: bool = False, warn: bool = True) -> pd.DataFrame:
    """The rows of metadata ``info`` (read from ``items``) for the catalogue's ``ids``,
    matched as ``match_info`` does. Items listed whose id is not in the catalogue (no
    interaction in ``data``, with ``catalogue = "interactions"``) are dropped with a
    warning: a model knows only the items of its catalogue; ``streamed``: the warning says
    that a stream keeps the log's catalogue."""
    info = match_info(info, ids)
    listed = len(info)
    info = info[info.index.isin(pd.Index(ids))]
    if len(info) < listed and warn:
        how = ("a streamed run trains no item features to place them by" if streamed else
               "a model with item features serves them from those with catalogue = "
               "\"items\", --catalogue items")
        warnings.warn(f"--items: {listed - len(info):,} of the {listed:,} items in {items} "
                      f"have no interaction in {data}; they are left out of the catalogue "
                      f"({how})", stacklevel=3)
    return info


def catalogue_keys(index: pd.Index, ids: np.ndarray) -> pd.Index:
    """A file's ids (metadata, held-out pairs) as keys of the catalogue's ``ids``: against
    int ids, those that read as an integer (``7``, ``7.0``; not ``007``) become ints, the
    others stay strings (and match nothing)."""
    if ids.dtype == np.int64:
        s = pd.Series([str(x).strip() for x in index], dtype=object)
        num = pd.to_numeric(s, errors="coerce")
        ok = (num.notna() & (num == num.round()) & (num.abs() < 2**53)
              & ~s.str.match(r"-?0\d")).to_numpy(bool)
        # integers written as such are read exactly, beyond 2**53 too (a float would round
        # 9007199254740993 to another id); "7.0" goes through the float
        whole = s.str.fullmatch(r"-?(?:0|[1-9]\d{0,18})").to_numpy(bool)
        keys = []
        for v, n, k, w in zip(s, num, ok, whole):
            exact = int(v) if w else None
            if exact is not None and -2**63 <= exact < 2**63:
                keys.append(exact)
            else:
                keys.append(int(n) if k else v)
        return pd.Index(keys, dtype=object)
    return pd.Index([str(x) for x in index])


def write_interactions(x: Interactions, path: str | Path) -> None:
    """Write interactions with external ids (CSV or Parquet by suffix); for tests and demos.
    Times are written as the numbers ``x.timestamps`` holds (counts of ``x.time_unit``:
    read them back with ``time_unit=x.time_unit``); without times no time column is
    written, so read it back without a ``time_unit`` (one is refused where no time
    column is read)."""
    data: dict[str, Any] = {"user_id": x.user_vocab.ids_of(x.users),
                            "item_id": x.item_vocab.ids_of(x.items)}
    if x.ratings is not None:
        data["rating"] = x.ratings
    if x.timestamps is not None:
        data["timestamp"] = x.timestamps
    df = pd.DataFrame(data)
    p = Path(path)
    if p.suffix.lower() in _PARQUET:
        df.to_parquet(p, index=False)
    else:
        df.to_csv(p, index=False)
