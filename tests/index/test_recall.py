"""recall_at_k by hand, and the ANN kinds' recall with DEFAULT settings."""

from __future__ import annotations

import time

import numpy as np
import pytest

from twotower.errors import ConfigError, DataError
from twotower.index import PAD_ID, IndexConfig, make_index, recall_at_k


def test_recall_hand_cases():
    assert recall_at_k([[1, 2, 3, 4]], [[1, 2, 3, 4]]) == 1.0  # perfect
    assert recall_at_k([[1, 2, 3, 4]], [[4, 3, 2, 1]]) == 1.0  # order does not matter
    assert recall_at_k([[1, 2, 3, 4]], [[5, 6, 7, 8]]) == 0.0  # no hit
    assert recall_at_k([[1, 2, 3, 4], [1, 2, 3, 4]], [[1, 2, 9, 9], [1, 2, 3, 4]]) == 0.75
    # padding in the reference is not something to find; padding in approx is no hit
    assert recall_at_k([[1, 2, PAD_ID, PAD_ID]], [[1, PAD_ID, PAD_ID, PAD_ID]]) == 0.5
    assert np.isnan(recall_at_k([[PAD_ID, PAD_ID]], [[1, 2]]))
    assert np.isnan(recall_at_k(np.empty((0, 10), int), np.empty((0, 10), int)))
    with pytest.raises(DataError, match="same number of rows"):
        recall_at_k([[1, 2]], [[1, 2], [3, 4]])
    # lists of different lengths: numpy's "inhomogeneous shape" ValueError before
    with pytest.raises(DataError, match="got rows of different lengths"):
        recall_at_k([[1, 2, 3], [4, 5]], [[1, 2, 3], [4, 5, 6]])


def clustered(n, d, n_clusters=1000, rank=16, seed=0):
    """Mixture of Gaussians in a low-dimensional subspace, popularity-skewed norms."""
    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((rank, d)) / np.sqrt(rank)
    centres = rng.standard_normal((n_clusters, rank)) * 2.0
    labels = rng.integers(0, n_clusters, n)
    x = (centres[labels] + 0.5 * rng.standard_normal((n, rank))) @ basis
    x += 0.05 * rng.standard_normal((n, d))
    x *= rng.lognormal(0.0, 0.35, size=(n, 1))
    q_labels = rng.integers(0, n_clusters, 200)
    q = (centres[q_labels] + 0.5 * rng.standard_normal((200, rank))) @ basis
    return x.astype(np.float32), q.astype(np.float32)


@pytest.fixture(scope="module")
def big():
    V, Q = clustered(50_000, 32)
    exact = make_index().build(V)
    return V, Q, exact, exact.search(Q, 10)[1]


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_default_recall_at_10(big, kind):
    V, Q, _, ref = big
    t0 = time.perf_counter()
    index = make_index(IndexConfig(kind=kind)).build(V)
    got = index.search(Q, 10)[1]
    assert recall_at_k(ref, got) >= 0.95, f"{kind} recall@10 {recall_at_k(ref, got):.3f}"
    assert time.perf_counter() - t0 < 30


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_default_recall_does_not_depend_on_the_query_norm(big, kind):
    """IVF (inner product reduced to L2) picked its lists by the centroids' norms for
    queries much shorter or longer than the items: recall@10 0.46 at |q| x 1e-3 and 0.78
    at x 1e6 on a test catalogue, though scaling a query cannot change its ranking."""
    V, Q, _, ref = big
    index = make_index(IndexConfig(kind=kind)).build(V)
    for scale in (1e-3, 1e3, 1e-30):  # 1e-30: its float32 norm underflows to 0
        got = index.search(Q * np.float32(scale), 10)[1]
        assert recall_at_k(ref, got) >= 0.95, (scale, recall_at_k(ref, got))


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_selective_filters_never_short(big, kind):
    V, Q, exact, _ = big
    rng = np.random.default_rng(5)
    index = make_index(IndexConfig(kind=kind, ef_search=16, nprobe=1)).build(V[:5000])
    allow = rng.choice(5000, 4500, replace=False)  # not small enough for the exact path
    ex = [rng.choice(5000, 300, replace=False) for _ in range(20)]
    s, i = index.search(Q[:20], 50, exclude=ex, allow=allow, deny=np.arange(100))
    assert (i != PAD_ID).all()
    for r in range(20):
        assert not set(i[r]) & set(ex[r].tolist())
        assert set(i[r]) <= set(allow.tolist()) and (i[r] >= 100).all()
    # 30 allowed items: every one is found even by a coarse index
    allow = rng.choice(5000, 30, replace=False)
    s, i = index.search(Q[:3], 40, allow=allow)
    assert ((i != PAD_ID).sum(axis=1) == 30).all()


def test_hnsw_head_prefix_gives_the_whole_heads_results(monkeypatch):
    """HNSW scores only the part of its exact head whose norm bound can beat the graph
    walk's k-th best: the results equal those of scoring the whole head, with exclusions
    and an allow-list, and the prefix is shorter than the head for skewed norms."""
    import twotower.index.faiss_ann as fa
    rng = np.random.default_rng(9)
    V, Q = clustered(20_000, 16, n_clusters=50, seed=4)
    V *= rng.pareto(2.0, size=(len(V), 1)).astype(np.float32) + 1  # long-tailed norms
    index = make_index(IndexConfig(kind="hnsw", hnsw_exact_head=0.2, ef_search=32)).build(V)
    monkeypatch.setattr(index, "_settled", lambda q, k, f: None)  # every query walks
    head = len(index._head)
    ex = [np.concatenate([index._head[rng.integers(0, 50, 5)], rng.choice(20_000, 20)])
          for _ in range(len(Q))]  # some of the best head items excluded
    allow = rng.choice(20_000, 18_000, replace=False)
    rows = []
    real = fa.topk_exact

    def spy(V, *args, **kwargs):
        rows.append(len(V))
        return real(V, *args, **kwargs)
    monkeypatch.setattr(fa, "topk_exact", spy)
    got = [index.search(Q[i:i + 1], 10, exclude=ex[i:i + 1], allow=allow)
           for i in range(len(Q))]
    assert min(rows) < head / 4  # the bound cut the head for some queries
    index._head_norms = np.full(head, np.inf, np.float32)  # no prefix: the whole head
    for i, (s, ids) in enumerate(got):
        s2, ids2 = index.search(Q[i:i + 1], 10, exclude=ex[i:i + 1], allow=allow)
        np.testing.assert_allclose(s, s2, rtol=1e-6)
        assert set(ids[0]) == set(ids2[0]) or np.unique(s).size < s.size  # ties aside


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_ann_queries_the_largest_norms_settle_skip_the_index(monkeypatch, tmp_path, kind):
    """A query whose k-th best among the 2,048 largest-norm items beats |q| times every
    other norm gets those exact results without searching the graph or the lists; the
    others search it.

    Norms fall from 10 to 0.1 down the norm order. The first 1,024 rows point along e0:
    query e0 settles on the first 2,048 (its best, some excluded or denied, score about
    9). The next 1,024 score at most about 5.2 along e1, and the row just after them
    scores 5.9, less than its own norm (6.2): query e1 must not settle. A bound from a
    smaller norm (say 4.0, past HNSW's exact head of 4,000 rows) would settle it and miss
    that row, which HNSW's exact head then finds."""
    from twotower.index import load_index
    from twotower.index.exact import _PREFIX as p
    rng = np.random.default_rng(8)
    n, d = 20_000, 16
    norms = np.geomspace(10.0, 0.1, n)
    V = 0.1 * rng.standard_normal((n, d))
    V[:1024, 0] = 1.0
    V[1024:p, 1] = V[1024:p, 2] = 0.7
    V *= (norms / np.linalg.norm(V, axis=1))[:, None]
    late = p + 5
    V[late] = 0.0
    V[late, 1] = 5.9
    V[late, 2] = np.sqrt(norms[late] ** 2 - 5.9 ** 2)
    order = rng.permutation(n)  # ids in another order than the norms
    V = V[order].astype(np.float32)
    late_id = int(np.flatnonzero(order == late)[0])
    Q = np.eye(d, dtype=np.float32)[:2]
    index = make_index(IndexConfig(kind=kind, hnsw_exact_head=0.2)).build(V)
    assert 6.0 < index._prefix_beyond < 6.3
    walked = []

    def spy_on(ix):
        real = ix._index_search

        def spy(q, k, f):
            walked.append(len(q))
            return real(q, k, f)
        monkeypatch.setattr(ix, "_index_search", spy)
    spy_on(index)
    exact = make_index().build(V)
    top = exact.search(Q[:1], 10)[1][0]
    ex, deny = [top[:3]], top[3:5]  # the best of e0 excluded or denied
    want = exact.search(Q[:1], 10, exclude=ex, deny=deny)
    got = index.search(Q[:1], 10, exclude=ex, deny=deny)
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_allclose(got[0], want[0], rtol=1e-6)
    assert walked == []  # settled: no walk
    got = index.search(Q, 10, exclude=ex + [[]], deny=deny)
    assert walked == [1]  # e1 alone walks
    np.testing.assert_array_equal(got[1][:1], want[1])
    if kind == "hnsw":
        assert late_id in got[1][1]
    index.config = index.config.replace(norm_bound=False)  # always the index
    index.search(Q[:1], 10)
    assert walked == [1, 1]
    index.config = index.config.replace(norm_bound=True)
    # the same after save and load
    index.save(tmp_path / "ix")
    again = load_index(tmp_path / "ix")
    spy_on(again)
    walked.clear()
    np.testing.assert_array_equal(again.search(Q[:1], 10, exclude=ex, deny=deny)[1], want[1])
    assert walked == []


def test_tune_recall_raises_the_knob_until_the_target():
    # Isotropic items, where IVF needs many lists: from nprobe 1 the knob doubles until
    # recall@10 reaches the target, and the index keeps the value; HNSW starts from its
    # ef_search; exact search has no knob; a target outside (0, 1] is refused.
    from twotower.index import tune_recall
    rng = np.random.default_rng(3)
    V = rng.standard_normal((4000, 16)).astype(np.float32)
    Q = rng.standard_normal((100, 16)).astype(np.float32)
    ex = [rng.choice(4000, 20, replace=False) for _ in range(100)]
    ref = make_index().build(V).search(Q, 10, exclude=ex)[1]
    ivf = make_index(IndexConfig(kind="ivf", nlist=64, nprobe=1)).build(V)
    out = tune_recall(ivf, Q, ref, 0.95, exclude=ex)
    tried = list(out["recall_tried"])
    assert out["knob"] == "nprobe" and tried == [2 ** i for i in range(len(tried))]
    assert out["reached"] and out["recall_tried"][out["value"]] >= 0.95 > out["recall_tried"][1]
    assert ivf.config.nprobe == ivf.nprobe == out["value"]
    now = recall_at_k(ref, ivf.search(Q, 10, exclude=ex)[1])
    assert round(now, 4) == out["recall_tried"][out["value"]]
    hnsw = make_index(IndexConfig(kind="hnsw", ef_search=8)).build(V)
    out = tune_recall(hnsw, Q, ref, 0.99, exclude=ex)
    assert out["knob"] == "ef_search" and list(out["recall_tried"])[0] == 8
    assert out["reached"] and hnsw.config.ef_search == out["value"]
    assert tune_recall(make_index().build(V), Q, ref, 0.9) is None
    # not a number: a bare TypeError from the comparison; True passed as recall 1. An
    # argument out of range is a ConfigError, as TwoTower.set_index raises (a DataError
    # here before), for exact search too (it returned None)
    for bad in (1.5, 0, "0.9", None, True, float("nan")):
        for index in (ivf, make_index().build(V)):
            with pytest.raises(ConfigError, match=r"`target` must be a recall in \(0, 1\]"):
                tune_recall(index, Q, ref, bad)


def test_tune_recall_refuses_a_reference_with_no_result_and_leaves_the_knob():
    # no query, or every reference row padding (all excluded): the recall is NaN at every
    # value, which never reached the target, so the knob was doubled to its limit (HNSW
    # left at ef_search 4,096) and kept
    from twotower.index import tune_recall
    rng = np.random.default_rng(4)
    V = rng.standard_normal((500, 8)).astype(np.float32)
    Q = rng.standard_normal((3, 8)).astype(np.float32)
    hnsw = make_index(IndexConfig(kind="hnsw", ef_search=16)).build(V)
    for queries, ref in ((Q[:0], np.empty((0, 10), np.int64)),
                         (Q, np.full((3, 10), PAD_ID))):
        with pytest.raises(DataError, match="no reference result"):
            tune_recall(hnsw, queries, ref, 0.9)
        assert hnsw.config.ef_search == 16


def test_tune_recall_refuses_a_reference_of_another_width_than_k():
    # exact top-5 ids tuned at k=10 counted any 5 of the top 10 as full recall (and a
    # top-100 reference at k=10 could never pass 0.1): the reference is the top k
    from twotower.index import tune_recall
    rng = np.random.default_rng(5)
    V = rng.standard_normal((500, 8)).astype(np.float32)
    Q = rng.standard_normal((3, 8)).astype(np.float32)
    exact = make_index().build(V)
    hnsw = make_index(IndexConfig(kind="hnsw", ef_search=16)).build(V)
    for width in (5, 100):
        with pytest.raises(DataError, match=rf"\[3, 10\], got shape \(3, {width}\)"):
            tune_recall(hnsw, Q, exact.search(Q, width)[1], 0.9, k=10)
    assert hnsw.config.ef_search == 16
    assert tune_recall(hnsw, Q, exact.search(Q, 10)[1], 0.9, k=10)["reached"]


@pytest.mark.parametrize("form", ["allow", "deny"])
@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_a_row_short_of_its_qualifying_items_is_refilled_under_a_global_filter(kind, form):
    """Exclusions outside what the allow-list (or deny-list) leaves do not reduce what a
    query may receive: a row that the index answered short is refilled by exact search up
    to the items that qualify (a count that ignored the allow-list passed every test
    before). A repeated exclusion counts once. (A row this heavy is scanned exactly: a
    walk only answers rows whose k plus distinct exclusions stay within half of the items
    they may list, so counting a denied exclusion twice in the refill check could not
    matter.)"""
    rng = np.random.default_rng(4)
    V = rng.standard_normal((6000, 16)).astype(np.float32)
    q = rng.standard_normal((1, 16)).astype(np.float32)
    left = np.arange(5000)  # above the size searched exactly
    keep = rng.choice(5000, 5, replace=False)  # the only items left not excluded
    gone = np.setdiff1d(left, keep)
    ex = [np.r_[gone, np.arange(5000, 5500), gone[:1]]]
    cfg = (IndexConfig(kind="ivf", nlist=60, nprobe=1) if kind == "ivf"
           else IndexConfig(kind="hnsw", ef_search=16))
    kw = {"allow": left} if form == "allow" else {"deny": np.arange(5000, 6000)}
    s, i = make_index(cfg).build(V).search(q, 10, exclude=ex, **kw)
    assert sorted(i[0][i[0] >= 0].tolist()) == sorted(keep.tolist())
    assert (i[0][5:] == PAD_ID).all()


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_a_filter_that_leaves_few_items_is_searched_exactly(kind):
    """An allow- or deny-list leaving at most EXACT_BELOW items is scanned exactly
    (docs/search.md): the same answers as exact search even where the graph walk or the
    probed lists are far too narrow for the catalogue."""
    from twotower.index.faiss_ann import EXACT_BELOW
    rng = np.random.default_rng(6)
    V = rng.standard_normal((20000, 16)).astype(np.float32)  # isotropic: ANN's worst case
    q = rng.standard_normal((100, 16)).astype(np.float32)
    cfg = (IndexConfig(kind="ivf", nlist=64, nprobe=1) if kind == "ivf"
           else IndexConfig(kind="hnsw", ef_search=10))
    index = make_index(cfg).build(V)
    exact = make_index().build(V)
    allow = rng.choice(20000, EXACT_BELOW, replace=False)
    deny = np.setdiff1d(np.arange(20000), allow)
    for kw in ({"allow": allow}, {"deny": deny}):
        s, i = index.search(q, 10, **kw)
        rs, ri = exact.search(q, 10, **kw)
        np.testing.assert_array_equal(i, ri)
        np.testing.assert_allclose(s, rs, rtol=1e-5, atol=1e-5)
    # one item more and the index answers (approximately: these settings miss some)
    allow = rng.choice(20000, EXACT_BELOW + 1, replace=False)
    i = index.search(q, 10, allow=allow)[1]
    assert recall_at_k(exact.search(q, 10, allow=allow)[1], i) < 1.0


def test_an_l2_graph_over_repeated_vectors_keeps_its_recall(tmp_path):
    """HNSW under cosine fell to recall 0.36 with half the items one vector (identical
    points filled each other's neighbour lists). The graph now holds one node per
    distinct vector, and a search expands a node into its items: exact results here,
    with filters (allow-lists above EXACT_BELOW items, so the graph answers them, and a
    group whose first items are filtered out), after save and load too."""
    from twotower.index import load_index
    from twotower.index.faiss_ann import EXACT_BELOW
    rng = np.random.default_rng(1)
    V = rng.standard_normal((6000, 16)).astype(np.float32)
    V[:1000] = V[0]
    V[1500:1600] = V[1500]  # a second repeated vector
    q = rng.standard_normal((200, 16)).astype(np.float32)
    q[:20] = V[0] + 0.01 * q[:20]  # queries whose top 10 are all copies of V[0]
    q[20:40] = V[1500] + 0.01 * q[20:40]
    ex = [rng.choice(6000, 30, replace=False) for _ in range(len(q))]
    ex[0] = np.arange(995)  # all but 5 of V[0]'s copies (ids 0-994): 995-999 then others
    # filters that take a group's first items (a node's expansion must skip them, not
    # stop at them; all of the first k would leave the row short, which exact refills)
    allow = np.setdiff1d(np.arange(6000), np.arange(1500, 1505))
    assert len(allow) > EXACT_BELOW
    for cfg in (IndexConfig(kind="hnsw", metric="cosine"),
                IndexConfig(kind="hnsw", mips_to_l2=True)):
        exact = make_index(IndexConfig(metric=cfg.metric))
        exact.build(V)
        index = make_index(cfg).build(V)
        assert index._groups is not None and len(index._groups.reps) == 6000 - 999 - 99
        for loaded in (index, load_index(index.save(tmp_path / cfg.metric))):
            for kw in ({}, {"exclude": ex}, {"allow": allow}, {"deny": np.arange(5)},
                       {"exclude": ex, "deny": [5, 1500]}):
                rs, ri = exact.search(q, 10, **kw)
                s, i = loaded.search(q, 10, **kw)
                # tie-aware: every result scores as well as the exact k-th best; the
                # group queries exactly so (their answers are copies of one vector)
                hit = s >= rs[:, -1:] - 1e-4
                # (the other queries: HNSW's usual recall; mips_to_l2 lower, groups or not:
                # 0.948 without repeats, benchmarks/probes/ann_duplicates.py)
                floor = 0.99 if cfg.metric == "cosine" else 0.95
                assert hit[:40].all() and hit.mean() >= floor, (cfg, kw, hit.mean())
                assert (i >= 0).all()
                for row in range(len(q)):  # distinct ids, none filtered out
                    assert len(set(i[row].tolist())) == 10
                    if "exclude" in kw:
                        assert not set(i[row].tolist()) & set(kw["exclude"][row].tolist())
                    if "allow" in kw:
                        assert np.isin(i[row], allow).all()
                    if "deny" in kw:
                        assert not np.isin(i[row], kw["deny"]).any()
            # the graph answers the group queries under those filters by itself: no row
            # comes back short for exact search to refill
            import twotower.index.faiss_ann as fa
            real, calls = fa.topk_exact, []
            fa.topk_exact = lambda *a, **kw: calls.append(1) or real(*a, **kw)
            try:
                if cfg.metric == "cosine":
                    loaded.search(q[:40], 10, allow=allow)
                    loaded.search(q[:40], 10, deny=np.arange(5))
            finally:
                fa.topk_exact = real
            assert not calls
            if cfg.metric == "cosine":  # V[0]'s copies lead: the 5 not excluded come first
                s, i = loaded.search(q[:1], 10, exclude=ex[:1])
                assert set(i[0, :5].tolist()) == {995, 996, 997, 998, 999}
    # an index with groups is format 2 (older releases say "upgrade twotower" rather than
    # call it damaged); one without stays format 1, which they read
    import json
    assert json.loads((tmp_path / "cosine" / "index.json").read_text())["format_version"] == 2
    plain = make_index(IndexConfig(kind="hnsw", metric="cosine")).build(V[2000:])
    assert json.loads((plain.save(tmp_path / "plain") / "index.json").read_text())[
        "format_version"] == 1
    # a saved index whose groups do not match its graph is refused, naming the file
    from twotower.errors import ArtifactError
    from twotower.artifacts import _sha256
    path = index.save(tmp_path / "bad")

    def groups(node_of):  # written with its checksum (damage the checksum would not catch)
        np.save(path / "groups.npy", node_of)
        meta = json.loads((path / "index.json").read_text())
        meta["files"]["groups.npy"] = _sha256(path / "groups.npy")
        (path / "index.json").write_text(json.dumps(meta))
    np.save(path / "groups.npy", np.zeros(6000, np.int64))  # the checksum left as saved
    with pytest.raises(ArtifactError, match=r"groups.npy is corrupt \(checksum mismatch"):
        load_index(path)
    groups(np.zeros(6000, np.int64))  # one node for every item
    with pytest.raises(ArtifactError, match="index.faiss holds 4902 vectors"):
        load_index(path)
    groups(np.arange(5999))
    with pytest.raises(ArtifactError, match="groups.npy must hold 6000 node numbers"):
        load_index(path)
    # distinct vectors, or an inner-product graph: every item is its own node
    assert make_index(IndexConfig(kind="hnsw", metric="cosine")).build(
        rng.standard_normal((500, 8)).astype(np.float32))._groups is None
    assert make_index(IndexConfig(kind="hnsw")).build(V)._groups is None




def test_hnsw_walks_a_heavy_user_alone_and_honours_every_filter():
    # a query whose seen items would widen the batch's walk past 2 x ef_search is walked
    # alone (its exclusions a faiss selector): the other queries' results are theirs alone,
    # and the heavy one's never hold an excluded or a disallowed item
    from twotower.index import faiss_ann
    rng = np.random.default_rng(3)
    V = rng.standard_normal((6000, 16)).astype(np.float32)
    Q = rng.standard_normal((6, 16)).astype(np.float32)
    index = make_index(IndexConfig(kind="hnsw", ef_search=64)).build(V)
    exact = make_index(IndexConfig(kind="exact")).build(V)
    top = exact.search(Q, 400)[1]
    seen = [top[r, :300] if r % 3 == 0 else rng.choice(6000, 20, replace=False)
            for r in range(6)]  # rows 0 and 3: 300 + 10 > 2 x 64
    assert len(faiss_ann.HNSWIndex._own_selector_rows(
        index, np.array([len(s) for s in seen]), 10)) == 2
    # the walk is k wide anyway: a query without exclusions is never walked alone; heavy
    # queries are, each as wide as its own list (not the longest of the batch)
    own = faiss_ann.HNSWIndex._own_selector_rows
    assert own(index, np.array([0, 1, 0]), 300).tolist() == []
    assert own(index, np.array([0, 500, 0]), 300).tolist() == [1]
    assert own(index, np.array([500, 30000]), 10).tolist() == [0, 1]
    assert own(index, np.array([500]), 10).tolist() == []  # one query: one walk either way
    allowed = np.ones(6000, dtype=bool)
    allowed[rng.choice(6000, 600, replace=False)] = False
    for allow in (None, np.flatnonzero(allowed)):
        s, got = index.search(Q, 10, exclude=seen, allow=allow)
        ref = exact.search(Q, 10, exclude=seen, allow=allow)[1]
        for r in range(6):
            assert (got[r] >= 0).all() and len(set(got[r])) == 10
            assert not set(got[r]) & set(seen[r].tolist())
            if allow is not None:
                assert allowed[got[r]].all()
            if r % 3:  # a light row: as searched alone
                np.testing.assert_array_equal(
                    got[r], index.search(Q[r:r + 1], 10, exclude=[seen[r]], allow=allow)[1][0])
        assert recall_at_k(ref, got) >= 0.9
        assert np.all(np.diff(s, axis=1) <= 0)  # best first
