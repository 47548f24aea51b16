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
