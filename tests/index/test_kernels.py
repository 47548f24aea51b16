"""The compiled loops for per-query exclusions (``twotower.index._kernels``) against the
numpy path they stand in for: the same results, the same errors, and no read or write
outside an array when a caller changes its arrays during a search.

Every test here runs twice (``exclusion_loops`` in conftest.py): with the loops and
with the numpy path. Those that call the loops directly skip the numpy half."""

from __future__ import annotations

import numpy as np
import pytest

from twotower.errors import DataError
from twotower.index import IndexConfig, make_index

from .conftest import assert_topk_equal, reference

# each test with the compiled exclusion loops and with the numpy path (conftest.py)
pytestmark = pytest.mark.usefixtures("exclusion_loops")


def _loops(exclusion_loops):
    if exclusion_loops == "numpy":
        pytest.skip("calls the compiled loops themselves")
    from twotower.index import filters

    return filters._kernels


def _skewed(n, d=8, seed=3):
    """Norms spread over two decades, so that exact search stores rows by norm and stops
    early, as on a trained catalogue."""
    rng = np.random.default_rng(seed)
    V = rng.standard_normal((n, d)).astype(np.float32)
    V *= rng.pareto(1.5, size=(n, 1)).astype(np.float32) + 0.1
    return V


@pytest.mark.parametrize("threads", [1, 2])
def test_per_query_arrays_over_a_norm_ordered_catalogue_match_the_reference(threads):
    """Three query blocks; rows that exclude each query's own top items (read from the
    first chunks), random ones (mostly far beyond them), none, or repeats; k = 10 and a
    k whose scan goes past the rows found early."""
    from twotower.index import exact

    n = exact._ORDER_MIN + 4_000
    V = _skewed(n)
    rng = np.random.default_rng(8)
    b = 150
    Q = rng.standard_normal((b, V.shape[1])).astype(np.float32)
    top = np.argsort(-(Q @ V.T), axis=1)[:, :40]
    lists = []
    for r in range(b):
        kind = r % 4
        row = (top[r, :rng.integers(1, 40)] if kind == 0
               else rng.choice(n, 100, replace=False) if kind == 1
               else np.empty(0, np.int64) if kind == 2
               else np.r_[top[r, :5], top[r, :5], rng.choice(n, 20)])
        lists.append(np.asarray(row, dtype=np.int64))
    index = make_index(IndexConfig(kind="exact", chunk_size=2048, batch_size=64,
                                   threads=threads)).build(V)
    for k in (10, 3_000):
        assert_topk_equal(index.search(Q, k, exclude=lists), reference(V, Q, k, lists), V, Q)
        # a tuple of rows, and a deny list beside them
        deny = top[:3, 0]
        assert_topk_equal(index.search(Q, k, exclude=tuple(lists), deny=deny),
                          reference(V, Q, k, lists, deny=deny), V, Q)


def test_one_chunk_of_many_queries_matches_the_reference(monkeypatch):
    """The one-chunk search (1,682 items, as MovieLens) sets each block's excluded scores
    from the arrays in place, and from a CSR matrix's own int32 ids (with the loops, never
    copied to int64: ``Filters.ex_ids`` unread); ids at both ends of the catalogue."""
    sp = pytest.importorskip("scipy.sparse")
    from twotower.index import filters

    rng = np.random.default_rng(2)
    n = 1_682
    V = rng.standard_normal((n, 16)).astype(np.float32)
    Q = rng.standard_normal((600, 16)).astype(np.float32)
    lists = [np.r_[0, n - 1, rng.choice(n, rng.integers(0, 200), replace=False)]
             .astype(np.int64) for _ in range(len(Q))]
    lens = [len(x) for x in lists]
    csr = sp.csr_matrix((np.ones(sum(lens), np.float32), np.concatenate(lists),
                         np.r_[0, np.cumsum(lens)]), shape=(len(Q), n))
    assert csr.indices.dtype == np.int32
    copies = []
    real = filters.Filters.ex_ids
    monkeypatch.setattr(filters.Filters, "ex_ids",
                        property(lambda f: copies.append(1) or real.fget(f)))
    index = make_index(IndexConfig(kind="exact", batch_size=256, threads=2)).build(V)
    for k in (1, 10, n):
        want = reference(V, Q, k, lists)
        assert_topk_equal(index.search(Q, k, exclude=lists), want, V, Q)
        assert_topk_equal(index.search(Q, k, exclude=csr), want, V, Q)
    assert not copies or filters._kernels is None


def test_rows_of_other_types_are_read_as_before():
    """int32, uint8 and unsigned rows, a list of Python ints, an empty float row and a
    non-contiguous view: the loops take only C-contiguous int64 arrays; the others go the
    numpy way, with the same results."""
    rng = np.random.default_rng(4)
    n = 500
    V = rng.standard_normal((n, 8)).astype(np.float32)
    Q = rng.standard_normal((6, 8)).astype(np.float32)
    base = np.arange(20, dtype=np.int64)
    lists = [base.astype(np.int32), base.astype(np.uint16), [1, 2, 3], np.array([]),
             np.arange(40, dtype=np.int64)[::2], base]
    index = make_index(IndexConfig(kind="exact")).build(V)
    want = reference(V, Q, 10, [np.asarray(x, dtype=np.int64) for x in lists])
    assert_topk_equal(index.search(Q, 10, exclude=lists), want, V, Q)


@pytest.mark.parametrize("bad, fault", [
    (np.array([3, -1], dtype=np.int64), "got -1"),
    (np.array([3, 500], dtype=np.int64), "got 500"),
    (np.array([True, False]), "a bool is not an id|bool"),
    (np.array([1.0, 2.0]), "float64"),
    (np.array([[1, 2]], dtype=np.int64), "shape"),
    (np.array([2**64 - 1], dtype=np.uint64), "got 18446744073709551615"),
])
def test_a_bad_row_is_named_as_the_numpy_path_names_it(bad, fault):
    V = np.eye(8, dtype=np.float32).repeat(63, axis=0)[:500]
    index = make_index(IndexConfig(kind="exact")).build(V)
    lists = [np.arange(5, dtype=np.int64)] * 3 + [bad] + [np.arange(2, dtype=np.int64)]
    with pytest.raises(DataError, match=r"`exclude\[3\]`") as err:
        index.search(np.ones((5, 8), np.float32), 4, exclude=lists)
    assert any(f in str(err.value) for f in fault.split("|")), str(err.value)


def test_arrays_changed_during_a_search_are_refused_not_read_past(exclusion_loops):
    """What a search checked when it began (``check_rows``) is read again by later loops:
    a row of another length, or an id that left the catalogue since, is a ValueError from
    the loop and a DataError from the flattening, never an out-of-bounds read or write."""
    from twotower.index.filters import Filters

    k = _loops(exclusion_loops)
    n = 100
    rows = (np.array([1, 2, 3], np.int64), np.array([4], np.int64))
    ptr = k.check_rows(rows, n)
    assert ptr.tolist() == [0, 3, 4]
    bits = np.packbits(np.ones(n, bool), bitorder="little")
    ex_map = np.arange(n, dtype=np.int32)
    buf = np.zeros((2, n), np.float32)
    longer = (np.array([1, 2, 3, 5], np.int64), rows[1])
    moved = (rows[0], np.array([n + 10**6], np.int64))
    negative = (rows[0], np.array([-5], np.int64))
    for changed in (longer, moved, negative):
        with pytest.raises(ValueError, match="changed during the search"):
            k.near_rows(changed, ptr, bits, ex_map, n, n)
        with pytest.raises(ValueError, match="changed during the search"):
            k.scatter_rows(changed, ptr, 0, 2, buf, n, -np.inf)
        with pytest.raises(DataError, match="changed during the search"):
            Filters.from_lists(ptr, changed, n, None, n).ex_ids
    # the first row, unchanged in two of them, was set before the second was refused;
    # nothing else was written
    assert not buf[1].any() and np.flatnonzero(buf[0]).tolist() in ([], [1, 2, 3])
    buf[:] = 0
    # unchanged, each gives what the numpy path gives
    q, c = k.near_rows(rows, ptr, bits, ex_map, 3, n)
    assert q.tolist() == [0, 0] and c.tolist() == [1, 2]
    k.scatter_rows(rows, ptr, 0, 2, buf, n, -np.inf)
    assert np.isneginf(buf[0, [1, 2, 3]]).all() and np.isneginf(buf[1, 4])
    assert np.count_nonzero(buf) == 4
    f = Filters.from_lists(ptr, rows, n, None, n)
    assert f.lists is rows and f.ex_ids.tolist() == [1, 2, 3, 4] and f.lists is None
    # a CSR matrix's int32 ids, kept as they are: copied once read, re-checked
    flat = np.array([1, 2, 3, 4], np.int32)
    f = Filters.from_flat32(ptr, flat, n, None, n)
    assert f.flat32 is flat and f.ex_ids.dtype == np.int64 and f.flat32 is None
    flat[3] = n  # changed after the call checked it
    with pytest.raises(DataError, match="changed during the search"):
        Filters.from_flat32(ptr, flat, n, None, n).ex_ids
    with pytest.raises(ValueError, match="outside"):
        k.near_flat(ptr, flat, bits, ex_map, n, n)


def test_the_loops_refuse_arguments_that_do_not_fit(exclusion_loops):
    """A buffer smaller than the block or the catalogue, a band map shorter than the ids
    and rows outside the batch are refused before any write."""
    k = _loops(exclusion_loops)
    n = 50
    rows = (np.array([49], np.int64), np.array([0], np.int64))
    ptr = k.check_rows(rows, n)
    bits = np.packbits(np.ones(n, bool), bitorder="little")
    for buf, r0, r1 in ((np.zeros((2, n - 1), np.float32), 0, 2),
                        (np.zeros((1, n), np.float32), 0, 2),
                        (np.zeros((2, n), np.float32), 1, 3),
                        (np.zeros((2, n), np.float32), -1, 1)):
        with pytest.raises(ValueError):
            k.scatter_rows(rows, ptr, r0, r1, buf, n, -np.inf)
        assert not buf.any()
    with pytest.raises(ValueError):
        k.near_rows(rows, ptr, bits, np.arange(n - 1, dtype=np.int32), n, n)
    with pytest.raises(TypeError):
        k.near_rows(rows, ptr, bits, np.arange(n, dtype=np.float32), n, n)
    with pytest.raises(ValueError):
        k.near_flat(ptr, np.array([49], np.int64), bits, np.arange(n, dtype=np.int32), n, n)
    # the rows a call cannot take are reported by number, not read
    assert k.check_rows([rows[0], np.array([n], np.int64)], n) == 1
    assert k.check_rows([rows[0], rows[1].astype(np.int32)], n) == 1
    assert k.check_rows("not rows", n) == 0


def test_near_flat_and_near_rows_find_what_the_numpy_path_finds(exclusion_loops):
    from twotower.index import exact

    k = _loops(exclusion_loops)
    rng = np.random.default_rng(6)
    n = 300_001
    ex_map = rng.permutation(n).astype(np.int32)
    band = _band_of(ex_map)
    rows = tuple(rng.integers(0, n, rng.integers(0, 300)).astype(np.int64)
                 for _ in range(200))
    ptr = k.check_rows(rows, n)
    ids = np.concatenate(rows)
    for near in (1, 2048, 2049, 16_384, 100_000):
        want = exact._near_exclusions(ptr, ids, ex_map, band, near)  # numpy: no ex_bits
        cache: dict = {}
        for got in (exact._near_exclusions(ptr, ids, ex_map, band, near, None, cache),
                    exact._near_exclusions(ptr, ids.astype(np.int32), ex_map, band, near,
                                           None, cache),  # a CSR matrix's own ids
                    exact._near_exclusions(ptr, None, ex_map, band, near, rows, cache)):
            assert [a.tolist() for a in got] == [a.tolist() for a in want], near


def test_mask_head_sets_one_chunks_exclusions_and_nothing_else(exclusion_loops):
    """A chunk's scores (rows at a padded stride, as exact search lays them out), a head
    of (query, storage row) pairs spread over three chunks, all queries or a subset of
    them scored: exactly the pairs inside the chunk, at their rows, are set."""
    k = _loops(exclusion_loops)
    rng = np.random.default_rng(9)
    bq, c0, c = 40, 512, 300
    head_row = rng.integers(0, bq, 500).astype(np.int64)
    head_col = rng.integers(0, 1_200, 500).astype(np.int64)
    for rows in (None, np.sort(rng.choice(bq, 17, replace=False))):
        nr = bq if rows is None else len(rows)
        buf = np.zeros((nr, c + 16), np.float32)
        S = buf[:, :c]
        k.mask_head(S, head_row, head_col, c0, None if rows is None else
                    _positions(rows, bq), -np.inf)
        want = np.zeros_like(buf)
        inside = (head_col >= c0) & (head_col < c0 + c)
        pos = np.arange(bq) if rows is None else _positions(rows, bq)
        for q, col in zip(head_row[inside], head_col[inside]):
            if pos[q] >= 0:
                want[pos[q], col - c0] = -np.inf
        np.testing.assert_array_equal(buf, want)
    # a head row past S, or past `pos`, is refused (not written); so is a read-only S
    with pytest.raises(ValueError):
        k.mask_head(np.zeros((3, 10), np.float32), np.array([3], np.int64),
                    np.array([0], np.int64), 0, None, -np.inf)
    with pytest.raises(ValueError):
        k.mask_head(np.zeros((3, 10), np.float32), np.array([5], np.int64),
                    np.array([0], np.int64), 0, np.zeros(3, np.int64), -np.inf)
    ro = np.zeros((3, 10), np.float32)
    ro.flags.writeable = False
    with pytest.raises(TypeError):
        k.mask_head(ro, np.array([0], np.int64), np.array([0], np.int64), 0, None, -np.inf)


def _positions(rows, bq):
    pos = np.full(bq, -1, dtype=np.int64)
    pos[rows] = np.arange(len(rows))
    return pos


@pytest.mark.parametrize("b", [2, 40, 700])
def test_per_query_arrays_at_every_batch_size_match_the_reference(b):
    """Batches of one query block (few queries: long chunks, the catalogue split between
    the workers) find the first rows' ids for the whole batch; larger ones, each block's
    worker its own: both exact."""
    from twotower.index import exact

    n = exact._ORDER_MIN + 1_000
    V = _skewed(n, seed=5)
    rng = np.random.default_rng(b)
    Q = rng.standard_normal((b, V.shape[1])).astype(np.float32)
    top = np.argsort(-(Q @ V.T), axis=1)[:, :20]
    lists = [np.r_[top[r, :rng.integers(0, 20)], rng.choice(n, 50)].astype(np.int64)
             for r in range(b)]
    index = make_index(IndexConfig(kind="exact", threads=2)).build(V)
    for k in (10, 100):
        assert_topk_equal(index.search(Q, k, exclude=lists), reference(V, Q, k, lists), V, Q)


def test_scatter_flat_sets_a_blocks_rows_and_refuses_what_does_not_fit(exclusion_loops):
    """The one-chunk search's flat rows (a CSR matrix's int32 ids, a prepared table's
    gathered rows): every id of each row set, nothing else; ids past the catalogue, a
    buffer too small and offsets that do not match the ids are refused."""
    k = _loops(exclusion_loops)
    n = 30
    ptr = np.array([0, 2, 2, 5], np.int64)
    for dtype in (np.int32, np.int64):
        ids = np.array([0, 29, 3, 3, 7], dtype)
        buf = np.zeros((3, n + 2), np.float32)
        k.scatter_flat(ptr, ids, buf, n, -np.inf)
        want = np.zeros_like(buf)
        want[0, [0, 29]] = want[2, [3, 7]] = -np.inf
        np.testing.assert_array_equal(buf, want)
    for bad_ptr, bad_ids, shape in ((ptr, np.array([0, 30, 3, 3, 7], np.int64), (3, n)),
                                    (ptr, np.array([0, -1, 3, 3, 7], np.int32), (3, n)),
                                    (ptr, np.array([0, 1, 3, 3, 7], np.int64), (2, n)),
                                    (ptr, np.array([0, 1, 3, 3, 7], np.int64), (3, n - 1)),
                                    (ptr, np.array([0, 1, 3], np.int64), (3, n))):
        with pytest.raises(ValueError):
            k.scatter_flat(bad_ptr, bad_ids, np.zeros(shape, np.float32), n, -np.inf)


def _band_of(ex_map):
    """The band an exact index keeps beside its id -> storage row map (``_build``)."""
    from twotower.index import exact

    n = len(ex_map)
    band = np.zeros(-(-n // 8) * 8, np.uint8)
    np.minimum(ex_map >> exact._BAND_SHIFT, 255, out=band[:n], casting="unsafe")
    return band


def test_threads_searching_one_index_with_arrays_and_csr_rows_agree():
    """Eight threads on one fresh norm-ordered index, each search with per-query arrays or
    the same ids as CSR rows (the first calls build the index's bit maps at once, and each
    call flattens or reads the arrays in place): every result equals the one-thread one."""
    import threading

    sp = pytest.importorskip("scipy.sparse")
    from twotower.index import exact

    n = exact._ORDER_MIN + 500
    V = _skewed(n, seed=11)
    rng = np.random.default_rng(13)
    Q = rng.standard_normal((600, V.shape[1])).astype(np.float32)
    lists = [rng.choice(n, 60, replace=False).astype(np.int64) for _ in range(len(Q))]
    lens = [len(x) for x in lists]
    csr = sp.csr_matrix((np.ones(sum(lens), np.float32), np.concatenate(lists),
                         np.r_[0, np.cumsum(lens)]), shape=(len(Q), n))
    want = make_index(IndexConfig(kind="exact", threads=1)).build(V).search(Q, 10,
                                                                           exclude=lists)
    index = make_index(IndexConfig(kind="exact", threads=2)).build(V)
    errors, start = [], threading.Barrier(8)

    def work(t):
        try:
            start.wait()
            for i in range(6):
                got = index.search(Q, 10, exclude=lists if (t + i) % 2 else csr)
                np.testing.assert_array_equal(got[1], want[1])
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors[0]


@pytest.mark.parametrize("chunk_size", [2048, 4096])
def test_blocks_that_find_their_own_exclusions_match_the_reference(monkeypatch, chunk_size):
    """CSR rows and per-query arrays have each query block's exclusions below ``near``
    found by that block's worker: several blocks, one that excludes nothing, every id
    exact; with the loops, one look-up per block, none for the batch; on the numpy path,
    one for the batch."""
    sp = pytest.importorskip("scipy.sparse")
    from twotower.index import exact, filters

    n = exact._ORDER_MIN + 3_000
    V = _skewed(n, seed=21)
    rng = np.random.default_rng(22)
    b = 200  # blocks of 48: 48, 48, 48, 48 and 8 queries
    Q = rng.standard_normal((b, V.shape[1])).astype(np.float32)
    top = np.argsort(-(Q @ V.T), axis=1)[:, :30]
    lists = [np.r_[top[r, :rng.integers(0, 30)], rng.choice(n, 40)].astype(np.int64)
             if not 48 <= r < 96 else np.empty(0, np.int64) for r in range(b)]
    lens = [len(x) for x in lists]
    csr = sp.csr_matrix((np.ones(sum(lens), np.float32), np.concatenate(lists),
                         np.r_[0, np.cumsum(lens)]), shape=(b, n))
    csr.sum_duplicates()
    index = make_index(IndexConfig(kind="exact", threads=2, batch_size=48,
                                   chunk_size=chunk_size)).build(V)
    calls = []
    real = exact._near_exclusions
    monkeypatch.setattr(exact, "_near_exclusions",
                        lambda ptr, *a: calls.append(len(ptr) - 1) or real(ptr, *a))
    for form in (csr, lists):
        for k in (5, 40):
            calls.clear()
            got = index.search(Q, k, exclude=form)
            assert_topk_equal(got, reference(V, Q, k, lists), V, Q)
            if filters._kernels is not None:
                assert sorted(calls) == [8, 48, 48, 48], (form is csr, k, calls)
            else:
                assert calls == [b]


def test_sorted_heads_reads_a_prepared_tables_rows_below_near(exclusion_loops, monkeypatch):
    """A prepared table's heads for a block of queries (rows picked in any order, some
    twice, one empty): the compiled call gives the numpy path's pairs below ``near``, in
    query order; a row outside the table, or offsets past its ids, are refused."""
    from twotower.index import exact, filters

    k = _loops(exclusion_loops)
    n = exact._ORDER_MIN + 2_000
    V = _skewed(n, seed=31)
    index = make_index(IndexConfig(kind="exact")).build(V)
    rng = np.random.default_rng(32)
    table = [rng.choice(n, rng.integers(0, 300), replace=False) for _ in range(40)]
    table[7] = np.empty(0, np.int64)
    sel = index.prepare_exclusions(table).rows([7, 3, 3, 39, 0, 12, 25, 7, 18])
    for near, (r0, r1) in ((4_096, (0, 9)), (16_384, (2, 7)), (40_000, (0, 9))):
        got = sel.head(r0, r1, near)
        monkeypatch.setattr(filters, "_kernels", None)
        q, c = sel.head(r0, r1, near)
        monkeypatch.setattr(filters, "_kernels", k)
        keep = c < near
        assert got[0].tolist() == q[keep].tolist() and got[1].tolist() == c[keep].tolist()
        assert len(got[0]) > 0
    ptr = np.array([0, 2, 3], np.int64)
    ids = np.array([1, 5, 2], np.int32)
    assert [a.tolist() for a in k.sorted_heads(np.array([1, 0], np.int64), ptr, ids, 5)] \
        == [[0, 1], [2, 1]]
    for t, p in ((np.array([2], np.int64), ptr), (np.array([-1], np.int64), ptr),
                 (np.array([1], np.int64), np.array([0, 2, 4], np.int64))):
        with pytest.raises(ValueError, match="outside the table"):
            k.sorted_heads(t, p, ids, 5)


def test_top_one_gives_the_best_in_tie_order(exclusion_loops):
    """One query's top k (the single-query search over one chunk): the best first, equal
    scores by rank (int32 or int64) or by row, -inf entries last, k past n; what a stable
    sort by (-score, rank) gives."""
    k_ = _loops(exclusion_loops)
    rng = np.random.default_rng(41)
    n = 500
    s = rng.integers(0, 20, n).astype(np.float32)  # many ties
    s[rng.choice(n, 60, replace=False)] = -np.inf
    rank = rng.permutation(n)
    for r in (None, rank.astype(np.int64), rank.astype(np.int32)):
        key = np.arange(n) if r is None else r
        want = np.lexsort((key, -s))
        for k in (1, 10, 64, n - 1, n, n + 7):
            scores, rows = k_.top_one(s, k, r)
            m = min(k, n)
            assert rows.tolist() == want[:m].tolist(), (k, r is None)
            assert scores.tolist() == s[want[:m]].tolist()
    for bad_rank in (rank[:-1].astype(np.int64), rank.astype(np.float64)):
        with pytest.raises((TypeError, ValueError)):
            k_.top_one(s, 3, bad_rank)
    with pytest.raises(ValueError):
        k_.top_one(s, 0, None)


def test_a_single_query_reads_its_array_in_place(monkeypatch):
    """One query with its seen items as an array (the serving hot path): checked by the
    loops and set in place, never flattened (``Filters.ex_ids`` unread), with the same
    results and the same errors as the numpy path."""
    from twotower.index import filters

    rng = np.random.default_rng(42)
    n = 1_682
    V = rng.standard_normal((n, 16)).astype(np.float32)
    Q = rng.standard_normal((30, 16)).astype(np.float32)
    index = make_index(IndexConfig(kind="exact")).build(V)
    copies = []
    real = filters.Filters.ex_ids
    monkeypatch.setattr(filters.Filters, "ex_ids",
                        property(lambda f: copies.append(1) or real.fget(f)))
    for i in range(len(Q)):
        seen = [np.r_[0, n - 1, rng.choice(n, 100, replace=False)].astype(np.int64)]
        for k in (10, 200):
            assert_topk_equal(index.search(Q[i:i + 1], k, exclude=seen),
                              reference(V, Q[i:i + 1], k, seen), V, Q[i:i + 1])
    assert not copies or filters._kernels is None
    with pytest.raises(DataError, match=r"`exclude\[0\]`.*got 1682"):
        index.search(Q[:1], 10, exclude=[np.array([3, n], np.int64)])
