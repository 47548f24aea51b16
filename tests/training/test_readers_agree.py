"""The in-memory reader (``read_interactions``) and the streamed one (``InteractionStream``)
read the same files the same way: the same rows and ids, or the same refusal naming the
same line. Each case is a file a differential fuzzer found them to disagree on."""

from __future__ import annotations

import decimal
import re
import warnings

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from twotower.data import read_interactions
from twotower.data.readers import RATING_HINT
from twotower.errors import DataError
from twotower.training import InteractionStream, StreamConfig


def _in_memory(path, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x = read_interactions(path, **kw)
    rows = list(zip(x.user_vocab.ids_of(x.users).tolist(), x.item_vocab.ids_of(x.items).tolist()))
    return rows, (None if x.ratings is None else x.ratings.astype(np.float32).tolist())


def _streamed(path, read_rows=65_536, **kw):
    s = InteractionStream(path, StreamConfig(shuffle_buffer=0, read_rows=read_rows, **kw))
    st = s.scan()
    rows, ratings = [], []
    for c in s.chunks():
        rows += zip(st.user_vocab.ids_of(c["user"]).tolist(),
                    st.item_vocab.ids_of(c["item"]).tolist())
        ratings += c["rating"].tolist() if "rating" in c else []
    return rows, (ratings or None)


def _both(path, read_rows=65_536, **kw):
    """Both readings, each its rows or its error message (the path's own name cut)."""
    out = []
    for read in (lambda: _in_memory(path, **kw), lambda: _streamed(path, read_rows, **kw)):
        try:
            out.append(read())
        except DataError as exc:
            out.append(str(exc).replace(str(path), "FILE"))
    return out


def _parquet(path, **cols):
    pq.write_table(pa.table(cols), path)
    return path


def test_a_parquet_column_named_twice_is_refused_by_both(tmp_path):
    p = tmp_path / "dup.parquet"
    pq.write_table(pa.Table.from_arrays([pa.array([1, 2]), pa.array([3, 4]), pa.array([5, 6])],
                                        names=["user_id", "item_id", "user_id"]), p)
    mem, stream = _both(p)
    assert mem == stream and "2 columns named 'user_id'" in mem


def test_a_csv_header_naming_a_column_twice_is_refused_by_both(tmp_path):
    # pandas renamed the repeat to item_id.1: both readers read the first item_id silently,
    # and the in-memory one accepted the made-up name
    p = tmp_path / "dup.csv"
    p.write_text("user_id,item_id,item_id\n1,2,3\n4,5,6\n")
    mem, stream = _both(p)
    assert mem == stream and "2 columns named 'item_id'" in mem
    mem, stream = _both(p, item_col="item_id.1")
    assert mem == stream and "has no column 'item_id.1'" in mem
    p.write_text("\ufeffuser_id,item_id,rating\n1,2,3\n")  # a byte-order mark: no repeat
    mem, stream = _both(p)
    assert isinstance(mem, tuple) and mem == stream


def test_dictionary_columns_whose_batches_differ(tmp_path):
    # each record batch of a categorical column carries its own dictionary
    p = tmp_path / "cat.parquet"
    pd.DataFrame({"user_id": pd.Categorical([f"u{k // 100}" for k in range(300)]),
                  "item_id": range(300)}).to_parquet(p, use_dictionary=False)
    mem, stream = _both(p, read_rows=100)
    assert isinstance(mem, tuple) and mem == stream and len(mem[0]) == 300


def test_empty_and_nan_ids_are_refused_in_every_column_type(tmp_path):
    p = _parquet(tmp_path / "d.parquet", user_id=pa.array(["a", "", " "]).dictionary_encode(),
                 item_id=[1, 2, 3])
    mem, stream = _both(p)
    assert mem == stream == "--data: FILE, row 2 (1-based), column 'user_id': empty user id"
    p = _parquet(tmp_path / "n.parquet", user_id=[1, 2, 3], item_id=[7.0, float("nan"), 8.0])
    mem, stream = _both(p)
    assert mem == stream == "--data: FILE, row 2 (1-based), column 'item_id': empty item id"


@pytest.mark.parametrize("values, want", [
    (pa.array([123456789012.0, -0.0]), [123456789012, 0]),  # integral floats: int ids
    (pa.array([0.1, 5.0], pa.float32()), ["0.1", "5.0"]),  # a float32's own digits
    (pa.array([decimal.Decimal("7"), decimal.Decimal("8")], pa.decimal128(5, 0)), [7, 8]),
])
def test_float_and_decimal_ids(tmp_path, values, want):
    p = _parquet(tmp_path / "f.parquet", user_id=[1, 2], item_id=values)
    mem, stream = _both(p)
    assert isinstance(mem, tuple) and mem == stream
    assert [i for _, i in mem[0]] == want


def test_text_and_decimal_ratings_in_parquet(tmp_path):
    p = _parquet(tmp_path / "r.parquet", user_id=[1, 2], item_id=[1, 2],
                 rating=pa.array(["4.5", " 3"]))
    mem, stream = _both(p, rating_col="rating")
    assert isinstance(mem, tuple) and mem == stream and mem[1] == [4.5, 3.0]
    p = _parquet(tmp_path / "bad.parquet", user_id=[1, 2], item_id=[1, 2],
                 rating=pa.array(["4.5", "x"]))
    mem, stream = _both(p, rating_col="rating")
    assert mem == stream == ("--data: FILE, row 2 (1-based), column 'rating': expected a "
                             "finite number, got 'x'" + RATING_HINT)


def test_bare_carriage_returns_keep_every_field_in_place(tmp_path):
    # pandas' C parser, left to guess the line end, shifted this last row's fields left
    p = tmp_path / "cr.csv"
    p.write_bytes(b"note,user_id,item_id,extra\rok,u1,i1,x\r\r,u2,i2,x\r")
    mem, stream = _both(p)
    assert mem == stream and mem[0] == [("u1", "i1"), ("u2", "i2")]


def test_quoted_line_breaks_in_a_file_of_several_blocks(tmp_path):
    p = tmp_path / "nl.csv"  # 1.2 MB: more than one of the stream reader's blocks
    p.write_text("user_id,item_id\n" + "".join(
        f'"u{k}:{"a" * 500}\n{"b" * 500}",{k % 9}\n' for k in range(1200)))
    with pytest.warns(UserWarning, match="a user id holds a line break"):
        mem, stream = _both(p, read_rows=1000)
    assert isinstance(mem, tuple) and mem == stream and len(mem[0]) == 1200


@pytest.mark.parametrize("cell, error", [
    ("\u00a05", None),  # any Unicode space around a number, as read_interactions strips it
    ("1_000", "line 3"), ("\uff11", "line 3"), ("abc", "line 3"),
    ("1e500", "line 3"), ("nan", "line 3"),  # numbers, but not finite: the cell quoted
])
def test_ratings_are_read_by_one_rule(tmp_path, cell, error):
    p = tmp_path / "r.csv"
    p.write_text(f"user_id,item_id,rating\n1,2,4\n3,4,{cell}\n")
    mem, stream = _both(p, rating_col="rating")
    assert mem == stream
    if error is None:
        assert mem[1] == [4.0, 5.0]
    else:
        assert mem == f"--data: FILE, {error}, column 'rating': expected a finite number, " \
                      f"got {cell!r}" + RATING_HINT


def test_a_bad_rating_in_a_quoted_multiline_record_names_its_first_line(tmp_path):
    p = tmp_path / "m.csv"
    p.write_text('user_id,item_id,rating\n1,2,4\n"a\nb",4,abc\n')
    mem, stream = _both(p, rating_col="rating")
    assert mem == stream == ("--data: FILE, line 3, column 'rating': expected a finite "
                             "number, got 'abc'" + RATING_HINT)


def test_a_bool_id_column_is_refused_in_the_same_words_by_both(tmp_path):
    # the stream said "text or numbers, got type bool", the in-memory reader "text or
    # integers, got boolean values (e.g. np.True_)": two forms, one of them numpy's repr
    p = _parquet(tmp_path / "b.parquet", user_id=[True, False, True], item_id=[1, 2, 3])
    mem, stream = _both(p)
    assert mem == stream == ("--data: FILE, column 'user_id': user ids must be text or "
                             "integers, got boolean values (e.g. True)"), (mem, stream)


def test_an_id_swallowing_lines_through_an_unclosed_quote_is_warned_of_by_both(tmp_path):
    # an e-commerce SKU written `"SKU,9` (its closing quote lost) ran on to the next quote,
    # two lines below: one row with the item id 'SKU,9,17...\nu2,...\nu3,SKU' and two rows
    # fewer, read without a word by both readers
    p = tmp_path / "q.csv"
    p.write_text('user_id,item_id,ts\nu1,a,1\nu9,"SKU,9,2\nu2,b,3\nu3,"SKU ""x""",4\n'
                 'u4,c,5\n')
    said = []
    for read in (lambda: read_interactions(p), lambda: InteractionStream(
            p, StreamConfig(shuffle_buffer=0)).scan()):
        with pytest.warns(UserWarning) as got:
            read()
        said.append([str(w.message).replace(str(p), "FILE") for w in got
                     if "line break" in str(w.message)])
    assert said[0] == said[1] and len(said[0]) == 1, said
    assert said[0][0].startswith(
        "--data: FILE, line 3, column 'item_id': an item id holds a line break "
        "('SKU,9,2\\nu2,b,3\\nu3,SKU \"\"x\"\"\"'): a quote opened in this field is "
        "closed only on a later line"), said


def test_ids_with_a_line_break_in_parquet_are_not_warned_of(tmp_path):
    p = _parquet(tmp_path / "nl.parquet", user_id=["a\nb", "c"], item_id=[1, 2])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_interactions(p)
        InteractionStream(p, StreamConfig(shuffle_buffer=0)).scan()


_EVENTS = {"view": 1.0, "buy": 10.0}


@pytest.mark.parametrize("events, weights", [
    (pa.array([" view", "buy ", "view", "buy"]), _EVENTS),  # stripped, as names compare
    (pa.array(["view", "buy", "view", "buy"]).dictionary_encode(), _EVENTS),
    (pa.array(["view", "cart", "view", "zap"]), {**_EVENTS, "*": 0.5}),
    (pa.array(["view", "buy", "view", "cart"]), _EVENTS),  # unknown, in the 2nd batch
    (pa.array(["view", "", "view", "buy"]), _EVENTS),  # empty
    (pa.array(["view", "buy", None, "buy"]), _EVENTS),  # null
    (pa.array([1, 2, 1, 2]), {"1": 1.0, "2": 10.0}),  # codes: names as their text
    (pa.array(["View", "buy", "view", "buy"]), _EVENTS),  # case kept
])
@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_event_names_are_read_as_the_same_weights_or_refused_in_the_same_words(
        tmp_path, events, weights, fmt):
    p = _parquet(tmp_path / "ev.parquet", user_id=pa.array([1, 2, 3, 4]),
                 item_id=pa.array([5, 6, 7, 8]), event=events)
    if fmt == "csv":  # the same cells as text (a null: an empty field)
        p2 = tmp_path / "ev.csv"
        pq.read_table(p).to_pandas().to_csv(p2, index=False)
        p = p2
    memory, streamed = _both(p, read_rows=2, event_col="event", event_weights=weights)
    assert memory == streamed


def test_a_repeated_header_line_is_refused_by_both(tmp_path):
    # two logs joined with their headers: both read the second header as an interaction
    p = tmp_path / "joined.csv"
    p.write_text("user_id,item_id\n1,10\n2,11\nuser_id,item_id\n3,10\n")
    mem, stream = _both(p)
    assert mem == stream == ("--data: FILE, line 4: the header line again ('user_id', "
                             "'item_id'): files joined with their header lines? delete it")
    p.write_bytes("\ufeffuser_id,item_id\n1,10\n\ufeffuser_id,item_id\n3,10\n".encode())
    mem, stream = _both(p)  # (a byte-order mark opening each joined file)
    assert mem == stream and mem.startswith("--data: FILE, line 3: the header line again")


@pytest.mark.parametrize("kw", [{"rating_col": "rating"},
                                {"event_col": "rating", "event_weights": {"5": 1.0}}])
def test_a_repeated_header_line_with_a_rating_column_is_said_as_such_by_both(tmp_path, kw):
    # the stream read the second header's 'rating' as a rating first: "expected a finite
    # number, got 'rating'" (or "event 'rating' has no weight") on the line the in-memory
    # reader calls the header line again
    p = tmp_path / "joined.csv"
    for rows in (30, 160_000):  # the header in the only block, or in a later one (1.1 MB)
        p.write_text("user_id,item_id,rating\n" + "1,10,5\n" * rows
                     + "user_id,item_id,rating\n3,10,5\n")
        mem, stream = _both(p, read_rows=1000, **kw)
        assert mem == stream == (f"--data: FILE, line {rows + 2}: the header line again "
                                 "('user_id', 'item_id'): files joined with their header "
                                 "lines? delete it"), (mem, stream)


def test_a_repeated_header_line_is_looked_for_on_the_first_whole_pass_only(tmp_path,
                                                                            monkeypatch):
    """The check reads both id columns of every batch: once one pass has read the whole
    file it costs every later epoch the same and can find nothing new. Before, it ran on
    every pass (5 passes: 5 times the first's calls). A line break's warning, which ends
    the search for line breaks early, does not end this one: a header after it is
    refused."""
    p = tmp_path / "log.csv"
    p.write_text("user_id,item_id\n" + "".join(f"u{r % 7},i{r % 5}\n" for r in range(40)))
    calls = []
    real = InteractionStream._repeated_header
    monkeypatch.setattr(InteractionStream, "_repeated_header",
                        lambda self, b, offset: calls.append(offset) or real(self, b, offset))
    s = InteractionStream(p, StreamConfig(shuffle_buffer=0, read_rows=8))
    s.scan()
    first = len(calls)
    assert first >= 1
    for _ in range(4):
        list(s.chunks())
    assert len(calls) == first
    monkeypatch.undo()
    p.write_text('user_id,item_id\nu1,a\nu9,"SKU,9\nu2,b"\nu3,c\nuser_id,item_id\nu4,d\n')
    with pytest.warns(UserWarning, match="line break"):
        with pytest.raises(DataError, match="line 6: the header line again"):
            InteractionStream(p, StreamConfig(shuffle_buffer=0, read_rows=2)).scan()


@pytest.mark.parametrize("ids", [
    [1.0, 1.5, 2.0],  # a fraction: likely not the id column
    [2.0, 1234567890123456789.0, 3.0],  # past 2**53, where a float skips integers
    [float("inf"), 2.0],
])
def test_float_ids_read_as_text_are_warned_of_by_both(tmp_path, ids):
    # both read such a column as text ids ('1.5', '2.0'); the stream said nothing of it
    p = _parquet(tmp_path / "f.parquet", user_id=list(range(len(ids))),
                 item_id=pa.array(ids).dictionary_encode() if len(ids) == 2 else ids)
    said = []
    for read in (lambda: read_interactions(p), lambda: InteractionStream(
            p, StreamConfig(shuffle_buffer=0, read_rows=1)).scan()):
        with pytest.warns(UserWarning) as got:
            read()
        # the stream keeps no row: it gives the value as an example
        said.append([re.sub(r"\((\S+) at row \d+ \(1-based\)", r"(e.g. \1",
                            str(w.message).replace(str(p), "FILE")) for w in got])
    assert said[0] == said[1] and len(said[0]) == 1, said
    assert said[0][0].startswith("--data: FILE, column 'item_id': item ids are ")
    assert "every id is read as text" in said[0][0]
    mem, stream = _both(p)
    assert isinstance(mem, tuple) and mem == stream


@pytest.mark.parametrize("ratings", [
    pa.array([[1, 2], [3]]), pa.array([[4], [3]]), pa.array([[], [3]]),  # list columns
    pa.array([True, False]), pa.array([None, None], pa.null()),
    pa.array([{"a": 1}, {"a": 2}]),
    pa.array([4.0, float("nan")]), pa.array([4.0, float("nan")], pa.float32()),
    # a timestamp column named as the ratings: read as seconds since 1970 in memory
    pa.array([1, 2], pa.timestamp("s")), pa.array([1, 2], pa.timestamp("ms", tz="UTC")),
])
def test_a_parquet_rating_column_of_no_numbers_is_refused_naming_the_same_row(tmp_path,
                                                                              ratings):
    # the stream said "column 'rating': expected numbers, got type list<element: int64>"
    # (no row) where the in-memory reader names row 1 and its cell ("got a list, [1, 2]"),
    # and "got nan" where it says "got nothing (null)"
    p = _parquet(tmp_path / "r.parquet", user_id=[1, 2], item_id=[1, 2], rating=ratings)
    mem, stream = _both(p, rating_col="rating")
    assert mem == stream, (mem, stream)
    assert mem.startswith("--data: FILE, row ") and "column 'rating': expected a finite " \
        "number, got " in mem and mem.endswith(RATING_HINT)
