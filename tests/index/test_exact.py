"""Exact-search internals the contract tests do not reach: block boundaries, memory bound."""

from __future__ import annotations

import numpy as np
import pytest

from twotower.index import PAD_ID, IndexConfig, make_index

from .conftest import assert_topk_equal, reference

# each test with the compiled exclusion loops and with the numpy path (conftest.py)
pytestmark = pytest.mark.usefixtures("exclusion_loops")


def _filtered_search_matches_reference(V, Q, rng, ks, most_excluded, n_denied, **config):
    """Per-query exclusions and a deny list, against the reference, for each k of ``ks``."""
    n = len(V)
    ex = [rng.choice(n, rng.integers(0, most_excluded), replace=False) for _ in range(len(Q))]
    deny = rng.choice(n, n_denied, replace=False)
    index = make_index(IndexConfig(kind="exact", **config)).build(V)
    for k in ks:
        got = index.search(Q, k, exclude=ex, deny=deny)
        assert_topk_equal(got, reference(V, Q, k, ex, deny=deny), V, Q)


@pytest.mark.parametrize("chunk_size, batch_size", [(4096, 64), (1000, 16), (8, 3)])
def test_blocked_search_matches_reference(chunk_size, batch_size):
    rng = np.random.default_rng(11)
    V = rng.standard_normal((5003, 8)).astype(np.float32)
    Q = rng.standard_normal((70, 8)).astype(np.float32)
    _filtered_search_matches_reference(V, Q, rng, (1, 10, 3000), 300, 50,
                                       chunk_size=chunk_size, batch_size=batch_size, threads=2)


def test_large_allow_list_uses_mask():
    rng = np.random.default_rng(2)
    V = rng.standard_normal((3000, 8)).astype(np.float32)
    Q = rng.standard_normal((5, 8)).astype(np.float32)
    allow = rng.choice(3000, 2500, replace=False)  # masked, not gathered
    index = make_index(IndexConfig(kind="exact", chunk_size=512, batch_size=2)).build(V)
    got = index.search(Q, 20, allow=allow)
    assert_topk_equal(got, reference(V, Q, 20, allow=allow), V, Q)
    one = index.search(Q[:1], 20, allow=allow)
    assert_topk_equal(one, reference(V, Q[:1], 20, allow=allow), V, Q[:1])


@pytest.mark.parametrize("n_queries", [1, 3, 40])
def test_catalogue_split_over_workers_matches_reference(n_queries):
    # Fewer query blocks than workers: the catalogue is split into parts, merged after.
    rng = np.random.default_rng(5)
    V = rng.standard_normal((4000, 8)).astype(np.float32)
    Q = rng.standard_normal((n_queries, 8)).astype(np.float32)
    ex = [rng.choice(4000, 30, replace=False) for _ in range(n_queries)]
    index = make_index(IndexConfig(kind="exact", chunk_size=64, batch_size=64,
                                   threads=3)).build(V)
    for k in (1, 10, 500):
        got = index.search(Q, k, exclude=ex)
        assert_topk_equal(got, reference(V, Q, k, ex), V, Q)


def test_norm_ordered_storage_keeps_ids_filters_and_saved_vectors(tmp_path):
    # Large catalogues are stored by decreasing norm; ids, filters and save/load must not
    # notice. Norms are skewed so the storage order differs from the id order.
    from twotower.index import exact, load_index

    rng = np.random.default_rng(9)
    n = exact._ORDER_MIN + 123
    V = rng.standard_normal((n, 8)).astype(np.float32)
    V *= rng.pareto(2.0, size=(n, 1)).astype(np.float32) + 0.5
    Q = rng.standard_normal((6, 8)).astype(np.float32)
    ex = [rng.choice(n, 50, replace=False) for _ in range(6)]
    deny = rng.choice(n, 1000, replace=False)
    allow = rng.choice(n, 3000, replace=False)
    index = make_index(IndexConfig(kind="exact", chunk_size=1024, batch_size=4)).build(V)
    assert index._order is not None and not (index._order == np.arange(n)).all()
    np.testing.assert_array_equal(index.vectors, V)
    got = index.search(Q, 20, exclude=ex, deny=deny)
    assert_topk_equal(got, reference(V, Q, 20, ex, deny=deny), V, Q)
    got = index.search(Q, 20, exclude=ex, allow=allow)
    assert_topk_equal(got, reference(V, Q, 20, ex, allow=allow), V, Q)
    one = index.search(Q[:1], 20, exclude=ex[:1], deny=deny)
    assert_topk_equal(one, reference(V, Q[:1], 20, ex[:1], deny=deny), V, Q[:1])
    index.save(tmp_path / "ix")
    again = load_index(tmp_path / "ix")
    np.testing.assert_array_equal(again.search(Q, 20, exclude=ex)[1],
                                  index.search(Q, 20, exclude=ex)[1])


class _CountingRows(np.ndarray):
    """A catalogue that counts the rows each slice hands out (what the matmuls read)."""

    read = 0

    def __getitem__(self, key):
        out = super().__getitem__(key)
        if isinstance(key, slice) and out.ndim == 2:  # rows, not a slice of scores
            _CountingRows.read += len(out)
        return out


@pytest.mark.parametrize("n_queries, batch_size", [(1, 512), (5, 512), (300, 128)])
def test_norm_bound_skips_chunks_and_matches_reference(n_queries, batch_size):
    # Skewed norms, as trained embeddings have: a few long vectors, many short ones.
    # The norm bound must give the same top-k as scoring everything, with exclusions and a
    # deny-list, while reading only part of the catalogue.
    from twotower.index import exact

    rng = np.random.default_rng(21)
    n, d = exact._ORDER_MIN + 500, 32
    # background: random directions, norms log-uniform over [0.1, 10]; per query, 10
    # items parallel to it with norms in [3, 4], so its top 10 lie mid-way down the norm
    # order (a wrong bound skips some of them)
    V = rng.standard_normal((n, d)).astype(np.float32)
    V /= np.linalg.norm(V, axis=1, keepdims=True)
    V *= (10.0 ** rng.uniform(-1, 1, size=(n, 1))).astype(np.float32)
    Q = rng.standard_normal((n_queries, d)).astype(np.float32)
    Q /= np.linalg.norm(Q, axis=1, keepdims=True)
    planted = rng.choice(n, (n_queries, 10), replace=False)
    V[planted] = Q[:, None, :] * rng.uniform(3, 4, size=(n_queries, 10, 1)).astype(np.float32)
    ex = [rng.choice(n, 40, replace=False) for _ in range(n_queries)]
    deny = rng.choice(n, 200, replace=False)
    # and a zero query: every score ties at 0, so its top k are the first ids not filtered
    # out, wherever the norm order put them: the bound (0) never drops below its k-th best
    # (0), and its scan reads the whole catalogue (it read one chunk when ties came in any
    # order); its reads are not counted below
    Z, zex = np.zeros((1, d), np.float32), [ex[0]]
    read = {}
    for bound in (False, True):
        index = make_index(IndexConfig(kind="exact", norm_bound=bound, chunk_size=2048,
                                       batch_size=batch_size, threads=2)).build(V)
        assert (index._norms is not None) and np.all(np.diff(index._norms) <= 0)
        index._vectors = index._vectors.view(_CountingRows)
        for k in (10, 100):
            _CountingRows.read = 0
            got = index.search(Q, k, exclude=ex, deny=deny)
            read[bound, k] = _CountingRows.read
            assert_topk_equal(got, reference(V, Q, k, ex, deny=deny), V, Q)
            both = np.concatenate([Z, Q]), zex + ex
            for q, e in ((Z, zex), both):
                zs, zi = index.search(q, k, exclude=e, deny=deny)
                np.testing.assert_array_equal(zi[0], reference(V, Z, k, zex, deny=deny)[1][0])
                assert (zs[0] == 0).all()
    blocks = -(-n_queries // batch_size)
    assert 0 < read[True, 10] < blocks * n / 2, read  # less than half, per query block
    assert read[True, 100] < blocks * n, read


def test_single_query_settled_by_the_first_rows():
    # One query over a norm-ordered catalogue first scores its first _PREFIX rows alone and
    # stops there when the norm bound shows that no later row can enter its top k.
    # Norms fall from 10 to 0.1 down the storage order. Query e0: the longest rows point
    # along e0 (its top 10 lie in the first rows, some of them excluded or denied), so it
    # settles there. Query e1: the first rows score about 0.3 along e1, and one row beyond
    # the prefix scores 2.5, less than |q| times the norm after the prefix (8.7): a bound
    # taken from a later, smaller norm would settle e1 on the prefix and miss that row.
    from twotower.index import exact

    rng = np.random.default_rng(8)
    n, d, p = exact._ORDER_MIN + 300, 16, exact._PREFIX
    norms = np.geomspace(10.0, 0.1, n).astype(np.float32)
    V = rng.standard_normal((n, d)).astype(np.float32)
    V[:, :2] *= 0.1
    V[:p, 0], V[:p, 1] = 30.0, 1.0  # the longest rows point along e0, a little along e1
    V /= np.linalg.norm(V, axis=1, keepdims=True)
    V *= norms[:, None]
    late = p + 3000
    assert norms[late] > 2.5 + 1e-3
    V[late] = 0.0
    V[late, 1] = 2.5
    V[late, 2] = np.sqrt(norms[late] ** 2 - 2.5 ** 2)  # its norm keeps the storage order
    Q = np.eye(d, dtype=np.float32)[:2]
    order = rng.permutation(n)  # ids in another order than the norms
    V = V[order]
    late_id = int(np.flatnonzero(order == late)[0])
    index = make_index(IndexConfig(kind="exact", chunk_size=2048, threads=2)).build(V)
    assert float(index._norms[p]) > 2.5  # the e1 query cannot settle on the prefix
    top0 = reference(V, Q[:1], 10)[1][0]
    ex, deny = [top0[:3]], top0[3:5]  # the best of e0 excluded or denied
    index._vectors = index._vectors.view(_CountingRows)
    for r, k in ((0, 10), (0, 100), (1, 10)):
        _CountingRows.read = 0
        got = index.search(Q[r:r + 1], k, exclude=ex, deny=deny)
        assert_topk_equal(got, reference(V, Q[r:r + 1], k, ex, deny=deny), V, Q[r:r + 1])
        if r == 0:
            assert _CountingRows.read == p, (k, _CountingRows.read)  # the prefix alone
        else:
            assert late_id in got[1][0]
            assert _CountingRows.read > p


def test_exclusions_flattened_per_block_name_the_callers_row():
    # With several query blocks over a catalogue larger than a chunk, each block's worker
    # reads its own slice of the flattened `exclude`: errors must still name the row of
    # the caller's list, and every accepted form must give the same results.
    from twotower.errors import DataError

    rng = np.random.default_rng(21)
    V = rng.standard_normal((3000, 8)).astype(np.float32)
    Q = rng.standard_normal((10, 8)).astype(np.float32)
    index = make_index(IndexConfig(kind="exact", chunk_size=256, batch_size=4,
                                   threads=2)).build(V)
    ex = [rng.choice(3000, 40, replace=False) for _ in range(10)]
    bad = list(ex)
    bad[7] = np.array([5, 3000])
    with pytest.raises(DataError, match=r"`exclude\[7\]` ids must be internal ids in \[0, 3000\)"):
        index.search(Q, 5, exclude=bad)
    bad = list(ex)
    bad[9] = [1.5]
    with pytest.raises(DataError, match=r"`exclude\[9\]` must be a 1-D sequence of integer"):
        index.search(Q, 5, exclude=bad)
    got = index.search(Q, 5, exclude=ex)
    assert_topk_equal(got, reference(V, Q, 5, ex), V, Q)
    np.testing.assert_array_equal(index.search(Q, 5, exclude=np.stack(ex))[1], got[1])
    empty = index.search(Q, 5, exclude=[[] for _ in range(10)])
    np.testing.assert_array_equal(empty[1], index.search(Q, 5)[1])


def test_catalogue_parts_start_from_the_first_chunks_thresholds():
    # One query over a norm-ordered catalogue split into 2 parts: the short first chunk is
    # scored once and both parts start from its k-th best score. Planted: the seed chunk
    # holds 10 long items scoring 1..5; one short item scoring 2.0 lies in part 1's first
    # chunk, so it belongs in the top 10 only if part 1's floor is the seed's k-th best
    # (1.0), not more. Everything else is orthogonal to the query (score ~0).
    from twotower.index import exact

    rng = np.random.default_rng(3)
    n, d = exact._ORDER_MIN + 500, 16
    q = np.zeros(d, np.float32)
    q[0] = 1.0
    V = rng.standard_normal((n, d)).astype(np.float32)
    V[:, 0] = 0.0
    V /= np.linalg.norm(V, axis=1, keepdims=True)
    norms = np.sort(10.0 ** rng.uniform(-1, 0.99, size=n))[::-1].astype(np.float32)
    V *= norms[:, None]
    ortho = V[:10, 1:].copy()
    V[:10, 1:] = ortho / np.linalg.norm(ortho, axis=1, keepdims=True) * np.sqrt(
        100.0 - np.linspace(1, 5, 10) ** 2)[:, None]
    V[:10, 0] = np.linspace(1, 5, 10)  # norm 10, score 1..5: the first chunk
    late = int(np.searchsorted(-norms, -2.0))  # the first item of norm <= 2
    V[late] = 0.0
    V[late, 0] = 2.0  # norm 2, score 2
    Q = q[None, :]
    index = make_index(IndexConfig(kind="exact", chunk_size=2048, threads=2)).build(V)
    # 1 query: the first _PREFIX rows alone do not settle it (10th best 1.0 against a bound
    # of 8.5), so they seed the scan: chunks of 16,384 after them, part 0 takes the spans
    # from 2,048 and 34,816, part 1 those from 18,432 and 51,200
    assert 18_432 <= late < 34_816 and exact._PREFIX == 2048
    index._vectors = index._vectors.view(_CountingRows)
    _CountingRows.read = 0
    got = index.search(Q, 10)
    assert_topk_equal(got, reference(V, Q, 10), V, Q)
    assert late in got[1][0]
    # the prefix (the seed), part 0's first span, part 1's first span; the last spans'
    # norms (<= 0.9 and <= 0.35) cannot beat the floor of 1.0
    assert _CountingRows.read <= 2048 + 2 * 16_384, _CountingRows.read


def test_search_in_a_forked_child_after_the_parent_searched():
    # Exact search keeps one worker pool per process; a child forked after the parent used
    # it (a pre-forking server) must not wait forever on the parent's threads.
    import multiprocessing as mp

    if "fork" not in mp.get_all_start_methods():
        pytest.skip("no fork on this platform")
    rng = np.random.default_rng(4)
    V = rng.standard_normal((5000, 8)).astype(np.float32)
    Q = rng.standard_normal((40, 8)).astype(np.float32)
    index = make_index(IndexConfig(kind="exact", chunk_size=256, batch_size=8,
                                   threads=2)).build(V)
    want = index.search(Q, 5)[1]  # the parent's pool now exists
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    child = ctx.Process(target=_search_into, args=(index, Q, out))
    child.start()
    child.join(30)
    alive = child.is_alive()
    if alive:
        child.kill()
    assert not alive, "the forked child's search hung"
    np.testing.assert_array_equal(out.get(timeout=10), want)


def _search_into(index, Q, out):
    out.put(index.search(Q, 5)[1])


@pytest.mark.parametrize("case", ["random", "ties", "masked", "few finite"])
def test_first_chunk_seed_is_the_top_k_of_each_row(case):
    """The first chunk's candidates found from group maxima (``_seed``) hold every entry at
    or above each row's k-th best, ties at the boundary included, and ``_select`` picks a
    full stable sort's top k from them (equal scores: the lower column first); it falls
    back (None) where it would not pay."""
    from twotower.index import exact
    rng = np.random.default_rng(3)
    S = rng.standard_normal((40, 512)).astype(np.float32)  # >= 32 rows, >= 16 k columns
    if case == "ties":
        S = np.round(S * 2) / 2  # a few distinct values: many ties at every k-th best
    if case == "masked":
        S[:, rng.random(512) < 0.5] = exact._NEG
    if case == "few finite":
        S[:, 5:] = exact._NEG  # fewer finite entries than k
    for k in (1, 10, 32):  # the product seeds from at least 16 k columns
        got = exact._seed(S, k)
        if case in ("ties", "few finite") and got is None:
            continue  # a fallback is allowed here; the partial sort handles it
        assert got is not None, (case, k)
        s, i = got
        real = i != PAD_ID
        assert s.shape == i.shape and s.shape[1] >= k and (real.sum(axis=1) >= k).all()
        np.testing.assert_array_equal(np.isneginf(s), ~real)
        np.testing.assert_array_equal(np.take_along_axis(S, np.maximum(i, 0), axis=1)[real],
                                      s[real])
        kth = np.sort(S, axis=1)[:, -k]
        np.testing.assert_array_equal(((s >= kth[:, None]) & real).sum(axis=1),
                                      (S >= kth[:, None]).sum(axis=1))  # every tie kept
        assert all(len(set(row[row >= 0].tolist())) == len(row[row >= 0]) for row in i)
        order = np.argsort(-S, axis=1, kind="stable")[:, :k]  # ties: lower column first
        ss, si = exact._select(S, k)
        np.testing.assert_array_equal(si, order)
        np.testing.assert_array_equal(ss, np.take_along_axis(S, order, axis=1))
    if case == "few finite":
        assert exact._seed(S, 10) is None
    assert exact._seed(S[:8], 10) is None  # a few rows: the partial sort


def test_prepared_exclusions_read_only_the_heads_when_the_scan_stops_early(monkeypatch):
    # Over a norm-ordered catalogue, a prepared table is sorted by storage row: a block of
    # queries whose scan stops in the first rows reads only each row's head (the
    # exclusions there), a block that scans on gathers the rest, and both exclude exactly
    # what the lists exclude.
    from twotower.index import exact, filters

    rng = np.random.default_rng(8)
    n, d = exact._ORDER_MIN + 500, 16
    V = rng.standard_normal((n, d)).astype(np.float32)
    V[:, :2] = 0.0
    V /= np.linalg.norm(V, axis=1, keepdims=True)
    norms = np.sort(10.0 ** rng.uniform(-1, 1, size=n))[::-1].astype(np.float32)
    V *= norms[:, None]
    # the 50 longest rows lean along e0: queries near e0 settle in the first rows
    V[:50, 0] = 0.9 * norms[:50]
    V[:50, 2:] *= np.sqrt(1 - 0.9**2)
    # 12 short rows deep in the order point along e1: a query along e1 scans down to them
    deep = np.arange(30_000, 30_012)
    V[deep] = 0.0
    V[deep, 1] = norms[deep]
    perm = rng.permutation(n)  # ids are not storage rows
    V = V[perm]
    top = np.argsort(perm)[:50]  # ids of the 50 longest rows
    deep_ids = np.argsort(perm)[deep]
    index = make_index(IndexConfig(kind="exact", chunk_size=2048, batch_size=128,
                                   threads=2)).build(V)
    gathers = []  # "head": a block's heads read (by the compiled loops or numpy)
    real, real_head = filters.Exclusions._gather, filters.Exclusions.head

    def spy(self, r0, r1, limit=None):
        gathers.append(limit)
        return real(self, r0, r1, limit)

    def spy_head(self, r0, r1, near):
        gathers.append("head")
        return real_head(self, r0, r1, near)

    monkeypatch.setattr(filters.Exclusions, "_gather", spy)
    monkeypatch.setattr(filters.Exclusions, "head", spy_head)
    Qa = rng.standard_normal((200, d)).astype(np.float32) * 0.05
    Qa[:, 0] = 1.0
    Qb = rng.standard_normal((130, d)).astype(np.float32) * 1e-3
    Qb[:, :2] = [0.0, 1.0]
    table = [np.union1d(rng.choice(top, 8, replace=False), rng.choice(n, 40, replace=False))
             for _ in range(200)]
    table[0] = np.union1d(table[0], deep_ids[:3])  # deep winners of the e1 queries
    prepared = index.prepare_exclusions(table)
    got = index.search(Qa, 10, exclude=prepared.rows(np.arange(200)))
    assert_topk_equal(got, reference(V, Qa, 10, table), V, Qa)
    assert "head" in gathers and None not in gathers, gathers  # heads only
    gathers.clear()
    pick = np.r_[0, 0, np.arange(5, 133)]
    got = index.search(Qb, 10, exclude=prepared.rows(pick))
    lists = [table[t] for t in pick]
    assert_topk_equal(got, reference(V, Qb, 10, lists), V, Qb)
    assert not set(got[1][0]) & set(deep_ids[:3].tolist())
    assert set(got[1][2]) <= set(deep_ids.tolist())
    assert None in gathers, gathers  # the deep scan gathered every exclusion


def _skewed_with_winners(rows, n=66_036, d=16, seed=0):
    """A catalogue stored in decreasing-norm order (norms 10 -> 0.1) whose only items
    along e1 lie at storage rows ``rows`` (score = their norm for the query e1); ids are a
    permutation of the storage rows."""
    rng = np.random.default_rng(seed)
    norms = np.geomspace(10.0, 0.1, n).astype(np.float32)
    V = rng.standard_normal((n, d)).astype(np.float32)
    V[:, 1] = 0.0
    V /= np.linalg.norm(V, axis=1, keepdims=True)
    V[rows] = 0.0
    V[rows, 1] = 1.0
    V *= norms[:, None]
    perm = rng.permutation(n)
    inv = np.argsort(perm)
    return V[perm], inv  # inv[storage row] = its id


def test_exclusions_near_every_chunk_and_head_limit_in_every_form():
    """Exclusions are read per chunk and, from a prepared table, only below a few head
    limits; a miscount of the heads (e.g. rows below limit / 2) returned an excluded
    item through prepared rows alone. Winners sit at each side of the limits."""
    sp = pytest.importorskip("scipy.sparse")
    rows = [100, 2047, 2048, 8191, 8192, 10000, 16383, 16384, 32767, 32768, 65535, 65536]
    V, inv = _skewed_with_winners(rows)
    ids = inv[rows]
    index = make_index(IndexConfig(kind="exact", chunk_size=2048, batch_size=128,
                                   threads=2)).build(V)
    b = 130
    Q = np.zeros((b, V.shape[1]), np.float32)
    Q[:, 1] = 1.0
    rng = np.random.default_rng(3)
    # each query excludes a different prefix of the winners (the best ones), sometimes
    # with a random other item
    lists = [np.r_[ids[:r % len(ids)], rng.integers(0, len(V), r % 3)].astype(np.int64)
             for r in range(b)]
    csr = sp.csr_matrix((np.ones(sum(map(len, lists))), np.concatenate(lists),
                         np.r_[0, np.cumsum(list(map(len, lists)))]), shape=(b, len(V)))
    csr.sum_duplicates()
    prepared = index.prepare_exclusions(lists)
    for k in (1, 3):
        want = reference(V, Q, k, lists)
        for form in (lists, csr, prepared.rows(np.arange(b))):
            assert_topk_equal(index.search(Q, k, exclude=form), want, V, Q)
        for r in (0, 5, 11, 12):  # one query alone: its own path
            one = index.search(Q[r:r + 1], k, exclude=prepared.rows([r]))
            assert_topk_equal(one, reference(V, Q[r:r + 1], k, lists[r:r + 1]))


def test_single_query_not_settled_while_a_later_row_can_still_win():
    """The first rows settle a single query only when no later row's norm bound can beat
    their k-th best: halving the bound returned rows 0-9 (score 5) and missed the row at
    storage row 3,000 (score 7, norm 8.1)."""
    n, d = 66_036, 16
    rng = np.random.default_rng(1)
    norms = np.geomspace(10.0, 0.1, n).astype(np.float32)
    V = rng.standard_normal((n, d)).astype(np.float32)
    V[:, 1] = 0.0
    V /= np.linalg.norm(V, axis=1, keepdims=True)
    V *= norms[:, None]
    for r in range(10):  # the first rows: score 5 along e1
        V[r, 0], V[r, 1] = 0.0, 5.0
        V[r, 2:] *= np.sqrt(norms[r] ** 2 - 25) / np.linalg.norm(V[r, 2:])
    late = 3000
    V[late] = 0.0
    V[late, 1], V[late, 2] = 7.0, np.sqrt(norms[late] ** 2 - 49)
    q = np.zeros((1, d), np.float32)
    q[0, 1] = 1.0
    got = make_index(IndexConfig(kind="exact")).build(V).search(q, 10)
    assert late in got[1][0]
    assert_topk_equal(got, reference(V, q, 10), V, q)


def test_tiny_vectors_keep_their_norms():
    """Squares of float32 entries near 1e-23 underflow to 0 in float32: the norm order, the
    norm bound and cosine scaling then went wrong (a scan stopped after its first chunk)."""
    from twotower.index import PAD_ID, IndexConfig, make_index
    from twotower.index.filters import compile_filters
    rng = np.random.default_rng(0)
    V = (rng.standard_normal((65_536, 8)) * 1e-23).astype(np.float32)  # stored by norm
    q = (rng.standard_normal((3, 8)) * 1e12).astype(np.float32)
    want = np.argsort(-(q.astype(np.float64) @ V.T.astype(np.float64)), axis=1)[:, :5]
    index = make_index().build(V)
    np.testing.assert_array_equal(index.search(q, 5)[1], want)
    np.testing.assert_array_equal(index.search(q[:1], 5)[1], want[:1])  # the single-query path
    # ANN kinds: the first rows' bound no longer calls every query settled
    W = (rng.standard_normal((5_000, 16)) * 1e-23).astype(np.float32)
    qa = (rng.standard_normal((20, 16)) * 1e12).astype(np.float32)
    ann = make_index(IndexConfig(kind="hnsw")).build(W)
    assert ann._prefix_beyond > 0
    assert not ann._settled(qa, 10, compile_filters(None, None, None, 5_000, 20))[2].any()
    # cosine: tiny rows are scaled to unit length, not left as they are
    C = np.array([[3e-23, 4e-23], [1e-23, 0.0], [0.0, 1e-23]], np.float32)
    s, i = make_index(IndexConfig(metric="cosine")).build(C).search(
        np.array([[1.0, 0.0]], np.float32), 3)
    np.testing.assert_array_equal(i, [[1, 0, 2]])
    np.testing.assert_allclose(s, [[1.0, 0.6, 0.0]], atol=1e-6)


@pytest.mark.parametrize("chunk_size, k", [(3, 1990), (64, 700), (2048, 1990)])
def test_chunks_shorter_than_k_are_lengthened(chunk_size, k, monkeypatch):
    """Chunks far shorter than ``k`` merged each query's running top-k for every few
    scores: ``IndexConfig(chunk_size=3)`` with k = 1,990 of 2,000 items ran for minutes
    (146 s for 1,000 queries). Chunks now hold at least 16 k rows (or the catalogue), with
    fewer queries per block, so the running lists are merged a handful of times."""
    from twotower.index import exact

    rng = np.random.default_rng(4)
    V = rng.standard_normal((2000, 8)).astype(np.float32)
    Q = rng.standard_normal((50, 8)).astype(np.float32)
    ex = [rng.choice(2000, 5, replace=False) for _ in range(50)]
    merges = []
    merge = exact._merge
    monkeypatch.setattr(exact, "_merge", lambda *a: merges.append(1) or merge(*a))
    index = make_index(IndexConfig(kind="exact", chunk_size=chunk_size, batch_size=16,
                                   threads=2)).build(V)
    got = index.search(Q, k, exclude=ex)
    assert_topk_equal(got, reference(V, Q, k, ex), V, Q)
    assert len(merges) <= 4, len(merges)  # 3 rows a chunk: hundreds
    assert_topk_equal(index.search(Q[:1], k), reference(V, Q[:1], k), V, Q[:1])
    # the memory bound holds: the longer chunks come with fewer queries per block
    assert exact._chunk_for_k(2000, k, 16, chunk_size)[0] * 2000 <= max(16 * chunk_size,
                                                                         2000)


@pytest.mark.parametrize("n, chunk", [(300, 2048), (65536, 256)])
def test_exclusion_lists_edge_cases_over_query_blocks(n, chunk):
    """Per-query lists over several query blocks are flattened once for the batch and each
    block's worker takes its slice: one chunk (a flat index per exclusion, per block) and a
    norm-ordered catalogue (the band look-up). Empty rows of any dtype, duplicates, mixed
    integer dtypes and lists of lists exclude what a per-query reference excludes, and a
    bad id in a later block is named by its row."""
    from twotower.errors import DataError

    rng = np.random.default_rng(33)
    V = rng.standard_normal((n, 4)).astype(np.float32)
    V *= rng.lognormal(0.0, 0.5, size=(n, 1)).astype(np.float32)
    Q = rng.standard_normal((11, 4)).astype(np.float32)
    index = make_index(IndexConfig(kind="exact", chunk_size=chunk, batch_size=4,
                                   threads=2)).build(V)
    top = reference(V, Q, 6)[1]
    ex = [np.array(top[0, :3]),                      # int64
          np.array([], dtype=np.float64),            # empty, float
          [],                                        # empty list
          np.repeat(top[3, :2], 3).astype(np.int32),  # duplicates, int32
          top[4, :5].astype(np.uint16 if n < 2**16 else np.uint32),
          top[5, :4].tolist(),                       # a list of Python ints
          np.array([n - 1, 0, top[6, 0]], dtype=np.uint64),
          np.array(top[7, :6]),                      # all six of query 7's best
          np.empty(0, dtype=np.int32),
          top[9, 1:3].astype(np.int16 if n < 2**15 else np.int32),
          np.arange(0, n, max(1, n // 50))]          # many, across the catalogue
    got = index.search(Q, 6, exclude=ex)
    assert_topk_equal(got, reference(V, Q, 6, ex), V, Q)
    lists = [np.asarray(e, dtype=np.int64).tolist() for e in ex]  # lists of lists
    np.testing.assert_array_equal(index.search(Q, 6, exclude=lists)[1], got[1])
    np.testing.assert_array_equal(index.search(Q, 6, exclude=[[] for _ in Q])[1],
                                  index.search(Q, 6)[1])
    for bad, value in ((-1, -1), (n, n)):
        rows = list(ex)
        rows[9] = np.array([3, bad])
        with pytest.raises(DataError, match=rf"`exclude\[9\]` ids must be internal ids in "
                                            rf"\[0, {n}\), got {value}"):
            index.search(Q, 6, exclude=rows)


def test_near_exclusions_found_once_per_call_at_band_edges(monkeypatch, exclusion_loops):
    """Over a norm-ordered catalogue the exclusions below ``near`` are found once for the
    whole batch on the numpy path (one band look-up, after one sequential read of the
    band, before the workers start; each of the three query blocks takes its own), once
    for each block by its worker with the compiled loops, and exactly: at each
    side of ``near`` and of a band, at row 0 and at the last row (66,036 rows: the band is
    padded to whole uint64 words). A scan that goes past ``near`` (to the last row) still
    excludes what lies there; a search without exclusions reads none."""
    sp = pytest.importorskip("scipy.sparse")
    from twotower.index import exact

    n = 66_036
    near = 512 + 7 * 2048  # chunk_size 2048, first chunk 512: the 8th chunk's end
    band = 1 << exact._BAND_SHIFT
    rows = [0, 511, 512, 2047, 2048, 6 * band - 1, 6 * band, near - 1, near, 7 * band,
            8 * band - 1, 8 * band, 40_000, n - 1]
    V, inv = _skewed_with_winners(rows, n=n)
    ids = inv[rows]
    index = make_index(IndexConfig(kind="exact", chunk_size=2048, batch_size=64,
                                   threads=2)).build(V)
    assert len(index._band) % 8 == 0 and len(index._band) >= n
    b = 150  # three query blocks: 64, 64 and 22 queries
    Q = np.zeros((b, V.shape[1]), np.float32)
    Q[:, 1] = 1.0
    rng = np.random.default_rng(5)
    lists = [np.r_[rng.choice(ids, r % len(ids), replace=False),
                   rng.integers(0, n, 3 * (r % 2))].astype(np.int64) for r in range(b)]
    calls = []
    real = exact._near_exclusions

    def spy(ptr, flat, ex_map, ex_band, near_, lists=None, ex_bits=None):
        calls.append((len(ptr) - 1, near_))
        got = real(ptr, flat, ex_map, ex_band, near_, lists, ex_bits)
        if flat is None:  # the caller's arrays, read in place by the compiled loops
            flat = np.concatenate(lists)
        # every exclusion below `near`, with its query row, and none beyond
        q = np.repeat(np.arange(len(ptr) - 1), np.diff(ptr))
        pairs = set(zip(q.tolist(), ex_map[flat].tolist()))
        assert set(zip(*(a.tolist() for a in got))) == {
            (r, c) for r, c in pairs if c < near_}
        assert np.all(np.diff(got[0]) >= 0)  # by query row
        return got

    monkeypatch.setattr(exact, "_near_exclusions", spy)
    csr = sp.csr_matrix((np.ones(sum(map(len, lists))), np.concatenate(lists),
                         np.r_[0, np.cumsum(list(map(len, lists)))]), shape=(b, n))
    csr.sum_duplicates()
    for k in (1, len(rows)):  # k = 14: every query scans to the last row
        want = reference(V, Q, k, lists)
        prepared = index.prepare_exclusions(lists).rows(np.arange(b))
        for form in (lists, csr, prepared):
            calls.clear()
            assert_topk_equal(index.search(Q, k, exclude=form), want, V, Q)
            # once a call (a prepared table reads its rows' heads instead; with the
            # compiled loops, per-query arrays and CSR rows once a block, by its worker)
            want_calls = ([] if form is prepared
                          else sorted([(64, near), (64, near), (22, near)])
                          if exclusion_loops == "kernels" else [(b, near)])
            assert sorted(calls) == want_calls, calls
        # a block that excludes nothing between two that do
        holed = [e if not 64 <= r < 128 else e[:0] for r, e in enumerate(lists)]
        assert_topk_equal(index.search(Q, k, exclude=holed), reference(V, Q, k, holed), V, Q)
    # the search with nothing excluded reads no exclusions at all
    seen = []
    chunked = exact._chunked
    monkeypatch.setattr(exact, "_chunked", lambda *a, **kw: seen.append(a[4]) or
                        chunked(*a, **kw))
    index.search(Q, 3)
    assert seen and all(ex is None for ex in seen)


def test_the_band_is_read_whole_first_only_before_many_look_ups(monkeypatch):
    """A search's band look-ups (the numpy path's: the compiled loops read a bitmap
    instead) start with one sequential read of the whole band only
    when they are many (one id per ``_BAND_READ_PER_ID`` band entries or more): for a few
    ids the read costs more than the cache misses it saves (10M items, 2 queries with 10
    exclusions each: the search took twice as long as without the read, ad hoc). Results
    are the same either way."""
    from twotower.index import exact, filters

    monkeypatch.setattr(filters, "_kernels", None)

    class Band(np.ndarray):  # counts the whole-band reads (a uint64 view of it)
        reads = 0

        def view(self, *args, **kw):
            if args and np.dtype(args[0]) == np.uint64:
                Band.reads += 1
            return super().view(*args, **kw)

    rng = np.random.default_rng(4)
    n = exact._ORDER_MIN + 500
    V = rng.standard_normal((n, 8)).astype(np.float32)
    V *= rng.pareto(2.0, size=(n, 1)).astype(np.float32) + 0.5
    index = make_index(IndexConfig(kind="exact", chunk_size=2048, batch_size=64,
                                   threads=2)).build(V)
    index._band = index._band.view(Band)
    Q = rng.standard_normal((3, 8)).astype(np.float32)
    top = np.argsort(-(Q @ V.T), axis=1)
    per_id = getattr(exact, "_BAND_READ_PER_ID", 32)
    many = -(-len(index._band) // per_id) // 3 + 1  # per query: the block reaches the line
    for m, reads in ((10, 0), (many, 1)):
        lists = [np.r_[top[r, :5], rng.choice(n, m - 5, replace=False)] for r in range(3)]
        Band.reads = 0
        assert_topk_equal(index.search(Q, 10, exclude=lists), reference(V, Q, 10, lists),
                          V, Q)
        assert Band.reads == reads, (m, Band.reads)


def test_score_rows_of_a_multiple_of_2_kib_get_one_cache_line_more():
    from twotower.index.exact import _row_stride

    for c in (512, 1024, 2048, 16384):
        ld = _row_stride(c)
        assert ld == c + 16 and (ld // 16) % 2 == 1, (c, ld)  # an odd number of lines
    for c in (1, 15, 16, 17, 256, 768, 1000, 1682, 2047):
        assert _row_stride(c) == c, c


@pytest.mark.parametrize("n, chunk, norm_bound", [(2048, 2048, True), (1500, 2048, True),
                                                  (70_000, 1024, True), (70_000, 1024, False),
                                                  (5000, 768, True), (70_000, 520, True)])
def test_scores_in_padded_rows_match_reference(n, chunk, norm_bound):
    # one chunk (exclusions as flat indices at the padded row stride), chunks of a
    # power-of-two length, a short first chunk and a short last one, each written into
    # the buffer at its own stride; a first chunk of 512 rows (padded to 528) before
    # chunks of 520 (the buffer had the chunks' stride: a reshape error)
    rng = np.random.default_rng(5)
    V = rng.standard_normal((n, 8)).astype(np.float32) * rng.gamma(2.0, size=(n, 1)).astype(
        np.float32)
    Q = rng.standard_normal((40, 8)).astype(np.float32)
    _filtered_search_matches_reference(V, Q, rng, (1, 10, 100), 200, 30, chunk_size=chunk,
                                       batch_size=16, norm_bound=norm_bound)


def test_chunked_scores_a_span_longer_than_its_chunk():
    # no caller makes one (a single query's 2,048-row prefix is scored before the scan),
    # but the buffer sized by ``chunk`` must not be what decides
    from twotower.index.exact import _chunked, _Mask

    rng = np.random.default_rng(8)
    V = rng.standard_normal((100, 8)).astype(np.float32)
    Q = rng.standard_normal((5, 8)).astype(np.float32)
    s, i = _chunked(V, Q, 10, _Mask(None, 16), None, 16, [(0, 50), (50, 66), (66, 100)])
    assert_topk_equal((s, i), reference(V, Q, 10), V, Q)


def test_an_interrupted_search_leaves_none_of_its_blocks_queued():
    # Ctrl-C during a large search raised KeyboardInterrupt in the caller, but the call's
    # other query blocks stayed queued on the worker pool and all ran: the cores stayed
    # busy, and the interpreter's exit waited for them (40,000 queries over 20,000 items,
    # interrupted after 1 s, exited 2.2 s later). Here the first block is interrupted
    # while the blocks already started wait; none queued behind them may start.
    import threading

    from twotower.index import exact

    started, release = [], threading.Event()

    def block(t: int) -> None:
        started.append(t)
        if t == 0:
            raise KeyboardInterrupt
        release.wait(20)

    try:
        with pytest.raises(KeyboardInterrupt):
            exact._run(block, list(range(200)), 2)
    finally:
        release.set()
    pool = exact._pool
    # each worker takes one of these after everything queued before them
    for fut in [pool.submit(lambda: None) for _ in range(exact._pool_size)]:
        fut.result(timeout=20)
    assert len(started) <= exact._pool_size + 1, len(started)
