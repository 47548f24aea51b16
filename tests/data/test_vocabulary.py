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
