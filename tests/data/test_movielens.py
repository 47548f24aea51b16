import numpy as np
import pytest

from twotower.data import read_movielens_100k
from twotower.errors import DataError


def test_reader_counts_and_titles(ml100k):
    assert len(ml100k) == 100_000
    assert ml100k.n_users == 943
    assert ml100k.n_items == 1682
    assert ml100k.titles()[ml100k.item_vocab.index_of(1)] == "Toy Story (1995)"
    star = ml100k.item_vocab.index_of(50)
    assert ml100k.titles()[star] == "Star Wars (1977)"
    assert set(np.unique(ml100k.ratings)) == {1, 2, 3, 4, 5}
    assert ml100k.timestamps.min() > 800_000_000
    assert "Sci-Fi" in ml100k.item_info.loc[star, "genres"]
    assert ml100k.user_info.loc[ml100k.user_vocab.index_of(1), "occupation"] == "technician"


def test_reader_names_missing_file(tmp_path):
    with pytest.raises(DataError, match="u.data"):
        read_movielens_100k(tmp_path)


def test_reader_rejects_malformed_u_data(tmp_path, ml100k_dir):
    (tmp_path / "u.data").write_text("1\t2\t3\n")
    (tmp_path / "u.item").write_bytes((ml100k_dir / "u.item").read_bytes())
    with pytest.raises(DataError, match="u.data"):
        read_movielens_100k(tmp_path)


def test_reader_rejects_truncated_copies(tmp_path, ml100k_dir):
    data = (ml100k_dir / "u.data").read_bytes()
    item = (ml100k_dir / "u.item").read_bytes()
    (tmp_path / "u.data").write_bytes(data[:1_000_003])  # cut mid-line: still 4 columns
    (tmp_path / "u.item").write_bytes(item)
    with pytest.raises(DataError, match=r"u\.data: MovieLens 100k has 100,000 ratings, this "
                                        r"file 50,"):
        read_movielens_100k(tmp_path)
    (tmp_path / "u.data").write_bytes(data)
    (tmp_path / "u.item").write_bytes(item[:len(item) // 2])
    with pytest.raises(DataError, match=r"u\.item: MovieLens 100k describes 1,682 movies"):
        read_movielens_100k(tmp_path)


def test_titles_carry_no_trailing_space(ml100k):
    titles = ml100k.titles()
    assert all(t == t.strip() for t in titles)


def test_a_line_cut_short_is_named_without_numpys_advice(tmp_path, ml100k_dir):
    """A copy cut inside a line: numpy's message advised `usecols`, which does not apply."""
    (tmp_path / "u.data").write_bytes((ml100k_dir / "u.data").read_bytes()[:100_000])
    (tmp_path / "u.item").write_bytes((ml100k_dir / "u.item").read_bytes())
    with pytest.raises(DataError, match=r"malformed \(line 5118: 2 tab-separated fields, not "
                                        r"4: .*\); MovieLens 100k's u.data has 100,000 "
                                        r"lines") as err:
        read_movielens_100k(tmp_path)
    assert "usecols" not in str(err.value)


@pytest.mark.parametrize("edit, message", [
    (lambda line: line + b"|0", r"line 7: 25 '\|'-separated fields, not 24"),
    (lambda line: line[:-1] + b"x", r"line 7: not 24 fields ending in 19 genre flags of 0 or 1"),
    (lambda line: b"x" + line, r"line 7: item id 'x7' is not an integer"),
], ids=["25 fields", "flag x", "id x7"])
def test_a_bad_u_item_line_is_named_not_a_traceback(tmp_path, ml100k_dir, edit, message):
    """A u.item line of 25 fields or a non-integer id raised pandas' ParserError or a bare
    ValueError; a genre flag 'x' was read as set. Each is now a DataError naming the line
    and the expected form."""
    lines = (ml100k_dir / "u.item").read_bytes().split(b"\n")
    lines[6] = edit(lines[6])
    (tmp_path / "u.item").write_bytes(b"\n".join(lines))
    (tmp_path / "u.data").write_bytes((ml100k_dir / "u.data").read_bytes())
    with pytest.raises(DataError, match=message) as err:
        read_movielens_100k(tmp_path)
    assert str(tmp_path / "u.item") in str(err.value)
    assert "24 '|'-separated fields: id|title|" in str(err.value)


@pytest.mark.parametrize("bom", [b"", b"\xef\xbb\xbf"], ids=["utf-8", "utf-8 with BOM"])
def test_a_copy_saved_as_utf8_keeps_its_titles(tmp_path, ml100k_dir, ml100k, bom):
    """u.item saved again as UTF-8 was read as latin-1: 'MisÃ©rables, Les (1995)', which
    `similar --item` could not find by its own name (and a byte-order mark failed as an id)."""
    text = (ml100k_dir / "u.item").read_bytes().decode("latin-1")
    (tmp_path / "u.item").write_bytes(bom + text.encode("utf-8"))
    (tmp_path / "u.data").write_bytes((ml100k_dir / "u.data").read_bytes())
    data = read_movielens_100k(tmp_path)
    assert data.titles()[data.item_vocab.index_of(543)] == "Misérables, Les (1995)"
    assert list(data.titles()) == list(ml100k.titles())


def test_a_u_user_line_of_more_fields_is_named_not_a_traceback(tmp_path, ml100k_dir):
    lines = (ml100k_dir / "u.user").read_bytes().split(b"\n")
    lines[6] += b"|x"
    (tmp_path / "u.user").write_bytes(b"\n".join(lines))
    for name in ("u.data", "u.item"):
        (tmp_path / name).write_bytes((ml100k_dir / name).read_bytes())
    with pytest.raises(DataError, match=r"u\.user: line 7: 6 '\|'-separated fields, not 5; "
                                        r".* 5 '\|'-separated fields: id\|age\|"):
        read_movielens_100k(tmp_path)


def test_a_u_user_id_that_is_not_an_integer_is_named(tmp_path, ml100k_dir):
    """`x|24|M|technician|85711` dropped that user's age, gender and occupation in silence
    (the info table's text id matched no integer user id)."""
    lines = (ml100k_dir / "u.user").read_bytes().split(b"\n")
    lines[2] = b"x" + lines[2][lines[2].index(b"|"):]
    (tmp_path / "u.user").write_bytes(b"\n".join(lines))
    for name in ("u.data", "u.item"):
        (tmp_path / name).write_bytes((ml100k_dir / name).read_bytes())
    with pytest.raises(DataError, match=r"u\.user: line 3: user id 'x' is not an integer"):
        read_movielens_100k(tmp_path)
    x = read_movielens_100k(ml100k_dir)  # the pristine file: every user described
    assert x.user_info["age"].notna().all() and len(x.user_info) == 943


def _copy(ml100k_dir, tmp_path, **edits):
    """The pristine files in tmp_path, each in ``edits`` (``u_item=`` for u.item) replaced
    by the callable's result on its list of lines."""
    for name in ("u.data", "u.item", "u.user"):
        raw = (ml100k_dir / name).read_bytes()
        edit = edits.get(name.replace(".", "_"))
        if edit is not None:
            raw = b"\n".join(edit(raw.split(b"\n")))
        (tmp_path / name).write_bytes(raw)


def _blank_lines_then(bad_line: int, edit):
    """Three blank lines (one ended by CRLF) after line 2, then line ``bad_line`` of
    the file so made edited."""
    def apply(lines):
        lines = lines[:2] + [b"", b"\r", b""] + lines[2:]
        lines[bad_line - 1] = edit(lines[bad_line - 1])
        return lines
    return apply


@pytest.mark.parametrize("name, edit, message", [
    ("u_item", lambda line: b"x" + line, r"u\.item: line 10: item id 'x7' is not an integer"),
    ("u_item", lambda line: line[:-1] + b"x",
     r"u\.item: line 10: not 24 fields ending in 19 genre flags"),
    ("u_item", lambda line: line + b"|0", r"u\.item: line 10: 25 '\|'-separated fields, not 24"),
    ("u_user", lambda line: b"x" + line[line.index(b"|"):],
     r"u\.user: line 10: user id 'x' is not an integer"),
    ("u_user", lambda line: line + b"|x", r"u\.user: line 10: 6 '\|'-separated fields, not 5"),
    ("u_data", lambda line: line + b"\t1", r"u\.data: malformed \(line 10: 5 tab-separated "
                                           r"fields, not 4"),
    ("u_data", lambda line: line.replace(b"\t", b"\tx", 1),
     r"u\.data: malformed \(line 10, column 2: 'x\d+' is not an integer\)"),
], ids=["item id", "item flag", "item fields", "user id", "user fields", "data fields",
        "data value"])
def test_errors_name_the_files_line_past_blank_lines(tmp_path, ml100k_dir, name, edit,
                                                      message):
    """Blank lines are skipped, and the line named was the data row's number: line 7 for
    the file's line 10 here (numpy's 'row 6', 0-based, for u.data)."""
    _copy(ml100k_dir, tmp_path, **{name: _blank_lines_then(10, edit)})
    with pytest.raises(DataError, match=message):
        read_movielens_100k(tmp_path)


def test_blank_lines_alone_are_read_past(tmp_path, ml100k_dir, ml100k):
    blank = _blank_lines_then(1, lambda line: line)
    _copy(ml100k_dir, tmp_path, u_data=blank, u_item=blank, u_user=blank)
    data = read_movielens_100k(tmp_path)
    assert list(data.titles()) == list(ml100k.titles()) and len(data) == len(ml100k)
    assert data.user_info.equals(ml100k.user_info)


def test_a_u_user_first_line_of_more_fields_is_named(tmp_path, ml100k_dir):
    """A first line of 6 fields made pandas take every line's first field as an index: the
    ages became the user ids (a warning on repeated ids, the users' info scrambled)."""
    _copy(ml100k_dir, tmp_path, u_user=lambda lines: [lines[0] + b"|x", *lines[1:]])
    with pytest.raises(DataError, match=r"u\.user: line 1: 6 '\|'-separated fields, not 5"):
        read_movielens_100k(tmp_path)


def test_a_title_opening_with_a_quote_is_read_as_is(tmp_path, ml100k_dir):
    """GroupLens quotes nothing; a title opening with '"' was taken as a quoted field that
    swallowed the following lines ('EOF inside string starting at row 6')."""
    def quote(lines):
        fields = lines[6].split(b"|")
        fields[1] = b'"' + fields[1]
        lines[6] = b"|".join(fields)
        return lines
    _copy(ml100k_dir, tmp_path, u_item=quote)
    data = read_movielens_100k(tmp_path)
    assert data.titles()[data.item_vocab.index_of(7)] == '"Twelve Monkeys (1995)'
