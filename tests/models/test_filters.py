"""Allow- and deny-lists of external item ids on the model's lists (``recommend_ids``,
``similar_ids``, the from-history path), across the index kinds a run can use: no returned
item is ever denied, every one is allowed, seen and untrained items stay out, and rows are
padded when fewer than k qualify."""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np
import pytest

from tests.index.conftest import EXACT_SMALL
from twotower.data import Interactions
from twotower.errors import DataError
from twotower.models import ModelConfig, TwoTower

KINDS = ["exact", "hnsw", "ivf"]  # settings under which each is exact on a small catalogue


@pytest.fixture(scope="module")
def model() -> TwoTower:
    """40 users, 60 items (ids 100..159) of which item 999 is in the catalogue but not
    in training (an untrained item, denied by the model itself)."""
    rng = np.random.default_rng(3)
    users = rng.integers(0, 40, 800).tolist() + [1]
    items = (100 + rng.integers(0, 60, 800)).tolist() + [999]
    x = Interactions.from_ids(users, items, ratings=rng.integers(1, 6, 801))
    cfg = ModelConfig(query_tower="id+history", objective="bpr", epochs=1, batch_size=16,
                      embedding_dim=8)
    return TwoTower(cfg).fit(x.take(np.arange(800)), verbose=0)


def _expected(model, users, k, allow, deny, seen=True):
    """The first k of each user's whole ranking (every item, nothing filtered but the
    untrained item) that the filters let through: the reference the filtered search must
    equal."""
    idx = model.user_vocab.lookup(users)
    scores, full = model.recommend(idx, model.n_items)
    ids = model.item_vocab.ids
    out = []
    for r, u in enumerate(idx):
        seen_ids = set(ids[model.seen_items(np.array([u]))[0]].tolist()) if seen else set()
        keep = [ids[i] for i in full[r] if i >= 0 and ids[i] not in deny
                and (allow is None or ids[i] in allow) and ids[i] not in seen_ids]
        out.append(keep[:k] + [None] * (k - len(keep[:k])))
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_no_list_holds_a_denied_or_unallowed_item_on_any_index_kind(model, kind):
    m = model
    m.set_index(EXACT_SMALL[kind])
    rng = np.random.default_rng(7)
    users = m.user_vocab.ids[:25].tolist()
    untrained = m.item_vocab.ids[m.untrained_items()].tolist()
    assert untrained == [999]
    for trial in range(3):
        deny = set(rng.choice(np.arange(100, 160), 20, replace=False).tolist())
        deny |= {"not-an-item", 5000}  # unknown ids: ignored
        allow = set(rng.choice(np.arange(100, 160), 30, replace=False).tolist()) | {999, 7}
        for a in (None, allow):
            for d in (deny, m.prepare_deny(deny)):
                scores, got = m.recommend_ids(users, 8, allow=a, deny=d)
                assert got.shape == (25, 8)
                flat = [v for v in got.ravel().tolist() if v is not None]
                assert not set(flat) & deny and 999 not in flat
                if a is not None:
                    assert set(flat) <= allow
                # the same lists as the whole ranking filtered by hand (seen items out)
                assert got.tolist() == _expected(m, users, 8, a, deny), (kind, trial)
                np.testing.assert_array_equal(np.isneginf(scores), got == None)  # noqa: E711
        # seen items ranked too when asked: the deny list still holds
        got = m.recommend_ids(users, 8, exclude_seen=False, deny=deny)[1]
        assert got.tolist() == _expected(m, users, 8, None, deny, seen=False)


@pytest.mark.parametrize("kind", KINDS)
def test_similar_items_and_history_lists_obey_the_filters(model, kind):
    m = model
    m.set_index(EXACT_SMALL[kind])
    deny = list(range(100, 130))
    allow = list(range(120, 150))
    for item in (101, 125, 140):
        scores, got = m.similar_ids([item], 20, allow=allow + [item], deny=deny)
        row = got[0].tolist()
        listed = [v for v in row if v is not None]
        # never the item itself, even allowed; 120..129 denied: 130..149 but one qualify
        assert item not in listed and set(listed) <= set(range(130, 150))
        assert len(listed) == 20 - (item >= 130) and row[len(listed):] == \
            [None] * (20 - len(listed))
        plain = m.similar_ids([item], 59)[1][0].tolist()  # the unfiltered order
        assert listed == [v for v in plain if v in set(range(130, 150))][:20]
    hist = [m.item_vocab.lookup([101, 102, 131])]
    allow_rows, _ = m.known_items(allow)
    deny_rows, _ = m.known_items(deny)
    for d in (deny_rows, m.prepare_deny(deny)):
        top = m.recommend_from_history(hist, 30, hist, allow=allow_rows, deny=d)[1][0]
        listed = m.item_vocab.ids[top[top >= 0]].tolist()
        assert set(listed) == set(range(130, 150)) - {131}  # history left out, padded
        assert (top[len(listed):] == -1).all()


def test_a_prepared_deny_list_is_prepared_once_per_index_and_follows_a_new_one(model):
    m = model
    m.set_index(EXACT_SMALL["exact"])
    d = m.prepare_deny([100, 101, "gone"])
    assert (d.n_denied, d.n_unknown) == (2, 1)
    m.recommend_ids([0], 5, deny=d)
    first = d._for(m, m._index)
    assert first is d._for(m, m._index)  # prepared once, with the untrained item
    assert first.n_denied == 3
    m.set_index(EXACT_SMALL["hnsw"])  # a new index: prepared again for it
    assert d._for(m, m._index) is not first
    got = m.recommend_ids([0], 59, deny=d)[1].ravel().tolist()
    assert not {100, 101, 999} & set(got)
    other = TwoTower(m.config).fit(Interactions.from_ids([0, 1, 1], [5, 6, 7]), verbose=0)
    with pytest.raises(DataError, match="`deny` was prepared by another model"):
        other.recommend_ids([0], 2, deny=d)


def test_unknown_ids_and_bad_lists_are_explicit(model):
    m = model
    m.set_index(EXACT_SMALL["exact"])
    # unknown deny ids are harmless; an allow-list is read for its known ids
    assert m.recommend_ids([0], 5, deny=["x", 10**12])[1].shape == (1, 5)
    got = m.recommend_ids([0], 5, allow=np.array(["105", "nope"], dtype=object),
                          exclude_seen=False)[1][0].tolist()
    assert got == [105, None, None, None, None]  # "105" is the integer id 105
    assert m.known_items([105, 105, "x", 999])[1] == 1
    with pytest.raises(DataError, match=r"`allow`: none of its 2 item ids is in the "
                                        r"catalogue \(ids are like"):
        m.recommend_ids([0], 5, allow=["x", "y"])
    with pytest.raises(DataError, match=r"`allow` is empty"):
        m.similar_ids([105], 5, allow=[])
    with pytest.raises(DataError, match=r"`deny` must be a list of item ids, got the single "
                                        r"id '105'; pass \['105'\]"):
        m.recommend_ids([0], 5, deny="105")
    with pytest.raises(DataError, match=r"`allow` must hold item ids \(integers or text\), "
                                        r"got \[1, 2\]"):
        m.recommend_ids([0], 5, allow=[[1, 2]])
    with pytest.raises(DataError, match=r"`deny` must be internal item ids in \[0, 61\)"):
        m.recommend(np.array([0]), 5, deny=np.array([61]))


def test_history_lists_by_external_ids_equal_the_index_path(model):
    """``recommend_from_history_ids`` maps the ids once at the boundary: the same lists as
    ``recommend_from_history`` on their indices, history left out unless asked, filters
    by external ids; unknown ids and histories of no trained item are named."""
    from twotower.errors import UnknownIdError
    m = model
    m.set_index(EXACT_SMALL["exact"])
    hists = [[101, 102, 131], [150], [131, 101]]
    rows = [m.item_vocab.lookup(h) for h in hists]
    for leave_out in (True, False):
        scores, got = m.recommend_from_history_ids(hists, 12, exclude_history=leave_out,
                                                   deny=[120, 121])
        ref_s, ref = m.recommend_from_history(rows, 12, rows if leave_out else None,
                                              deny=m.known_items([120, 121])[0])
        assert got.tolist() == [[m.item_vocab.ids[i] if i >= 0 else None for i in r]
                                for r in ref]
        np.testing.assert_array_equal(scores, ref_s)
        assert not set(got.ravel().tolist()) & {120, 121, 999}
        if leave_out:
            assert all(not set(r) & set(h) for r, h in zip(got.tolist(), hists))
    with pytest.raises(UnknownIdError, match=r"histories\[1\]: unknown item id 'nope'"):
        m.recommend_from_history_ids([[101], [102, "nope"]], 5)
    with pytest.raises(UnknownIdError, match=r"histories\[0\]: none of its 1 item ids"):
        m.recommend_from_history_ids([[999]], 5)  # in the catalogue, never trained
    with pytest.raises(DataError, match=r"got a list of 2 single ids \(histories\[0\] is "
                                        r"101\); for one user pass \[history\]"):
        m.recommend_from_history_ids([101, 102], 5)
    # an entry that is no list and no id (it was "a list of 1 single ids"): named, with
    # the form expected
    for bad, got in ((None, "None$"), ({1: 2}, r"a dict \(it iterates over its keys\)"),
                     ([[101], True], "True$")):
        hists = bad if isinstance(bad, list) else [bad]
        at = len(hists) - 1
        with pytest.raises(DataError, match=rf"^`histories\[{at}\]` must be a list of item "
                                            rf"ids, got {got}"):
            m.recommend_from_history_ids(hists, 5)
    with pytest.raises(DataError, match="exclude_history"):
        m.recommend_from_history_ids([[101]], 5, exclude_history="no")


def test_history_lists_by_ids_need_a_history_tower(tutorial_run):
    from twotower.errors import ConfigError
    with pytest.raises(ConfigError, match="query tower is 'id'"):
        tutorial_run[0].recommend_from_history_ids([[50, 172]], 5)


def test_an_empty_history_is_refused_as_one_of_untrained_items_is(model):
    """An empty history pools nothing, the query a history of untrained items gives: both
    are refused (as the service and ``recommend --history`` refuse them), not one answered
    with the item bias's ranking."""
    from twotower.errors import UnknownIdError
    with pytest.raises(UnknownIdError, match=r"histories\[0\]: none of its 1 item ids"):
        model.recommend_from_history_ids([[999]], 5)
    with pytest.raises(DataError, match=r"histories\[1\]: an empty history"):
        model.recommend_from_history_ids([[101], []], 5)
    assert model.recommend_from_history_ids([], 5)[1].shape == (0, 5)  # no user: no rows


def test_a_history_entry_that_is_no_id_is_named(model):
    """A history holding a list (one nesting level too many) is no id: a DataError naming
    the history, as ``allow``/``deny`` name theirs, not a bare TypeError."""
    with pytest.raises(DataError, match=r"`histories\[1\]` must hold item ids .*got \[101, 102\]"):
        model.recommend_from_history_ids([[101], [[101, 102]]], 5)
    with pytest.raises(DataError, match=r"`histories\[0\]` must hold item ids .*got \{"):
        model.recommend_from_history_ids([[{"id": 101}]], 5)
