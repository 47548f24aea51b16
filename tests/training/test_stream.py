"""Streamed reading: every row once, seeded bounded shuffling, vocabularies as in memory."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from twotower.data import Vocabulary, read_interactions
from twotower.errors import ConfigError, DataError, NotFittedError
from twotower.training import InteractionStream, StreamConfig, rebatch, shuffle_chunks


def _frame(n=1000, seed=0, str_ids=False):
    rng = np.random.default_rng(seed)
    u = rng.integers(0, 70, n)
    i = rng.zipf(1.5, n) % 300
    df = pd.DataFrame({"userId": u, "movieId": i, "rating": rng.integers(1, 6, n) * 1.0,
                       "row": np.arange(n)})
    if str_ids:
        df["userId"] = "u" + df["userId"].astype(str)
        df["movieId"] = "m" + df["movieId"].astype(str)
    return df


@pytest.fixture(params=["parquet", "csv"])
def files(request, tmp_path):
    df = _frame()
    p = tmp_path / f"x.{request.param}"
    if request.param == "parquet":
        df.to_parquet(p, row_group_size=256)
    else:
        df.to_csv(p, index=False)
    return df, p


def _stream(p, **kw):
    cfg = dict(user_col="userId", item_col="movieId", rating_col="row", read_rows=100,
               shuffle_buffer=0)
    return InteractionStream(p, StreamConfig(**{**cfg, **kw}))


def test_record_batches_cover_every_row_once(files):
    df, p = files
    s = _stream(p)
    s.scan()
    rows = np.concatenate([c["rating"] for c in s.chunks()]).astype(int)
    np.testing.assert_array_equal(rows, np.arange(len(df)))  # file order, each row once
    s = _stream(p, shuffle_buffer=128)
    s.scan()
    shuffled = np.concatenate([c["rating"] for c in s.chunks(0)])
    assert sorted(shuffled.astype(int).tolist()) == list(range(len(df)))


def _count_passes(monkeypatch) -> list:
    """A list that gains an entry for each pass a stream makes over its file
    (``InteractionStream.record_batches`` calls)."""
    passes = []
    real = InteractionStream.record_batches

    def counted(self):
        passes.append(1)
        return real(self)
    monkeypatch.setattr(InteractionStream, "record_batches", counted)
    return passes


@pytest.mark.parametrize("fixed", [False, True])
def test_a_scan_with_digest_reads_the_file_once(files, monkeypatch, fixed):
    # the digest a checkpoint and a multi-process check need comes from the scan's own
    # pass (it was one more pass over the file), and equals a pass of its own
    df, p = files
    reference = _stream(p).content_digest()
    vocab = {}
    if fixed:
        s = _stream(p)
        s.scan()
        vocab = {"user_vocab": s.stats.user_vocab, "item_vocab": s.stats.item_vocab}
    passes = _count_passes(monkeypatch)
    s = InteractionStream(p, _stream(p).config, **vocab)
    s.scan(digest=True)
    assert s.content_digest() == reference and len(passes) == 1
    s = InteractionStream(p, _stream(p).config, **vocab)
    s.scan()  # without: the digest is a pass of its own
    assert s.content_digest() == reference and len(passes) == 3
    # another row's content: another digest
    df.loc[len(df) // 2, "row"] += 1  # the column read as ratings here
    df.to_parquet(p, row_group_size=256) if p.suffix == ".parquet" else df.to_csv(p, index=False)
    assert _stream(p).content_digest() != reference
    # a stream scanned again reads the file as it is now: its digest too
    s = InteractionStream(p, _stream(p).config, **vocab)
    df.to_parquet(p, row_group_size=256) if p.suffix == ".parquet" else df.to_csv(p, index=False)
    s.scan(digest=True)
    first = s.content_digest()
    df.loc[len(df) // 3, "row"] += 1
    df.to_parquet(p, row_group_size=256) if p.suffix == ".parquet" else df.to_csv(p, index=False)
    s.scan()
    assert s.content_digest() != first

def test_batches_have_the_batch_size_and_cover_every_row(files):
    df, p = files
    s = _stream(p, shuffle_buffer=300)
    s.scan()
    sizes, rows = [], []
    for b in s.batches(64, epoch=1):
        sizes.append(len(b["user"]))
        rows.append(b["rating"])
    assert sizes == [64] * (len(df) // 64) + [len(df) % 64]
    assert sorted(np.concatenate(rows).astype(int).tolist()) == list(range(len(df)))


def test_shuffle_is_seeded_deterministic_and_mixes(files):
    _, p = files

    def order(seed, epoch=0):
        s = _stream(p, shuffle_buffer=200, seed=seed)
        s.scan()
        return np.concatenate([c["rating"] for c in s.chunks(epoch)]).astype(int)

    a, b, c, d = order(1), order(1), order(2), order(1, epoch=1)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c) and not np.array_equal(a, d)
    assert not np.array_equal(a, np.sort(a))


def test_parquet_is_decoded_on_the_reading_thread(tmp_path, monkeypatch):
    """Arrow's thread pool decoded each record batch at more CPU per row (30 ns against
    23 on the 20M benchmark set), CPU a training pass takes from XLA's threads."""
    import pyarrow.parquet as pq
    p = tmp_path / "x.parquet"
    _frame().to_parquet(p, row_group_size=256)
    seen = []
    iter_batches = pq.ParquetFile.iter_batches

    def spy(self, *args, **kw):
        seen.append(kw.get("use_threads", True))
        return iter_batches(self, *args, **kw)
    monkeypatch.setattr(pq.ParquetFile, "iter_batches", spy)
    s = _stream(p, shuffle_buffer=0)
    s.scan()
    assert sum(len(c["user"]) for c in s.chunks(0)) == 1000
    assert seen == [False, False]


def test_shuffle_buffer_bounds_how_far_rows_move():
    n, buf = 5000, 100
    out = np.concatenate([c["x"] for c in shuffle_chunks(
        ({"x": np.arange(s, min(s + 64, n))} for s in range(0, n, 64)), buf, seed=0)])
    assert sorted(out.tolist()) == list(range(n))
    # a row is emitted no earlier than buffer_size rows before it was read
    assert (out[np.arange(n) < n - buf - 64] >= 0).all()
    assert (np.arange(n) - np.argsort(out) <= buf + 64).all()


def test_rebatch_exact_sizes():
    chunks = ({"x": np.arange(s, s + 7)} for s in range(0, 70, 7))
    got = list(rebatch(chunks, 16))
    assert [len(b["x"]) for b in got] == [16, 16, 16, 16, 6]
    assert np.concatenate([b["x"] for b in got]).tolist() == list(range(70))
    assert [len(b["x"]) for b in rebatch(({"x": np.arange(70)},), 16,
                                         drop_remainder=True)] == [16] * 4


@pytest.mark.parametrize("sizes", [[40, 0, 3, 5, 50, 1, 1], [16, 16, 32], [100], [5, 11, 16]])
def test_rebatch_mixed_chunk_sizes_keep_every_row_in_order(sizes):
    # chunks larger, smaller and exactly the batch size, and empty ones; two columns
    starts = np.cumsum([0] + sizes)
    chunks = [{"x": np.arange(a, b), "y": -np.arange(a, b)} for a, b in zip(starts, starts[1:])]
    got = list(rebatch(iter(chunks), 16))
    n = int(starts[-1])
    assert [len(b["x"]) for b in got] == [16] * (n // 16) + ([n % 16] if n % 16 else [])
    assert np.concatenate([b["x"] for b in got]).tolist() == list(range(n))
    assert all((b["y"] == -b["x"]).all() for b in got)


@pytest.mark.parametrize("str_ids", [False, True])
@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_streaming_vocabulary_equals_in_memory(tmp_path, fmt, str_ids):
    df = _frame(str_ids=str_ids)
    p = tmp_path / f"x.{fmt}"
    df.to_parquet(p, row_group_size=200) if fmt == "parquet" else df.to_csv(p, index=False)
    mem = read_interactions(p, user_col="userId", item_col="movieId", rating_col="rating")
    s = _stream(p, rating_col="rating", read_rows=64)
    stats = s.scan()
    assert stats.user_vocab == mem.user_vocab and stats.item_vocab == mem.item_vocab
    assert stats.rows == len(mem)
    np.testing.assert_array_equal(stats.item_counts, mem.item_popularity())
    assert stats.rating_range == (1.0, 5.0)
    got = np.concatenate([c["user"] for c in s.chunks()])
    np.testing.assert_array_equal(got, mem.users)


def test_given_vocabulary_is_used_and_unknown_ids_are_named(tmp_path):
    df = _frame()
    p = tmp_path / "x.parquet"
    df.to_parquet(p)
    uv = Vocabulary(np.arange(70)[::-1], "user")
    uv.save(tmp_path / "users.json")
    iv = Vocabulary.from_values(df["movieId"], "item")
    s = InteractionStream(p, StreamConfig(user_col="userId", item_col="movieId",
                                          shuffle_buffer=0),
                          user_vocab=Vocabulary.load(tmp_path / "users.json"), item_vocab=iv)
    s.scan()
    np.testing.assert_array_equal(np.concatenate([c["user"] for c in s.chunks()]),
                                  69 - df["userId"].to_numpy())
    small = Vocabulary(np.arange(10), "user")
    bad = InteractionStream(p, StreamConfig(user_col="userId", item_col="movieId"),
                            user_vocab=small, item_vocab=iv)
    with pytest.raises(DataError,
                       match=r"x\.parquet, row \d+ \(1-based\), column 'userId': user id"):
        bad.scan()
    skip = InteractionStream(p, StreamConfig(user_col="userId", item_col="movieId",
                                             unknown="skip"), user_vocab=small, item_vocab=iv)
    assert skip.scan().rows == int((df["userId"] < 10).sum())


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
@pytest.mark.parametrize("role", ["user", "item"])
def test_an_id_missing_from_one_given_vocabulary_names_its_row(tmp_path, fmt, role):
    """With one vocabulary given, the scan named no row, and the id as numpy prints it
    ("user id np.int64(12)"), where two given vocabularies named the row."""
    df = _frame()
    p = tmp_path / f"x.{fmt}"
    if fmt == "parquet":
        df.to_parquet(p)
    else:
        df.to_csv(p, index=False)
    col = {"user": "userId", "item": "movieId"}[role]
    first = int(np.argmax(df[col] >= 10))  # the first row whose id is not in 0..9
    given = {f"{role}_vocab": Vocabulary(np.arange(10), role)}
    s = InteractionStream(p, StreamConfig(user_col="userId", item_col="movieId"), **given)
    where = f"row {first + 1} \\(1-based\\)" if fmt == "parquet" else f"line {first + 2}"
    with pytest.raises(DataError, match=f"x\\.{fmt}, {where}, column '{col}': {role} id "
                                        f"'?{df[col][first]}'? is not in the given"):
        s.scan()


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_bad_column_name_is_a_data_error_naming_file_and_column(tmp_path, fmt):
    df = _frame()
    p = tmp_path / f"log.{fmt}"
    df.to_parquet(p) if fmt == "parquet" else df.to_csv(p, index=False)
    s = InteractionStream(p, StreamConfig(user_col="user", item_col="movieId"))
    with pytest.raises(DataError, match=rf"log\.{fmt} has no column 'user' \(the user column\)"):
        s.scan()
    s = InteractionStream(p, StreamConfig(user_col="userId", item_col="movieId",
                                          rating_col="stars"))
    with pytest.raises(DataError, match=r"no column 'stars'"):
        s.scan()


def test_empty_id_names_the_line(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("userId,movieId\n1,2\n,3\n")
    with pytest.raises(DataError, match=r"x\.csv, line 3, column 'userId': empty user id"):
        InteractionStream(p, StreamConfig(user_col="userId", item_col="movieId")).scan()


def test_missing_file_and_vocab_before_scan(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        InteractionStream(tmp_path / "nope.parquet").scan()
    with pytest.raises(NotFittedError, match="call scan first"):
        InteractionStream(tmp_path / "nope.parquet").user_vocab


def test_shards_split_the_rows(tmp_path):
    df = _frame()
    p = tmp_path / "x.parquet"
    df.to_parquet(p, row_group_size=100)
    got = []
    for index in range(3):
        s = InteractionStream(p, StreamConfig(user_col="userId", item_col="movieId",
                                              rating_col="row", read_rows=100,
                                              shuffle_buffer=0), shard=(index, 3))
        s.scan()
        got.append(np.concatenate([c["rating"] for c in s.chunks()]))
    assert sorted(np.concatenate(got).astype(int).tolist()) == list(range(len(df)))


@pytest.mark.parametrize("given", [False, True])
def test_a_shards_errors_name_the_files_row(tmp_path, given):
    """A shard counted only its own batches' rows: the bad row 450 of the file (in shard 1
    of 3, batches of 100) was named as row 150."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    df = _frame()
    p = tmp_path / "x.parquet"
    users = pa.array(df["userId"], mask=np.arange(len(df)) == 449)  # (0-based)
    pq.write_table(pa.table({"userId": users, "movieId": df["movieId"], "row": df["row"]}),
                   p, row_group_size=100)
    s = InteractionStream(p, StreamConfig(user_col="userId", item_col="movieId",
                                          rating_col="row", read_rows=100), shard=(0, 3))
    assert s.scan().rows == 400  # batches 0, 3, 6, 9: not the bad one
    vocabs = ({"user_vocab": Vocabulary(np.arange(70), "user"),
               "item_vocab": Vocabulary.from_values(df["movieId"], "item")} if given else {})
    s = InteractionStream(p, StreamConfig(user_col="userId", item_col="movieId",
                                          rating_col="row", read_rows=100), shard=(1, 3),
                          **vocabs)
    with pytest.raises(DataError, match=r"x\.parquet, row 450 \(1-based\), column 'userId'"):
        s.scan()


@pytest.mark.parametrize("ids", [np.arange(5, 105),
                                 np.array([7, -3, 10**15, 42, 2**62, -2**62]), None],
                         ids=["dense-lookup-table", "sparse-binary-search", "span-in-order"])
def test_int_id_mapping_matches_the_vocabulary(ids):
    import pyarrow as pa

    from twotower.training.stream import _Mapper
    if ids is None:  # every id of 5-104 in order: index = id - 5, no table
        vocab = Vocabulary(np.arange(5, 105), "item")
    else:
        vocab = Vocabulary(np.random.default_rng(0).permutation(ids), "item")  # not sorted
    m = _Mapper(vocab)
    assert m.dense == (ids is None)
    keys = np.concatenate([vocab.ids, [-2**63, 2**63 - 1, 0, 1, 106]])
    want = vocab.lookup_or(keys.tolist())
    np.testing.assert_array_equal(m.indices(pa.array(keys, pa.int64())), want)
    # ids written as text: any int64 (19 digits too); beyond int64 is no id
    text = pa.array([str(k) for k in keys] + [" 12x", None, "9999999999999999999"],
                    pa.string())
    np.testing.assert_array_equal(m.indices(text), np.concatenate([want, [-1, -1, -1]]))


def test_int_id_mapping_of_a_span_out_of_order_at_the_int64_edge():
    """Every id of a span, not in order, up to int64's largest: no subtraction (index !=
    id - lowest id). The check compared the ids with ``np.arange(lo, 2**63)``, which numpy
    makes float64, where ids 1,024 apart are equal: the vocabulary passed as in order."""
    import pyarrow as pa

    from twotower.training.stream import _Mapper
    top = 2**63 - 1
    vocab = Vocabulary([top, top - 2, top - 1], "item")
    m = _Mapper(vocab)
    assert not m.dense
    keys = [top - 1, top, top - 2, top - 3, 0]
    np.testing.assert_array_equal(m.indices(pa.array(keys, pa.int64())), [2, 0, 1, -1, -1])
    assert _Mapper(Vocabulary([top - 2, top - 1, top], "item")).dense  # in order: it is


def test_int_id_mapping_inside_the_lookup_table_span():
    """Ids that all lie in the table's span take the one-gather path: holes still map
    to -1, and the table's offset is applied."""
    import pyarrow as pa

    from twotower.training.stream import _Mapper
    vocab = Vocabulary(np.random.default_rng(1).permutation(np.arange(1000, 1200, 2)), "item")
    m = _Mapper(vocab)
    assert m.lut is not None and m.lo == 1000
    keys = np.random.default_rng(2).integers(1000, 1199, 500)  # evens known, odds holes
    want = vocab.lookup_or(keys.tolist())
    assert (want == -1).any() and (want >= 0).any()
    np.testing.assert_array_equal(m.indices(pa.array(keys, pa.int64())), want)


def test_shuffle_mixes_record_batches_as_large_as_the_buffer():
    """Record batches as large as the buffer still mix across batches: the buffer is
    exchanged a quarter at a time, so no batch comes out whole before the next."""
    buffer, size, n_chunks = 2048, 2048, 5
    chunks = [{"src": np.full(size, c), "row": np.arange(size) + c * size}
              for c in range(n_chunks)]
    out = list(shuffle_chunks(iter(chunks), buffer, seed=0))
    src = np.concatenate([o["src"] for o in out])
    rows = np.concatenate([o["row"] for o in out])
    np.testing.assert_array_equal(np.sort(rows), np.arange(size * n_chunks))
    assert (np.diff(src) < 0).any()  # a later batch's row before an earlier batch's
    assert max(len(o["src"]) for o in out[:-1]) <= buffer // 4  # the last: the flush


@pytest.mark.parametrize("buffer", [5, 1031, 6000])
def test_shuffle_keeps_each_rows_columns_together_whatever_their_dtypes(buffer):
    """The buffer holds one record per row (``_row_dtype``): an int32 column, an int64 one
    after it, a float32 and a 2-D float32 one come out with every row once, its values
    together and in their own dtypes, the same for the same seed (buffer 5: rows one by
    one; 1,031: quarters; 6,000: more than the 5,000 rows)."""
    n = 5000

    def chunks():
        for s in range(0, n, 700):
            r = np.arange(s, min(s + 700, n))
            yield {"user": r.astype(np.int32), "id": r + 2**40, "w": (r / 2).astype(np.float32),
                   "v": np.stack([r, -r], axis=1).astype(np.float32)}

    runs = [list(shuffle_chunks(chunks(), buffer, seed=1)) for _ in range(2)]
    got = {k: np.concatenate([c[k] for c in runs[0]]) for k in runs[0][0]}
    row = got["user"].astype(np.int64)
    np.testing.assert_array_equal(np.sort(row), np.arange(n))
    assert not np.array_equal(row, np.arange(n))
    np.testing.assert_array_equal(got["id"], row + 2**40)
    np.testing.assert_array_equal(got["w"], (row / 2).astype(np.float32))
    np.testing.assert_array_equal(got["v"], np.stack([row, -row], axis=1))
    assert [str(got[k].dtype) for k in ("user", "id", "w", "v")] == [
        "int32", "int64", "float32", "float32"]
    for a, b in zip(*runs, strict=True):
        assert all(np.array_equal(a[k], b[k]) for k in a)


class _ChoiceSlots:
    """The slots ``shuffle_chunks`` drew before ``_SlotPicker``: uniformly random distinct
    slots, in random order, drawn afresh for every piece (the reference for mixing)."""

    def __init__(self, rng, n):
        self.rng, self.n = rng, n

    def __call__(self, r):
        return self.rng.choice(self.n, r, replace=False)


class _QuarterSlots(_ChoiceSlots):
    """Weak: one permutation's quarters in turn (each row comes back 4 pieces later, in
    the order it came in)."""

    def __call__(self, r):
        if not hasattr(self, "perm"):
            self.perm, self.k = self.rng.permutation(self.n), 0
        q, self.k = self.k % 4, self.k + 1
        return self.perm[q * (self.n // 4):q * (self.n // 4) + r]


class _SortedSlots(_ChoiceSlots):
    """Weak: the right slots in slot order (rows of one piece leave in the order they came)."""

    def __call__(self, r):
        return np.sort(super().__call__(r))


def _mixing(monkeypatch, picker=None, n=200_000, chunk=5000, buffer=8192, window=256):
    """How a synthetic stream of ``n`` rows (record batches of ``chunk``) comes out of
    ``shuffle_chunks`` with ``picker`` as its slot chooser (None: the product's), over 4
    seeds: the quantiles of each row's displacement (output position - input position, in
    buffers), the share of rows read one after the other that come out within 8 positions,
    the share that come out in the same ``window`` of rows (a training batch), and the
    mean |rank correlation| of input and output order inside each window."""
    from twotower.training import stream
    if picker is not None:
        monkeypatch.setattr(stream, "_SlotPicker", picker)
    q, near, together, rho = [], [], [], []
    for seed in range(4):
        out = np.concatenate([c["x"] for c in shuffle_chunks(
            ({"x": np.arange(s, min(s + chunk, n))} for s in range(0, n, chunk)),
            buffer, seed)])
        np.testing.assert_array_equal(np.sort(out), np.arange(n))  # every row once
        at = np.empty(n, dtype=np.int64)
        at[out] = np.arange(n)
        body = np.arange(n) < n - 2 * buffer  # not the final flush
        q.append(np.quantile((at - np.arange(n))[body] / buffer, [0.1, 0.5, 0.9, 0.99]))
        near.append(np.mean(np.abs(np.diff(at[body])) <= 8))
        together.append(np.mean(np.diff(at[body] // window) == 0))
        ranks = np.argsort(np.argsort(out[:n // window * window].reshape(-1, window),
                                      axis=1), axis=1)
        rho.append(np.mean(np.abs([np.corrcoef(np.arange(window), r)[0, 1] for r in ranks])))
    monkeypatch.undo()
    return {"q": np.mean(q, axis=0), "near": np.mean(near), "together": np.mean(together),
            "rho": np.mean(rho)}


def _unlike(got, ref):
    """What of ``got`` is not within tolerance of ``ref`` (seed noise, 4 seeds: quantiles
    +-0.01 buffer, shares +-0.0005, |rho| +-0.003; the bounds allow 5-10x that)."""
    bad = []
    if np.abs(got["q"] - ref["q"]).max() > 0.05:
        bad.append(f"displacement quantiles {got['q'].round(3)} vs {ref['q'].round(3)}")
    for k, tol in (("near", 0.002), ("together", 0.005), ("rho", 0.015)):
        if abs(got[k] - ref[k]) > tol:
            bad.append(f"{k} {got[k]:.4f} vs {ref[k]:.4f}")
    return bad


def test_shuffle_mixes_as_much_as_fresh_random_slots_for_every_piece(monkeypatch):
    """``_SlotPicker`` (windows of a permutation, shifted) moves rows as far, and keeps
    rows read together as far apart in the output, as ``rng.choice`` per piece did."""
    ref = _mixing(monkeypatch, _ChoiceSlots)
    assert ref["near"] < 0.005 and ref["rho"] < 0.1  # the reference is well mixed
    assert _unlike(_mixing(monkeypatch), ref) == []


@pytest.mark.parametrize("weak", [_QuarterSlots, _SortedSlots])
def test_the_mixing_check_refuses_a_weak_choice_of_slots(monkeypatch, weak):
    assert _unlike(_mixing(monkeypatch, weak), _mixing(monkeypatch, _ChoiceSlots))


def test_slot_picker_slots_are_distinct_uniform_and_seeded():
    """Every slot equally likely per piece, distinct inside a piece, at any buffer size
    (windows that wrap), the same for the same seed; fresh permutations every
    ``_PERM_PIECES`` pieces."""
    from twotower.training.stream import _PERM_PIECES, _SlotPicker
    for n in (1024, 1031, 8192):
        pick = _SlotPicker(np.random.default_rng(0), n)
        hits = np.zeros(n)
        pieces = 2 * _PERM_PIECES + 3
        drawn = []  # the permutation after each piece, where it changed
        for _ in range(pieces):
            pos = pick(n // 4)
            assert len(np.unique(pos)) == n // 4 and pos.min() >= 0 and pos.max() < n
            hits[pos] += 1
            if not drawn or pick.perm is not drawn[-1]:
                drawn.append(pick.perm)
        # drawn at pieces 0, _PERM_PIECES and 2 * _PERM_PIECES only, each a new order
        assert len(drawn) == 3 and not np.array_equal(drawn[0], drawn[1])
        # binomial(pieces, ~1/4) per slot: sd ~5 at 131 pieces
        share = (n // 4) / n
        assert abs(hits.mean() - pieces * share) < 1e-9 and hits.std() < 1.3 * np.sqrt(
            pieces * share * (1 - share))
        again = _SlotPicker(np.random.default_rng(0), n)
        np.testing.assert_array_equal(again(n // 4), _SlotPicker(np.random.default_rng(0),
                                                                  n)(n // 4))


@pytest.mark.parametrize("objective", ["mse", "sampled_softmax"])
def test_model_inputs_match_the_in_memory_inputs(files, objective):
    # the streamed batches' model inputs are TwoTower._inputs' for the same rows
    df, p = files
    s = _stream(p, rating_col="rating", shuffle_buffer=300)
    stats = s.scan()
    lo, hi = stats.rating_range
    counts = stats.item_counts
    logq = np.log(np.maximum(counts / counts.sum(), 1e-12)).astype(np.float32)
    n = 0
    for b in s.batches(64, epoch=0, inputs=s.model_inputs(objective)):
        want = {"user", "item", "rating" if objective == "mse" else "logq"}
        assert set(b) == want
        if objective == "mse":
            assert b["rating"].dtype == np.float32
            assert b["rating"].min() >= 0 and b["rating"].max() <= 1
        else:
            np.testing.assert_array_equal(b["logq"], logq[b["item"]])
        n += len(b["user"])
    assert n == len(df)
    if objective == "mse":  # the rescaling itself, against the in-memory formula
        r = np.concatenate([b["rating"] for b in s.batches(1000, 0,
                                                           inputs=s.model_inputs("mse"))])
        raw = np.concatenate([c["rating"] for c in s.chunks(0)])
        np.testing.assert_array_equal(
            r, ((raw - lo) / max(hi - lo, 1e-9)).astype(np.float32))


def _reference_batches(df, s, batch_size, epoch, buffer):
    """``s.batches(batch_size, epoch, inputs=s.model_inputs("mse"))`` written plainly, from
    the file's rows as pandas read them: ids through ``Vocabulary.lookup_or``, float32
    ratings, then ``tf.data``'s shuffle row by row (each row takes a buffered row's slot,
    which is emitted; the slots drawn as ``shuffle_chunks`` draws them, per record batch:
    a quarter of the buffer at a time, ``_SlotPicker``, or one slot a row below 1,024
    rows), the rest in a random order, then batches cut from the rows in turn."""
    from twotower.training.stream import _PER_ROW_BELOW, _SlotPicker
    rows = list(zip(s.user_vocab.lookup_or(df["userId"].tolist()),
                    s.item_vocab.lookup_or(df["movieId"].tolist()),
                    df["rating"].to_numpy(np.float32)))
    out = rows
    if buffer:
        rng = np.random.default_rng(s.config.seed + epoch)
        picker, buf, out, at = _SlotPicker(rng, buffer), [], [], 0
        for m in [b.num_rows for b in s.record_batches()]:
            part, at = rows[at:at + m], at + m
            take = min(buffer - len(buf), m)
            buf += part[:take]
            part = part[take:]
            if buffer < _PER_ROW_BELOW:
                slots = rng.integers(0, buffer, len(part)) if take < m else []
            else:
                slots = np.concatenate([picker(len(part[j:j + buffer // 4]))
                                        for j in range(0, len(part), buffer // 4)] or [[]])
            for row, slot in zip(part, slots):
                out.append(buf[slot])
                buf[slot] = row
        out += [buf[j] for j in rng.permutation(len(buf))]
    lo, hi = df["rating"].min(), df["rating"].max()
    user, item, rating = (np.array(c) for c in zip(*out))
    rating = ((rating - lo) / max(hi - lo, 1e-9)).astype(np.float32)
    return [{"user": user[j:j + batch_size].astype(np.int32),
             "item": item[j:j + batch_size].astype(np.int32), "rating": rating[j:j + batch_size]}
            for j in range(0, len(out), batch_size)]


@pytest.mark.parametrize("ids", ["dense", "table", "search", "text"])
@pytest.mark.parametrize("fmt, rating", [("parquet", np.float32), ("parquet", np.float64),
                                         ("csv", np.float64)])
def test_streamed_batches_equal_a_plain_reference(tmp_path, ids, fmt, rating):
    """What the stream yields, for a given file, vocabularies and seed, is pinned against
    ``_reference_batches``: every value, dtype and batch, whatever the ids' mapping (each
    integer of a span: ``id - lo``; a table; a binary search; text), the ratings' type and
    the shuffle's way (file order; one row at a time; a quarter of the buffer at a time;
    a buffer larger than the file)."""
    from twotower.training.stream import _Mapper
    df = _frame(3000, seed=3).drop(columns="row")
    df["rating"] = df["rating"].astype(rating)
    df["movieId"] = np.unique(df["movieId"], return_inverse=True)[1] + 7  # 7, 8, ...
    if ids == "table":  # holes in the span
        df["movieId"] = df["movieId"] * 3 + 10**9
    elif ids == "search":
        df["movieId"] = df["movieId"] * 10**12
    elif ids == "text":
        df["movieId"] = "m" + df["movieId"].astype(str)
    p = tmp_path / f"x.{fmt}"
    df.to_parquet(p, row_group_size=700) if fmt == "parquet" else df.to_csv(p, index=False)
    first = None
    for buffer in (0, 100, 1024, 4096):
        s = _stream(p, rating_col="rating", read_rows=500, shuffle_buffer=buffer, seed=5)
        s.scan()
        if first is None:
            first = _Mapper(s.item_vocab)
            assert _Mapper(s.user_vocab).dense  # users 0-69: every id of the span
            assert (first.dense, first.lut is not None, first.is_int) == {
                "dense": (True, False, True), "table": (False, True, True),
                "search": (False, False, True), "text": (False, False, False)}[ids]
        got = list(s.batches(64, 1, inputs=s.model_inputs("mse")))
        want = _reference_batches(df, s, 64, 1, buffer)
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert {k: (v.dtype, v.tolist()) for k, v in g.items()} == \
                   {k: (v.dtype, v.tolist()) for k, v in w.items()}


@pytest.mark.parametrize("bad, what", [("-1e39", "a rating beyond what float32 holds"),
                                       ("inf", "expected a finite number"),
                                       ("nan", "expected a finite number")])
@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_a_rating_float32_cannot_hold_or_not_finite_is_named_below_as_above(tmp_path, bad,
                                                                            what, fmt):
    """The pass's one numpy min and max of the ratings sees a value below -FLOAT32_MAX,
    and a non-finite one, wherever it is in the batch (the test of readers has 1e39)."""
    p = tmp_path / f"x.{fmt}"
    text = "user_id,item_id,rating\n" + "".join(
        f"{j},{j},{bad if j == 7 else j}\n" for j in range(20))
    (tmp_path / "x.csv").write_text(text)
    if fmt == "parquet":
        pd.read_csv(tmp_path / "x.csv").to_parquet(p)
    at = "row 8 \\(1-based\\)" if fmt == "parquet" else "line 9"
    with pytest.raises(DataError, match=rf"{at}, column 'rating': {what}"):
        InteractionStream(p, StreamConfig(rating_col="rating", read_rows=6)).scan()


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_ids_with_leading_zeros_stay_distinct_strings(tmp_path, fmt):
    """``007`` and ``7`` are two ids (read as strings), in memory and streamed alike."""
    df = pd.DataFrame({"userId": ["1", "01", "2", "1"], "movieId": ["007", "7", "7", "10"]})
    p = tmp_path / f"x.{fmt}"
    df.to_parquet(p) if fmt == "parquet" else df.to_csv(p, index=False)
    mem = read_interactions(p, user_col="userId", item_col="movieId")
    stats = _stream(p, rating_col=None).scan()
    assert sorted(mem.item_vocab.ids.tolist()) == ["007", "10", "7"]
    assert sorted(mem.user_vocab.ids.tolist()) == ["01", "1", "2"]
    assert stats.user_vocab == mem.user_vocab and stats.item_vocab == mem.item_vocab


def test_integral_float_ids_are_ints_streamed_and_in_memory(tmp_path):
    df = pd.DataFrame({"userId": [1.0, 2.0, 3.0], "movieId": [109.0, 7.0, 109.0]})
    p = tmp_path / "x.parquet"
    df.to_parquet(p)
    mem = read_interactions(p, user_col="userId", item_col="movieId")
    stats = _stream(p, rating_col=None).scan()
    assert mem.item_vocab.is_int and mem.item_vocab.ids.tolist() == [7, 109]
    assert stats.item_vocab == mem.item_vocab and stats.user_vocab == mem.user_vocab


def test_string_view_ids_and_float16_ratings_stream_as_in_memory(tmp_path):
    """Parquet from newer Arrow writers: string_view ids were refused as "not text", and a
    float16 rating column raised ArrowNotImplementedError; the in-memory reader reads both."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    p = tmp_path / "x.parquet"
    pq.write_table(pa.table({
        "userId": pa.array(["u1", "u2", "u1", "u3"]).cast(pa.string_view()),
        "movieId": pa.array([7, 9, 9, 7], pa.int16()),
        "row": pa.array([1.0, 4.5, 3.0, 2.0], pa.float16())}), p)
    mem = read_interactions(p, user_col="userId", item_col="movieId", rating_col="row")
    s = _stream(p)
    stats = s.scan()
    assert stats.rows == 4 and stats.rating_range == (1.0, 4.5)
    assert stats.user_vocab == mem.user_vocab and stats.item_vocab == mem.item_vocab
    np.testing.assert_array_equal(np.concatenate([c["rating"] for c in s.chunks()]),
                                  [1.0, 4.5, 3.0, 2.0])


def test_non_finite_rating_and_ragged_line_are_named(tmp_path):
    df = pd.DataFrame({"userId": [1, 2, 3], "movieId": [5, 6, 7],
                       "rating": [4.0, np.inf, np.nan]})
    p = tmp_path / "x.parquet"
    df.to_parquet(p)
    with pytest.raises(DataError, match=r"x\.parquet, row 2 \(1-based\), column 'rating': "
                                        r"expected a finite number, got inf"):
        _stream(p, rating_col="rating").scan()
    c = tmp_path / "x.csv"
    c.write_text("userId,movieId,rating\n1,2,4\n1,3\n")
    with pytest.raises(DataError, match=r"x\.csv, line 3: expected 3 fields"):
        _stream(c, rating_col="rating").scan()


@pytest.mark.parametrize("col", ["userId", "movieId"])
def test_null_string_id_in_parquet_is_named_by_the_scan(tmp_path, col):
    df = pd.DataFrame({"userId": ["a", "b", "c"], "movieId": ["x", "y", "z"]})
    df[col] = df[col].astype(object)
    df.loc[1, col] = None
    p = tmp_path / "x.parquet"
    df.to_parquet(p)
    with pytest.raises(DataError, match=rf"row 2 \(1-based\), column '{col}': empty"):
        _stream(p, rating_col=None).scan()
    df = pd.DataFrame({"userId": [1, 2], "movieId": [1, 2], "row": [1.0, None]})
    df.to_parquet(p)
    with pytest.raises(DataError, match=r"row 2 \(1-based\), column 'row': expected a finite "
                                        r"number, got nothing \(null\)"):
        _stream(p).scan()


@pytest.mark.parametrize("buffer, rows", [(1, 10), (3, 50), (7, 7), (64, 1000), (5, 1)])
def test_small_buffers_exchange_rows_one_by_one(buffer, rows):
    """``_exchange_rows`` (small buffers, all of a chunk at once) emits what a row-by-row
    buffer emits for the same slots, for multi-column rows too, and leaves the same buffer."""
    from twotower.training.stream import _exchange_rows
    rng = np.random.default_rng(buffer)
    buf = {"x": np.arange(buffer) + 10_000, "y": np.c_[np.arange(buffer), -np.arange(buffer)]}
    part = {"x": np.arange(rows), "y": np.c_[np.arange(rows) + 500, -np.arange(rows)]}
    slots = rng.integers(0, buffer, rows)
    ref = {k: v.copy() for k, v in buf.items()}
    want = {"x": [], "y": []}
    for t, j in enumerate(slots):
        for k in ref:
            want[k].append(ref[k][j].copy())
            ref[k][j] = part[k][t]
    got = _exchange_rows(buf, part, slots)
    for k in buf:
        np.testing.assert_array_equal(got[k], np.array(want[k]))
        np.testing.assert_array_equal(buf[k], ref[k])


@pytest.mark.parametrize("buffer", [1, 7, 64, 1023])
def test_small_buffers_keep_every_row_once_in_chunk_sized_pieces(buffer):
    n = 5000
    out = list(shuffle_chunks(({"x": np.arange(s, min(s + 512, n))} for s in range(0, n, 512)),
                              buffer, seed=0))
    rows = np.concatenate([c["x"] for c in out])
    assert sorted(rows.tolist()) == list(range(n))
    # a buffer of 1 keeps the order (as tf.data's does); a larger one does not
    assert np.array_equal(rows, np.arange(n)) == (buffer == 1)
    # one piece per record batch (plus the flush), not a piece per quarter buffer
    assert len(out) <= -(-n // 512) + 1


def test_progress_counts_work_done_not_work_dispatched():
    """The rate on a progress line was measured before the loss was fetched, which waits
    for the device: a line printed seconds late claimed 351k examples/s against 251k."""
    import io
    import time

    from twotower.training.stream import Progress
    out = io.StringIO()
    p = Progress(every_s=1e-9, out=out)
    p.t0 = p.last = time.perf_counter()
    p.update(1000, lambda: time.sleep(0.5) or 1.0)  # the device finishes 0.5 s later
    rate = float(out.getvalue().split("examples  ")[1].split(" examples/s")[0].replace(",", ""))
    assert rate < 2100, out.getvalue()


def test_stream_reads_what_the_in_memory_reader_reads_and_names_what_it_cannot(tmp_path):
    """A tester's list: a CSV with a byte-order mark failed only when streamed; a bad
    rating named no line; a list-typed id column gave a raw pyarrow error; one given
    vocabulary was replaced by the scan's."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from twotower.errors import DataError
    rows = "".join(f"u{i % 50},i{i % 30},{1 + i % 5}\n" for i in range(500))
    cfg = StreamConfig(rating_col="rating")
    (tmp_path / "bom.csv").write_text("user_id,item_id,rating\n" + rows, encoding="utf-8-sig")
    assert InteractionStream(tmp_path / "bom.csv", cfg).scan().rows == 500
    (tmp_path / "bad.csv").write_text("user_id,item_id,rating\n"
                                      + rows.replace("u7,i7,3", "u7,i7,bad", 1))
    with pytest.raises(DataError, match=r"bad.csv, line 9, column 'rating': expected a finite "
                                        r"number, got 'bad'"):
        InteractionStream(tmp_path / "bad.csv", cfg).scan()
    pq.write_table(pa.table({"user_id": pa.array([[1], [2]] * 10), "item_id": [1, 2] * 10,
                             "rating": [1.0, 2.0] * 10}), tmp_path / "l.parquet")
    with pytest.raises(DataError, match=r"column 'user_id': user ids must be text or integers, "
                                        r"got list<element: int64> values \(e\.g\. \[1\]\)"):
        InteractionStream(tmp_path / "l.parquet", cfg).scan()
    given = Vocabulary([f"u{i}" for i in range(1000)], name="user")
    st = InteractionStream(tmp_path / "bom.csv", cfg, user_vocab=given).scan()
    assert st.user_vocab is given and len(st.item_vocab) == 30
    with pytest.raises(DataError, match="user id 'u10' is not in the given user vocabulary"):
        InteractionStream(tmp_path / "bom.csv", cfg,
                          user_vocab=Vocabulary([f"u{i}" for i in range(10)], "user")).scan()


def test_a_file_changed_between_passes_is_named_at_the_first_pass_that_sees_it(tmp_path):
    """Replaced, the file gave "not in the given user vocabulary ... use unknown='skip'"
    (no vocabulary was given); cut, every epoch trained before the seen-items pass
    noticed. (Changed during a pass, the pass itself tells it: below, the check at each
    pass start is left out.)"""
    import os
    from twotower.errors import DataError
    rows = "".join(f"u{i % 50},i{i % 30},{1 + i % 5}\n" for i in range(500))
    f = tmp_path / "s.csv"
    f.write_text("user_id,item_id,rating\n" + rows)
    s = InteractionStream(f, StreamConfig(rating_col="rating"))
    s.scan()
    f.write_text("user_id,item_id,rating\n" + rows.replace("u3,", "zz,"))
    with pytest.raises(DataError, match=r"s.csv changed since it was scanned \((modified|its "
                                        r"last bytes differ)"):
        list(s.chunks())
    s._file_state = None
    with pytest.raises(DataError, match=r"changed since it was scanned \(it holds ids the scan did not see\)"):
        list(s.chunks())
    f.write_text("user_id,item_id,rating\n" + "".join(rows.splitlines(True)[:250]))
    with pytest.raises(DataError, match=r"changed since it was scanned \(500 rows then, 250"):
        list(s.chunks())
    s.scan()  # a scan again: the file as it is now
    f.write_text("user_id,item_id,rating\n" + rows)
    with pytest.raises(DataError, match=r"changed since it was scanned \([\d,]+ bytes then, "
                                        r"[\d,]+ now\)"):
        list(s.chunks())
    s.scan()
    os.replace(f, tmp_path / "old.csv")
    (tmp_path / "old.csv").rename(f)  # the same file back: no change
    assert sum(len(c["user"]) for c in s.chunks()) == 500
    (tmp_path / "new.csv").write_text("user_id,item_id,rating\n" + rows)
    os.replace(tmp_path / "new.csv", f)
    with pytest.raises(DataError, match=r"changed since it was scanned \(another file has "
                                        r"its name now\)"):
        list(s.chunks())


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
@pytest.mark.parametrize("same_time", [False, True])
def test_a_file_rewritten_in_place_with_the_same_rows_and_ids_is_named(tmp_path, fmt,
                                                                       same_time):
    """Rewritten in place between the scan and a training pass (same row count, only
    known ids: the rows swapped), the file trained silently on rows the scan never
    counted (its popularity, rating range). Named now at the pass's start: by its
    modification time, or with the time set back, by its last bytes."""
    import os
    df = pd.DataFrame({"user_id": [1, 2, 3, 4] * 25, "item_id": [10, 20, 30, 40] * 25,
                       "rating": [1.0, 2.0, 3.0, 4.0] * 25})
    swapped = df.assign(item_id=df["item_id"][::-1].to_numpy())
    p = tmp_path / f"x.{fmt}"

    def write(frame):
        frame.to_parquet(p) if fmt == "parquet" else frame.to_csv(p, index=False)

    write(df)
    s = InteractionStream(p, StreamConfig(rating_col="rating", shuffle_buffer=0))
    st = s.scan()
    assert sum(len(c["user"]) for c in s.chunks()) == st.rows  # unchanged: no error
    before = os.stat(p)
    write(swapped)
    assert os.stat(p).st_size == before.st_size and os.stat(p).st_ino == before.st_ino
    os.utime(p, ns=(before.st_atime_ns, before.st_mtime_ns + (0 if same_time else 10**9)))
    want = ("its last bytes differ, at the same size and modification time" if same_time
            else "modified at ")
    with pytest.raises(DataError, match=rf"x.{fmt} changed since it was scanned "
                                        rf"\({want}"):
        next(s.batches(10))
    with pytest.raises(DataError, match="changed since it was scanned"):
        s.seen_matrix()
    assert s.scan().rows == 100  # a scan again takes the file as it is
    assert sum(len(c["user"]) for c in s.chunks()) == 100


def test_one_given_vocabulary_with_unknown_skip_counts_the_rows_a_pass_yields(tmp_path):
    """With one vocabulary given and unknown='skip', the scan counted the rows it read,
    while every pass yields only rows with known ids: the passes then reported the file
    as changed."""
    rows = "".join(f"u{i % 50},i{i % 30},{1 + i % 5}\n" for i in range(500))
    (tmp_path / "s.csv").write_text("user_id,item_id,rating\n" + rows)
    given = Vocabulary([f"u{i}" for i in range(25)], name="user")  # half the users
    s = InteractionStream(tmp_path / "s.csv", StreamConfig(rating_col="rating",
                                                           unknown="skip"), user_vocab=given)
    st = s.scan()
    assert st.rows == 250 and st.user_vocab is given
    assert sum(len(c["user"]) for c in s.chunks()) == 250
    # the item counts (popularity, log-Q) and the rating range are those of the kept rows
    kept = [(u, i, r) for u, i, r in (ln.split(",") for ln in rows.splitlines())
            if int(u[1:]) < 25]
    want = np.zeros(len(st.item_vocab), np.int64)
    for _, i, _ in kept:
        want[st.item_vocab.index_of(i)] += 1
    np.testing.assert_array_equal(st.item_counts, want)
    assert st.rating_range == (min(float(r) for *_, r in kept),
                               max(float(r) for *_, r in kept))
    assert s.seen_matrix().nnz > 0


def test_float_ids_with_a_fraction_map_as_the_scan_names_them(tmp_path):
    """The scan named float ids as Python writes them ("2.0") and the mapping as Arrow
    casts them ("2"): fit_stream said the unchanged file had changed."""
    p = tmp_path / "f.parquet"
    pd.DataFrame({"userId": [1.5, 2.0, 3.0, 2.0, float("inf")], "movieId": [1, 2, 3, 1, 2],
                  "row": np.arange(5.0)}).to_parquet(p)
    s = _stream(p)
    stats = s.scan()
    assert stats.user_vocab.ids.tolist() == read_interactions(
        p, user_col="userId", item_col="movieId").user_vocab.ids.tolist()
    got = np.concatenate([c["user"] for c in s._index_chunks()])
    assert stats.user_vocab.ids_of(got).tolist() == ["1.5", "2.0", "3.0", "2.0", "inf"]


def test_a_model_config_given_as_a_name_is_refused_at_once():
    from twotower import TwoTower
    from twotower.errors import ConfigError
    with pytest.raises(ConfigError, match=r'got str \'tutorial\'; use '
                                          r'ModelConfig.preset\("tutorial"\)'):
        TwoTower("tutorial")
    with pytest.raises(ConfigError, match="`index` must be an IndexConfig"):
        TwoTower(None, "hnsw")


@pytest.mark.parametrize("at", [1, 500])
def test_a_quote_never_closed_is_refused_not_read_as_the_rest_of_the_file(tmp_path, at):
    """Arrow read a quote never closed as one value running to the end of the file: 997
    of 1,000 rows were silently lost (and the item ids turned to text), where the
    in-memory reader refuses the file. A quoted line break that is closed still reads."""
    lines = ["user_id,item_id"] + [f"{i},{i}" for i in range(1, 1001)]
    lines[at] = f'{at},"{at}'
    (tmp_path / "sq.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=rf"sq.csv, line {at + 1}, column 'item_id': a quote "
                                        "is opened and never closed"):
        InteractionStream(tmp_path / "sq.csv", StreamConfig()).scan()
    with pytest.raises(DataError, match=rf"a quote opened on line {at + 1} is never closed"):
        read_interactions(tmp_path / "sq.csv")
    (tmp_path / "ok.csv").write_text('user_id,item_id\n1,"a\nb"\n2,c\n')
    assert InteractionStream(tmp_path / "ok.csv", StreamConfig()).scan().rows == 2


@pytest.mark.parametrize("sep", ["¦", "，"])
def test_a_separator_of_more_than_one_byte_is_refused_by_name(tmp_path, sep):
    """'¦' passed the one-character check, then pandas and Arrow each failed with a
    traceback (a separator is one byte to both)."""
    (tmp_path / "u8.csv").write_text(f"user_id{sep}item_id\n1{sep}2\n", encoding="utf-8")
    with pytest.raises(Exception, match="must be an ASCII character") as err:
        StreamConfig(sep=sep)
    assert "stream.sep" in str(err.value)
    with pytest.raises(Exception, match="--sep: a field separator must be an ASCII"):
        read_interactions(tmp_path / "u8.csv", sep=sep)


def test_a_scan_again_reads_the_file_as_it_is_now(tmp_path):
    """After a first scan its vocabularies counted as given ones: a scan again after rows
    were appended failed ('it holds ids the scan did not see')."""
    p = tmp_path / "r.csv"
    p.write_text("user_id,item_id\n1,10\n2,20\n")
    stream = InteractionStream(p, StreamConfig())
    assert stream.scan().rows == 2
    with p.open("a") as fh:
        fh.write("3,30\n")
    stats = stream.scan()
    assert stats.rows == 3 and len(stats.user_vocab) == 3 and len(stats.item_vocab) == 3
    given = InteractionStream(p, StreamConfig(), item_vocab=Vocabulary([10, 20, 30]))
    assert len(given.scan().item_vocab) == 3  # a given vocabulary stays the given one


@pytest.mark.parametrize("given_role", ["user", "item"])
def test_unknown_skip_scans_in_one_pass(tmp_path, monkeypatch, given_role):
    """With one vocabulary given and unknown='skip', the scan read the file three times
    (every row; the kept rows' vocabulary; their counts): the kept rows' vocabulary,
    counts and rating range now come from the one pass, as a pass over them counts."""
    rows = "".join(f"u{i % 50},i{i % 30},{1 + i % 5}\n" for i in range(500))
    (tmp_path / "s.csv").write_text("user_id,item_id,rating\n" + rows)
    given = (Vocabulary([f"u{i}" for i in range(25)], name="user") if given_role == "user"
             else Vocabulary([f"i{i}" for i in range(0, 30, 2)], name="item"))
    passes = _count_passes(monkeypatch)
    s = InteractionStream(tmp_path / "s.csv", StreamConfig(rating_col="rating",
                                                           unknown="skip"),
                          **{f"{given_role}_vocab": given})
    st = s.scan()
    assert len(passes) == 1
    chunks = list(s.chunks())
    assert st.rows == sum(len(c["user"]) for c in chunks) == 250
    np.testing.assert_array_equal(
        st.item_counts, np.bincount(np.concatenate([c["item"] for c in chunks]),
                                    minlength=len(st.item_vocab)))
    ratings = np.concatenate([c["rating"] for c in chunks])
    assert st.rating_range == (ratings.min(), ratings.max())
    used = np.unique(np.concatenate([c["user" if given_role == "item" else "item"]
                                     for c in chunks]))
    built = st.item_vocab if given_role == "user" else st.user_vocab
    assert len(used) == len(built)  # the built vocabulary: only the kept rows' ids


@pytest.mark.parametrize("given_role", ["user", "item"])
def test_unknown_skip_builds_the_other_vocabulary_from_the_rows_it_keeps(tmp_path, given_role):
    """With one vocabulary given and unknown='skip', the other was built from every row:
    ids only skipped rows have were kept in the run with vectors never trained."""
    rows = [(f"u{i % 20}", f"i{i % 12}") for i in range(240)]
    rows += [("u_gone", "i_only_skipped"), ("u99", "i_only_skipped"), ("u_only_skipped", "i99")]
    (tmp_path / "s.csv").write_text("user_id,item_id\n" + "".join(f"{u},{i}\n" for u, i in rows))
    if given_role == "user":
        given = Vocabulary([f"u{i}" for i in range(20)] + ["u_only_skipped"], name="user")
    else:
        given = Vocabulary([f"i{i}" for i in range(12)] + ["i_only_skipped"], name="item")
    s = InteractionStream(tmp_path / "s.csv", StreamConfig(unknown="skip"),
                          **{f"{given_role}_vocab": given})
    st = s.scan()
    kept = [(u, i) for u, i in rows if (u if given_role == "user" else i) in set(given.ids)]
    want_users, want_items = {u for u, _ in kept}, {i for _, i in kept}
    assert set(st.user_vocab.ids) == (set(given.ids) if given_role == "user" else want_users)
    assert set(st.item_vocab.ids) == (set(given.ids) if given_role == "item" else want_items)
    assert st.rows == len(kept) == sum(len(c["user"]) for c in s.chunks())


def test_rebatch_keeps_a_remainder_of_one_row():
    got = list(rebatch(iter([{"x": np.arange(16)}, {"x": np.arange(16, 17)}]), 16))
    assert [len(b["x"]) for b in got] == [16, 1]


def test_lut_fast_path_refuses_the_id_one_past_its_span():
    """The look-up table's fast path: the id one past its span is unknown (-1), no
    IndexError."""
    import pyarrow as pa
    from twotower.training.stream import _Mapper
    vocab = Vocabulary(np.arange(1000, 1200, 2), "item")
    m = _Mapper(vocab)
    got = m.indices(pa.array([1000, 1000 + len(m.lut)], pa.int64()))
    np.testing.assert_array_equal(got, [vocab.lookup_or([1000])[0], -1])


def test_distinct_counter_merges_many_ids_across_parts():
    """Past 65,536 pending ids the counter merges its parts (no test reached it)."""
    import pyarrow as pa
    from twotower.training.stream import _DistinctCounter
    c = _DistinctCounter()
    for s in range(0, 200_000, 40_000):
        c.add(pa.array(np.arange(s, s + 40_000) % 150_000))
    v, n = c.values_counts()
    assert len(v) == 150_000 and n.sum() == 200_000


@pytest.mark.parametrize("read_rows", [1, 67_108_864, 100_000_000])
def test_every_read_rows_the_config_allows_reads_a_csv(files, read_rows):
    """read_rows above 67,108,863 made a CSV block of more than 2 GiB, which Arrow's int32
    block_size refused with a bare OverflowError; Parquet read them all."""
    df, p = files
    s = _stream(p, read_rows=read_rows)
    assert s.scan().rows == len(df)
    rows = np.concatenate([c["rating"] for c in s.chunks()]).astype(int)
    np.testing.assert_array_equal(rows, np.arange(len(df)))


def _arrays_held(counter):
    """The Arrow arrays a _DistinctCounter holds (its lists of parts, however named)."""
    return sum(len(v) for v in vars(counter).values() if isinstance(v, list))


def test_distinct_counter_holds_few_arrays_from_tiny_batches():
    """read_rows=1 gave the counter one value a batch: it held every batch's counts as
    arrays of their own until 65,536 values were pending (510 MB peak RSS on a 200k-row
    file, against the docs' memory bounded by read_rows)."""
    import pyarrow as pa
    from twotower.training.stream import _DistinctCounter
    rng = np.random.default_rng(0)
    values = rng.integers(0, 3_000, 20_000)
    c = _DistinctCounter()
    most = 0
    for v in values:
        c.add(pa.array([v]))
        most = max(most, _arrays_held(c))
    assert most <= 1_300
    got, n = c.values_counts()
    want, want_n = np.unique(values, return_counts=True)
    order = np.argsort(got)
    np.testing.assert_array_equal(got[order], want)
    np.testing.assert_array_equal(n[order], want_n)


def test_distinct_counter_merges_parts_of_repeated_ids_by_count():
    """Batches of one repeated id add one value each to the pending count: parts piled up
    by count, whatever their size."""
    import pyarrow as pa
    from twotower.training.stream import _DistinctCounter
    c = _DistinctCounter()
    most = 0
    for k in range(600):
        c.add(pa.array(np.full(65_536, k % 2)))
        most = max(most, _arrays_held(c))
    assert most <= 300
    got, n = c.values_counts()
    assert sorted(zip(got.tolist(), n.tolist())) == [(0, 300 * 65_536), (1, 300 * 65_536)]


@pytest.mark.parametrize("text", ["user_id,item_id", "\ufeffuser_id,item_id",
                                  "user_id,item_id\n\n", "user_id,item_id\r"])
def test_a_csv_of_its_header_only_has_no_rows_with_or_without_a_line_end(tmp_path, text):
    """A header with no line end after it was 'malformed CSV: CSV parse error: Empty CSV
    file or block: cannot infer number of columns' (with one: 'has no rows', as the
    in-memory reader says of both)."""
    p = tmp_path / "h.csv"
    p.write_bytes(text.encode("utf-8"))
    with pytest.raises(DataError, match=r"h.csv has no rows$"):
        InteractionStream(p, StreamConfig()).scan()
    with pytest.raises(DataError, match=r"h.csv has no rows$"):
        read_interactions(p)


def test_a_parquet_pass_holds_no_more_arrow_memory_for_a_longer_file(tmp_path):
    """pyarrow's pre-buffered reader keeps every row group's column chunks it has read
    until the reader ends: a pass over a 153 MB file held 35 MB of Arrow memory after its
    first row groups and 152 MB near its end (peak RSS 5M rows 1,515 MB, 10M 1,562 MB,
    20M 1,631 MB in the training benchmark's streamed pass). Read without it, the
    stream's Arrow memory is one record batch's whatever the file's length."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    rng = np.random.default_rng(0)
    peaks = []
    for n in (100_000, 400_000):
        t = pa.table({"user_id": rng.integers(0, 1_000, n), "item_id": rng.integers(0, 5_000, n),
                      "rating": rng.random(n).astype(np.float32)})
        path = tmp_path / f"log{n}.parquet"
        pq.write_table(t, path, row_group_size=20_000)
        s = InteractionStream(path, StreamConfig(rating_col="rating", read_rows=4_096))
        base = pa.total_allocated_bytes()
        peak = 0
        for b in s.record_batches():
            peak = max(peak, pa.total_allocated_bytes() - base)
        peaks.append(peak)
    assert peaks[1] < 1.5 * peaks[0] + (1 << 20), peaks


@pytest.mark.parametrize("buffer", [5, 1031, 6000])
def test_shuffle_widens_its_buffer_for_a_later_chunks_wider_values(buffer):
    """A later chunk whose column is wider than the first chunk's (longer fixed-width
    strings, int64 after int32) widens the buffer: no value comes out cut or wrapped."""
    n = 3000

    def chunks():
        for s in range(0, n, 600):
            r = np.arange(s, min(s + 600, n))
            wide = s >= 1200  # the first chunks' strings are 4 characters, later ones 12
            ids = np.array([f"{v:012d}" if wide else f"{v:04d}" for v in r])
            num = (r + 2**40) if wide else r.astype(np.int32)
            yield {"id": ids, "num": num}

    out = list(shuffle_chunks(chunks(), buffer, seed=3))
    got_ids = np.concatenate([c["id"] for c in out])
    got_num = np.concatenate([c["num"] for c in out])
    want = {f"{v:012d}" if v >= 1200 else f"{v:04d}": v + (2**40 if v >= 1200 else 0)
            for v in range(n)}
    assert sorted(got_ids.tolist()) == sorted(want)
    assert [want[i] for i in got_ids.tolist()] == got_num.tolist()


def test_shuffle_refuses_a_chunk_with_other_columns():
    """A chunk with other columns than the first is an error naming both sets."""
    chunks = [{"a": np.arange(10)}, {"b": np.arange(10)}]
    with pytest.raises(DataError, match=r"\['b'\].*\['a'\]"):
        list(shuffle_chunks(iter(chunks), 4, seed=0))


def test_integer_ids_beyond_int64_are_text_ids_with_the_in_memory_warning(tmp_path):
    """A Parquet uint64 id column holding 2**63 or more (or 19-20 digits of text in a CSV)
    became text ids streamed without a word, while read_interactions warns: the scan warns
    with the same message (by rows, as in memory; an example id, as the scan keeps no
    row), and the vocabularies are the in-memory ones."""
    import warnings
    p = tmp_path / "u.parquet"
    big = np.array([2, 3, 2**63 + 5, 2**64 - 1, 2**63 + 5], np.uint64)
    pd.DataFrame({"userId": big, "movieId": big[:1].repeat(5)}).to_parquet(p)
    with pytest.warns(UserWarning, match=r"--data: .*u\.parquet, column 'userId': 3 of 5 ids "
                                         r"are integers beyond int64 \(e\.g\. "
                                         r"9223372036854775813\), so every id of the column is "
                                         r"read as text \(the id 2 is then '2'\)"):
        stats = _stream(p, rating_col=None).scan()
    with pytest.warns(UserWarning, match="beyond int64"):
        mem = read_interactions(p, user_col="userId", item_col="movieId")
    assert stats.user_vocab == mem.user_vocab and stats.item_vocab == mem.item_vocab
    c = tmp_path / "c.csv"
    c.write_text("userId,movieId\n5,1\n-99999999999999999999,2\n6,2\n9223372036854775808,1\n")
    with pytest.warns(UserWarning, match=r"column 'userId': 2 of 4 ids are integers beyond "
                                         r"int64 \(e\.g\. -99999999999999999999\)"):
        assert not _stream(c, rating_col=None).scan().user_vocab.is_int
    with warnings.catch_warnings():  # uint64 within int64: integer ids, without a word
        warnings.simplefilter("error")
        pd.DataFrame({"userId": big[:2], "movieId": big[:2]}).to_parquet(p)
        assert _stream(p, rating_col=None).scan().user_vocab.ids.tolist() == [2, 3]


def test_shuffle_keeps_int64_and_uint64_chunks_exact_or_refuses_them():
    """int64 in one chunk and uint64 in another: numpy's common type is float64, which
    rounds integers past 2**53 (2**63 + 1 came out 9.223372036854776e+18, every int64 id
    as a float). Values that fit the first chunk's type keep it; others are refused,
    naming the column."""
    small = [{"x": np.arange(5, dtype=np.int64)}, {"x": np.array([7, 8], np.uint64)}]
    out = np.concatenate([c["x"] for c in shuffle_chunks(iter(small), 4, seed=0)])
    assert out.dtype == np.int64 and sorted(out.tolist()) == [0, 1, 2, 3, 4, 7, 8]
    big = [{"x": np.array([2**53 + 1, 3], np.int64)}, {"x": np.array([2**63 + 1], np.uint64)}]
    with pytest.raises(DataError, match=r"column 'x'.*int64.*uint64"):
        list(shuffle_chunks(iter(big), 4, seed=0))


def test_a_few_text_ids_among_integers_are_warned_of_as_in_memory(tmp_path):
    """The in-memory reader warns when most ids of a column are plain integers but a few
    are not ('abc', '007': every id becomes text, 7 and 007 two ids); the streamed scan
    said nothing. It warns with the same message (by rows; an example id, as the scan
    keeps no row), and text ids with a few digits among them are not warned of."""
    import warnings
    p = tmp_path / "r.csv"
    p.write_text("user_id,item_id\n" + "".join(f"{u},{u % 9}\n" for u in range(20))
                 + "3,abc\n" + "5,007\n")
    with pytest.warns(UserWarning, match=r"column 'item_id': 2 of 22 ids are not plain "
                                         r"integers \(first: 'abc', data row 21\)"):
        mem = read_interactions(p)
    with pytest.warns(UserWarning, match=r"^--data: .*r\.csv, column 'item_id': 2 of 22 ids "
                                         r"are not plain integers \(e\.g\. '007'\), so every "
                                         r"id of the column is read as text \(7 and 007 are "
                                         r"then two ids\)$") as caught:
        stats = _stream(p, user_col="user_id", item_col="item_id", rating_col=None).scan()
    assert len([w for w in caught if "plain integers" in str(w.message)]) == 1
    assert stats.item_vocab == mem.item_vocab and stats.user_vocab.is_int
    q = tmp_path / "s.csv"  # text ids, a few of them digits: no warning
    q.write_text("user_id,item_id\n" + "".join(f"u{u},{u}\n" for u in range(5)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _stream(q, user_col="user_id", item_col="item_id", rating_col=None).scan()


def test_a_second_scan_of_a_file_repeats_no_id_warning(tmp_path):
    """A second scan of one file (a second pass, another stream over it) repeated the
    id warnings ("beyond int64", "not plain integers"): Python's once-per-place registry
    is reset by any change of the warning filters (a ``catch_warnings`` between the two).
    Each is said once per file (as it is then); a file changed since is said again."""
    import warnings
    p = tmp_path / "big.csv"
    p.write_text("user_id,item_id\n" + "".join(f"{u},{u % 9}\n" for u in range(20))
                 + "99999999999999999999,1\n" + "3,007\n")
    cols = dict(user_col="user_id", item_col="item_id", rating_col=None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s = _stream(p, **cols)
        s.scan()
        s.scan()
        _stream(p, **cols).scan()
    said = sorted(str(w.message).split(f"{p}, ")[1][:48] for w in caught)
    assert said == ["column 'item_id': 1 of 22 ids are not plain inte",
                    "column 'user_id': 1 of 22 ids are integers beyon"], said
    p.write_text(p.read_text() + "4,5\n")  # another file now: said again
    with pytest.warns(UserWarning, match="1 of 23 ids are integers beyond int64"):
        _stream(p, **cols).scan()


@pytest.mark.parametrize("value", ["", "  ", 5, ["rating"]])
def test_a_rating_column_that_is_no_name_is_refused_by_name(tmp_path, value):
    """``rating_col=""`` streamed with no ratings, in silence (the reader tests ``if
    rating_col``), and ``rating_col=["rating"]`` failed in the reader with a TypeError
    (unhashable list); the config now refuses both, as it does ``event_col``."""
    with pytest.raises(ConfigError, match=r"stream.rating_col must be a column name or "
                                          rf"None, got {re.escape(repr(value))}"):
        StreamConfig(rating_col=value)
    with pytest.raises(ConfigError, match=r"stream.rating_col must be a column name"):
        StreamConfig.from_dict({"rating_col": value})
    assert StreamConfig(rating_col="rating").rating_col == "rating"
    assert StreamConfig.from_dict({"rating_col": None}).rating_col is None
