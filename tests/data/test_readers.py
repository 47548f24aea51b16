import re
import warnings

import numpy as np
import pandas as pd
import pytest

from twotower.data import read_interactions, write_interactions
from twotower.data.readers import read_header
from twotower.errors import DataError


def test_csv_with_string_ids_and_items(tmp_path):
    (tmp_path / "r.csv").write_text("who,what,stars,when\nalice,m1,4,10\nbob,m2,5,11\nalice,m2,3,12\n")
    (tmp_path / "items.csv").write_text("what,title,genres\nm1,First,Drama|War\nm2,Second,\n")
    x = read_interactions(tmp_path / "r.csv", user_col="who", item_col="what",
                          rating_col="stars", time_col="when", items=tmp_path / "items.csv")
    assert x.user_vocab.ids.tolist() == ["alice", "bob"]
    assert x.item_vocab.ids.tolist() == ["m1", "m2"]
    assert x.ratings.tolist() == [4, 5, 3]
    assert x.titles().tolist() == ["First", "Second"]
    assert x.item_info.loc[0, "genres"] == ["Drama", "War"]


def test_int_ids_stay_ints(tmp_path):
    (tmp_path / "r.csv").write_text("user_id,item_id\n3,10\n1,10\n")
    x = read_interactions(tmp_path / "r.csv")
    assert x.user_vocab.is_int and x.user_vocab.ids.tolist() == [1, 3]


def test_parquet_round_trip(tmp_path, ml100k):
    small = ml100k.take(slice(0, 500))
    write_interactions(small, tmp_path / "r.parquet")
    x = read_interactions(tmp_path / "r.parquet", rating_col="rating", time_col="timestamp")
    assert len(x) == 500 and x.ratings.sum() == small.ratings.sum()


def test_missing_column_names_file_and_columns(tmp_path):
    (tmp_path / "r.csv").write_text("u,i\n1,2\n")
    with pytest.raises(DataError, match=r"r\.csv has no column 'user_id'.*columns are \['u', 'i'\]"):
        read_interactions(tmp_path / "r.csv")


def test_malformed_rating_names_line_and_column(tmp_path):
    (tmp_path / "r.csv").write_text("user_id,item_id,rating\n1,2,4\n1,3,five\n")
    with pytest.raises(DataError, match=r"line 3, column 'rating'.*'five'"):
        read_interactions(tmp_path / "r.csv", rating_col="rating")


def test_short_row_names_line(tmp_path):
    (tmp_path / "r.csv").write_text("user_id,item_id,rating\n1,2,4\n1\n")
    with pytest.raises(DataError, match=r"line 3"):
        read_interactions(tmp_path / "r.csv", rating_col="rating")


def test_empty_id_and_missing_file_and_suffix(tmp_path):
    (tmp_path / "r.csv").write_text("user_id,item_id\n1,2\n,3\n")
    with pytest.raises(DataError, match=r"line 3, column 'user_id': empty user id"):
        read_interactions(tmp_path / "r.csv")
    with pytest.raises(DataError, match="file not found"):
        read_interactions(tmp_path / "nope.csv")
    (tmp_path / "r.xlsx").write_text("x")
    with pytest.raises(DataError, match="unknown file type"):
        read_interactions(tmp_path / "r.xlsx")
    # a compressed export is told how to be read, by every reader (the stream's too)
    import gzip

    from twotower.data.readers import read_header
    from twotower.training.stream import InteractionStream
    gz = tmp_path / "r.csv.gz"
    gz.write_bytes(gzip.compress(b"user_id,item_id\n1,2\n"))
    for read in (read_interactions, read_header, lambda p: InteractionStream(p).scan()):
        with pytest.raises(DataError, match=r"r\.csv\.gz: a compressed file \(\.gz\) is not "
                                            r"read; decompress it first \(e\.g\. `gunzip -k"):
            read(gz)


def test_too_many_fields_is_an_error(tmp_path):
    (tmp_path / "r.csv").write_text("user_id,item_id\n1,2\n1,2,3,4\n")
    with pytest.raises(DataError, match="line 3|malformed"):
        read_interactions(tmp_path / "r.csv")


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be"])
def test_a_utf16_csv_is_refused_naming_its_encoding(tmp_path, encoding):
    """A spreadsheet's 'Unicode text' export (UTF-16) was read as latin-1, its NUL bytes
    part of every name: 'no column user; columns are ['\\xff\\xfeu\\x00s...']'."""
    log = tmp_path / "r.csv"
    log.write_bytes("user,item\nu1,10\nu2,11\n".encode(encoding))
    with pytest.raises(DataError, match=r"r.csv holds a NUL byte \(line 1\): it looks UTF-16 "
                                        r"encoded.*save it as UTF-8"):
        read_interactions(log, user_col="user", item_col="item")


def test_a_nul_byte_in_a_text_file_is_refused_naming_its_line(tmp_path):
    """A NUL inside an id (a damaged or binary file) became part of the id, silently."""
    log = tmp_path / "r.csv"
    log.write_bytes(b"user,item\nu1,10\nu\x002,11\nu3,12\n")
    with pytest.raises(DataError, match=r"r.csv holds a NUL byte \(line 3\): no text id "
                                        r"holds one"):
        read_interactions(log, user_col="user", item_col="item")


def test_latin1_files_are_read_with_a_warning_naming_the_line(tmp_path):
    """MovieLens' own metadata is latin-1: read it, and say where UTF-8 failed."""
    log = tmp_path / "r.csv"
    log.write_text("user,item\nu1,10\nu2,11\n", encoding="utf-8")
    items = tmp_path / "items.csv"
    items.write_bytes("item,title,genres\n10,Heat (1995),Action\n"
                      "11,Misérables (1995),Drama\n".encode("latin-1"))
    with pytest.warns(UserWarning, match=r"items.csv is not UTF-8 \(line 3: .*latin-1"):
        x = read_interactions(log, user_col="user", item_col="item", items=items)
    assert x.titles().tolist() == ["Heat (1995)", "Misérables (1995)"]
    # a UTF-8 file is read as such, without a warning
    items.write_text("item,title,genres\n10,Heat (1995),Action\n11,Misérables (1995),Drama\n",
                     encoding="utf-8")
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x = read_interactions(log, user_col="user", item_col="item", items=items)
    assert x.titles().tolist() == ["Heat (1995)", "Misérables (1995)"]


def test_a_byte_order_mark_on_a_file_that_is_not_utf8_is_named(tmp_path):
    """A UTF-8 byte-order mark before a latin-1 body was read as latin-1, mark and all: the
    first column became 'ï»¿item_id', and the error said the file had no column item_id."""
    log = tmp_path / "r.csv"
    log.write_text("user,item\nu1,10\n", encoding="utf-8")
    items = tmp_path / "items.csv"
    items.write_bytes(b"\xef\xbb\xbfitem,title\n10,caf\xe9\n")
    with pytest.raises(DataError, match=r"items.csv starts with a UTF-8 byte-order mark but "
                                        r"line 2 is not UTF-8 .* mixes two encodings"):
        read_interactions(log, user_col="user", item_col="item", items=items)
    items.write_bytes(b"\xef\xbb\xbfitem,title\n10,caf\xc3\xa9\n")  # all UTF-8: read
    x = read_interactions(log, user_col="user", item_col="item", items=items)
    assert x.titles().tolist() == ["café"]


def test_leading_zeros_keep_ids_apart_as_strings(tmp_path):
    (tmp_path / "r.csv").write_text("user_id,item_id\n1,007\n2,7\n3,0\n")
    with pytest.warns(UserWarning, match="first: '007', data row 1"):  # 7 and 007: said so
        x = read_interactions(tmp_path / "r.csv")
    assert x.user_vocab.is_int and not x.item_vocab.is_int
    assert sorted(x.item_vocab.ids.tolist()) == ["0", "007", "7"]


def test_null_id_in_parquet_names_the_row(tmp_path):
    df = pd.DataFrame({"user_id": ["a", None, "b"], "item_id": ["x", "y", "z"]})
    df.to_parquet(tmp_path / "r.parquet")
    with pytest.raises(DataError, match=r"r\.parquet, row 2 \(1-based\), column 'user_id': "
                                        "empty user id"):
        read_interactions(tmp_path / "r.parquet")
    df = pd.DataFrame({"user_id": [1, 2, 3], "item_id": [1.0, np.nan, 3.0]})
    df.to_parquet(tmp_path / "f.parquet")
    with pytest.raises(DataError, match=r"row 2 \(1-based\), column 'item_id': empty item id"):
        read_interactions(tmp_path / "f.parquet")


def test_infinite_rating_names_the_line(tmp_path):
    (tmp_path / "r.csv").write_text("user_id,item_id,rating\n1,2,4\n1,3,inf\n")
    with pytest.raises(DataError, match=r"line 3, column 'rating': expected a finite number, "
                                        r"got 'inf'"):
        read_interactions(tmp_path / "r.csv", rating_col="rating")
    pd.DataFrame({"user_id": [1, 2], "item_id": [1, 2], "rating": [1.0, -np.inf]}
                 ).to_parquet(tmp_path / "r.parquet")
    with pytest.raises(DataError, match=r"row 2 \(1-based\), column 'rating': expected a "
                                        r"finite number, got -inf"):
        read_interactions(tmp_path / "r.parquet", rating_col="rating")


def test_one_column_for_two_roles_and_unreadable_parquet(tmp_path):
    (tmp_path / "r.csv").write_text("user_id,item_id,rating\n1,2,4\n")
    with pytest.raises(DataError, match=r"column 'item_id' is named for several roles "
                                        r"\(user, item\)"):
        read_interactions(tmp_path / "r.csv", user_col="item_id")
    (tmp_path / "bad.parquet").write_text("junk")
    with pytest.raises(DataError, match=r"--test-data: .*bad\.parquet is not a readable "
                                        "Parquet file"):
        read_interactions(tmp_path / "bad.parquet", what="--test-data")
    with pytest.raises(DataError, match="not a readable Parquet file"):
        read_header(tmp_path / "bad.parquet")
    with pytest.raises(DataError, match=r"--test-data: .*r\.csv has no column 'u'"):
        read_interactions(tmp_path / "r.csv", user_col="u", what="--test-data")


def test_parquet_timestamp_column_is_read_as_epoch_seconds(tmp_path):
    when = pd.to_datetime(["2020-01-01 00:00:10", "2020-01-02 00:00:00", None])
    df = pd.DataFrame({"user_id": [1, 2, 3], "item_id": [1, 2, 3], "ts": when})
    df.iloc[:2].to_parquet(tmp_path / "r.parquet")
    x = read_interactions(tmp_path / "r.parquet", time_col="ts")
    assert x.timestamps.tolist() == [1577836810, 1577923200]
    df.iloc[:2].assign(ts=when[:2].tz_localize("Europe/Paris")).to_parquet(tmp_path / "z.parquet")
    x = read_interactions(tmp_path / "z.parquet", time_col="ts")
    assert x.timestamps.tolist() == [1577836810 - 3600, 1577923200 - 3600]
    df.to_parquet(tmp_path / "n.parquet")
    with pytest.raises(DataError, match=r"row 3 \(1-based\), column 'ts': expected a time, "
                                        r"got nothing \(null\)"):
        read_interactions(tmp_path / "n.parquet", time_col="ts")


@pytest.mark.parametrize("args, message", [
    ((["a", None], [1, 2]), r"`user_ids`\[1\]: missing id"),
    ((pd.Series(["a", np.nan]), [1, 2]), r"`user_ids`\[1\]: missing id"),
    # an empty id: the readers refuse an empty cell and HTTP cannot ask for one
    ((["a", ""], [1, 2]), r"`user_ids`\[1\]: empty id \(''\); an id is an integer or a "
                          "string of at least one character"),
    ((np.array(["", "b"]), [1, 2]), r"`user_ids`\[0\]: empty id"),
    ((["a", "b"], pd.Series(["x", ""])), r"`item_ids`\[1\]: empty id"),
    ((np.array([2**63 + 5, 1], np.uint64), [1, 2]), "does not fit int64"),
    ((["a", "b"], [1.5, 2.0]), "ids must be integers or strings, got 1.5"),
    ((["a", "b"], [1, 2], ["x", "4"]), r"`ratings`\[0\]: expected a finite number, got 'x'"),
    ((["a", "b"], [1, 2], [4.0, np.inf]), r"`ratings`\[1\]: expected a finite number, got inf"),
    ((["a", "b"], [1, 2], None, ["2020-01-01", "soon"]),
     r"`timestamps`\[1\]: expected seconds since the epoch \(a number\), ISO 8601 text "
     r"\(2024-03-01T12:30:00Z\) or a datetime, got 'soon'"),
    ((["a", "b"], [1, 2], None, ["5", "2020-01-01"]), "mix numbers .* with ISO 8601 text"),
    (((x for x in ["a"]), [1]), "got a generator: pass a list"),
    (({"a", "b"}, [1, 2]), "got a set: pass a list"),
    ((["a"], [1], None, None), None),
    ((["a", "b"], [1, 2], None, [1.0, np.nan]), r"`timestamps`\[1\]: expected a finite"),
    ((["a", "b"], [1, 2], None, pd.to_datetime(["2020-01-01", None])),
     r"`timestamps`\[1\]: missing time"),
])
def test_from_ids_refuses_what_it_cannot_hold(args, message):
    from twotower.data import Interactions
    if message is None:  # (a vocabulary of another type: its own case below)
        with pytest.raises(DataError, match="`user_vocab` must be a Vocabulary"):
            Interactions.from_ids(*args, user_vocab=["a"])
        return
    with pytest.raises(DataError, match=message):
        Interactions.from_ids(*args)


def test_from_ids_refuses_an_empty_id_with_or_without_a_given_vocabulary():
    """A vocabulary holding "" is refused where it is made (``Vocabulary``: see
    test_vocabulary), so a given one never holds it; a row of "" against a given
    vocabulary is said as an empty id (not as an unknown one), naming its row."""
    from twotower.data import Interactions, Vocabulary
    vocab = Vocabulary(["a", "b"], name="user")
    with pytest.raises(DataError, match=r"`user_ids`\[2\]: empty id \(''\)"):
        Interactions.from_ids(["a", "b", ""], [1, 2, 3], user_vocab=vocab)
    items = Vocabulary(["x", "y"], name="item")
    with pytest.raises(DataError, match=r"`item_ids`\[1\]: empty id \(''\)"):
        Interactions.from_ids(["a", "b"], ["x", ""], item_vocab=items)
    assert Interactions.from_ids(["b"], [1], user_vocab=vocab).users.tolist() == [1]


def test_from_ids_reads_times_as_the_file_readers_do():
    """ISO text and dates were refused by from_ids (the README says ISO text is taken, as
    the readers take it), and fractions of a second were floored silently."""
    import datetime
    import warnings

    from twotower.data import Interactions
    day = 1709251200  # 2024-03-01, UTC
    for when in (["2024-03-01T00:00:00Z", "2024-03-01 01:00"], ["2024-03-01", "2024-03-01T01:00"],
                 [datetime.date(2024, 3, 1), datetime.datetime(2024, 3, 1, 1)],
                 [str(day), str(day + 3600)]):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            x = Interactions.from_ids(["a", "b"], [1, 2], timestamps=when)
        assert x.timestamps.tolist() == [day, day + 3600], when
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # fractions of a second are kept (were floored)
        x = Interactions.from_ids(["a", "b"], [1, 2], timestamps=[1.5, 2.25])
    assert (x.timestamps.tolist(), x.time_unit) == ([1500, 2250], "ms")  # (negative: warned)


def test_from_ids_warns_of_metadata_rows_that_repeat_an_id():
    from twotower.data import Interactions
    info = pd.DataFrame({"item_id": [10, 10, 20], "title": ["x", "y", "z"]})
    with pytest.warns(UserWarning, match=r"`item_info`: 1 row\(s\) repeat an id \(first: 10\)"):
        x = Interactions.from_ids([1, 2], [10, 20], item_info=info)
    assert x.item_info["title"].tolist() == ["x", "z"]


def test_from_ids_times_are_seconds_whatever_the_datetime_unit():
    from twotower.data import Interactions
    day = 1577836800
    for when in (pd.to_datetime(["2020-01-01", "2020-01-02"]),
                 np.array(["2020-01-01", "2020-01-02"], dtype="datetime64[ns]"),
                 np.array(["2020-01-01", "2020-01-02"], dtype="datetime64[s]"),
                 pd.Series(pd.to_datetime(["2020-01-01 01:00", "2020-01-02 01:00"])
                           ).dt.tz_localize("Europe/Paris"),
                 [day, day + 86400]):
        x = Interactions.from_ids(["a", "b"], [1.0, 2.0], None, when)
        assert x.timestamps.tolist() == [day, day + 86400]
        assert x.item_vocab.is_int


def test_from_ids_maps_int_ids_through_a_given_unsorted_vocabulary():
    """A given int vocabulary keeps its own order (e.g. a trained run's): ids map to
    their place in it, and an id it lacks is named (the sorted look-up's fast path)."""
    from twotower.data import Interactions, Vocabulary
    from twotower.errors import UnknownIdError
    items = Vocabulary([30, 10, 20, 5], name="item")
    x = Interactions.from_ids(["a", "b", "a", "c"], np.array([10, 20, 30, 5]),
                              item_vocab=items)
    assert x.items.tolist() == [1, 2, 0, 3]
    assert x.item_vocab.ids_of(x.items).tolist() == [10, 20, 30, 5]
    with pytest.raises(UnknownIdError, match="unknown item id 11"):
        Interactions.from_ids(["a", "b"], np.array([10, 11]), item_vocab=items)


def test_from_ids_keeps_its_own_times_and_refuses_unsigned_ones_int64_cannot_hold():
    """An int64 times array was held, not copied: editing it afterwards changed the
    Interactions; a uint64 time of 2**63 or more wrapped to a negative time."""
    from twotower.data import Interactions
    ts = np.array([5, 1, 3])
    x = Interactions.from_ids([1, 2, 1], [1, 2, 3], timestamps=ts)
    ts[:] = 0
    assert x.timestamps.tolist() == [5, 1, 3]
    with pytest.raises(DataError, match=r"`timestamps`\[0\]: 9223372036854775813 is beyond"):
        Interactions.from_ids([1, 2], [1, 2], timestamps=np.array([2**63 + 5, 1], "uint64"))
    # (as counted: auto would read numbers this large as nanoseconds)
    ok = Interactions.from_ids([1, 2], [1, 2], timestamps=np.array([2**63 - 1, 1], "uint64"),
                               time_unit="s")
    assert ok.timestamps.tolist() == [2**63 - 1, 1]


def test_items_file_ids_that_are_not_integers_match_nothing_on_an_int_catalogue(tmp_path):
    (tmp_path / "r.csv").write_text("user_id,item_id\n1,7\n2,8\n3,9\n")
    (tmp_path / "items.csv").write_text("item_id,title\nITEM-1,A\nITEM-2,B\n7.0,Seven\n"
                                        "08,Leading zero\n7,Seven again\n")
    with pytest.warns(UserWarning, match="3 of the 4 items"):  # ITEM-1, ITEM-2, 08
        x = read_interactions(tmp_path / "r.csv", items=tmp_path / "items.csv")
    assert x.titles().tolist() == ["Seven", "8", "9"]


def test_items_file_ids_beyond_2_53_match_exactly(tmp_path):
    """Integer ids from 2**53 on (64-bit hashes) went through a float: every title was
    lost, and the warning said the items had no interaction."""
    big = 2**53
    (tmp_path / "r.csv").write_text(f"user_id,item_id\n1,{big + 1}\n2,{big + 3}\n3,7\n")
    (tmp_path / "items.csv").write_text(f"item_id,title\n{big + 1},One\n{big + 3},Three\n"
                                        f"7,Seven\n{big + 2},Two\n")
    with pytest.warns(UserWarning, match="1 of the 4 items"):  # big + 2 only
        x = read_interactions(tmp_path / "r.csv", items=tmp_path / "items.csv")
    assert dict(zip(x.item_vocab.ids.tolist(), x.titles().tolist())) == {
        7: "Seven", big + 1: "One", big + 3: "Three"}


def test_from_ids_matches_metadata_as_the_readers_do():
    """item_info keyed by ints for int-looking string ids, or by strings for int ids, was
    dropped silently (every title empty); an `id` column and duplicate keys gave pandas
    errors."""
    import pandas as pd

    from twotower.data import Interactions
    info = pd.DataFrame({"title": ["seven", "eight", "other"]}, index=["7", "8", "99"])
    x = Interactions.from_ids([1, 2], [7, 8], item_info=info)
    assert x.item_info["title"].tolist() == ["seven", "eight"]
    by_col = pd.DataFrame({"id": [8, 7, 7], "title": ["eight", "seven", "dup"]})
    x = Interactions.from_ids(["a", "b"], ["7", "8"], item_info=by_col)
    assert x.item_info["title"].tolist() == ["seven", "eight"]
    with pytest.raises(DataError, match="`item_info`: none of its 1 ids"):
        Interactions.from_ids([1], [7], item_info=pd.DataFrame({"title": ["x"]}, index=["a"]))
    with pytest.raises(DataError, match="`user_info` must be a pandas DataFrame"):
        Interactions.from_ids([1], [7], user_info={"1": "x"})


def test_items_listed_without_interactions_are_named_when_left_out(tmp_path):
    """An items file's rows for items the log never mentions were dropped silently."""
    (tmp_path / "r.csv").write_text("user,item\nu1,10\nu2,11\n")
    (tmp_path / "items.csv").write_text("item,title\n10,A\n11,B\n12,C\n13,D\n")
    with pytest.warns(UserWarning, match=r"--items: 2 of the 4 items in .*items.csv have no "
                      r"interaction in .*r.csv; they are left out of the catalogue"):
        x = read_interactions(tmp_path / "r.csv", user_col="user", item_col="item",
                              items=tmp_path / "items.csv")
    assert x.item_vocab.ids.tolist() == [10, 11] and x.titles().tolist() == ["A", "B"]


def test_catalogue_items_keeps_the_items_listed_without_interactions(tmp_path):
    """``catalogue="items"``: an items file's rows for items the log lacks were always
    dropped (a product added yesterday could never be served from its features); now they
    are in the catalogue with their metadata, with no interaction. An id that cannot be
    one of the log's (text against integer ids) is left out, said."""
    (tmp_path / "r.csv").write_text("user,item\nu1,10\nu2,11\n")
    (tmp_path / "items.csv").write_text("item,title\n10,A\n11,B\n12.0,C\nabc,D\n")
    with pytest.warns(UserWarning, match=r"1 of the 4 ids in .*items.csv are no integer like "
                      r"the log's item ids \(e.g. 'abc'\); they are left out"):
        x = read_interactions(tmp_path / "r.csv", user_col="user", item_col="item",
                              items=tmp_path / "items.csv", catalogue="items")
    assert x.item_vocab.ids.tolist() == [10, 11, 12]
    assert x.titles().tolist() == ["A", "B", "C"]
    assert x.item_popularity().tolist() == [1, 1, 0] and len(x) == 2
    (tmp_path / "s.csv").write_text("user,item\nu1,b\nu2,a\n")
    (tmp_path / "sitems.csv").write_text("item,title\nc,C\na,A\nb,B\n")
    x = read_interactions(tmp_path / "s.csv", user_col="user", item_col="item",
                          items=tmp_path / "sitems.csv", catalogue="items")
    assert x.item_vocab.ids.tolist() == ["a", "b", "c"]
    assert x.items.tolist() == [1, 0] and x.titles().tolist() == ["A", "B", "C"]
    with pytest.raises(DataError, match=r"`catalogue` must be one of \['items', "
                       r"'interactions'\], got 'all'"):
        read_interactions(tmp_path / "s.csv", user_col="user", item_col="item",
                          items=tmp_path / "sitems.csv", catalogue="all")


def test_item_info_read_from_csv_keys_on_its_item_id_column():
    """``pd.read_csv("items.csv")`` keeps ``item_id`` as a column beside a 0..n-1 index:
    the index was taken as the ids, and with ids 1..n every item got its neighbour's
    title and genres, in silence."""
    import pandas as pd

    from twotower.data import Interactions
    info = pd.DataFrame({"item_id": [1, 2, 3], "title": ["One", "Two", "Three"]})
    x = Interactions.from_ids([10, 10, 11], [1, 2, 3], item_info=info)
    assert x.titles().tolist() == ["One", "Two", "Three"]
    users = pd.DataFrame({"user_id": ["b", "a"], "age": [30, 20]})
    x = Interactions.from_ids(["a", "b"], [1, 2], user_info=users)
    assert x.user_info["age"].tolist() == [20, 30]


def test_python_lists_of_ids_are_read_element_by_element():
    """numpy made one text array of a mixed list: NaN became the user "nan", and 7 and
    "7" one id."""
    from twotower.data import Interactions
    with pytest.raises(DataError, match=r"`user_ids`\[1\]: missing id"):
        Interactions.from_ids(["a", float("nan"), "b"], [1, 2, 3])
    with pytest.raises(DataError, match="all integers or all strings"):
        Interactions.from_ids([7, "7", "a"], [1, 2, 3])
    with pytest.raises(DataError, match="does not fit int64; pass such ids as strings"):
        Interactions.from_ids([2**64 - 1, 1], [1, 2])
    assert Interactions.from_ids([1.0, 2.0], ["a", "b"]).user_vocab.ids.tolist() == [1, 2]
    assert Interactions.from_ids(["x", "y"], [3, 4]).item_vocab.ids.tolist() == [3, 4]


def test_datetime_objects_are_times_in_seconds():
    """datetime and Timestamp objects went through pd.to_numeric: microseconds, stored as
    seconds (x 1,000,000); Periods became day numbers."""
    import datetime as dt

    import pandas as pd

    from twotower.data import Interactions
    days = [dt.datetime(2020, 1, d) for d in (1, 2, 3)]
    want = [1577836800, 1577923200, 1578009600]
    for stamps in (days, [pd.Timestamp(d) for d in days],
                   pd.Series(days, dtype=object),
                   [pd.Timestamp(d, tz="UTC") for d in days[:2]]
                   + [pd.Timestamp("2020-01-03 01:00", tz="Europe/Paris")]):
        x = Interactions.from_ids([1, 1, 2], [1, 2, 3], timestamps=stamps)
        assert x.timestamps.tolist() == want
    with pytest.raises(DataError, match=r"`timestamps`\[0\]: .* got Period"):
        Interactions.from_ids([1], [1], timestamps=pd.Series(pd.period_range("2020", periods=1)))


def test_bad_id_columns_and_named_metadata_columns_are_refused(tmp_path):
    import pandas as pd
    pd.DataFrame({"user_id": [True, False], "item_id": [1, 2]}).to_parquet(tmp_path / "b.parquet")
    with pytest.raises(DataError, match="column 'user_id': user ids must be text or integers, "
                                        "got boolean"):
        read_interactions(tmp_path / "b.parquet")
    pd.DataFrame({"user_id": [[1, 2], [3]], "item_id": [1, 2]}).to_parquet(
        tmp_path / "l.parquet")
    with pytest.raises(DataError, match="user ids must be text or integers"):
        read_interactions(tmp_path / "l.parquet")
    (tmp_path / "q.csv").write_text('user_id,item_id\n1,"2\n3,4\n')
    with pytest.raises(DataError, match="q.csv: malformed CSV"):
        read_interactions(tmp_path / "q.csv")
    (tmp_path / "r.csv").write_text("user_id,item_id\n1,7\n2,8\n")
    (tmp_path / "i.csv").write_text("item_id,name\n7,Seven\n8,Eight\n")
    with pytest.raises(DataError, match=r"no column 'movie_title' \(title_col\); its columns: "
                                        "item_id, name"):
        read_interactions(tmp_path / "r.csv", items=tmp_path / "i.csv",
                          title_col="movie_title")


def test_genres_text_in_a_data_frame_is_split_as_a_file_s(tmp_path):
    import pandas as pd

    from twotower.data import Interactions
    from twotower.models.features import feature_matrix
    info = pd.DataFrame({"genres": ["Action|Comedy", "Comedy"]}, index=[7, 8])
    x = Interactions.from_ids([1, 2], [7, 8], item_info=info)
    _, names = feature_matrix(x.item_info, ["genres"], x.n_items, what="item")
    assert names == ["genres=Action", "genres=Comedy"]


def test_review_cases_categorical_parquet_ids_empty_lists_and_unnamed_vocabularies(tmp_path):
    import pandas as pd

    from twotower.data import Interactions, Vocabulary
    pd.DataFrame({"user_id": pd.Categorical(["a", "b", "a"]), "item_id": [1, 2, 3]}
                 ).to_parquet(tmp_path / "c.parquet")  # dictionary-encoded: read as before
    assert read_interactions(tmp_path / "c.parquet").user_vocab.ids.tolist() == ["a", "b"]
    assert len(Interactions.from_ids([], [])) == 0  # was a bare StopIteration
    info = pd.DataFrame({"item_id": [10, 20], "title": ["ten", "twenty"]})
    x = Interactions.from_ids([1, 2], [10, 20], item_vocab=Vocabulary([10, 20]),
                              item_info=info)  # a vocabulary without a name
    assert x.titles().tolist() == ["ten", "twenty"]


def test_iso_8601_text_times_are_read(tmp_path):
    # the most common export format was refused ("expected a finite number")
    import datetime as dt
    p = tmp_path / "iso.csv"
    p.write_text("user_id,item_id,timestamp\na,x,2024-03-01T12:30:00Z\na,y,2024-03-01 12:31:00\n"
                 "b,x,2024-03-02T00:00:00+01:00\nb,z,2024-03-03\n")
    x = read_interactions(p, time_col="timestamp")
    got = [dt.datetime.fromtimestamp(t, dt.UTC).isoformat() for t in x.timestamps]
    assert got == ["2024-03-01T12:30:00+00:00", "2024-03-01T12:31:00+00:00",
                   "2024-03-01T23:00:00+00:00", "2024-03-03T00:00:00+00:00"]
    q = tmp_path / "iso.parquet"  # text in Parquet too
    pd.DataFrame({"user_id": ["a"], "item_id": ["x"], "ts": ["2024-03-01T12:30:00Z"]}
                 ).to_parquet(q)
    assert read_interactions(q, time_col="ts").timestamps.tolist() == [1709296200]
    p.write_text("user_id,item_id,timestamp\na,x,2024-03-01T12:30:00Z\na,y,yesterday\n")
    with pytest.raises(DataError, match=r"line 3, column 'timestamp': expected a time, got "
                                        r"'yesterday'; .*ISO 8601"):
        read_interactions(p, time_col="timestamp")


def test_blank_lines_before_the_header_and_a_mixed_time_column(tmp_path):
    p = tmp_path / "blank.csv"  # pandas skips them; the raw header read saw no columns
    p.write_text("\nuser_id,item_id\n1,2\n3,4\n")
    assert len(read_interactions(p)) == 2
    p.write_text("user_id,item_id,timestamp\na,x,1709296200\na,y,2024-03-01T12:30:00Z\n")
    with pytest.raises(DataError, match=r"line 3, .*mixes numbers .* with ISO 8601 text"):
        read_interactions(p, time_col="timestamp")


def test_iso_times_with_fractions_are_kept_to_the_fraction(tmp_path):
    """Fractions of a second in ISO text were floored (with a warning): now kept exactly,
    in milliseconds here, so two events of one second keep their order."""
    p = tmp_path / "f.csv"
    p.write_text("user_id,item_id,timestamp\na,x,2024-03-01T12:30:00.750Z\n"
                 "a,y,2024-03-01T12:30:01Z\na,z,2024-03-01T12:30:00.5Z\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x = read_interactions(p, time_col="timestamp")
    assert (x.timestamps.tolist(), x.time_unit) == (
        [1709296200750, 1709296201000, 1709296200500], "ms")


def test_a_field_over_python_csv_limit_is_read_and_an_open_quote_names_its_lines(tmp_path):
    """Python's csv module (the row check) refused fields over 131,072 characters with a
    traceback, even in a column never read; a quote never closed named EOF's line."""
    from twotower.data.readers import read_item_info
    p = tmp_path / "items.csv"
    p.write_text("item_id,title,description\n1,One,short\n2,Two," + "word " * 30_000 + "\n")
    info = read_item_info(p, id_col="item_id")
    assert len(info) == 2
    p = tmp_path / "long.csv"
    p.write_text("user_id,item_id,note\n1,2," + "x" * 200_000 + "\n3,4,y\n")
    assert len(read_interactions(p)) == 2
    p = tmp_path / "open.csv"
    p.write_text("user_id,item_id,rating\n1,2,3\n" + '4,"5,3\n' + "6,7,3\n" * 5)
    with pytest.raises(DataError, match=r"open.csv, lines 3-8 \(one record: a quote opened "
                                        r"there"):
        read_interactions(p, rating_col="rating")


def test_a_mixed_time_column_names_the_line_of_the_rarer_form(tmp_path):
    times = [f"2024-01-{d:02d}" for d in range(1, 29)]
    times[20] = "1704067200"  # line 22
    p = tmp_path / "t.csv"
    pd.DataFrame({"user_id": range(28), "item_id": range(28), "timestamp": times}).to_csv(
        p, index=False)
    with pytest.raises(DataError, match=r"line 22, column 'timestamp': expected a time, got "
                                        r"'1704067200'; the column mixes numbers"):
        read_interactions(p, time_col="timestamp")
    times = [str(1704067200 + d) for d in range(28)]
    times[5] = "2024-01-07"  # line 7
    pd.DataFrame({"user_id": range(28), "item_id": range(28), "timestamp": times}).to_csv(
        p, index=False)
    with pytest.raises(DataError, match=r"line 7, .*got '2024-01-07'; the column mixes"):
        read_interactions(p, time_col="timestamp")


def test_an_empty_rating_says_the_column_can_be_left_out(tmp_path):
    p = tmp_path / "r.csv"
    p.write_text("user_id,item_id,rating\n1,2,4\n3,4,\n")
    with pytest.raises(DataError, match=r"line 3, column 'rating': expected a finite number, "
                                        r"got ''; .*--rating-col none"):
        read_interactions(p, rating_col="rating")


def test_item_info_keeps_the_named_columns_with_their_types(tmp_path):
    from twotower.data.readers import read_item_info
    p = tmp_path / "i.csv"
    p.write_text("item_id,title,price,brand,note\n1,A,3.5,x,n\n2,B,,y,n\n3,C,4,,n\n")
    info = read_item_info(p, id_col="item_id", columns=("price", "brand", "nothere"))
    assert list(info.columns) == ["title", "price", "brand"]
    assert info["price"].tolist()[0] == 3.5 and np.isnan(info["price"].tolist()[1])
    assert info["brand"].tolist()[:2] == ["x", "y"] and pd.isna(info["brand"].tolist()[2])
    q = tmp_path / "i.parquet"  # Parquet keeps its types: a list column stays lists
    pd.DataFrame({"item_id": [1, 2], "tags": [["a", "b"], ["c"]], "n": [1, 2],
                  "code": ["7", None]}).to_parquet(q)
    info = read_item_info(q, id_col="item_id", columns=("tags", "n", "code"))
    assert [list(t) for t in info["tags"]] == [["a", "b"], ["c"]]
    assert info["n"].tolist() == [1, 2]
    # a text column stays text, and a null stays missing (not the text "None")
    assert info["code"].tolist()[0] == "7" and pd.isna(info["code"].tolist()[1])


def test_item_info_reads_nan_cells_among_numbers_as_missing(tmp_path):
    """A price column written with "NaN" for missing prices (numpy, Spark) was text: one
    feature per distinct price, the numbers' order lost, without a warning."""
    from twotower.data.readers import read_item_info
    p = tmp_path / "i.csv"
    p.write_text("item_id,price,brand\n1,3.5,NA\n2,NaN,x\n3,4,y\n4,nan,z\n5,NA,w\n")
    info = read_item_info(p, id_col="item_id", columns=("price", "brand"))
    assert info["price"].dtype == np.float64
    assert info["price"].tolist()[0:3:2] == [3.5, 4.0]
    assert info["price"].isna().tolist() == [False, True, False, True, True]
    assert info["brand"].tolist()[0] == "NA"  # a text column keeps its text


def test_a_few_text_ids_among_integers_are_warned_of(tmp_path):
    p = tmp_path / "r.csv"
    p.write_text("user_id,item_id\n" + "".join(f"{u},{u % 9}\n" for u in range(20))
                 + "3,abc\n" + "5,007\n")
    with pytest.warns(UserWarning, match=r"column 'item_id': 2 of 22 ids are not plain "
                                         r"integers \(first: 'abc', data row 21\)"):
        x = read_interactions(p)
    assert not x.item_vocab.is_int and x.user_vocab.is_int
    q = tmp_path / "s.csv"  # text ids, a few of them digits: no warning
    q.write_text("user_id,item_id\n" + "".join(f"u{u},{u}\n" for u in range(5)))
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_interactions(q)


def test_an_items_file_with_a_header_only_is_named_so(tmp_path):
    from twotower.data.readers import read_item_info
    p = tmp_path / "i.csv"
    p.write_text("item_id,title\n")
    with pytest.raises(DataError, match=r"--items: .*i.csv has no rows \(its header only\)"):
        read_item_info(p, id_col="item_id")


def test_interactions_built_from_lists_and_unmatched_metadata_say_what_they_take():
    """Interactions(users=[0], ...) failed with `'list' object has no attribute 'min'`;
    metadata of no data id said 'is a item id ... like np.int64(0)'."""
    from twotower.data import Interactions, Vocabulary
    with pytest.raises(DataError, match=r"`users` must be a 1-D numpy array of indices .*"
                                        r"got list \(Interactions.from_ids"):
        Interactions(users=[0], items=[0], user_vocab=Vocabulary([1]),
                     item_vocab=Vocabulary([2]))
    info = pd.DataFrame({"item_id": [1000], "title": ["x"]})
    with pytest.raises(DataError, match=r"none of its 1 ids is an item id of the data "
                                        r"\(e\.g\. 1000; the data's are like 0\)"):
        Interactions.from_ids([1, 2], np.array([0, 1]), item_info=info)


def test_a_damaged_parquet_data_page_is_one_line_naming_the_file(tmp_path):
    """Only the footer was checked: a damaged data page escaped as pyarrow's ArrowInvalid
    (a traceback) or a bare OSError ('Corrupt snappy compressed data', no file named),
    from both readers."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from twotower.training import InteractionStream, StreamConfig
    rng = np.random.default_rng(0)
    n = 5000
    good = tmp_path / "g.parquet"
    pq.write_table(pa.table({"u": rng.integers(0, 10**6, n),
                             "i": pa.array(rng.integers(0, 10**6, n).astype(str))}),
                   good, compression="none")
    raw = good.read_bytes()
    failed = {"memory": 0, "stream": 0}
    for off in range(4, len(raw) - 2000, 997):
        damaged = bytearray(raw)
        damaged[off:off + 8] = b"\xff" * 8
        bad = tmp_path / "b.parquet"
        bad.write_bytes(bytes(damaged))
        for name, read in (("memory", lambda: read_interactions(bad, user_col="u",
                                                                 item_col="i")),
                           ("stream", lambda: InteractionStream(
                               bad, StreamConfig(user_col="u", item_col="i")).scan())):
            try:
                read()
            except DataError as exc:
                assert "b.parquet is not a readable Parquet file" in str(exc), exc
                failed[name] += 1
    assert failed["memory"] > 10 and failed["stream"] > 10, failed


@pytest.mark.parametrize("blank", ["", "   "])
def test_an_empty_id_in_the_items_file_is_refused_naming_its_line(tmp_path, blank):
    """--data refuses an empty id naming its line; --items read one as an id and only
    warned that an item had no interaction."""
    from twotower.data.readers import read_item_info
    p = tmp_path / "items.csv"
    p.write_text(f"item_id,title\n1,One\n{blank},Nobody\n3,Three\n")
    with pytest.raises(DataError, match=r"--items: .*items.csv, line 3, column 'item_id': "
                                        r"empty item id"):
        read_item_info(p, id_col="item_id")


def test_ids_written_with_spaces_are_the_same_ids(tmp_path):
    """A CSV's ` 7` and `7 ` are user 7 (the request side strips too): not three text ids."""
    p = tmp_path / "spaced.csv"
    p.write_text("user_id,item_id\n 7,1\n7 ,2\n8, 3\n")
    x = read_interactions(p)
    assert x.user_vocab.ids.tolist() == [7, 8] and x.item_vocab.ids.tolist() == [1, 2, 3]
    p.write_text("user_id,item_id\n a ,1\na,2\n")
    assert read_interactions(p).user_vocab.ids.tolist() == ["a"]


def test_ids_with_fractions_warn_that_they_are_read_as_text(tmp_path):
    """A float id column with a fraction (likely the wrong column) became text ids
    '1.0', '1.5' with no word."""
    from twotower.data import read_interactions
    p = tmp_path / "f.parquet"
    pd.DataFrame({"user_id": [1, 2, 3], "item_id": [1.0, 1.5, 2.0]}).to_parquet(p)
    with pytest.warns(UserWarning, match=r"column 'item_id': item ids are numbers with "
                                         r"fractions \(1\.5 at row 2 \(1-based\)\)"):
        x = read_interactions(p)
    assert sorted(x.item_vocab.ids.tolist()) == ["1.0", "1.5", "2.0"]
    whole = tmp_path / "w.parquet"
    pd.DataFrame({"user_id": [1, 2], "item_id": [1.0, 2.0]}).to_parquet(whole)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_interactions(whole).item_vocab.ids.tolist() == [1, 2]


def test_a_rating_float32_cannot_hold_is_refused_naming_its_row(tmp_path):
    """1e39 became inf in float32, and fit then said the training diverged (lower the
    learning rate): every reader refuses it, naming the row."""
    from twotower.data import Interactions
    from twotower.training import InteractionStream, StreamConfig
    csv = tmp_path / "big.csv"
    csv.write_text("user_id,item_id,rating\n1,2,3\n2,3,1e39\n3,4,-5\n")
    pq = tmp_path / "big.parquet"
    pd.read_csv(csv).to_parquet(pq)
    beyond = r"beyond what float32 holds \(3\.4e\+38\)"
    with pytest.raises(DataError, match=r"`ratings`\[1\]: rating 1e\+39 is " + beyond):
        Interactions.from_ids([1, 2], [1, 2], ratings=[1.0, 1e39])
    with pytest.raises(DataError, match=r"big\.csv, line 3, column 'rating': .*" + beyond):
        read_interactions(csv, rating_col="rating")
    for p, where in ((csv, "line 3"), (pq, r"row 2 \(1-based\)")):
        with pytest.raises(DataError, match=rf"{where}, column 'rating': .*{beyond}"):
            InteractionStream(p, StreamConfig(rating_col="rating")).scan()
    ok = Interactions.from_ids([1, 2], [1, 2], ratings=[1.0, 3e38])
    assert ok.ratings.dtype == np.float32 and np.isfinite(ok.ratings).all()


@pytest.mark.parametrize("values, unit", [
    ([1700000000123, 1700000001000, 1700000002999], "milliseconds"),
    ([1700000000123456, 1700000001000000, 1700000002999999], "microseconds"),
    ([1700000000123456789, 1700000001000000000, 1700000002000000001], "nanoseconds"),
])
def test_times_in_finer_units_than_seconds_are_read_as_such(tmp_path, values, unit):
    """Times in ms/us/ns since 1970 were kept as seconds (1.7e12 s: the year 55,000):
    read off their magnitude, converted to whole seconds, with a warning naming the column,
    an example and the option; ``time_unit`` states it (``s`` keeps the numbers)."""
    p = tmp_path / "t.csv"
    p.write_text("user_id,item_id,timestamp\n" + "".join(
        f"u{i},i{i},{v}\n" for i, v in enumerate(values)))
    with pytest.warns(UserWarning, match=rf"column 'timestamp': times read as {unit} since "
                                         rf"1970 \(e\.g\. \d+ = 2023-11-14T22:13:2\d\.\d+Z; "
                                         rf"kept in {unit}\)"):
        x = read_interactions(p, time_col="timestamp")
    short = {"milliseconds": "ms", "microseconds": "us", "nanoseconds": "ns"}[unit]
    assert (x.timestamps.tolist(), x.time_unit) == (values, short)  # (floored to seconds)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # stated: no warning
        x = read_interactions(p, time_col="timestamp", time_unit=short)
        assert (x.timestamps.tolist(), x.time_unit) == (values, short)
        x = read_interactions(p, time_col="timestamp", time_unit="s")
        assert (x.timestamps.tolist(), x.time_unit) == (values, "s")
    from twotower.data import Interactions
    with pytest.warns(UserWarning, match=rf"`timestamps`: times read as {unit}"):
        x = Interactions.from_ids(["a", "b", "c"], [1, 2, 3], timestamps=np.array(values))
    assert (x.timestamps.tolist(), x.time_unit) == (values, short)
    # whole seconds in a finer unit are kept as seconds: the coarsest unit that holds them
    whole = [v - v % {"ms": 10**3, "us": 10**6, "ns": 10**9}[short] for v in values]
    x = Interactions.from_ids(["a", "b", "c"], [1, 2, 3], timestamps=whole, time_unit=short)
    assert (x.timestamps.tolist(), x.time_unit) == ([1700000000, 1700000001, 1700000002], "s")


def test_yyyymmdd_times_are_read_as_dates(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("user_id,item_id,timestamp\nu1,i1,20240301\nu1,i2,20231231\nu2,i1,20240229\n")
    with pytest.warns(UserWarning, match=r"times read as YYYYMMDD dates \(e\.g\. 20240301 = "
                                         r"2024-03-01T00:00:00Z; midnight UTC\)"):
        x = read_interactions(p, time_col="timestamp")
    day = 86400
    assert x.timestamps.tolist() == [1709251200, 1709251200 - 61 * day, 1709251200 - day]
    # one that is no date: refused in auto (most are dates: a typo), naming its line
    p.write_text("user_id,item_id,timestamp\nu1,i1,20240301\nu1,i2,20240231\nu2,i1,20240229\n")
    with pytest.raises(DataError, match=r"t\.csv, line 3, column 'timestamp': the times look "
                                        r"like dates written YYYYMMDD \(2 of 3 are\), but "
                                        r"20240231 is none; .*time_unit \(--time-unit\) s"):
        read_interactions(p, time_col="timestamp")
    with pytest.raises(DataError, match=r"line 3, column 'timestamp': expected a date written "
                                        r"YYYYMMDD \(e\.g\. 20240301\), got 20240231"):
        read_interactions(p, time_col="timestamp", time_unit="yyyymmdd")
    assert read_interactions(p, time_col="timestamp", time_unit="s").timestamps.tolist() == [
        20240301, 20240231, 20240229]
    # seconds and small counters stay as they are
    p.write_text("user_id,item_id,timestamp\nu1,i1,3\nu1,i2,1\nu2,i1,874965758\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_interactions(p, time_col="timestamp").timestamps.tolist() == [
            3, 1, 874965758]


def test_time_unit_is_checked_and_dated_columns_carry_their_own(tmp_path):
    from twotower.data import Interactions
    from twotower.errors import ConfigError
    p = tmp_path / "t.csv"
    p.write_text("user_id,item_id,timestamp\nu1,i1,2024-03-01\nu1,i2,2024-03-02T10:00:00+01:00\n")
    with pytest.raises(ConfigError, match=r"time_unit must be one of auto, s, ms, us, ns, "
                                          r"yyyymmdd .*got 'days'"):
        read_interactions(p, time_col="timestamp", time_unit="days")
    # ISO 8601 text, and Parquet timestamp columns (zoned or not), carry their own unit: a
    # unit stated for them is never read, and refused naming the column (it was ignored
    # without a word); auto is the default
    with pytest.raises(ConfigError, match=r"t\.csv, column 'timestamp': time_unit "
                                          r"\(--time-unit\) ms is never read: the column "
                                          r"holds ISO 8601 text \(e\.g\. '2024-03-01'\)"):
        read_interactions(p, time_col="timestamp", time_unit="ms")
    assert read_interactions(p, time_col="timestamp", time_unit="auto").timestamps.tolist() == [
        1709251200, 1709370000]
    q = tmp_path / "t.parquet"
    stamps = pd.to_datetime(["2024-03-01 00:00", "2024-03-02 10:00"])
    for col in (stamps, stamps.tz_localize("Europe/Paris"), stamps.as_unit("ms")):
        pd.DataFrame({"user_id": [1, 2], "item_id": [3, 4], "timestamp": col}).to_parquet(q)
        got = read_interactions(q, time_col="timestamp").timestamps.tolist()
        shift = 3600 if getattr(col, "tz", None) is not None else 0
        assert got == [1709251200 - shift, 1709373600 - shift]
        with pytest.raises(ConfigError, match=r"column 'timestamp': time_unit \(--time-unit\) "
                                              r"s is never read: the column holds a timestamp "
                                              r"column \(datetime64\["):
            read_interactions(q, time_col="timestamp", time_unit="s")
    # the library's: datetimes and ISO text given to from_ids
    for times in (stamps, ["2024-03-01", "2024-03-02T10:00"], stamps.to_pydatetime().tolist()):
        with pytest.raises(ConfigError, match=r"`timestamps`: time_unit \(--time-unit\) ns is "
                                              r"never read"):
            Interactions.from_ids([1, 2], [3, 4], timestamps=times, time_unit="ns")
        assert Interactions.from_ids([1, 2], [3, 4], timestamps=times).timestamps.tolist() == [
            1709251200, 1709373600]
    # no timestamps at all: a unit stated for them is never read either, refused as
    # read_interactions refuses it without a time column (it was ignored without a word)
    for unit in ("ms", "s"):
        with pytest.raises(ConfigError, match=rf"`timestamps`: time_unit {unit} is never read: "
                                              r"no timestamps are given \(None\)"):
            Interactions.from_ids([1, 2], [3, 4], time_unit=unit)
    with pytest.raises(ConfigError, match=r"time_unit must be one of auto.*got 'days'"):
        Interactions.from_ids([1, 2], [3, 4], time_unit="days")
    x = Interactions.from_ids([1, 2], [3, 4], time_unit="AUTO")
    assert x.timestamps is None and x.time_unit == "s"


def test_yyyymmdd_dates_agree_with_pandas_on_every_day_and_refuse_non_dates():
    """The dates' day count is integer arithmetic (a datetime parse took 4.4 s per 10M
    rows): every day of 1900-2099 against pandas, and the days that do not exist."""
    from twotower.data.interactions import _yyyymmdd_seconds
    days = pd.date_range("1900-01-01", "2099-12-31", freq="D")
    ints = np.asarray(days.year * 10000 + days.month * 100 + days.day, dtype=np.int64)
    want = (days - pd.Timestamp(0)).total_seconds().to_numpy()
    np.testing.assert_array_equal(_yyyymmdd_seconds(ints), want)
    np.testing.assert_array_equal(_yyyymmdd_seconds(ints.astype(np.float64)), want)
    none = np.array([20240230, 20230229, 19000229, 20240431, 20241301, 20240001, 20240100,
                     2024031, 20240301.5])
    assert np.isnan(_yyyymmdd_seconds(none)).all()
    assert _yyyymmdd_seconds(np.array([20000229]))[0] == 951782400.0  # 2000: a leap year


def test_an_items_id_swallowing_lines_through_an_unclosed_quote_is_warned_of(tmp_path):
    """`"SKU-20,Broken` with its closing quote lost read the next lines, up to the next
    quote, as one item id: those items lost their metadata, said only as "no row there"."""
    from twotower.data.readers import read_item_info
    p = tmp_path / "items.csv"
    p.write_text('item_id,title\na,A\n"SKU-20,Broken\nb,B\nc,"C, the ""best"""\nd,D\n')
    with pytest.warns(UserWarning, match=r"--items: .*items.csv, line 3, column 'item_id': an "
                      r"item id holds a line break \('SKU-20,Broken\\nb,B\\nc,C'\): a quote "
                      "opened in this field is closed only on a later line"):
        info = read_item_info(p, id_col="item_id")
    assert "a" in info.index and "d" in info.index
    q = tmp_path / "ok.csv"  # a quoted line break in a title is no id's
    q.write_text('item_id,title\na,"two\nlines"\nb,B\n')
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_item_info(q, id_col="item_id").loc["a", "title"] == "two\nlines"


def test_a_repeated_header_line_is_refused_naming_its_line(tmp_path):
    # two logs joined with `cat a.csv b.csv`: the second header was read as a user
    # 'customer' with an item 'sku', silently (text ids), or turned integer ids into text
    p = tmp_path / "joined.csv"
    p.write_text("customer,sku\nC-1,S-1\nC-2,S-2\n\ncustomer,sku\nC-3,S-1\n")
    with pytest.raises(DataError, match=r"joined\.csv, line 5: the header line again "
                                        r"\('customer', 'sku'\)"):
        read_interactions(p, user_col="customer", item_col="sku")
    p.write_text("user_id,item_id,rating\n1,10,4\n user_id , item_id ,rating\n2,11,5\n")
    with pytest.raises(DataError, match=r"line 3: the header line again"):
        read_interactions(p, rating_col="rating")
    # two files saved with a byte-order mark (Excel): the second one's starts its line
    p.write_bytes("\ufeffcustomer,sku\nC-1,S-1\n\ufeffcustomer,sku\nC-3,S-1\n".encode())
    with pytest.raises(DataError, match=r"line 3: the header line again"):
        read_interactions(p, user_col="customer", item_col="sku")
    # an id that is a column's name, beside an id that is not, is an id
    p.write_text("customer,sku\ncustomer,S-1\nC-2,sku\n")
    x = read_interactions(p, user_col="customer", item_col="sku")
    assert x.user_vocab.ids.tolist() == ["C-2", "customer"]


def test_a_repeated_header_line_in_an_items_file_is_refused(tmp_path):
    (tmp_path / "r.csv").write_text("user_id,item_id\n1,10\n2,11\n")
    (tmp_path / "items.csv").write_text("item_id,title\n10,Ten\nitem_id,title\n11,Eleven\n")
    with pytest.raises(DataError, match=r"--items: .*items\.csv, line 3: the header line "
                                        r"again \('item_id', 'title'\)"):
        read_interactions(tmp_path / "r.csv", items=tmp_path / "items.csv")


def test_integer_ids_beyond_int64_are_read_as_text_with_a_warning(tmp_path):
    """A Parquet uint64 id column holding 2**63 or more turned every id into text ('2',
    '3') without a word (20 digits: "not plain integers"); it is said, naming the column
    and the first such id. uint64 ids within int64 stay integers, without a warning."""
    p = tmp_path / "u.parquet"
    big = np.array([2, 3, 2**63 + 5, 2**64 - 1], np.uint64)
    pd.DataFrame({"user_id": big, "item_id": big[:2].repeat(2)}).to_parquet(p)
    with pytest.warns(UserWarning, match=r"u\.parquet, column 'user_id': 2 of 4 ids are "
                                         r"integers beyond int64 \(first: 9223372036854775813, "
                                         r"data row 3\), so every id of the column is read as "
                                         "text"):
        x = read_interactions(p)
    assert sorted(x.user_vocab.ids.tolist()) == sorted(map(str, big.tolist()))
    assert x.item_vocab.is_int and x.item_vocab.ids.tolist() == [2, 3]
    (tmp_path / "c.csv").write_text("user_id,item_id\n5,1\n-99999999999999999999,2\n6,2\n")
    with pytest.warns(UserWarning, match=r"column 'user_id': 1 of 3 ids are integers beyond "
                                         r"int64 \(first: -99999999999999999999, data row 2\)"):
        assert not read_interactions(tmp_path / "c.csv").user_vocab.is_int
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pd.DataFrame({"user_id": big[:2], "item_id": big[:2]}).to_parquet(p)
        assert read_interactions(p).user_vocab.ids.tolist() == [2, 3]


def test_negative_times_are_read_as_before_1970_with_a_warning(tmp_path):
    """A time of -1 meaning "unknown" was read, without a word, as the oldest event (the
    order of times is all a model reads of them): it is still read (times before 1970 are
    times), with one warning naming the file, the column, how many and the first line."""
    import warnings
    p = tmp_path / "r.csv"
    p.write_text("user_id,item_id,ts\n1,10,1700000000\n1,11,-1\n2,10,1700000100\n"
                 "2,12,-5\n")
    with pytest.warns(UserWarning) as caught:
        x = read_interactions(p, time_col="ts")
    said = [str(w.message) for w in caught if "negative" in str(w.message)]
    assert said == [f"--data: {p}, column 'ts': 2 of 4 times are negative (first: -1, line "
                    "3): they are read as times before 1970, so those events come before "
                    "every other; if a negative time means unknown, drop those rows or give "
                    "them their times"], said
    assert x.timestamps.tolist() == [1700000000, -1, 1700000100, -5]
    q = tmp_path / "r.parquet"
    pd.DataFrame({"user_id": [1, 2, 3], "item_id": [5, 6, 7],
                  "timestamp": np.array([3, -7, 9], np.int64)}).to_parquet(q)
    with pytest.warns(UserWarning, match=r"r\.parquet, column 'timestamp': 1 of 3 times are "
                                         r"negative \(first: -7, row 2 \(1-based\)\)"):
        read_interactions(q, time_col="timestamp", time_unit="s")
    with warnings.catch_warnings():  # times at or after 1970, or ISO text: no word
        warnings.simplefilter("error")
        p.write_text("user_id,item_id,ts\n1,10,0\n1,11,1700000000.5\n")
        read_interactions(p, time_col="ts")
        p.write_text("user_id,item_id,ts\n1,10,1969-07-20T20:17:00Z\n1,11,2024-03-01\n")
        read_interactions(p, time_col="ts")


@pytest.mark.parametrize("times, first", [
    (np.array([1700000000, -1, 1700000100, -5]), "-1"),
    ([1700000000.0, -1.5, 1700000100.0, -5.0], "-1.5"),
    (["1700000000", " -1 ", "1700000100", "-5"], "-1"),  # numbers as text
])
def test_from_ids_warns_of_negative_times_as_the_readers_do(times, first):
    """The file readers warn of negative times (a -1 meaning "unknown" becomes the oldest
    event); Interactions.from_ids took them without a word. One warning per call, naming
    the argument, the count and the first position; times are kept as given."""
    import datetime
    import warnings

    from twotower.data import Interactions
    with pytest.warns(UserWarning) as caught:
        x = Interactions.from_ids([1, 1, 2, 2], [10, 11, 10, 12], timestamps=times,
                                  time_unit="s")
    said = [str(w.message) for w in caught]
    assert said == [f"`timestamps`: 2 of 4 times are negative (first: {first}, "
                    "`timestamps`[1]): they are read as times before 1970, so those events "
                    "come before every other; if a negative time means unknown, drop those "
                    "rows or give them their times"], said
    assert x.timestamps[0] > 0 > x.timestamps[1]
    with warnings.catch_warnings():  # at or after 1970, datetimes, ISO text: no word
        warnings.simplefilter("error")
        Interactions.from_ids([1, 2], [10, 11], timestamps=[0, 1700000000])
        Interactions.from_ids([1, 2], [10, 11], timestamps=["1969-07-20T20:17:00Z",
                                                            "2024-03-01"])
        Interactions.from_ids([1, 2], [10, 11], timestamps=[datetime.datetime(1969, 7, 20),
                                                            datetime.datetime(2024, 3, 1)])
        Interactions.from_ids([1, 2], [10, 11],
                              timestamps=pd.to_datetime(["1969-07-20", "2024-03-01"]))


def test_a_parquet_genres_list_column_and_null_genres_are_read_as_genres(tmp_path):
    """A Parquet list column of genres became one genre, its text "['Action' 'Comedy']",
    and a null cell the genre 'None' (text column) or 'nan' (a list or number column)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from twotower.models.features import feature_matrix
    (tmp_path / "r.csv").write_text("user_id,item_id\n1,7\n2,8\n3,9\n")
    pq.write_table(pa.table({"item_id": [7, 8, 9],
                             "genres": pa.array([["Action", "Comedy"], [], None])}),
                   tmp_path / "list.parquet")
    x = read_interactions(tmp_path / "r.csv", items=tmp_path / "list.parquet")
    assert x.item_info["genres"].tolist() == [["Action", "Comedy"], [], []]
    _, names = feature_matrix(x.item_info, ["genres"], x.n_items, what="item")
    assert names == ["genres=Action", "genres=Comedy"]
    pq.write_table(pa.table({"item_id": [7, 8, 9], "genres": pa.array(["Drama|War", None, ""])}),
                   tmp_path / "text.parquet")
    x = read_interactions(tmp_path / "r.csv", items=tmp_path / "text.parquet")
    assert x.item_info["genres"].tolist() == [["Drama", "War"], [], []]


def test_float_ids_a_float_cannot_hold_exactly_warn_that_they_are_read_as_text(tmp_path):
    """A float id column of whole numbers with one of 2**53 or more (or inf) became text
    ids ('1.2345678901234568e+18', and every other id '2.0') with no word; the whole
    numbers below 2**53 alone stay integer ids."""
    p = tmp_path / "f.parquet"
    pd.DataFrame({"user_id": [1, 2, 3], "item_id": [2.0, 1234567890123456789.0, 3.0]}
                 ).to_parquet(p)
    with pytest.warns(UserWarning, match=r"column 'item_id': item ids are floats of 2\*\*53 "
                                         r"or more.*\(1\.2345678901234568e\+18 at row 2 "
                                         r"\(1-based\);.*read as text"):
        x = read_interactions(p)
    assert sorted(x.item_vocab.ids.tolist()) == ["1.2345678901234568e+18", "2.0", "3.0"]
    inf = tmp_path / "inf.parquet"
    pd.DataFrame({"user_id": [float("inf"), 2.0], "item_id": [1, 2]}).to_parquet(inf)
    with pytest.warns(UserWarning, match=r"column 'user_id': user ids are floats.*\(inf at "
                                         r"row 1 \(1-based\)"):
        read_interactions(inf)


@pytest.mark.parametrize("cells", [[[1, 2], [3]], [[], [3]], [[4], [3]]])
def test_a_parquet_list_column_read_as_ratings_or_times_is_refused_naming_its_row(tmp_path,
                                                                                  cells):
    """A list column named as the rating or time column was a raw ValueError (the truth
    value of an array) for a list of 0 or 2+ values, and "got 4" for a list of one."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    p = tmp_path / "l.parquet"
    pq.write_table(pa.table({"user_id": [1, 2], "item_id": [3, 4], "rating": cells,
                             "timestamp": cells}), p)
    shown = re.escape(f"got a list, {cells[0]}")
    with pytest.raises(DataError, match=rf"row 1 \(1-based\), column 'rating': expected a "
                                        rf"finite number, {shown}"):
        read_interactions(p, rating_col="rating")
    with pytest.raises(DataError, match=rf"row 1 \(1-based\), column 'timestamp': expected a "
                                        rf"time, {shown}"):
        read_interactions(p, time_col="timestamp")
