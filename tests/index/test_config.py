from __future__ import annotations

import pytest

from twotower.errors import ConfigError
from twotower.index import ExactIndex, HNSWIndex, IndexConfig, IVFIndex, make_index


def test_json_round_trip():
    cfg = IndexConfig(kind="hnsw", metric="cosine", hnsw_m=16, ef_construction=80,
                      ef_search=32, nlist=100, nprobe=10, chunk_size=1024, batch_size=64,
                      mips_to_l2=False, threads=1, seed=3)
    assert IndexConfig.from_json(cfg.to_json()) == cfg
    assert IndexConfig.from_dict(cfg.to_dict()) == cfg
    assert IndexConfig.from_json(IndexConfig().to_json()) == IndexConfig()


@pytest.mark.parametrize("changes, name", [
    ({"kind": "annoy"}, "kind"), ({"metric": "l2"}, "metric"), ({"ef_search": 0}, "ef_search"),
    ({"hnsw_m": 1}, "hnsw_m"), ({"chunk_size": 0}, "chunk_size"), ({"nprobe": -1}, "nprobe"),
    ({"batch_size": 2.5}, "batch_size"), ({"mips_to_l2": "yes"}, "mips_to_l2"),
    ({"nlist": 4, "nprobe": 8}, "nprobe"), ({"hnsw_exact_head": 1.5}, "hnsw_exact_head"),
])
def test_invalid_values_name_the_field(changes, name):
    with pytest.raises(ConfigError, match=f"IndexConfig.{name}"):
        IndexConfig(**changes)


def test_unknown_key_rejected():
    with pytest.raises(ConfigError, match="efsearch"):
        IndexConfig.from_dict({"efsearch": 3})


def test_make_index_dispatches_on_kind():
    assert type(make_index()) is ExactIndex
    assert type(make_index(IndexConfig(kind="hnsw"))) is HNSWIndex
    assert type(make_index(kind="ivf", nprobe=4)) is IVFIndex
    assert make_index(kind="ivf", nprobe=4).config.nprobe == 4


def test_ivf_nlist_above_the_item_count_is_a_config_error():
    # faiss' k-means stops with a bare RuntimeError when there are fewer items than lists
    import numpy as np
    items = np.random.default_rng(0).standard_normal((50, 8)).astype("float32")
    with pytest.raises(ConfigError, match=r"IndexConfig.nlist \(--nlist\) must be at most "
                                          r"the number of items indexed, 50 .* got 51"):
        make_index(kind="ivf", nlist=51).build(items)
    assert make_index(kind="ivf", nlist=50).build(items).nlist == 50
