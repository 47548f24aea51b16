import re

import numpy as np
import pytest

from twotower.data import Vocabulary
from twotower.errors import DataError, UnknownIdError


@pytest.mark.parametrize("ids", [[5, 3, 9], ["b", "a", "c"]])
def test_round_trip(tmp_path, ids):
    v = Vocabulary(ids, name="item")
    v.save(tmp_path / "v.json")
    w = Vocabulary.load(tmp_path / "v.json")
    assert w == v
    assert w.lookup(ids).tolist() == [0, 1, 2]
    assert w.ids_of([2, 0]).tolist() == [ids[2], ids[0]]


def test_unknown_id_is_named():
    v = Vocabulary([1, 2, 3], name="user")
    with pytest.raises(UnknownIdError, match=r"unknown user id 7"):
        v.lookup([1, 7])
    assert v.lookup_or([1, 7]).tolist() == [0, -1]


def test_int_vocab_accepts_string_digits_and_str_vocab_accepts_ints():
    assert Vocabulary([10, 20]).index_of("20") == 1
    assert Vocabulary(["10", "x"]).index_of(10) == 0


def test_text_ids_are_found_with_spaces_around_them_as_int_ids_are():
    """The readers strip ids, so `--user " 009 "` means the file's "009" (an int run took
    " 26" already); an id that really has the spaces (a Python-built vocabulary) wins."""
    v = Vocabulary(["009", "x y"], name="item")
    assert v.index_of(" 009 ") == 0 and v.index_of("\t009") == 0
    assert v.lookup_or([" x y ", " 09"]).tolist() == [1, -1]
    assert Vocabulary([" 009", "009"]).index_of(" 009") == 0
    assert Vocabulary([26, 7]).index_of(" 26") == 0
    with pytest.raises(UnknownIdError, match="unknown item id ' 010 '"):
        v.index_of(" 010 ")


def test_rejects_duplicates_and_mixed_types():
    with pytest.raises(DataError, match="unique"):
        Vocabulary([1, 1])
    with pytest.raises(DataError):
        Vocabulary(np.array([1.5, 2.5]))


def test_int_vocabulary_reads_id_text_only_in_plain_form():
    """Only the plain ASCII form of an int is an int id: not `--5`, `007`, `+7`, other
    scripts' digits (which `int()` would read) or a bool."""
    v = Vocabulary(np.array([5, 7, 42, 11]), "user")
    assert v.index_of("42") == 2 and v.index_of(" 7 ") == 1 and v.index_of(np.int32(5)) == 0
    for bad in ("--5", "007", "+7", "\u0664\u0662", "\uff14\uff12", "1\u0661", True, "²"):
        with pytest.raises(UnknownIdError):
            v.index_of(bad)
        assert bad not in v


def test_bools_are_not_ids_and_indices_are_range_checked():
    """The bool check could not fail on a vocabulary without 0 and 1; ids_of had no test
    of its range (index -1 read the last id)."""
    v = Vocabulary(np.array([0, 1, 7]), "user")
    for bad in (True, False):
        with pytest.raises(UnknownIdError):
            v.index_of(bad)
    assert v.index_of(1) == 1 and v.index_of(np.int64(0)) == 0
    assert v.ids_of([2, 0]).tolist() == [7, 0]
    for bad in ([-1], [3]):
        with pytest.raises(DataError, match=rf"user index {bad[0]} out of range \[0, 3\)"):
            v.ids_of(bad)


def test_nineteen_digit_int_ids_are_found_from_their_text(tmp_path):
    """int64 ids have up to 19 digits; id text was read as an int id only up to 18, so a
    user with a 19-digit id could not be asked for (HTTP, --user). Text beyond int64 keeps
    a column as text ids."""
    from twotower.data import read_interactions
    big = 1234567890123456789
    v = Vocabulary(np.array([big, 5]), "user")
    assert v.index_of(str(big)) == 0 and v.index_of(f" {big} ") == 0
    (tmp_path / "a.csv").write_text(f"user_id,item_id\n{big},1\n-{big},2\n")
    x = read_interactions(tmp_path / "a.csv")
    assert x.user_vocab.is_int and sorted(x.user_vocab.ids.tolist()) == [-big, big]
    (tmp_path / "b.csv").write_text("user_id,item_id\n9999999999999999999,1\n5,2\n")
    x = read_interactions(tmp_path / "b.csv")
    assert not x.user_vocab.is_int
    assert sorted(x.user_vocab.ids.tolist()) == ["5", "9999999999999999999"]


def test_an_empty_vocabulary_says_so():
    """It said "ids must be integers or strings, got dtype float64"."""
    with pytest.raises(DataError, match=r"user vocabulary: no ids"):
        Vocabulary([], name="user")


def test_an_empty_id_is_refused_wherever_a_vocabulary_is_made(tmp_path):
    """A vocabulary holding "" was taken (given to from_ids or a stream, or loaded), and
    that id became an item nobody can ask for: the readers refuse an empty cell and the
    HTTP API cannot ask for one."""
    from twotower.errors import ArtifactError
    with pytest.raises(DataError, match=r"user vocabulary: `ids`\[1\] is an empty id "
                                        r"\(''\); an id is an integer or a string of at "
                                        "least one character"):
        Vocabulary(["a", "", "b"], name="user")
    with pytest.raises(DataError, match=r"item vocabulary: `ids`\[0\] is an empty id"):
        Vocabulary(np.array(["", "x"]), name="item")
    (tmp_path / "items.json").write_text('{"name": "item", "kind": "str", "ids": ["x", ""]}')
    with pytest.raises(ArtifactError, match=r"items.json is corrupt: item vocabulary: "
                                            r"`ids`\[1\] is an empty id"):
        Vocabulary.load(tmp_path / "items.json")
    assert Vocabulary([0, 1]).lookup(["0"]).tolist() == [0]  # int ids: no such check


@pytest.mark.parametrize("text, says", [
    ('{"kind": "int", "ids": [1.5, 2]}', "holds int64 ids, got 1.5"),  # was read as 1
    ('{"kind": "int", "ids": ["a", "b"]}', "holds int64 ids, got 'a'"),  # ValueError
    ('{"kind": "int", "ids": [1e30]}', "holds int64 ids, got 1e+30"),  # OverflowError
    ('{"kind": "int", "ids": [true, 2]}', "holds int64 ids, got True"),
    ('{"kind": "int", "ids": "123"}', "ids must be a list, got str"),
    ('{"kind": "int", "ids": [1, 2, 2]}', "ids are not unique"),  # DataError, no file
    ('{"kind": "str", "ids": [1, "a"]}', "all int or all str"),
])
def test_a_vocabulary_file_of_the_wrong_form_is_refused_naming_it(tmp_path, text, says):
    from twotower.errors import ArtifactError
    (tmp_path / "users.json").write_text(text)
    with pytest.raises(ArtifactError, match="users.json is corrupt: .*" + re.escape(says)):
        Vocabulary.load(tmp_path / "users.json")


@pytest.mark.parametrize("ids", [[7, 3, 5], ["u7", "u3", "u5"]])
def test_ids_are_read_only_and_the_callers_array_stays_writable(ids):
    # `ids` was the vocabulary's own array: sorting it in place (ids.sort()) changed what
    # ids_of (and so recommend_ids) returned while lookup still read the old order
    given = np.array(ids, dtype=object if isinstance(ids[0], str) else np.int64)
    v = Vocabulary(given, name="user")
    with pytest.raises(ValueError, match="read-only"):
        v.ids.sort()
    assert v.ids_of([0, 1, 2]).tolist() == ids and v.lookup(ids).tolist() == [0, 1, 2]
    given[0] = given[1]  # the caller's array is theirs: copied, not frozen
    assert v.ids.tolist() == ids
    out = v.ids_of([0])
    out[0] = given[2]  # what ids_of returns is a copy
    assert v.ids.tolist() == ids


def test_an_unknown_id_held_in_another_unicode_form_is_said_so():
    """An id typed in NFD (macOS input: "Zoe\u0308") against a log holding the NFC form
    ("Zo\u00eb") was "unknown" with no hint. Ids stay exact; the error names the form."""
    from twotower.data.vocabulary import other_form_hint
    v = Vocabulary(np.array(["Zo\u00eb", "Rene\u0301", "u2"], dtype=object), "user")
    with pytest.raises(UnknownIdError, match="the model holds 'Zo\u00eb' written in another "
                                             r"Unicode form \(NFC\)$"):
        v.index_of("Zoe\u0308")
    assert "Zoe\u0308" not in v and v.lookup_or(["Zoe\u0308"]).tolist() == [-1]  # exact
    assert other_form_hint(v, "Ren\u00e9") == (  # the NFD form held, asked in NFC
        "; the model holds 'Rene\u0301' written in another Unicode form (NFD)")
    with pytest.raises(UnknownIdError) as caught:
        v.index_of("Zoe")
    assert "Unicode" not in str(caught.value)
    assert other_form_hint(Vocabulary(np.array([1, 2]), "user"), "1") == ""
    # spaces around an id are left out by the lookup (as the readers and the CLI strip
    # ids), so they are no Unicode-form difference: "Zo\u00eb " was said to be held "in
    # another Unicode form (NFC)" though its form is the held one (and it is found)
    for key in ("Zo\u00eb ", " Zo\u00eb"):
        assert other_form_hint(v, key) == "" and v.index_of(key) == 0, key
    assert other_form_hint(v, "Zoe\u0308 ") == (  # the form differs (the space is no matter)
        "; the model holds 'Zo\u00eb' written in another Unicode form (NFC)")
