"""Streamed interaction input: CSV/Parquet read in record batches, memory bounded by the
batch and shuffle-buffer sizes, never by the file size.

One streaming pass (``InteractionStream.scan``) builds the id vocabularies (or takes given
ones, e.g. ``Vocabulary.load``), counts rows and item popularity and the rating range;
``batches`` then yields training batches of indices, shuffled through a seeded bounded
buffer.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from twotower.config import Config, check_choice, check_range
from twotower.data.interactions import INT_ID, integral_as_int
from twotower.data.readers import (RATING_HINT, beyond_int64_message, check_columns,
                                   check_ragged, check_unique_columns, csv_encoding, csv_header,
                                   float_ids_as_text, float_ids_message, header_forms,
                                   line_break_in_id, not_a_file,
                                   not_plain_message, repeated_header, shown_cell, warn_once,
                                   where_in_file)
from twotower.data.vocabulary import Vocabulary, plain_id
from twotower.errors import ConfigError, DataError, NotFittedError

_PARQUET = {".parquet", ".pq"}
_CSV = {".csv", ".tsv", ".txt"}
_LUT_SPAN = 4  # dense id -> index table while the ids span <= 4 x their count
# _DistinctCounter: columns counted together once they hold this many values, or once this
# many are staged; counted parts merged once this many are held, whatever their size
_STAGE_ROWS, _STAGE_PARTS, _MAX_PARTS = 65_536, 1_024, 256

Batch = dict[str, np.ndarray]


@dataclass(frozen=True)
class StreamConfig(Config):
    """How an interaction file is streamed.

    Attributes:
        user_col, item_col: the id columns.
        rating_col: an optional numeric column (None: no ratings; ``mse`` needs them).
        read_rows: rows per record batch read from the file (Parquet), or the approximate
            rows per CSV block.
        shuffle_buffer: rows held in the shuffle buffer; 0 keeps file order.
        seed: seeds the shuffle (epoch ``e`` uses ``seed + e``).
        unknown: ids missing from a given vocabulary: ``error`` or ``skip`` the row (a
            vocabulary not given is then built from the rows kept, in a pass of its own).
        sep: CSV separator (default ``,``; tab for ``.tsv``).
        event_col, event_weights: a column of event names (``view``, ``transaction``)
            and the weight of each name (the key ``"*"``: every other name's), as
            ``read_interactions`` reads them: each row's name is mapped to its weight as
            its batch is read, and the weights take the rating's place (``rating_col``
            then None), for ``ModelConfig.interaction_weights = "event"`` (whose
            ``event_weights`` must be these). A name the table lacks is a ``DataError``
            naming the file and its line (CSV) or row (Parquet).

    Example:
        >>> StreamConfig(user_col="userId", shuffle_buffer=0).read_rows
        65536
    """

    user_col: str = "user_id"
    item_col: str = "item_id"
    rating_col: str | None = None
    read_rows: int = 65_536
    shuffle_buffer: int = 262_144
    seed: int = 42
    unknown: str = "error"
    sep: str | None = None
    event_col: str | None = None
    event_weights: dict[str, float] = field(default_factory=dict)

    def validate(self) -> None:
        own = "stream"
        from twotower.models.config import event_weight_table
        object.__setattr__(self, "event_weights",  # a copy: the config stays frozen
                           event_weight_table(f"{own}.event_weights", self.event_weights))
        for name in ("rating_col", "event_col"):  # '' read as no column: no ratings
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ConfigError(f"{own}.{name} must be a column name or None, got "
                                  f"{value!r}")
        if (self.event_col is None) != (not self.event_weights):
            raise ConfigError(f"{own}.event_col (the column of event names) and "
                              f"{own}.event_weights (their weights) go together; got "
                              + ("event_col alone" if self.event_col is not None
                                 else "event_weights alone"))
        if self.event_col is not None and self.rating_col is not None:
            raise ConfigError(f"{own}.event_col ({self.event_col!r}) gives each row its "
                              f"weight, in place of {own}.rating_col ({self.rating_col!r}): "
                              "one source of ratings at a time; give one of the two")
        for name in ("user_col", "item_col"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ConfigError(f"{own}.{name} must be a column name, got "
                                  f"{getattr(self, name)!r}")
        check_range(own, "read_rows", self.read_rows, 1, 100_000_000, integer=True)
        check_range(own, "shuffle_buffer", self.shuffle_buffer, 0, 1_000_000_000, integer=True)
        check_range(own, "seed", self.seed, 0, 2**31 - 1, integer=True)
        check_choice(own, "unknown", self.unknown, ("error", "skip"))
        if self.sep is not None:  # the readers' rule (one ASCII character, no quote ...)
            from twotower.data.readers import check_sep
            if self.sep in ("\\t", "tab") or check_sep(self.sep, f"{own}.sep") != self.sep:
                raise ConfigError(f"{own}.sep: a field separator is one character ('\\t' "
                                  f"for a tab), got {self.sep!r}")


@dataclass(frozen=True, eq=False)
class StreamStats:
    """What one streaming pass learned.

    Attributes:
        rows: rows in the file (after skipped unknown ids).
        user_vocab, item_vocab: the vocabularies.
        item_counts: ``[n_items]`` int64 interactions per item index.
        rating_range: (min, max) of the rating column (or of the event weights), or
            None without one.
        positive: (float64 sum, count) of the positive ratings (event weights): the
            scale of ``ModelConfig.interaction_weights`` (``weight_scale``); None
            without ratings.
    """

    rows: int
    user_vocab: Vocabulary
    item_vocab: Vocabulary
    item_counts: np.ndarray
    rating_range: tuple[float, float] | None
    positive: tuple[float, int] | None = None


class InteractionStream:
    """An interaction file read in record batches.

    Args:
        path: ``.parquet``/``.pq`` or ``.csv``/``.tsv``/``.txt``.
        config: columns, batch sizes, shuffling.
        user_vocab, item_vocab: fixed vocabularies (e.g. ``Vocabulary.load(path)``);
            derived by ``scan`` when None.
        shard: ``(index, count)``: read only every ``count``-th record batch starting at
            ``index`` (one share per process of a multi-host run).

    Example:
        >>> s = InteractionStream("big.parquet", StreamConfig(rating_col="rating"))  # doctest: +SKIP
        >>> stats = s.scan()   # one pass: vocabularies, counts     # doctest: +SKIP
        >>> for batch in s.batches(4096, epoch=0): ...  # {"user", "item", "rating"}  # doctest: +SKIP
    """

    def __init__(self, path: str | Path, config: StreamConfig | None = None, *,
                 user_vocab: Vocabulary | None = None, item_vocab: Vocabulary | None = None,
                 shard: tuple[int, int] = (0, 1)) -> None:
        self.path = Path(path)
        self.config = config or StreamConfig()
        self._user_vocab, self._item_vocab = user_vocab, item_vocab
        # which vocabularies the caller gave (the others come from ``scan``)
        self._given = {"user": user_vocab is not None, "item": item_vocab is not None}
        index, count = shard
        if not (isinstance(count, int) and count >= 1 and 0 <= index < count):
            raise ConfigError(f"shard must be (index, count) with 0 <= index < count, "
                              f"got {shard!r}")
        self.shard = (index, count)
        self.stats: StreamStats | None = None
        self._content_digest: bytes | None = None  # computed by a scan(digest=True)
        self._file_state: _FileState | None = None  # the file as the scan found it
        # ids holding a line break (an unclosed quote) are looked for until one pass has
        # read the whole file, or one is found: one warning, and no cost on later epochs
        self._line_breaks_checked = False
        # a repeated header line (``_repeated_header``) is looked for until one pass has
        # read the whole file: no cost on later epochs (a line break's warning ends the
        # search for line breaks early, not this one)
        self._headers_checked = False

    # ------------------------------------------------------------------ raw reading
    @property
    def _roles(self) -> dict[str, str]:
        c = self.config
        roles = {"user": c.user_col, "item": c.item_col}
        if c.rating_col:
            roles["rating"] = c.rating_col
        elif c.event_col:  # read as the weights, in the rating's place
            roles["event"] = c.event_col
        return roles

    @property
    def _names(self) -> list[str]:
        """The record batches' column names: ``user``, ``item`` and ``rating`` (an event
        column's names come as their weights there)."""
        return ["user", "item", "rating"][:len(self._roles)]

    def _kind(self) -> str:
        if not self.path.is_file():
            raise DataError(f"--data: {not_a_file(self.path)}")
        suffix = self.path.suffix.lower()
        if suffix in _PARQUET:
            return "parquet"
        if suffix in _CSV:
            return "csv"
        from twotower.data.readers import unknown_type
        raise unknown_type(self.path, "--data")

    def _check_columns(self, have: list[str], sep: str | None = None) -> None:
        by_col: dict[str, list[str]] = {}
        for role, col in self._roles.items():
            by_col.setdefault(col, []).append(role)
        for col, roles in by_col.items():  # as the in-memory reader refuses it
            if len(roles) > 1:
                raise DataError(f"--data: column {col!r} is named for several roles "
                                f"({', '.join(roles)}); each role needs a column of its own")
        # as the in-memory reader says it (a ';' file read as one column: the separator)
        check_columns(self.path, "--data", self._roles, have, sep)

    def record_batches(self) -> Iterator[Any]:
        """``pyarrow.RecordBatch`` es with one column per role (``user``, ``item``,
        ``rating``), in file order; this process's shard only.

        Raises:
            DataError: missing file, unknown suffix, unreadable file, absent column.
        """
        kind = self._kind()
        if self._file_state is not None:  # every pass reads the file the scan read
            now = _FileState.of(self.path)  # (None: unreadable, as the reader says below)
            if now is not None and (why := self._file_state.changed(now)):
                raise self._changed(why)
        index, count = self.shard
        it = self._parquet() if kind == "parquet" else self._csv()
        row = 0
        for n, batch in enumerate(it):
            if n % count == index:
                if count > 1:  # where it starts in the file, for the passes' errors
                    batch = batch.replace_schema_metadata({_ROW: str(row)})
                yield batch
            row += batch.num_rows

    def content_digest(self) -> bytes:
        """A 128-bit blake2b digest of the rows this stream reads (its record batches, in
        order: ids and ratings as read): a multi-process ``TwoTower.fit_stream`` compares
        the processes' digests before training, and a checkpoint tells its file by it.
        Computed by ``scan(digest=True)`` in its pass; otherwise one more pass over the
        file."""
        if self._content_digest is None:
            for _ in self._hashed(self.record_batches()):
                pass
        assert self._content_digest is not None
        return self._content_digest

    def _hashed(self, batches: Iterable[Any]) -> Iterator[Any]:
        """``batches`` passed on; once the last one is read, their digest is kept as the
        stream's ``content_digest``."""
        import hashlib
        h = hashlib.blake2b(digest_size=16)
        for batch in batches:
            h.update(batch.serialize())  # Arrow IPC: a sliced column's own bytes only
            yield batch
        self._content_digest = h.digest()

    def _parquet(self) -> Iterator[Any]:
        import pyarrow as pa
        import pyarrow.parquet as pq
        try:
            # pre_buffer=False: the pre-buffered reader keeps every column chunk it read
            # until it ends (Arrow memory grew with the file: 152 MB late in a 153 MB file)
            f = pq.ParquetFile(self.path, pre_buffer=False)
        except Exception as exc:  # pyarrow raises several types for a bad file
            raise DataError(f"--data: {self.path} is not a readable Parquet file ({exc})"
                            ) from None
        roles = self._roles
        offset = 0
        with f:  # closed on a refused column too
            names = list(f.schema_arrow.names)
            self._check_columns(names)
            check_unique_columns(self.path, "--data", roles, names)
            # use_threads=False: decoded on this thread; Arrow's pool took 30 ns of CPU per
            # row against 23 (4M rows of the 20M benchmark set, ad hoc), in a training pass
            # beside XLA's threads on the same cores, and the scan took as long either way
            batches = f.iter_batches(batch_size=self.config.read_rows,
                                     columns=list(dict.fromkeys(roles.values())),
                                     use_threads=False)
            while True:
                try:
                    b = next(batches)
                except StopIteration:
                    break
                except (pa.ArrowException, OSError) as exc:  # a damaged data page
                    raise DataError(f"--data: {self.path} is not a readable Parquet file: "
                                    f"its rows after row {offset:,} cannot be read ({exc})"
                                    ) from None
                cols = [_plain(b.column(c)) for c in roles.values()]
                if "rating" in roles and (pa.types.is_string(cols[2].type)
                                          or pa.types.is_large_string(cols[2].type)):
                    cols[2] = self._ratings(cols[2], offset, None)  # as read_interactions
                if "event" in roles:
                    cols[2] = self._event_weights(cols[2], offset, None)
                offset += b.num_rows
                yield pa.RecordBatch.from_arrays(cols, names=self._names)

    def _csv(self) -> Iterator[Any]:
        import pyarrow as pa
        import pyarrow.csv as pacsv
        sep = self.config.sep or ("\t" if self.path.suffix.lower() == ".tsv" else ",")
        # latin-1 where the file is not UTF-8, as the in-memory reader (warned once); the
        # header too (a column name with an accent); utf-8-sig: without a byte-order mark
        encoding = csv_encoding(self.path, "--data")
        header = csv_header(self.path, sep, encoding)
        if not header:
            raise DataError(f"--data: {self.path} has no header line")
        self._check_columns(header, sep)
        check_unique_columns(self.path, "--data", self._roles, header)
        roles = self._roles
        types = {self.config.user_col: pa.string(), self.config.item_col: pa.string()}
        if "rating" in roles:  # text, parsed by ``_ratings`` as read_interactions does
            types[roles["rating"]] = pa.string()
        if "event" in roles:  # names, as read_interactions reads them (text)
            types[roles["event"]] = pa.string()
        offset = 0
        try:
            reader = pacsv.open_csv(
                self.path,
                # Arrow's block_size is an int32: capped (read_rows allows 100M rows)
                read_options=pacsv.ReadOptions(block_size=min(max(1 << 20,
                                                                  32 * self.config.read_rows),
                                                              1 << 30),
                                               **({} if encoding == "utf-8"
                                                  else {"encoding": encoding})),
                # quoted line breaks: no slower here (0.155 against 0.151 s for 3M rows)
                parse_options=pacsv.ParseOptions(delimiter=sep, newlines_in_values=True),
                convert_options=pacsv.ConvertOptions(
                    include_columns=list(dict.fromkeys(roles.values())), column_types=types,
                    strings_can_be_null=False, quoted_strings_can_be_null=False))
            last = None
            for b in reader:
                cols = [b.column(c) for c in roles.values()]
                try:
                    if "rating" in roles:
                        cols[2] = self._ratings(cols[2], offset, sep)
                    if "event" in roles:
                        cols[2] = self._event_weights(cols[2], offset, sep)
                except DataError:
                    # a header line again (files joined) is said as such, as
                    # read_interactions says it, not as its rating or event name that is
                    # none ('rating', 'event')
                    self._repeated_header(pa.RecordBatch.from_arrays(
                        cols[:2], names=["user", "item"]), offset)
                    raise
                offset += b.num_rows
                if b.num_rows:
                    last = b
                yield pa.RecordBatch.from_arrays(cols, names=self._names)
            if last is not None:
                self._unclosed_quote(last, offset - 1, sep)
        except pa.ArrowInvalid as exc:
            if offset == 0 and self._header_only(sep, encoding):
                # a header with no line end: Arrow "cannot infer number of columns"
                raise DataError(f"--data: {self.path} has no rows") from None
            check_ragged(self.path, "--data", sep, len(header))  # names the line, if ragged
            raise DataError(f"--data: {self.path}: malformed CSV: {exc}") from None

    def _header_only(self, sep: str, encoding: str) -> bool:
        """Whether the CSV file holds no record after its header (blank lines aside)."""
        import csv
        import itertools
        text = "utf-8-sig" if encoding == "utf-8" else encoding
        try:
            with self.path.open("r", encoding=text, errors="replace", newline="") as fh:
                records = (r for r in csv.reader(fh, delimiter=sep) if r)
                return len(list(itertools.islice(records, 2))) < 2
        except csv.Error:  # (a field past csv's limit: a record, at least)
            return False

    def _unclosed_quote(self, last: Any, row: int, sep: str) -> None:
        """The file's last row, ``row``: Arrow reads a quote never closed as a value that
        runs to the end of the file (the rest of the file, read as one id, was silently
        lost); the in-memory reader refuses such a file (pandas: "EOF inside string")."""
        for name in self._roles.values():
            value = last.column(name)[-1].as_py()
            if isinstance(value, str) and ("\n" in value or "\r" in value) and (
                    sep in value or value.endswith(("\n", "\r"))):
                where = where_in_file(self.path, row, sep)
                raise DataError(f"--data: {self.path}, {where}, column {name!r}: a quote is "
                                "opened and never closed, so the rest of the file would be "
                                f"read as this one value ({value[:40]!r}...); close it, or "
                                "double a quote that is part of a value")

    def _event_weights(self, col: Any, offset: int, sep: str | None) -> Any:
        """A batch's event names (rows ``offset`` on) as float64 weights, by
        ``read_interactions``' function (``event_values``): each distinct name of the batch
        once (Arrow's dictionary encoding), and an unknown or empty name named with the
        file's line (CSV) or row (Parquet) where the batch holds it first."""
        import pandas as pd
        import pyarrow as pa
        import pyarrow.compute as pc

        from twotower.data.readers import event_values
        weights, name = self.config.event_weights, self.config.event_col

        def where(row: int) -> str:
            return f"--data: {self.path}, {where_in_file(self.path, offset + row, sep)}, " \
                   f"column {name!r}"
        if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
            # numbers or other types: as the in-memory reader's text of them
            return pa.array(event_values(pd.Series(col.to_pandas()), weights, where),
                            pa.float64())
        enc = pc.utf8_trim_whitespace(col).fill_null("").dictionary_encode()
        idx = np.asarray(enc.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
        first = np.zeros(len(enc.dictionary), dtype=np.int64)  # each name's first row
        seen, at = np.unique(idx, return_index=True)
        first[seen] = at
        table = event_values(pd.Series(enc.dictionary.to_pylist(), dtype=object), weights,
                             lambda j: where(int(first[j])))
        return pa.array(table.astype(np.float64)[idx], pa.float64())

    def _ratings(self, col: Any, offset: int, sep: str) -> Any:
        """A CSV batch's rating text (rows ``offset`` on) as float64, by
        ``read_interactions``' rule: a number, any Unicode space around it. Arrow's cast
        takes the usual column; where it refuses one, pandas reads the batch as the
        in-memory reader does and names the first line that is no number."""
        import pandas as pd
        import pyarrow as pa
        import pyarrow.compute as pc
        try:
            out = pc.cast(pc.utf8_trim_whitespace(col), pa.float64())
            if pc.all(pc.is_finite(out)).as_py() is not False:
                return out
        except pa.ArrowInvalid:
            pass  # (and a non-finite value: below, to quote the cell as written)
        raw = col.to_pylist()
        vals = pd.to_numeric(pd.Series(raw, dtype=object).str.strip(), errors="coerce"
                             ).to_numpy(dtype=np.float64)
        bad = ~np.isfinite(vals)
        if bad.any():
            at = int(np.argmax(bad))
            raise DataError(f"--data: {self.path}, {where_in_file(self.path, offset + at, sep)}"
                            f", column {self.config.rating_col!r}: expected a finite number, "
                            f"got {raw[at]!r}{RATING_HINT}")
        return pa.array(vals, pa.float64())

    # ------------------------------------------------------------------ the streaming pass
    def scan(self, digest: bool = False) -> StreamStats:
        """One pass over the file: vocabularies (unless given), rows, item counts, rating
        range. Memory grows with the number of distinct ids, not with the rows. With
        ``digest``, the pass also computes ``content_digest`` (no pass of its own then).
        Every later pass first checks that the file is still the one scanned (size,
        modification time, inode, last 64 KiB), else a ``DataError`` says what changed.

        Returns:
            The stats, also kept as ``self.stats``.
        """
        import pyarrow as pa
        self._content_digest = None  # of the file as this pass reads it, if asked
        # a scan again (the file changed since): the vocabularies an earlier scan made,
        # and its counts, are not given ones (they refused the file's new ids)
        self.stats = None
        self._file_state = _FileState.of(self.path)
        if not self._given["user"]:
            self._user_vocab = None
        if not self._given["item"]:
            self._item_vocab = None
        users, items = _DistinctCounter(), _DistinctCounter()
        rows, lo, hi = 0, np.inf, -np.inf
        pos_sum, pos_n = 0.0, 0  # the positive ratings (weights), as float32 like fit's
        item_counts = None
        fixed = self._user_vocab is not None and self._item_vocab is not None
        if fixed:
            item_counts = np.zeros(len(self._item_vocab), dtype=np.int64)
        # one vocabulary given: the rows whose id it lacks are dropped as the scan reads
        # them (unknown='skip'; 'error' refuses the file below), so the other vocabulary,
        # the counts and the rating range are those of the rows every pass yields, in this
        # one pass (they took two more: the kept rows' vocabulary, then their counts)
        given = (None if fixed else "user" if self._user_vocab is not None
                 else "item" if self._item_vocab is not None else None)
        known = None if given is None else _Mapper(
            self._user_vocab if given == "user" else self._item_vocab)
        read, unknown = 0, None  # rows read; the first batch's ids the given vocabulary lacks
        source = self._hashed(self.record_batches()) if digest else self.record_batches()
        for chunk in self._index_chunks(source) if fixed else self._checked(source):
            if fixed:
                item_counts += np.bincount(chunk["item"], minlength=len(item_counts))
                n = len(chunk["user"])
                rating = chunk.get("rating")
            else:
                read += chunk.num_rows
                if known is not None:
                    col = chunk.column(0 if given == "user" else 1)
                    keep = known.indices(col) >= 0
                    if not keep.all():
                        if unknown is None:
                            unknown = np.unique(col.filter(pa.array(~keep)).to_numpy(
                                zero_copy_only=False))
                        chunk = chunk.filter(pa.array(keep))
                users.add(chunk.column(0))
                items.add(chunk.column(1))
                n = chunk.num_rows
                rating = (chunk.column(2).to_numpy(zero_copy_only=False)
                          if chunk.num_columns > 2 else None)
            rows += n
            if rating is not None and len(rating):
                lo, hi = min(lo, float(np.min(rating))), max(hi, float(np.max(rating)))
                r32 = np.asarray(rating, dtype=np.float32)
                pos = r32[r32 > 0]
                pos_sum += float(np.sum(pos, dtype=np.float64))
                pos_n += len(pos)
        if rows == 0 and not read:
            raise DataError(f"--data: {self.path} has no rows")
        if not fixed:  # the vocabularies not given come from the scan
            if unknown is not None:  # with unknown='error', an error naming the row
                self._check_known(given, unknown, self._user_vocab if given == "user"
                                  else self._item_vocab)
            if rows == 0:
                raise DataError(f"--data: {self.path} has no row with known ids")
            if self._user_vocab is None:
                self._user_vocab = users.vocabulary(
                    "user", (self.path, "--data", self.config.user_col))
            uniq, counts = items.values_counts()
            if self._item_vocab is None:
                self._item_vocab = _vocab_of(uniq, "item", counts,
                                             (self.path, "--data", self.config.item_col))
            idx = _Mapper(self._item_vocab).indices(pa.array(uniq))
            item_counts = np.bincount(idx, weights=counts,
                                      minlength=len(self._item_vocab)).astype(np.int64)
        self.stats = StreamStats(rows=rows, user_vocab=self._user_vocab,
                                 item_vocab=self._item_vocab, item_counts=item_counts,
                                 rating_range=(lo, hi) if len(self._roles) > 2 else None,
                                 positive=(pos_sum, pos_n) if len(self._roles) > 2 else None)
        return self.stats

    def _check_known(self, role: str, values: np.ndarray, vocab: Vocabulary) -> bool:
        """Whether some of the distinct ids ``values`` of a given vocabulary's column are
        not in it (with ``unknown='error'``, an error)."""
        import pyarrow as pa
        if not len(values):
            return False
        mapper = _Mapper(vocab)
        idx = mapper.indices(pa.array(values))
        if (idx < 0).any() and self.config.unknown == "error":
            # the first such row of the file, named as the other passes name one (an error
            # only: one more pass)
            offset, pos, value = 0, None, None
            for b in self.record_batches():
                offset = _file_row(b, offset)
                unknown = mapper.indices(b.column(role)) < 0
                if unknown.any():
                    pos = int(np.argmax(unknown))
                    value = b.column(role)[pos].as_py()
                    break
                offset += b.num_rows
            where = (f", {where_in_file(self.path, offset + pos, self.config.sep)}"
                     if pos is not None else "")
            if pos is None:  # (the file changed meanwhile)
                value = plain_id(values[idx < 0][0])
            raise DataError(f"--data: {self.path}{where}, column {self._roles[role]!r}: "
                            f"{role} id {value!r} is not in the given {role} vocabulary "
                            f"({len(vocab)} ids); use unknown='skip' to drop such rows")
        return bool((idx < 0).any())

    def _checked(self, batches: Iterable[Any]) -> Iterator[Any]:
        """Record batches with null/empty ids and non-numeric ratings rejected."""
        import pyarrow as pa
        import pyarrow.compute as pc
        offset = 0
        check_line_breaks = self.path.suffix.lower() in _CSV
        for b in batches:
            offset = _file_row(b, offset)
            # the usual batch costs no pass but the float check: ``null_count`` is known
            for role in ("user", "item"):
                col = b.column(role)
                if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)
                        or pa.types.is_integer(col.type) or pa.types.is_floating(col.type)
                        or pa.types.is_dictionary(col.type) or pa.types.is_null(col.type)):
                    # worded as read_interactions refuses it (a float id is read as an
                    # integer when whole, as text otherwise, in both)
                    kind = "boolean" if pa.types.is_boolean(col.type) else str(col.type)
                    raise DataError(f"--data: {self.path}, column {self._roles[role]!r}: "
                                    f"{role} ids must be text or integers, got {kind} values "
                                    f"(e.g. {col[0].as_py()!r})")
                if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
                    bad = pc.or_kleene(pc.is_null(col),
                                       pc.equal(pc.utf8_trim_whitespace(col), ""))
                    if pc.any(bad).as_py():
                        self._bad_row(offset, bad, role, f"empty {role} id")
                    if check_line_breaks and not self._line_breaks_checked:
                        broken = pc.match_substring_regex(pc.utf8_trim_whitespace(col),
                                                          "[\r\n]")
                        if pc.any(broken).as_py():
                            self._warn_line_break(offset, broken, role, col)
                elif col.null_count:
                    self._bad_row(offset, pc.is_null(col), role, f"empty {role} id")
                elif pa.types.is_floating(col.type) and pc.any(pc.is_nan(col)).as_py():
                    # NaN: a missing value, as read_interactions takes it
                    self._bad_row(offset, pc.is_nan(col), role, f"empty {role} id")
            if check_line_breaks and not self._headers_checked:  # (CSV ids: text)
                self._repeated_header(b, offset)
            if "rating" in self._roles:
                col = b.column("rating")
                if len(col) and not (pa.types.is_floating(col.type)
                                     or pa.types.is_integer(col.type)):
                    # no number in any row (a list, true/false, null column): said of its
                    # first row, as read_interactions says it (text ratings were parsed)
                    self._bad_row(offset, pa.array(np.ones(len(col), bool)), "rating",
                                  "expected a finite number, got {}" + RATING_HINT, b)
                # one numpy min and max (NaN propagates): non-finite values and those
                # float32 cannot hold (pc.is_finite, pc.abs, pc.max took 5 ns per row of
                # float32 ratings, this 0.25, ad hoc)
                lo = hi = 0.0
                if pa.types.is_floating(col.type) and len(col) and not col.null_count:
                    v = col.to_numpy(zero_copy_only=False)
                    lo, hi = float(v.min()), float(v.max())
                if col.null_count or not (np.isfinite(lo) and np.isfinite(hi)):
                    bad = pc.is_null(col)
                    if pa.types.is_floating(col.type):
                        bad = pc.or_kleene(bad, pc.invert(pc.is_finite(col)))
                    self._bad_row(offset, bad, "rating",
                                  "expected a finite number, got {}" + RATING_HINT, b)
                from twotower.data.interactions import FLOAT32_MAX
                if max(hi, -lo) > FLOAT32_MAX:  # it became inf, and training "diverged"
                    self._bad_row(offset, pc.greater(pc.abs(col), FLOAT32_MAX), "rating",
                                  f"a rating beyond what float32 holds ({FLOAT32_MAX:.1e}), "
                                  "got {}; rescale the ratings", b)
            offset += b.num_rows
            yield b
        self._line_breaks_checked = True  # (a whole pass: this shard's part of the file)
        self._headers_checked = True

    def _repeated_header(self, b: Any, offset: int) -> None:
        """A CSV row whose user and item fields are those columns' names (two files joined
        with their header lines) is refused, as ``read_interactions`` refuses it."""
        import pyarrow as pa
        import pyarrow.compute as pc
        names = [self._roles["user"], self._roles["item"]]
        same = pc.and_(*(pc.is_in(pc.utf8_trim_whitespace(b.column(role)),
                                  value_set=pa.array(header_forms(name)))
                         for role, name in zip(("user", "item"), names)))
        if pc.any(same).as_py():
            at = int(np.argmax(np.asarray(same.fill_null(False))))
            raise repeated_header(
                f"--data: {self.path}, {where_in_file(self.path, offset + at, self.config.sep)}",
                names)

    def _warn_line_break(self, offset: int, broken: Any, role: str, col: Any) -> None:
        import warnings
        at = int(np.argmax(np.asarray(broken.fill_null(False))))
        where = f"--data: {self.path}, {where_in_file(self.path, offset + at, self.config.sep)}"
        self._line_breaks_checked = True
        warnings.warn(line_break_in_id(where, self._roles[role], role,
                                       str(col[at].as_py()).strip()), stacklevel=4)

    def _bad_row(self, offset: int, bad: Any, role: str, what: str, batch: Any = None
                 ) -> None:
        """``what`` may hold ``{}``: the bad value (``batch``'s column ``role``)."""
        at = int(np.argmax(np.asarray(bad.fill_null(True))))
        where = where_in_file(self.path, offset + at, self.config.sep)
        if "{}" in what:  # (NaN: nothing (null), as read_interactions says it)
            what = what.format(shown_cell(batch.column(role)[at].as_py()))
        col = self._roles[role]
        raise DataError(f"--data: {self.path}, {where}, column {col!r}: {what}")

    def _require_vocab(self) -> tuple[Vocabulary, Vocabulary]:
        if self._user_vocab is None or self._item_vocab is None:
            raise NotFittedError("this stream has no vocabularies yet: call scan first "
                                 "(or pass user_vocab/item_vocab)")
        return self._user_vocab, self._item_vocab

    @property
    def user_vocab(self) -> Vocabulary:
        return self._require_vocab()[0]

    @property
    def item_vocab(self) -> Vocabulary:
        return self._require_vocab()[1]

    def _index_chunks(self, source: Iterable[Any] | None = None) -> Iterator[Batch]:
        """Record batches (``source``, default: the file's) mapped to indices:
        ``user``/``item`` int32, ``rating`` float32."""
        uv, iv = self._require_vocab()
        umap, imap = _Mapper(uv), _Mapper(iv)
        offset = yielded = 0
        for b in self._checked(self.record_batches() if source is None else source):
            offset = _file_row(b, offset)
            u, i = umap.indices(b.column("user")), imap.indices(b.column("item"))
            keep = None
            if len(u) and min(u.min(), i.min()) < 0:  # ids not in the vocabulary
                # a row an unknown id of a given vocabulary drops; any other row with an
                # unknown id: the scan saw every id of the rows it kept, the file changed
                drop = np.zeros(len(u), dtype=bool)
                for r, idx in (("user", u), ("item", i)):
                    if self._given[r]:
                        drop |= idx < 0
                if ((u < 0) | (i < 0))[~drop].any():
                    raise self._changed("it holds ids the scan did not see")
                keep = ~drop
                role = "user" if self._given["user"] and (u < 0).any() else "item"
                if self.config.unknown == "error":
                    pos = int(np.argmax((u if role == "user" else i) < 0))
                    value = b.column(role)[pos].as_py()
                    where = where_in_file(self.path, offset + pos, self.config.sep)
                    raise DataError(f"--data: {self.path}, {where}, column "
                                    f"{self._roles[role]!r}: {role} id {value!r} is not in the "
                                    f"given {role} vocabulary ({len(uv if role == 'user' else iv)}"
                                    " ids); use unknown='skip' to drop such rows")
            out = {"user": u.astype(np.int32, copy=False),
                   "item": i.astype(np.int32, copy=False)}
            if len(self._roles) > 2:  # the ratings, or the event names' weights
                out["rating"] = b.column("rating").to_numpy(zero_copy_only=False
                                                            ).astype(np.float32)
            if keep is not None:
                out = {k: v[keep] for k, v in out.items()}
            offset += b.num_rows
            yielded += len(out["user"])
            yield out
        # every pass must read what the scan counted (a file replaced or cut meanwhile)
        if self.stats is not None and yielded != self.stats.rows:
            raise self._changed(f"{self.stats.rows:,} rows then, {yielded:,} now")

    def _changed(self, why: str) -> DataError:
        return DataError(f"--data: {self.path} changed since it was scanned ({why}); "
                         "train again on a file that stays as it is while training reads it")

    def chunks(self, epoch: int = 0) -> Iterator[Batch]:
        """Index chunks of every row exactly once, shuffled through the bounded buffer
        (seed ``config.seed + epoch``; file order when ``shuffle_buffer`` is 0)."""
        it = self._index_chunks()
        if self.config.shuffle_buffer:
            it = shuffle_chunks(it, self.config.shuffle_buffer, self.config.seed + epoch)
        return it

    def batches(self, batch_size: int, epoch: int = 0, *, drop_remainder: bool = False,
                inputs: Any = None) -> Iterator[Batch]:
        """Training batches of ``batch_size`` rows (the last may be smaller).

        Args:
            batch_size: rows per batch.
            epoch: varies the shuffle.
            drop_remainder: drop the last, smaller batch.
            inputs: optional row-wise function ``Batch -> Batch`` (e.g. ``model_inputs``),
                applied to each chunk of rows before it is cut into batches.
        """
        chunks = self.chunks(epoch)
        if inputs is not None:  # row-wise: applied once per chunk, not per batch
            chunks = map(inputs, chunks)
        yield from rebatch(chunks, batch_size, drop_remainder=drop_remainder)

    def seen_matrix(self) -> Any:
        """``[n_users, n_items]`` scipy CSR, 1.0 for every (user, item) pair in the file (one
        more pass, in file order): the items to exclude from each user's recommendations.
        Unlike a training pass, its memory grows with the file: about 20 bytes per row at
        its peak (the pairs, and scipy's conversion), then 8 bytes per distinct pair."""
        import scipy.sparse as sp
        uv, iv = self._require_vocab()
        if self.stats is not None:  # the scan counted the rows: fill, no concatenation
            users = np.empty(self.stats.rows, dtype=np.int32)
            items = np.empty(self.stats.rows, dtype=np.int32)
            n = 0
            for c in self._index_chunks():  # which checks the count at its end
                m = len(c["user"])
                if n + m <= len(users):
                    users[n:n + m], items[n:n + m] = c["user"], c["item"]
                n += m
        else:
            parts = [(c["user"], c["item"]) for c in self._index_chunks()]
            users = np.concatenate([u for u, _ in parts]) if parts else np.empty(0, np.int32)
            items = np.concatenate([i for _, i in parts]) if parts else np.empty(0, np.int32)
            del parts
        m = sp.csr_matrix((np.ones(len(users), dtype=np.float32), (users, items)),
                          shape=(len(uv), len(iv)))
        m.sum_duplicates()
        m.data[:] = 1.0
        return m

    def model_inputs(self, objective: str, weights: str = "none") -> Any:
        """The function turning index batches into ``TwoTowerNet`` inputs for ``objective``,
        as ``TwoTower._inputs`` does in memory: ratings rescaled to [0, 1] (``mse``), log
        sampling probability from item popularity (``sampled_softmax``); with ``weights``
        (``ModelConfig.interaction_weights`` ``rating`` or ``event``), each row's weight
        (its rating, or its event name's weight) over the mean positive weight of the file
        (``weight_scale``), as ``TwoTower.fit`` weighs rows in memory.

        Raises:
            DataError: weights from a stream without ratings or event column, a negative
                weight (naming its line or row: one more pass), or every weight 0.
        """
        stats = self.stats or self.scan()
        if objective == "multinomial":
            raise ConfigError(f"objective {objective!r} trains per user and is not streamed")
        if objective == "mse" and (stats.rating_range is None or self.config.event_col):
            raise DataError("objective 'mse' needs ratings; set StreamConfig.rating_col")
        lo, hi = stats.rating_range or (0.0, 1.0)
        p = stats.item_counts / max(stats.item_counts.sum(), 1)
        logq = np.log(np.maximum(p, 1e-12)).astype(np.float32)
        scale = None
        if weights != "none":
            from twotower.models.retriever import _no_weights, weight_scale
            if stats.positive is None:
                raise _no_weights(weights, streamed=True)
            if lo < 0:
                self._negative_weight(weights)
            scale = weight_scale(*stats.positive, weights)

        def inputs(b: Batch) -> Batch:
            out = {"user": b["user"], "item": b["item"]}
            if objective == "mse":
                r = np.subtract(b["rating"], lo, dtype=np.float32)
                r /= max(hi - lo, 1e-9)  # as TwoTower._inputs, in place
                out["rating"] = r
            if objective == "sampled_softmax":
                out["logq"] = logq[b["item"]]
            if scale is not None:  # as row_weights in memory
                out["weight"] = np.divide(b["rating"], scale, dtype=np.float32)
            return out
        return inputs

    def _negative_weight(self, kind: str) -> None:
        """The DataError of ``check_weights`` for the file's first negative rating used as
        a weight, naming its line (CSV) or row (Parquet): one more pass (errors only)."""
        offset = 0
        for b in self.record_batches():
            offset = _file_row(b, offset)
            r = np.asarray(b.column("rating").to_numpy(zero_copy_only=False), dtype=np.float64)
            bad = np.flatnonzero(~(r >= 0))
            if len(bad):
                at = where_in_file(self.path, offset + int(bad[0]), self.config.sep)
                raise DataError(f"model.interaction_weights {kind!r}: weights must be numbers "
                                f">= 0 (0: the pair teaches nothing), got {r[bad[0]]:g} at "
                                f"{self.path} {at} (column {self.config.rating_col!r})")
            offset += b.num_rows
        raise self._changed("a negative rating the scan saw is gone")


# ---------------------------------------------------------------------- id handling
@dataclass(frozen=True)
class _FileState:
    """What tells a file changed, cheaply: its size, modification time and inode (a file
    replaced under the name), and a digest of its last 64 KiB (a Parquet file's footer:
    its row groups, statistics and offsets; a rewrite in the same clock tick, or one that
    set the time back). A pass that reads a file rewritten in place with the same rows
    and ids got no error (nor did a rewrite of the same size in between)."""

    size: int
    mtime_ns: int
    inode: int
    tail: bytes

    @classmethod
    def of(cls, path: Path) -> _FileState | None:
        """None where ``path`` is no file it can read (the passes' readers say so)."""
        import hashlib
        try:
            st = path.stat()
            with path.open("rb") as fh:
                fh.seek(max(0, st.st_size - _TAIL_BYTES))
                tail = hashlib.blake2b(fh.read(_TAIL_BYTES), digest_size=16).digest()
        except OSError:
            return None
        return cls(st.st_size, st.st_mtime_ns, st.st_ino, tail)

    def changed(self, now: _FileState) -> str | None:
        """What differs in ``now`` (None: nothing)."""
        if now.inode != self.inode:
            return "another file has its name now"
        if now.size != self.size:
            return f"{self.size:,} bytes then, {now.size:,} now"
        if now.mtime_ns != self.mtime_ns:
            return f"modified at {_when(now.mtime_ns)}, after the scan read it as of " \
                   f"{_when(self.mtime_ns)}"
        if now.tail != self.tail:
            return "its last bytes differ, at the same size and modification time"
        return None


_TAIL_BYTES = 1 << 16


def _when(ns: int) -> str:
    import datetime as dt
    t = dt.datetime.fromtimestamp(ns // 10**9, dt.timezone.utc)
    return f"{t:%Y-%m-%d %H:%M:%S}.{ns % 10**9:09d} UTC"


#: A sharded stream's record batch's schema metadata: the file row it starts at (the
#: passes see only this shard's batches; their errors name the file's row, or line)
_ROW = "twotower.row"


def _file_row(batch: Any, offset: int) -> int:
    """The file row ``batch`` starts at: ``offset`` (the rows of the batches before it)
    unless the batch is a shard's, which says where it starts."""
    meta = batch.schema.metadata
    return int(meta[_ROW.encode()]) if meta and _ROW.encode() in meta else offset


def _plain(col: Any) -> Any:
    """A Parquet column as the readers take it: a dictionary-encoded one as its values
    (batches may carry different dictionaries), a decimal one as its text (``7``: the int
    id 7; ``7.50``: a text id; a rating: parsed), as ``read_interactions`` reads them; a
    ``string_view`` one as ``string`` and a float16 one as float32 (Arrow's compute
    functions lack kernels for them: the ids were refused as not text, a float16 rating
    raised ArrowNotImplementedError)."""
    import pyarrow as pa
    if pa.types.is_dictionary(col.type):
        col = col.dictionary_decode()
    if str(col.type) == "string_view":  # (pa.types.is_string_view: pyarrow >= 16)
        col = col.cast(pa.string())
    elif pa.types.is_float16(col.type):
        col = col.cast(pa.float32())
    if pa.types.is_decimal(col.type):
        col = col.cast(pa.string())
    return col


class _DistinctCounter:
    """Distinct values of a column seen batch by batch, with counts; memory O(distinct).

    Columns are counted (``value_counts``) once ``_STAGE_ROWS`` values or ``_STAGE_PARTS``
    columns are staged, and the counted parts merge into one when their values pass twice
    the merged part's size plus 65,536 (amortised), or when ``_MAX_PARTS`` are held. Each
    batch counted on its own, tiny record batches (``read_rows=1``: one value a column)
    piled up as tens of thousands of tiny Arrow arrays, a few KB each, before the first
    merge (over 500 MB peak RSS on a 200k-row Parquet file).
    """

    def __init__(self) -> None:
        self._staged: list[Any] = []  # columns not yet counted
        self._staged_rows = 0
        self._parts: list[Any] = []  # value_counts structs
        self._pending = 0
        self._size = 0

    def add(self, col: Any) -> None:
        self._staged.append(col)
        self._staged_rows += len(col)
        if self._staged_rows >= _STAGE_ROWS or len(self._staged) >= _STAGE_PARTS:
            self._count_staged()

    def _count_staged(self) -> None:
        import pyarrow as pa
        import pyarrow.compute as pc
        if not self._staged:
            return
        cols = self._staged
        if len({c.type for c in cols}) > 1:
            cols = [c.cast(pa.string()) for c in cols]
        vc = pc.value_counts(cols[0] if len(cols) == 1 else pa.chunked_array(cols))
        self._staged, self._staged_rows = [], 0
        self._parts.append(vc)
        self._pending += len(vc)
        if self._pending > 2 * self._size + 65_536 or len(self._parts) > _MAX_PARTS:
            self._merge()  # amortised; or bounded in count

    def _merge(self) -> None:
        import pyarrow as pa
        if not self._parts:
            return
        arrays = [p.field("values") for p in self._parts]
        counts = [p.field("counts") for p in self._parts]
        if len({a.type for a in arrays}) > 1:
            arrays = [a.cast(pa.string()) for a in arrays]
        t = pa.table({"v": pa.chunked_array(arrays), "c": pa.chunked_array(counts)})
        g = t.group_by("v").aggregate([("c", "sum")])
        self._parts = [pa.StructArray.from_arrays([g["v"].combine_chunks(),
                                                   g["c_sum"].combine_chunks()],
                                                  names=["values", "counts"])]
        self._size = self._pending = len(g)

    def values_counts(self) -> tuple[np.ndarray, np.ndarray]:
        self._count_staged()
        self._merge()
        if not self._parts:
            return np.array([], dtype=np.int64), np.array([], dtype=np.int64)
        p = self._parts[0]
        return (p.field("values").to_numpy(zero_copy_only=False),
                p.field("counts").to_numpy(zero_copy_only=False))

    def vocabulary(self, name: str, where: tuple[Path, str, str] | None = None
                   ) -> Vocabulary:
        values, counts = self.values_counts()
        return _vocab_of(values, name, counts, where)


def _vocab_of(values: np.ndarray, name: str, counts: np.ndarray | None = None,
              where: tuple[Path, str, str] | None = None) -> Vocabulary:
    """Same rule as ``read_interactions``: ints when every id is an integer literal
    (written without leading zeros) or an integral float. ``where`` (file, what, column):
    warn, as ``read_interactions`` does, when the ids are text because some are integers
    beyond int64, or because most are plain integers but a few are not (``abc``, ``007``)
    (``counts``: each value's rows, for the message's count; they became text without a
    word before 2026-12-07), or because floats have a fraction or are 2**53 or more, or
    inf (``float_ids_as_text``; said only in memory before 2026-12-07); each once per
    file (``warn_once``: a second scan repeats none)."""
    if values.dtype.kind == "i" or (values.dtype.kind == "u" and
                                    (not len(values) or values.max() < 2**63)):
        return Vocabulary.from_values(values.astype(np.int64), name=name)
    if values.dtype.kind == "f" and (ints := integral_as_int(values)) is not None:
        return Vocabulary.from_values(ints, name=name)
    if values.dtype.kind == "f" and where is not None and (
            odd := float_ids_as_text(values)) is not None:
        # text ids, said as read_interactions says them (the example: the least such
        # value, as the scan keeps no file order)
        fraction, mask = odd
        warn_once(where[0], float_ids_message(where[0], where[1], where[2], name,
                                              str(values[mask].min()), fraction), stacklevel=2)
    s = np.array([str(v).strip() for v in values], dtype=object)
    plain = np.array([INT_ID.fullmatch(v) is not None for v in s], dtype=bool)
    if len(s) and plain.all():
        try:
            return Vocabulary.from_values(np.array([int(v) for v in s], dtype=np.int64),
                                          name=name)
        except OverflowError:  # 19 digits beyond int64: text ids
            pass
    rows = np.ones(len(s), np.int64) if counts is None else np.asarray(counts, np.int64)
    if where is not None and len(s) and (plain.all() or (
            rows[plain].sum() > rows.sum() / 2
            and all(_LONG_INT.fullmatch(v) for v in s[~plain]))):
        # the rule of read_interactions (by rows): integers beyond int64, said as such
        big = np.array([len(v) >= 19 and not -2**63 <= int(v) < 2**63 for v in s], bool)
        warn_once(where[0], beyond_int64_message(where[0], where[1], where[2],
                                                 int(rows[big].sum()), int(rows.sum()),
                                                 min(s[big], key=int)), stacklevel=2)
    elif where is not None and len(s) and rows[plain].sum() > rows.sum() / 2:
        # as read_interactions (by rows): a typo turns the whole column into text ids
        # (the example: the least such id, as the scan keeps no file order)
        warn_once(where[0], not_plain_message(where[0], where[1], where[2],
                                              int(rows[~plain].sum()), int(rows.sum()),
                                              min(s[~plain])), stacklevel=2)
    return Vocabulary.from_values(s, name=name)


#: 20 digits or more: an integer beyond int64, not one INT_ID takes
_LONG_INT = re.compile(r"-?[1-9][0-9]{19,}")


class _Mapper:
    """External ids (an Arrow column) -> vocabulary indices; -1 where an id is not in the
    vocabulary.

    Integer vocabularies are mapped in numpy: by a subtraction when the vocabulary is every
    integer of its span in order (index = id - lowest id: no table to read, as for
    MovieLens' ids), through a dense lookup table when the ids span at most ``_LUT_SPAN`` x
    as many values as there are ids (4 bytes per value in the span), else by binary search
    in the sorted ids. ``pyarrow.compute.index_in`` rebuilds its hash table of the whole
    vocabulary on every call: with a 1M-id vocabulary that made the per-batch mapping the
    bottleneck of a streamed pass. String vocabularies use it still.
    """

    def __init__(self, vocab: Vocabulary) -> None:
        import pyarrow as pa
        self.is_int = vocab.is_int
        self.lut = self.sorted = None
        self.dense = False  # index = id - lo
        if self.is_int:
            ids = vocab.ids
            self.lo = int(ids.min()) if len(ids) else 0
            self.span = span = int(ids.max()) - self.lo + 1 if len(ids) else 0
            # (ids - lo: np.arange(lo, lo + span) is float64 when it ends past int64, where
            # a span's ids out of order compare equal)
            if len(ids) and span == len(ids) and np.array_equal(ids - self.lo,
                                                                np.arange(span)):
                self.dense = True
            elif len(ids) and span <= _LUT_SPAN * len(ids) + 1024:
                self.lut = np.full(span, -1, dtype=np.int32)
                self.lut[ids - self.lo] = np.arange(len(ids), dtype=np.int32)
            else:
                self.order = np.argsort(ids, kind="stable")
                self.sorted = ids[self.order]
        else:
            self.value_set = pa.array(vocab.ids.tolist(), type=pa.string())

    def indices(self, col: Any) -> np.ndarray:
        import pyarrow as pa
        import pyarrow.compute as pc
        if self.is_int:
            if pa.types.is_floating(col.type):  # integral floats are those ints
                v = np.asarray(col.to_numpy(zero_copy_only=False), dtype=np.float64)
                with np.errstate(invalid="ignore"):
                    ok = (v == np.round(v)) & (np.abs(v) < 2**53)  # NaN (null): False
                return self._int_indices(np.where(ok, v, 0).astype(np.int64), ok)
            if not pa.types.is_integer(col.type):
                col = pc.utf8_trim_whitespace(col.cast(pa.string()))
                ok = pc.match_substring_regex(col, "^(" + INT_ID.pattern + ")$")
                col = pc.if_else(ok, col, pa.scalar(None, pa.string()))
                try:
                    col = col.cast(pa.int64())
                except pa.ArrowInvalid:  # 19 digits beyond int64: no id here (rare)
                    col = pa.array([v if v is None or -2**63 <= int(v) < 2**63 else None
                                    for v in col.to_pylist()], pa.string()).cast(pa.int64())
            else:
                col = col.cast(pa.int64())
            valid = None
            if col.null_count:
                valid = np.asarray(pc.is_valid(col).to_numpy(zero_copy_only=False))
                col = col.fill_null(0)
            return self._int_indices(np.asarray(col.to_numpy(zero_copy_only=False),
                                                dtype=np.int64), valid)
        if pa.types.is_floating(col.type):
            # text as the scan and read_interactions write a float id (str: "2.0", "1.5",
            # "1e+16"), where Arrow's cast writes "2" (a file of float ids with one
            # fraction: rare, so Python's pace is fine)
            # (in the column's own precision: a float32 0.1 is "0.1", as the scan wrote it)
            v = col.to_numpy(zero_copy_only=False)
            col = pa.array([None if n else str(x) for x, n in
                            zip(v, np.asarray(pc.is_null(col).to_numpy(zero_copy_only=False)))],
                           pa.string())
        col = pc.utf8_trim_whitespace(col.cast(pa.string()))
        idx = pc.index_in(col, value_set=self.value_set)
        return np.asarray(idx.fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int64)

    def _int_indices(self, vals: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
        """``[n]`` int32 indices of the int64 ids ``vals``; -1: unknown, or not ``valid``."""
        spanned = self.dense or self.lut is not None
        if spanned and len(vals) and valid is None and \
                vals.min() >= self.lo and vals.max() < self.lo + self.span:
            # every id inside the span (the usual case): no masks
            return self._in_span(vals)
        out = np.full(len(vals), -1, dtype=np.int32)
        if spanned:
            inside = (vals >= self.lo) & (vals < self.lo + self.span)  # no overflow
            out[inside] = self._in_span(vals[inside])
        elif len(self.sorted):
            pos = np.minimum(np.searchsorted(self.sorted, vals), len(self.sorted) - 1)
            hit = self.sorted[pos] == vals
            out[hit] = self.order[pos[hit]]
        if valid is not None:
            out[~valid] = -1
        return out

    def _in_span(self, vals: np.ndarray) -> np.ndarray:
        """int32 indices of ids all in ``[lo, lo + span)``: ``id - lo`` written as int32
        in one pass (``dense``), or the table's entries."""
        if self.dense:
            return np.subtract(vals, self.lo, out=np.empty(len(vals), np.int32),
                               casting="unsafe")
        return np.take(self.lut, vals - self.lo if self.lo else vals)


# ---------------------------------------------------------------------- shuffling, batching
def shuffle_chunks(chunks: Iterable[Batch], buffer_size: int, seed: int) -> Iterator[Batch]:
    """Shuffle rows through a buffer of at most ``buffer_size`` rows (seeded).

    Each incoming row takes the place of a uniformly chosen buffered row, which is emitted
    (as ``tf.data``'s shuffle, vectorised per chunk); the rest is emitted in random order at
    the end. Every row comes out exactly once; the same input and seed give the same order.
    A buffer of 1,024 rows or more exchanges a quarter of itself at a time (distinct
    slots, from ``_SlotPicker``); a smaller one takes each chunk's rows one by one
    (``_exchange_rows``), whose quarter would be a chunk of a few rows (1 row below 8: 14
    µs per row, against 30-90 ns now, in scratch).
    """
    if buffer_size < 1:
        raise ConfigError(f"shuffle buffer_size must be >= 1, got {buffer_size}")
    rng = np.random.default_rng(seed)
    buf: np.ndarray | None = None  # one record of every column per row (``_row_dtype``)
    n = 0
    slots = _SlotPicker(rng, buffer_size)
    for chunk in chunks:
        m = len(next(iter(chunk.values())))
        if buf is None:
            buf = np.empty(buffer_size, dtype=_row_dtype(chunk))
        else:
            buf = _fit_buffer(buf, n, chunk)
        start = 0
        take = min(buffer_size - n, m)
        if take:
            for k, v in chunk.items():
                buf[k][n:n + take] = v[:take]
            n += take
            start = take
        if buffer_size < _PER_ROW_BELOW and start < m:
            # a small buffer's quarter would be a tiny chunk (1 row for a buffer of 1-7):
            # the chunk's rows go through the buffer one by one instead, all at once
            part = {k: v[start:] for k, v in chunk.items()}
            yield _exchange_rows({k: buf[k] for k in chunk}, part,
                                 rng.integers(0, buffer_size, m - start))
            continue
        # exchange at most a quarter of the buffer at a time: a row then stays for several
        # rounds, and rows of different record batches mix whatever the batch size
        piece = max(1, buffer_size // 4)
        rows = np.empty(min(piece, m - start), dtype=buf.dtype)
        while start < m:
            r = min(m - start, piece)
            pos = slots(r)
            out = np.take(buf, pos)  # one read and one write of a whole row per slot
            for k, v in chunk.items():
                rows[k][:r] = v[start:start + r]
            buf[pos] = rows[:r]
            start += r
            yield _columns(out)
    if buf is not None and n:
        yield _columns(np.take(buf[:n], rng.permutation(n)))


def _row_dtype(chunk: Batch) -> np.dtype:
    """One structured record of ``chunk``'s columns (each row's values side by side), its
    size rounded up to 16, 32 or 64 bytes: numpy copies such records whole when it takes
    or puts them by index, so the shuffle reads and writes each buffered row once (12-byte
    records: 3 ms for 65,536 random rows, 16-byte ones 0.33 ms, three separate 4-byte
    columns 0.5-0.8 ms, ad hoc)."""
    names = list(chunk)
    dt = np.dtype([(k, chunk[k].dtype, chunk[k].shape[1:]) for k in names], align=True)
    size = next((s for s in (16, 32, 64) if dt.itemsize <= s), dt.itemsize)
    return np.dtype({"names": names, "formats": [dt.fields[k][0] for k in names],
                     "offsets": [dt.fields[k][1] for k in names], "itemsize": size})


def _fit_buffer(buf: np.ndarray, n: int, chunk: Batch) -> np.ndarray:
    """``buf`` (its first ``n`` rows filled) able to hold ``chunk``'s values: the same
    buffer where each column's dtype holds them, else a copy with the columns widened
    (``np.result_type``: longer fixed-width strings, int64 after int32), so that no value
    is cut to the first chunk's width or wrapped.

    Raises:
        DataError: ``chunk`` has other columns, or another shape per row, than the first,
            or int64 and uint64 values no one integer type holds (a float would round
            them; values that fit the first chunk's type keep it).
    """
    names = list(buf.dtype.names)
    if sorted(chunk) != sorted(names):
        raise DataError(f"shuffle: a chunk has columns {sorted(chunk)}, the first had "
                        f"{sorted(names)}; every chunk must have the same columns")
    wider = {}
    for k in names:
        have, shape = buf.dtype.fields[k][0].base, buf.dtype.fields[k][0].shape
        v = chunk[k]
        if v.shape[1:] != shape:
            raise DataError(f"shuffle: column {k!r} has rows of shape {v.shape[1:]} in a "
                            f"later chunk, {shape} in the first")
        if v.dtype != have and not np.can_cast(v.dtype, have, casting="safe"):
            wide = np.result_type(have, v.dtype)
            if wide.kind == "f" and have.kind in "iu" and v.dtype.kind in "iu":
                # int64 with uint64: the common type, float64, rounds past 2**53
                info = np.iinfo(have)
                if v.size and not info.min <= int(v.min()) <= int(v.max()) <= info.max:
                    raise DataError(
                        f"shuffle: column {k!r} holds {have} values in the first chunk and "
                        f"{v.dtype} values beyond {have} in a later one (e.g. "
                        f"{int(v.max()) if int(v.max()) > info.max else int(v.min())}): no "
                        "integer type holds both, and a float would round them; give every "
                        "chunk one integer dtype")
                continue  # the values fit the first chunk's type
            wider[k] = wide
    if not wider:
        return buf
    fields = {k: buf.dtype.fields[k][0] for k in names}
    grown = np.empty(len(buf), dtype=_row_dtype(
        {k: np.empty((0,) + f.shape, wider.get(k, f.base)) for k, f in fields.items()}))
    for k in names:
        grown[k][:n] = buf[k][:n]
    return grown


def _columns(records: np.ndarray) -> Batch:
    """Records of ``_row_dtype`` -> a batch of contiguous columns."""
    return {k: np.ascontiguousarray(records[k]) for k in records.dtype.names}


#: Buffers smaller than this exchange rows one by one (``_exchange_rows``); larger ones a
#: quarter of the buffer at a time
_PER_ROW_BELOW = 1024
#: The order ``shuffle_chunks`` gives a buffer of ``_PER_ROW_BELOW`` rows or more, for a
#: streamed checkpoint's fingerprint: a checkpoint written by code that shuffled otherwise
#: (``rng.choice`` slots, before 2026-12-07) would resume mid-epoch skipping the batches it
#: trained in its order, in another (rows trained twice, others never), so it is refused
SHUFFLE_ORDER = "slot-windows"


def shuffle_order(buffer_size: int) -> str | None:
    """``SHUFFLE_ORDER`` where a buffer of ``buffer_size`` rows uses it; None for file
    order (0) and for small buffers, which exchange rows one by one as before."""
    return SHUFFLE_ORDER if buffer_size >= _PER_ROW_BELOW else None
#: ``_SlotPicker`` draws a fresh permutation of the buffer's slots every this many pieces
_PERM_PIECES = 64


class _SlotPicker:
    """Distinct buffer slots for ``shuffle_chunks``' pieces, in a random order, cheaply.

    A piece's slots are a window of ``r`` consecutive entries (cyclic, at a random start)
    of a random permutation of the ``n`` slots, each shifted by one random offset (mod
    ``n``): distinct, in the permutation's random order, every slot equally likely; the
    permutation is drawn afresh every ``_PERM_PIECES`` pieces. Each piece of
    ``rng.choice(n, r, replace=False)`` drew its own (a partial Fisher-Yates shuffle of
    ``arange(n)``): 0.92 ms for 65,536 of 262,144 slots, 14 of the shuffle's 18 ns per row;
    this costs two random numbers, a slice and an add per piece, and one permutation (3.5
    ms) per 64 pieces. The window and offset keep the pieces' slot sets apart (a quarter
    of one fixed permutation per piece, in turn, would return each row 4 pieces later in
    the order it came in); tests/training/test_stream.py checks the mixing against
    ``rng.choice``'s.
    """

    def __init__(self, rng: np.random.Generator, n: int) -> None:
        self.rng, self.n = rng, n
        self.perm: np.ndarray | None = None
        self.used = 0

    def __call__(self, r: int) -> np.ndarray:
        """``[r]`` int64 distinct slots in ``[0, n)``, ``r <= n``."""
        n = self.n
        if self.used % _PERM_PIECES == 0:  # int32 halves its memory where n < 2**31
            self.perm = self.rng.permutation(n).astype(np.int32 if n < 1 << 31 else np.int64)
        self.used += 1
        start, shift = (int(v) for v in self.rng.integers(0, n, 2))
        assert self.perm is not None
        if start + r <= n:
            pos = self.perm[start:start + r].astype(np.int64)
        else:
            pos = np.concatenate([self.perm[start:], self.perm[:start + r - n]]
                                 ).astype(np.int64)
        pos += shift - n  # in [-n, n): n added back where negative (the sign bit's mask;
        pos += (pos >> 63) & n  # np.subtract(..., where=) took 0.34 ms, this 0.05)
        return pos


def _exchange_rows(buf: Batch, part: Batch, slots: np.ndarray) -> Batch:
    """Rows of ``part`` into the full buffer one at a time: row ``t`` takes the place of the
    row in slot ``slots[t]``, which is emitted (``tf.data``'s shuffle, row by row). Computed
    at once: sorted by slot (stably, so in time order within a slot), the row emitted at a
    step is the one an earlier step put in its slot, else the slot's first occupant.
    Returns the emitted rows in step order; ``buf`` ends as the last writes left it."""
    order = np.argsort(slots, kind="stable")
    sj = slots[order]
    first = np.ones(len(sj), dtype=bool)  # the first visit of its slot
    first[1:] = sj[1:] != sj[:-1]
    last = np.ones(len(sj), dtype=bool)  # the last visit of its slot
    last[:-1] = first[1:]
    earlier = np.roll(order, 1)  # the step before, in the same slot unless `first`
    out = {}
    for k, b in buf.items():
        emitted = np.empty((len(sj),) + b.shape[1:], dtype=b.dtype)
        emitted[order[first]] = b[sj[first]]
        emitted[order[~first]] = part[k][earlier[~first]]
        b[sj[last]] = part[k][order[last]]
        out[k] = emitted
    return out


def rebatch(chunks: Iterable[Batch], batch_size: int, *, drop_remainder: bool = False
            ) -> Iterator[Batch]:
    """Chunks of any sizes -> batches of exactly ``batch_size`` rows (last one smaller
    unless ``drop_remainder``).

    Batches inside a chunk are views of it (no copy); only a batch that spans chunks is
    joined.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    pending: list[Batch] = []  # fewer than batch_size rows, carried into the next chunk
    have = 0
    for chunk in chunks:
        m = len(next(iter(chunk.values())))
        s = 0
        if pending:
            s = min(batch_size - have, m)
            pending.append({k: v[:s] for k, v in chunk.items()})
            have += s
            if have < batch_size:
                continue
            yield {k: np.concatenate([c[k] for c in pending]) for k in pending[0]}
            pending, have = [], 0
        while m - s >= batch_size:
            yield {k: v[s:s + batch_size] for k, v in chunk.items()}
            s += batch_size
        if s < m:
            pending, have = [{k: v[s:] for k, v in chunk.items()}], m - s
    if have and not drop_remainder:
        yield {k: np.concatenate([c[k] for c in pending]) for k in pending[0]}


class Progress:
    """A progress line on stderr every ``every_s`` seconds: examples, examples/s, loss."""

    def __init__(self, total: int | None = None, every_s: float = 10.0, prefix: str = "",
                 out: TextIO | None = None) -> None:
        self.total, self.every_s, self.prefix = total, every_s, prefix
        self.out = out or sys.stderr
        self.count = 0
        self.t0 = self.last = time.perf_counter()

    def update(self, n: int, loss: Any = None) -> None:
        """``n`` more examples; ``loss``: a value or a callable that waits for the work
        counted so far (a device still running it), called before the clock is read, so
        the line's examples/s counts work done, not work dispatched."""
        self.count += n
        if self.every_s and time.perf_counter() - self.last >= self.every_s:
            value = loss() if callable(loss) else loss
            now = time.perf_counter()
            self.last = now
            self._line(now, value)

    def rate(self) -> float:
        return self.count / max(time.perf_counter() - self.t0, 1e-9)

    def close(self, loss: Any = None) -> None:
        if self.every_s:
            self._line(time.perf_counter(), loss)

    def _line(self, now: float, loss: Any) -> None:
        total = f"/{self.total:,}" if self.total else ""
        tail = f"  loss {float(loss):.4f}" if loss is not None else ""
        print(f"{self.prefix}{self.count:,}{total} examples  "
              f"{self.count / max(now - self.t0, 1e-9):,.0f} examples/s{tail}",
              file=self.out, flush=True)
