"""The search contract, written once and run against every index kind.

ANN kinds run with settings under which they are exact on this small catalogue (see
``EXACT_SMALL``); their default-settings recall is tested in ``test_recall.py``.
"""

from __future__ import annotations

import itertools
import json
import os

import numpy as np
import pytest

from twotower.errors import ArtifactError, ConfigError, DataError, NotFittedError
from twotower.index import PAD_ID, Index, IndexConfig, load_index, make_index

from .conftest import assert_topk_equal, reference

# each test with the compiled exclusion loops and with the numpy path (conftest.py)
pytestmark = pytest.mark.usefixtures("exclusion_loops")


def test_matches_argsort_reference(built, catalogue):
    V, Q = catalogue
    got = built.search(Q, 10)
    assert_topk_equal(got, reference(V, Q, 10), V, Q)


def test_ties_any_order(config):
    # Small integer vectors: many exactly tied scores (exact in float32).
    rng = np.random.default_rng(3)
    V = rng.integers(-2, 3, size=(200, 6)).astype(np.float32)
    V[V.sum(axis=1) == 0, 0] = 1.0  # no zero rows (undefined under cosine)
    Q = rng.integers(-2, 3, size=(5, 6)).astype(np.float32)
    Q[:, 0] = 1.0
    got = make_index(config).build(V).search(Q, 15)
    assert_topk_equal(got, reference(V, Q, 15), V, Q)


def test_batch_equals_per_query(built, catalogue):
    V, Q = catalogue
    ex = [np.arange(r, 300, 7) for r in range(len(Q))]
    bs, bi = built.search(Q, 8, exclude=ex)
    for r in range(len(Q)):
        s1, i1 = built.search(Q[r:r + 1], 8, exclude=[ex[r]])
        assert_topk_equal((s1, i1), (bs[r:r + 1].astype(np.float64), bi[r:r + 1]))


def test_exclude_allow_deny(built, catalogue):
    V, Q = catalogue
    rng = np.random.default_rng(1)
    ref_all = reference(V, Q, 50)[1]
    ex = [ref_all[r, :rng.integers(0, 40)] for r in range(len(Q))]  # exclude the best ones
    allow = rng.choice(300, 200, replace=False)
    deny = ref_all[:, 40]
    got = built.search(Q, 10, exclude=ex, allow=allow, deny=deny)
    assert_topk_equal(got, reference(V, Q, 10, ex, allow, deny), V, Q)
    ids = got[1]
    for r in range(len(Q)):
        assert not set(ids[r]) & set(ex[r].tolist())
        assert set(ids[r]) <= set(allow.tolist())
        assert not set(ids[r]) & set(deny.tolist())


def test_sets_are_taken_as_id_lists(built, catalogue):
    """An allow-list held as a set (``allow={1, 2}``), or a set per query, was refused as
    "got object array of shape ()"; a set is a list of ids in no order."""
    V, Q = catalogue
    ref_all = reference(V, Q, 50)[1]
    ex = [ref_all[r, :r + 3] for r in range(len(Q))]
    allow, deny = np.arange(0, 300, 2), ref_all[:, 5]
    want = built.search(Q, 10, exclude=ex, allow=allow, deny=deny)
    got = built.search(Q, 10, exclude=[set(e.tolist()) for e in ex],
                       allow=set(allow.tolist()), deny=frozenset(deny.tolist()))
    assert_topk_equal(got, want)
    assert_topk_equal(built.search(Q, 10, exclude=[set()] * len(Q), allow=set()),
                      built.search(Q, 10, exclude=[[]] * len(Q), allow=[]))
    with pytest.raises(DataError, match="`allow` must be a 1-D sequence of integer item ids"):
        built.search(Q, 10, allow={"a", "b"})


def test_a_prepared_deny_list_is_honoured_kept_and_tied_to_its_build(config, catalogue):
    """``prepare_deny`` compiles a deny list once for an index (a model denies the items
    it never trained on every request): the same results as the plain list, with each
    form of exclusions and with an allow-list on top; the ids are copied (a caller's later
    edits, through a view too, do not reach it); another index's or an earlier build's
    list is refused."""
    V, Q = catalogue
    index = make_index(config).build(V)
    ref = reference(V, Q, 10)[1]
    ids = np.unique(ref[:, :3])
    view = ids[:]  # a view of the caller's array
    denied = index.prepare_deny(view)
    assert denied.n_denied == len(ids)
    ex = [ref[r, 3:3 + r] for r in range(len(Q))]
    prepared = index.prepare_exclusions(ex)
    for exclude in (None, ex, prepared.rows(np.arange(len(Q)))):
        want = reference(V, Q, 10, ex if exclude is not None else None, deny=ids)
        for _ in range(2):
            got = index.search(Q, 10, exclude=exclude, deny=denied)
            assert_topk_equal(got, want, V, Q)
        single = index.search(Q[:1], 10, exclude=None if exclude is None else ex[:1],
                              deny=denied)
        assert_topk_equal(single, reference(V, Q[:1], 10, None if exclude is None else
                                            ex[:1], deny=ids), V, Q[:1])
    allow = np.arange(0, 300, 2)
    assert_topk_equal(index.search(Q, 10, allow=allow, deny=denied),
                      reference(V, Q, 10, allow=allow, deny=ids), V, Q)
    kept = ids.copy()
    ids[:] = ref[0, 5]  # the caller edits its array (and so the view)
    assert_topk_equal(index.search(Q, 10, deny=denied), reference(V, Q, 10, deny=kept), V, Q)
    other = make_index(config).build(V)
    with pytest.raises(DataError, match="prepared by another index"):
        other.search(Q, 10, deny=denied)
    index.build(V)
    with pytest.raises(DataError, match="before this one was built again"):
        index.search(Q, 10, deny=denied)
    with pytest.raises(DataError):
        index.prepare_deny([300])
    with pytest.raises(DataError, match="got None"):
        index.prepare_deny(None)


def test_a_prepared_deny_list_over_a_norm_ordered_catalogue_is_derived_once():
    """Exact search over 65,536 items or more keeps its catalogue in norm order: a plain
    deny list is reordered, and its score mask built, on every call; a prepared one keeps
    both (its cache), for single queries and batches, with the reference's results."""
    rng = np.random.default_rng(5)
    V = rng.standard_normal((70_000, 8)).astype(np.float32)
    V *= rng.uniform(0.2, 3, (len(V), 1)).astype(np.float32)
    Q = rng.standard_normal((6, 8)).astype(np.float32)
    index = make_index(IndexConfig(kind="exact")).build(V)
    assert index._order is not None  # the norm-ordered path
    ids = np.unique(reference(V, Q, 5)[1][:, :2])
    denied = index.prepare_deny(ids)
    ex = [reference(V, Q, 5)[1][r, 2:3] for r in range(len(Q))]
    for q, e in ((Q, ex), (Q[:1], ex[:1])):
        got = index.search(q, 5, exclude=e, deny=denied)
        assert_topk_equal(got, reference(V, q, 5, e, deny=ids), V, q)
    cache = denied._filters.cache
    kept = {key: value for key, (_, value) in cache.items()}
    assert any(key[0] == "stored" for key in kept) and any(key[0] == "mask" for key in kept)
    for q, e in ((Q, ex), (Q[:1], ex[:1])):
        index.search(q, 5, exclude=e, deny=denied)
    assert cache.keys() == kept.keys()  # nothing made again: the same objects
    assert all(value is kept[key] for key, (_, value) in cache.items())


def test_small_allow_list(built, catalogue):
    V, Q = catalogue
    allow = np.array([5, 17, 42, 99, 250])
    got = built.search(Q, 3, allow=allow, exclude=[[17]] * len(Q))
    assert_topk_equal(got, reference(V, Q, 3, [[17]] * len(Q), allow), V, Q)


def test_padding_when_filters_leave_fewer_than_k(built, catalogue):
    V, Q = catalogue
    allow = np.arange(20)
    ex = [np.arange(r) for r in range(len(Q))]  # row r keeps 20 - r items
    s, i = built.search(Q, 25, exclude=ex, allow=allow)
    for r in range(len(Q)):
        assert (i[r] != PAD_ID).sum() == 20 - r
        assert np.isneginf(s[r, 20 - r:]).all() and (i[r, 20 - r:] == PAD_ID).all()
    assert_topk_equal((s, i), reference(V, Q, 25, ex, allow), V, Q)
    for r in (0, 5):  # one query at a time (its own path) pads alike
        one = built.search(Q[r:r + 1], 25, exclude=[ex[r]], allow=allow)
        assert (one[1][0, 20 - r:] == PAD_ID).all() and np.isneginf(one[0][0, 20 - r:]).all()
        assert_topk_equal(one, reference(V, Q[r:r + 1], 25, [ex[r]], allow), V, Q[r:r + 1])
    s, i = built.search(Q[:1], 5, exclude=[np.arange(297)])  # 3 left of 300
    assert (i[0, :3] != PAD_ID).all() and (i[0, 3:] == PAD_ID).all()
    assert np.isneginf(s[0, 3:]).all()


def test_a_batch_with_a_single_exclusion(built, catalogue):
    """One query of a batch excludes one item, the other (the same query) nothing."""
    V, Q = catalogue
    twice = Q[[0, 0]]
    best = int(built.search(twice[:1], 1)[1][0, 0])
    got = built.search(twice, 3, exclude=[[best], []])
    assert best not in got[1][0] and got[1][1, 0] == best
    assert_topk_equal(got, reference(V, twice, 3, [[best], []]), V, twice)


def test_denied_items_at_the_ends_of_chunks(built, catalogue):
    """The last item of the catalogue (and of a chunk: 50 items a chunk in exact-chunked)
    denied, with k the whole catalogue so any item let through is listed."""
    V, Q = catalogue
    for deny in ([299], [49], [49, 99, 299]):
        got = built.search(Q, 300, deny=np.array(deny))
        assert not np.isin(got[1], deny).any(), deny
        assert_topk_equal(got, reference(V, Q, 300, deny=deny), V, Q)


def test_everything_filtered(built, catalogue):
    V, Q = catalogue
    s, i = built.search(Q, 4, allow=np.array([], dtype=np.int64))
    assert (i == PAD_ID).all() and np.isneginf(s).all()
    s, i = built.search(Q[:1], 4, exclude=[np.arange(300)])
    assert (i == PAD_ID).all()


def test_k_larger_than_catalogue(built, catalogue):
    V, Q = catalogue
    s, i = built.search(Q, 350)
    assert s.shape == (len(Q), 350) and i.shape == (len(Q), 350)
    assert (i[:, :300] != PAD_ID).all() and (i[:, 300:] == PAD_ID).all()
    assert np.isneginf(s[:, 300:]).all()
    assert_topk_equal((s, i), reference(V, Q, 350), V, Q)


def test_k_far_beyond_catalogue_refused(built, catalogue):
    # padding 1e9 columns would allocate 12 GB per query: refused, naming k and the size
    V, Q = catalogue
    with pytest.raises(ConfigError, match=r"`k` = 1000000000 is larger than the catalogue "
                                          r"\(300 items\).*ask for k <= 300"):
        built.search(Q[:1], 10**9)
    # a k within the catalogue is never refused for its size, nor padding that fits
    assert built.search(Q[:1], 300)[1].shape == (1, 300)
    assert built.search(np.empty((0, 12), np.float32), 10**9)[1].shape == (0, 10**9)


def test_empty_query_batch(built, catalogue):
    s, i = built.search(np.empty((0, 12), np.float32), 5)
    assert s.shape == (0, 5) and i.shape == (0, 5)
    assert s.dtype == np.float32 and i.dtype == np.int64
    # with exclusions for no query, in each form (an empty list raised in numpy's concatenate)
    import scipy.sparse as sp
    for ex in ([], np.empty((0, 3), np.int64), sp.csr_matrix((0, 300), dtype=bool),
               built.prepare_exclusions([[1]]).rows([])):
        s, i = built.search(np.empty((0, 12), np.float32), 5, exclude=ex, deny=[2])
        assert s.shape == (0, 5) and i.shape == (0, 5)


def test_save_load_identical(built, catalogue, tmp_path):
    V, Q = catalogue
    ex = [np.arange(r, 300, 11) for r in range(len(Q))]
    before = built.search(Q, 10, exclude=ex, deny=[3, 4])
    path = built.save(tmp_path / "idx")
    built.save(tmp_path / "idx")  # overwriting an existing index is fine
    loaded = load_index(path)
    assert type(loaded) is type(built) and loaded.config == built.config
    assert (loaded.ntotal, loaded.dim, len(loaded)) == (300, 12, 300)
    after = loaded.search(Q, 10, exclude=ex, deny=[3, 4])
    np.testing.assert_array_equal(after[1], before[1])
    np.testing.assert_array_equal(after[0], before[0])
    assert Index.load(path).ntotal == 300
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left


def test_load_refuses_non_finite_vectors(built, tmp_path):
    # a non-finite vector (as build() refuses) written into the saved files: refused at
    # load, naming the file and the item, not returned with a NaN score
    damaged = load_index(built.save(tmp_path / "ok"))
    damaged._vectors[7, 1] = np.nan  # the kind's stored vectors (for HNSW, faiss' own)
    path = damaged.save(tmp_path / "nan")
    name = "vectors.npy" if (path / "vectors.npy").exists() else "index.faiss"
    with pytest.raises(ArtifactError, match=rf"{name} is corrupt: the vector of item 7 "):
        load_index(path)


def test_load_refuses_empty_files_and_null_config(built, tmp_path):
    # an empty (0-byte) array file
    path = built.save(tmp_path / "empty")
    name = "vectors.npy" if (path / "vectors.npy").exists() else "index.faiss"
    (path / name).write_bytes(b"")
    with pytest.raises(ArtifactError, match=rf"{name} is corrupt \(checksum mismatch"):
        load_index(path)
    _drop_checksums(path)  # as an index saved before checksums were recorded
    with pytest.warns(UserWarning, match="without checksums"), \
            pytest.raises(ArtifactError, match="cannot load index"):
        load_index(path)
    # "config": null would read as the default (exact) settings
    path = built.save(tmp_path / "null")
    meta = json.loads((path / "index.json").read_text())
    meta["config"] = None
    (path / "index.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match=r'index.json is corrupt: "config" must be an object'):
        load_index(path)


def _drop_checksums(path):
    meta = json.loads((path / "index.json").read_text())
    del meta["files"]
    (path / "index.json").write_text(json.dumps(meta))


def _flip_bytes(p, at, count=64):
    b = bytearray(p.read_bytes())
    at = at if at >= 0 else len(b) + at
    b[at:at + count] = bytes(x ^ 0x5A for x in b[at:at + count])
    p.write_bytes(bytes(b))


def test_saved_files_are_checksummed_and_damage_is_named(built, catalogue, tmp_path):
    """A standalone saved index had no checksums: 64 bytes overwritten inside vectors.npy
    loaded and searched silently (other scores, other items). Each file is checksummed in
    index.json and checked at load; an ArtifactError names the damaged or missing file."""
    V, Q = catalogue
    path = built.save(tmp_path / "ix")
    meta = json.loads((path / "index.json").read_text())
    saved = sorted(p.name for p in path.iterdir() if p.name != "index.json")
    assert sorted(meta["files"]) == saved
    want = built.search(Q, 10)
    for name in saved:
        bad = built.save(tmp_path / f"bad-{name}")
        _flip_bytes(bad / name, -200)  # 64 bytes inside the data, not the header
        with pytest.raises(ArtifactError, match=rf"{name} is corrupt \(checksum mismatch"):
            load_index(bad)
    gone = built.save(tmp_path / "gone")
    (gone / saved[0]).unlink()
    with pytest.raises(ArtifactError, match=rf"{saved[0]} is missing \(index.json lists it\)"):
        load_index(gone)
    # a list that leaves out a file the kind reads, or is not file name -> checksum
    for edit, match in ((lambda m: m["files"].pop(saved[-1]), "has no checksum of"),
                        (lambda m: m.update(files=["x"]), r'"files" must be an object'),
                        (lambda m: m["files"].update({"../x": "0"}), r'"files" must be')):
        odd = built.save(tmp_path / f"odd-{len(list(tmp_path.iterdir()))}")
        meta = json.loads((odd / "index.json").read_text())
        edit(meta)
        (odd / "index.json").write_text(json.dumps(meta))
        with pytest.raises(ArtifactError, match=match):
            load_index(odd)
    got = load_index(path).search(Q, 10)
    np.testing.assert_array_equal(got[1], want[1])


def test_load_reads_each_file_once_the_bytes_it_checked(built, catalogue, tmp_path,
                                                        replace_once_checked):
    """load_index hashed each file against index.json, then read it from disk again (a
    1M x 64 index: 256 MB read twice), so what it loaded was not what it had checked: a
    file replaced in between loaded unchecked. It loads the bytes it hashed."""
    V, Q = catalogue
    path = built.save(tmp_path / "ix")
    other = make_index(built.config).build(V[::-1].copy()).save(tmp_path / "other")
    want = built.search(Q, 10)
    replace_once_checked(path, json.loads((path / "index.json").read_text())["files"], other)
    got = load_index(path).search(Q, 10)
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(got[0], want[0])
    # (and each file was swapped once checked: a load now finds the other index's files)
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        load_index(path)


def test_an_index_saved_without_checksums_loads_with_a_warning(built, catalogue, tmp_path):
    """Indexes saved before checksums were recorded still load (same results), with a
    warning that their damage goes unnoticed; saving again adds the checksums."""
    V, Q = catalogue
    path = built.save(tmp_path / "old")
    _drop_checksums(path)
    with pytest.warns(UserWarning, match=r"saved without checksums .* save the index again"):
        old = load_index(path)
    np.testing.assert_array_equal(old.search(Q, 10)[1], built.search(Q, 10)[1])
    old.save(path)
    assert "files" in json.loads((path / "index.json").read_text())


def test_an_index_replaced_while_it_loads_is_read_again(built, catalogue, tmp_path,
                                                       monkeypatch):
    """Another save replacing the index between the read of index.json and of its files
    gave files that fail the first save's checksums: the load is done again, and returns
    the new index whole, not an error calling it corrupt."""
    from twotower.index import _base
    V, Q = catalogue
    path = built.save(tmp_path / "ix")
    other = make_index(built.config).build(V[::-1].copy())
    verify = _base._verify_files
    calls = []

    def replaced_meanwhile(d, meta, needed):
        if not calls:
            other.save(path)
        calls.append(1)
        verify(d, meta, needed)
    monkeypatch.setattr(_base, "_verify_files", replaced_meanwhile)
    got = load_index(path)
    assert len(calls) == 2
    np.testing.assert_array_equal(got.search(Q, 10)[1], other.search(Q, 10)[1])


def test_a_save_that_fails_or_is_killed_leaves_the_previous_index(built, catalogue, tmp_path):
    """Index.save writes a temporary sibling and renames it into place: an error while
    writing, or the process killed outright mid-save, leaves the previous index whole
    (it loads, checksums and all, with its results) and no stray directory once a later
    save has run."""
    import subprocess
    import sys
    import textwrap
    V, Q = catalogue
    path = built.save(tmp_path / "ix")
    want = built.search(Q, 10)
    before = {p.name: p.read_bytes() for p in path.iterdir()}
    other = make_index(built.config).build(V[::-1].copy())
    kind_save = type(other)._save

    def failing(self, directory):
        kind_save(self, directory)  # the files written, then the disk fills
        raise OSError(28, "No space left on device")
    type(other)._save = failing
    try:
        with pytest.raises(ArtifactError, match="the previous version is unchanged"):
            other.save(path)
    finally:
        type(other)._save = kind_save
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before
    # killed outright (no cleanup) while writing the new version's files
    script = textwrap.dedent(f"""
        import os, numpy as np
        from twotower.index import IndexConfig, make_index
        index = make_index(IndexConfig.from_json({built.config.to_json()!r}))
        index.build(np.load({str(tmp_path / "v.npy")!r}))
        save = type(index)._save
        def dying(self, directory):
            save(self, directory)
            os._exit(9)
        type(index)._save = dying
        index.save({str(path)!r})
    """)
    np.save(tmp_path / "v.npy", V[::-1].copy())
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    assert subprocess.run([sys.executable, "-c", script], env=env).returncode == 9
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before
    got = load_index(path).search(Q, 10)
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(got[0], want[0])
    other.save(path)  # the next save removes the killed one's temporary directory
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ix", "v.npy"]
    np.testing.assert_array_equal(load_index(path).search(Q, 10)[1], other.search(Q, 10)[1])


def test_saved_directory_follows_umask(built, tmp_path):
    umask = os.umask(0o027)
    try:
        path = built.save(tmp_path / "idx")
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o750  # not mkdtemp's 0700
    assert all(p.stat().st_mode & 0o777 == 0o640 for p in path.iterdir())


def test_bad_inputs_name_the_argument(built):
    with pytest.raises(ConfigError, match="`k`"):
        built.search(np.zeros((1, 12), np.float32), 0)
    with pytest.raises(ConfigError, match="`k`"):
        built.search(np.zeros((1, 12), np.float32), 2.5)
    with pytest.raises(DataError, match=r"`queries`.*\[batch, 12\].*\(3, 11\)"):
        built.search(np.zeros((3, 11), np.float32), 5)
    with pytest.raises(DataError, match=r"`queries`.*queries\[None, :\]"):
        built.search(np.zeros(12, np.float32), 5)
    q = np.zeros((2, 12), np.float32)
    q[1, 3] = np.nan
    with pytest.raises(DataError, match="`queries` must be finite; row 1"):
        built.search(q, 5)
    # None (a missing value in a list) was named as NaN, what float32 made of it
    with pytest.raises(DataError, match=r"^`queries` must be a numeric \[batch, 12\] array; "
                                        r"row 1 holds None$"):
        built.search([[0.0] * 12, [1.0] * 11 + [None]], 5)
    with pytest.raises(DataError, match=r"`exclude` must have one entry per query \(2\)"):
        built.search(np.zeros((2, 12), np.float32), 5, exclude=[[1]])
    with pytest.raises(DataError, match=r"`exclude\[1\]` ids must be internal ids in \[0, 300\)"):
        built.search(np.zeros((2, 12), np.float32), 5, exclude=[[1], [300]])
    with pytest.raises(DataError, match="`allow`"):
        built.search(np.zeros((1, 12), np.float32), 5, allow=[-1])
    with pytest.raises(DataError, match="`deny`"):
        built.search(np.zeros((1, 12), np.float32), 5, deny=[[1.5]])


def test_ragged_huge_and_wrapped_inputs_are_named(built, config):
    """A ragged list failed inside numpy's conversion (a bare ValueError); k >= 2**63 on an
    empty batch too; float64 entries past float32's range were called "NaN or inf"; a
    uint64 id past 2**63 was named as its wrapped negative value in a batch."""
    with pytest.raises(DataError, match=r"`queries` must be a numeric \[batch, 12\] array"):
        built.search([[0.0] * 12, [0.0] * 3], 3)
    with pytest.raises(DataError, match=r"`embeddings` must be a numeric \[n, d\] array"):
        make_index(config).build([[1.0, 2.0], [1.0]])
    with pytest.raises(ConfigError, match=r"`k` must be below 2\*\*62, got 9223372036854775808"):
        built.search(np.zeros((0, 12), np.float32), 2**63)
    q = np.zeros((1, 12))
    q[0, 4] = 1e39  # finite in float64
    with pytest.raises(DataError, match=r"`queries` row 0 holds 1e\+39; norms must be below"):
        built.search(q, 3)
    with pytest.raises(DataError, match=r"`embeddings` row 1 holds -2e\+40"):
        make_index(config).build(np.array([[1.0, 2.0], [-2e40, 0.0]]))
    for first in (np.array([1], np.uint64), np.array([1]), [1]):  # one dtype, or mixed
        with pytest.raises(DataError, match=r"`exclude\[1\]` .*got 9223372036854775813$"):
            built.search(np.zeros((2, 12), np.float32), 3,
                         exclude=[first, np.array([2**63 + 5], np.uint64)])
    # the shape is checked first, and the first bad row named: a NaN before a huge entry
    with pytest.raises(DataError, match=r"shape \[batch, 12\].*queries\[None, :\]"):
        built.search(np.full(12, 1e39), 3)
    q = np.zeros((3, 12))
    q[0, 1], q[2, 1] = np.nan, 1e39
    with pytest.raises(DataError, match=r"`queries` must be finite; row 0"):
        built.search(q, 3)


def test_unbuilt_index_says_build_first(config, tmp_path):
    index = make_index(config)
    assert len(index) == 0 and not index.is_built
    with pytest.raises(NotFittedError, match="call build first"):
        index.search(np.zeros((1, 12), np.float32), 5)
    with pytest.raises(NotFittedError, match="call build first"):
        _ = index.ntotal
    with pytest.raises(NotFittedError, match="call build first"):
        index.save(tmp_path / "x")


def test_bad_embeddings(config):
    with pytest.raises(DataError, match="`embeddings`.*2-D"):
        make_index(config).build(np.zeros(5, np.float32))
    bad = np.ones((4, 3), np.float32)
    bad[2, 1] = np.inf
    with pytest.raises(DataError, match="`embeddings` must be finite; row 2"):
        make_index(config).build(bad)


def test_build_copies_input(config, catalogue):
    V, Q = catalogue
    mine = V.copy()
    index = make_index(config).build(mine)
    before = index.search(Q, 5)
    mine[:] = 0.0
    np.testing.assert_array_equal(index.search(Q, 5)[1], before[1])


def test_cosine_metric(config, catalogue):
    V, Q = catalogue
    index = make_index(config.replace(metric="cosine")).build(V)
    got = index.search(Q * 3.0, 10, exclude=[[0]] * len(Q))
    ref = reference(V, Q, 10, [[0]] * len(Q), metric="cosine")
    assert_topk_equal(got, ref, V, Q, metric="cosine")
    # similar items: an item's nearest neighbour under cosine is itself
    s, i = index.search(V[:5], 1)
    np.testing.assert_array_equal(i[:, 0], np.arange(5))
    np.testing.assert_allclose(s[:, 0], 1.0, atol=1e-5)


def test_cosine_zero_vectors_score_zero(config, catalogue):
    """Under cosine a zero vector sat at L2 distance 1 from every unit query in the faiss
    kinds, as close as cosine 0.5: it came before items of cosine 0 to 0.5."""
    V, Q = catalogue
    V = V.copy()
    V[[3, 77, 150]] = 0.0
    index = make_index(config.replace(metric="cosine")).build(V)
    got = index.search(Q, 60)
    assert_topk_equal(got, reference(V, Q, 60, metric="cosine"))
    zero = np.isin(got[1], [3, 77, 150])
    np.testing.assert_array_equal(got[0][zero], 0.0)


def test_repeated_excluded_ids_count_once(config, catalogue, monkeypatch):
    """A raw log repeats items: an id excluded 20,000 times made the faiss kinds fetch
    20,000 extra candidates per query (a search 40x slower)."""
    V, Q = catalogue
    index = make_index(config).build(V)
    ex = [[5] * 20_000 + [7, 7]] + [[]] * (len(Q) - 1)
    ref = reference(V, Q, 10, [[5, 7]] + [[]] * (len(Q) - 1))
    if config.kind != "exact":
        asked = []
        search = type(index._faiss).search
        monkeypatch.setattr(type(index._faiss), "search",
                            lambda self, x, k, **kw: asked.append(k) or search(self, x, k, **kw))
        assert_topk_equal(index.search(Q, 10, exclude=ex), ref, V, Q)
        assert asked and max(asked) <= 12, asked  # k + the 2 distinct ids excluded
    else:
        assert_topk_equal(index.search(Q, 10, exclude=ex), ref, V, Q)


def test_prepared_table_errors_name_the_table(built):
    """prepare_exclusions' errors named `exclude` and called the table's rows queries."""
    sp = pytest.importorskip("scipy.sparse")
    n = len(built)
    with pytest.raises(DataError, match=rf"`table` as a sparse matrix must have shape "
                                        rf"\(2, {n}\) \(rows, items\)"):
        built.prepare_exclusions(sp.csr_matrix((2, n + 1), dtype=np.float32))
    with pytest.raises(DataError, match=rf"`table\[1\]` ids must be internal ids in \[0, {n}\)"):
        built.prepare_exclusions([[1], [n]])


def test_save_replaces_only_an_index(built, catalogue, tmp_path):
    """Index.save moved any file or directory at its target aside and removed it (a file
    was left behind as .name.old-<pid>)."""
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(ArtifactError, match="exists and is not a directory"):
        built.save(afile)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(ArtifactError, match="not a twotower index"):
        built.save(mine)
    assert afile.read_text() == "x" and (mine / "notes.txt").read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "mine"]
    built.save(tmp_path / "ix")
    built.save(tmp_path / "ix")  # an index saved before is replaced
    np.testing.assert_array_equal(load_index(tmp_path / "ix").search(catalogue[1], 5)[1],
                                  built.search(catalogue[1], 5)[1])


def test_edge_inputs_checked_like_any_other(built, catalogue, tmp_path):
    """Complex queries were cast to float32 silently; an empty batch skipped the filter
    checks; a saved index could name vectors in another directory."""
    V, Q = catalogue
    with pytest.raises(DataError, match="must be a real"):
        built.search(Q.astype(np.complex64), 5)
    with pytest.raises(DataError, match="internal ids"):
        built.search(Q[:0], 5, allow=[len(V)])
    with pytest.raises(DataError, match="one entry per query"):
        built.search(Q[:0], 5, exclude=[[1]])
    built.save(tmp_path / "ix")
    meta = json.loads((tmp_path / "ix" / "index.json").read_text())
    meta["state"]["vectors"] = "../other/vectors.npy"
    (tmp_path / "ix" / "index.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="must be an object whose \"vectors\" is a file"):
        load_index(tmp_path / "ix")


def test_sparse_exclusions(built, catalogue):
    sp = pytest.importorskip("scipy.sparse")
    V, Q = catalogue
    ex = [np.arange(r, 300, 5) for r in range(len(Q))]
    rows = np.repeat(np.arange(len(Q)), [len(e) for e in ex])
    m = sp.csr_matrix((np.ones(len(rows)), (rows, np.concatenate(ex))), shape=(len(Q), 300))
    np.testing.assert_array_equal(built.search(Q, 10, exclude=m)[1],
                                  built.search(Q, 10, exclude=ex)[1])


def test_sparse_exclusions_out_of_catalogue_are_named(built, catalogue):
    """scipy checks no index against the matrix shape: an id past the catalogue in a CSR
    row silently excluded another query's item in exact search (row * n + id), or failed
    with numpy's IndexError; it is refused as in a list, naming the row."""
    sp = pytest.importorskip("scipy.sparse")
    V, Q = catalogue
    best = built.search(Q[:2], 1)[1][:, 0]
    for bad in (300 + best[1], -1):  # row 0's id would land on query 1's best item
        m = sp.csr_matrix((np.ones(2), np.array([3, bad]), np.array([0, 2, 2])),
                          shape=(2, 300))
        with pytest.raises(DataError, match=rf"`exclude\[0\]` ids must be internal ids "
                                            rf"in \[0, 300\), got {bad}"):
            built.search(Q[:2], 1, exclude=m)
        with pytest.raises(DataError, match=rf"`table\[0\]` ids must be internal ids "
                                            rf"in \[0, 300\), got {bad}"):
            built.prepare_exclusions(m)


def test_sparse_exclusions_any_format_non_zeros_only(built, catalogue):
    # any scipy sparse form is read as CSR (a CSC's indptr is per column: not misread);
    # its non-zeros are the exclusions, stored zeros exclude nothing
    sp = pytest.importorskip("scipy.sparse")
    V, Q = catalogue
    ex = [np.arange(r, 300, 5) for r in range(len(Q))]
    want = built.search(Q, 10, exclude=ex)
    table = [ex[r] for r in (4, 0, 8)]
    want_table = built.search(Q[:3], 10, exclude=table)
    rows = np.repeat(np.arange(len(Q)), [len(e) for e in ex])
    m = sp.csr_matrix((np.ones(len(rows)), (rows, np.concatenate(ex))), shape=(len(Q), 300))
    best = reference(V, Q, 1, ex)[1][:, 0]  # each query's best item: stored as a zero
    with_zeros = sp.csr_matrix(
        (np.r_[np.ones(len(rows)), np.zeros(len(Q))],
         (np.r_[rows, np.arange(len(Q))], np.r_[np.concatenate(ex), best])), shape=m.shape)
    nnz = with_zeros.nnz
    assert nnz == m.nnz + len(Q)
    for form in (m.tocsc(), m.tocoo(), sp.csr_array(m).tocsc(), m.tobsr(), with_zeros):
        np.testing.assert_array_equal(built.search(Q, 10, exclude=form)[1], want[1])
        t = form.tocsr()[[4, 0, 8]]
        t = t.asformat(form.format)
        got = built.search(Q[:3], 10, exclude=built.prepare_exclusions(t).rows([0, 1, 2]))
        np.testing.assert_array_equal(got[1], want_table[1])
    assert with_zeros.nnz == nnz  # the caller's matrix is not changed

    class NotScipy:  # CSR-like arrays, but no way to read it as CSR
        indptr, indices, shape = np.zeros(10, np.int64), np.empty(0, np.int64), (9, 300)

    with pytest.raises(DataError, match="`exclude` as a sparse matrix must be a scipy"):
        built.search(Q, 10, exclude=NotScipy())
    with pytest.raises(DataError, match="`table` as a sparse matrix must be a scipy"):
        built.prepare_exclusions(NotScipy())


def test_wrong_config_kind():
    from twotower.index import ExactIndex
    with pytest.raises(ConfigError, match="kind='exact'"):
        ExactIndex(IndexConfig(kind="hnsw"))


def test_exclusion_forms(built, catalogue):
    V, Q = catalogue
    b = 3
    lists = [[1, 2], [], [5]]
    arrays = [np.array([1, 2]), np.array([]), np.array([5], dtype=np.int32)]  # [] is float
    a = built.search(Q[:b], 6, exclude=lists)
    np.testing.assert_array_equal(built.search(Q[:b], 6, exclude=arrays)[1], a[1])
    assert_topk_equal(a, reference(V, Q[:b], 6, lists), V, Q[:b])
    with pytest.raises(DataError, match=r"`exclude\[1\]` must be a 1-D sequence of integer"):
        built.search(Q[:b], 6, exclude=[[1], [2.5], [3]])


def test_prepared_exclusions(built, catalogue, tmp_path):
    # A table prepared once (one row per user, say), its rows picked per call in any
    # order and with repeats, excludes exactly what the same lists exclude.
    sp = pytest.importorskip("scipy.sparse")
    V, Q = catalogue
    rng = np.random.default_rng(5)
    ref_all = reference(V, Q, 40)[1]
    table = [rng.choice(300, rng.integers(0, 60), replace=False) for _ in range(12)]
    table[3] = np.array([], dtype=np.int64)
    pick = np.array([7, 3, 7, 0, 11, 2, 5, 9, 1])  # one per query
    for r, t in enumerate(pick):  # each query's own best items among its exclusions
        table[t] = np.union1d(table[t], ref_all[r, :rng.integers(1, 30)])
    lists = [table[t] for t in pick]
    want = built.search(Q, 10, exclude=lists, deny=ref_all[:, 35])
    assert_topk_equal(want, reference(V, Q, 10, lists, deny=ref_all[:, 35]), V, Q)
    lens = [len(t) for t in table]
    csr = sp.csr_matrix((np.ones(sum(lens)), np.concatenate(table),
                         np.concatenate([[0], np.cumsum(lens)])), shape=(12, 300))
    for form in (table, csr):
        prepared = built.prepare_exclusions(form)
        assert len(prepared) == 12
        got = built.search(Q, 10, exclude=prepared.rows(pick), deny=ref_all[:, 35])
        np.testing.assert_array_equal(got[1], want[1])
        np.testing.assert_allclose(got[0], want[0], rtol=1e-6)
        one = built.search(Q[4:5], 10, exclude=prepared.rows(pick[4:5]))
        assert_topk_equal(one, reference(V, Q[4:5], 10, lists[4:5]), V, Q[4:5])
        # rows of rows: the selection composes
        np.testing.assert_array_equal(
            built.search(Q[:3], 10, exclude=prepared.rows(pick).rows([0, 1, 2]))[1],
            built.search(Q[:3], 10, exclude=lists[:3])[1])
    # bad uses name what is wrong
    with pytest.raises(DataError, match=r"one row per query \(9\), got 2"):
        built.search(Q, 10, exclude=prepared.rows([0, 1]))
    with pytest.raises(DataError, match=r"`rows` must be in \[0, 12\)"):
        prepared.rows([0, 12])
    with pytest.raises(DataError, match="`rows` must be a 1-D sequence"):
        prepared.rows([[0]])
    with pytest.raises(DataError, match=r"`table\[2\]` ids must be internal ids in \[0, 300\)"):
        built.prepare_exclusions([[1], [2], [300]])
    with pytest.raises(DataError, match="`table` must be a list"):
        built.prepare_exclusions(5)
    # another index, or this one loaded or built again: refused, not misread
    other = load_index(built.save(tmp_path / "ix"))
    with pytest.raises(DataError, match="prepared by another index"):
        other.search(Q, 10, exclude=prepared.rows(pick))
    np.testing.assert_array_equal(
        other.search(Q, 10, exclude=other.prepare_exclusions(table).rows(pick),
                     deny=ref_all[:, 35])[1], want[1])
    rebuilt = make_index(built.config).build(V)
    stale = rebuilt.prepare_exclusions(table)
    rebuilt.build(V)
    with pytest.raises(DataError, match="prepared by another index"):
        rebuilt.search(Q, 10, exclude=stale.rows(pick))


def test_prepared_rows_gathered_alike_without_scipys_compiled_gather(built, catalogue,
                                                                     monkeypatch):
    # whole rows come from scipy's compiled row gather, or from `csr[rows]` where it is
    # missing: the same exclusions either way
    from twotower.index import filters

    V, Q = catalogue
    rng = np.random.default_rng(9)
    table = [rng.choice(300, rng.integers(0, 80), replace=False) for _ in range(20)]
    pick = rng.integers(0, 20, len(Q))
    prepared = built.prepare_exclusions(table)
    want = built.search(Q, 10, exclude=[table[t] for t in pick])
    assert filters._csr_row_index is not None
    for gather in (filters._csr_row_index, None):
        monkeypatch.setattr(filters, "_csr_row_index", gather)
        np.testing.assert_array_equal(
            built.search(Q, 10, exclude=prepared.rows(pick))[1], want[1])
        got = prepared.rows(pick)._gather(0, len(pick))
        np.testing.assert_array_equal(got[1], np.concatenate([table[t] for t in pick]))


@pytest.mark.parametrize("kind", ["exact", "hnsw", "ivf"])
def test_vectors_whose_norms_overflow_float32_are_refused(kind):
    """Norms of 1e18 and more overflow float32 scores (NaN among the results) and made the
    IVF build abort the whole process inside faiss: a DataError instead."""
    from twotower.index import IndexConfig, make_index
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 8)).astype(np.float32)
    big = x.copy()
    big[7] *= 1e19
    cfg = IndexConfig(kind=kind, nlist=4) if kind == "ivf" else IndexConfig(kind=kind)
    with pytest.raises(DataError, match="`embeddings` row 7 has norm .* below 1e"):
        make_index(cfg).build(big)
    index = make_index(cfg).build(x)
    q = rng.standard_normal((3, 8)).astype(np.float32)
    q[1] *= 1e18
    with pytest.raises(DataError, match="`queries` row 1 has norm"):
        index.search(q, 5)
    q[1] = 5e17  # an entry above the fast bound, the norm below the limit: not refused
    q[1, 1:] = 0
    assert index.search(q, 5)[1].shape == (3, 5)


def test_save_to_an_unwritable_place_and_complex_vectors_give_clear_errors(tmp_path):
    from twotower.index import IndexConfig, make_index
    x = np.random.default_rng(0).standard_normal((20, 4)).astype(np.float32)
    index = make_index(IndexConfig(kind="exact")).build(x)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ArtifactError, match="cannot save the index to"):
        index.save(tmp_path / "afile" / "index")
    with pytest.raises(DataError, match="must be real numbers"):
        make_index(IndexConfig(kind="exact")).build(x + 1j)


def test_ivf_nprobe_above_the_lists_probes_them_all_and_says_so(catalogue):
    """--nprobe 1000 on 43 lists was reported as nprobe_used 1000."""
    index = make_index(IndexConfig(kind="ivf", nprobe=1000)).build(catalogue[0])
    assert index.nprobe == index.nlist < 1000


def test_a_zero_query_raises_no_overflow_warning_on_the_l2_reduction():
    """A zero query divided the largest item norm by its 1e-300 floor (overflow warning,
    results right) where the items' norms pass 1.8e8."""
    import warnings

    from twotower.index import IndexConfig, make_index
    rng = np.random.default_rng(0)
    x = rng.standard_normal((400, 8)).astype(np.float32) * 1e9
    index = make_index(IndexConfig(kind="ivf", nlist=4, nprobe=4)).build(x)
    q = np.zeros((2, 8), np.float32)
    q[1] = x[3] / 1e9
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, ids = index.search(q, 5)
    exact = make_index(IndexConfig(kind="exact")).build(x).search(q[1:], 5)[1]
    assert ids[1].tolist() == exact[0].tolist() and (ids[0] >= 0).all()


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_exclusions_that_leave_few_items_are_answered_exactly(kind, monkeypatch):
    """An HNSW walk asked for 2,999 of 3,000 items returned 2,173 and missed the best of
    the two items a query's exclusions left (11 of 40 queries), where a deny-list leaving
    the same two was answered exactly: such a query is scanned."""
    from twotower.index import IndexConfig, make_index
    rng = np.random.default_rng(52)
    n = 3000
    base = rng.standard_normal((n // 4, 4))
    V = base[rng.integers(0, len(base), n)].astype(np.float32)  # repeated vectors
    cfg = (IndexConfig(kind="hnsw", hnsw_m=16, ef_construction=100, ef_search=200)
           if kind == "hnsw" else IndexConfig(kind="ivf", nlist=16, nprobe=1))
    index = make_index(cfg).build(V)
    Q = rng.standard_normal((40, 4)).astype(np.float32)
    keeps = [rng.choice(n, 2, replace=False) for _ in range(40)]
    exclude = [np.setdiff1d(np.arange(n), kp) for kp in keeps]
    best = np.array([kp[np.argmax(V[kp] @ Q[r])] for r, kp in enumerate(keeps)])
    assert index.search(Q, 1, exclude=exclude)[1][:, 0].tolist() == best.tolist()
    assert [index.search(Q[r:r + 1], 1, exclude=[exclude[r]])[1][0, 0]
            for r in range(40)] == best.tolist()
    # a light exclusion still goes through the index (the usual seen items): no scan
    import twotower.index.faiss_ann as fa
    scanned = []
    real = fa.topk_exact
    monkeypatch.setattr(fa, "topk_exact", lambda v, q, *a: scanned.append(len(q)) or
                        real(v, q, *a))
    light = [np.arange(r, r + 5) for r in range(40)]
    assert (index.search(Q, 10, exclude=light)[1] >= 0).all() and scanned == []
    index.search(Q[:3], 1, exclude=exclude[:3])
    assert scanned == [3]


@pytest.mark.parametrize("mips_to_l2", [False, True])
def test_a_query_excluding_a_few_more_than_ef_search_does_not_change_its_batch(mips_to_l2):
    """One query whose k plus exclusions passed ef_search (not twice it) widened the walk
    of every query of its batch: 20 (inner product) and 35 (mips_to_l2) of 60 light
    queries got other results in the batch than alone."""
    rng = np.random.default_rng(11)
    V = rng.standard_normal((2000, 8)).astype(np.float32)
    Q = rng.standard_normal((60, 8)).astype(np.float32)
    index = make_index(IndexConfig(kind="hnsw", hnsw_m=4, ef_construction=16, ef_search=8,
                                   hnsw_exact_head=0.0, mips_to_l2=mips_to_l2)).build(V)
    ex = [np.arange(10)] + [[]] * 59  # 5 + 10 = 15: past ef_search 8, not past 16
    bs, bi = index.search(Q, 5, exclude=ex)
    for r in range(len(Q)):
        s1, i1 = index.search(Q[r:r + 1], 5, exclude=[ex[r]])
        assert i1[0].tolist() == bi[r].tolist(), r
        np.testing.assert_array_equal(s1[0], bs[r])


def test_half_precision_embeddings_and_queries(config, catalogue, tmp_path):
    """float16 (and bfloat16, the dtype of JAX's mixed precision) item embeddings and
    queries: every kind casts them to float32 at its boundary, so the results equal a
    float32 index's over the same values, scores float32, and the padding is PAD_ID with
    -inf (a float16 -inf or a score cast back to half precision would show here), after a
    save and load too."""
    V, Q = catalogue
    dtypes = [np.float16]
    try:
        import ml_dtypes
        dtypes.append(ml_dtypes.bfloat16)
    except ImportError:  # pragma: no cover - ml_dtypes comes with JAX
        pass
    for dtype, metric in itertools.product(dtypes, ("ip", "cosine")):
        Vh, Qh = V.astype(dtype), Q.astype(dtype)
        V32, Q32 = Vh.astype(np.float32), Qh.astype(np.float32)  # the same values
        half = make_index(config.replace(metric=metric)).build(Vh)
        full = make_index(config.replace(metric=metric)).build(V32)
        ex = [np.arange(r, 300, 3) for r in range(len(Q))]
        for k, kw in ((1, {}), (10, {"exclude": ex}), (400, {"deny": [5, 6]}),
                      (10, {"allow": [1, 2, 3]})):
            got = half.search(Qh, k, **kw)
            assert got[0].dtype == np.float32
            assert_topk_equal(got, full.search(Q32, k, **kw), V32, Q32, metric=metric)
            assert_topk_equal(got, reference(V32, Q32, k, kw.get("exclude"), kw.get("allow"),
                                             kw.get("deny"), metric=metric), V32, Q32,
                              metric=metric)
        np.testing.assert_array_equal(load_index(half.save(tmp_path / "h")).search(Qh, 10)[1],
                                      half.search(Qh, 10)[1])


def test_text_ids_are_named_as_external_ids(built, catalogue):
    """Item ids given as text (a model's external ids, e.g. MovieLens' "50") were refused as
    "got <U2 array of shape (2,)", with no word on what the index takes instead."""
    V, Q = catalogue
    hint = (r"these are text, like external item ids; the index takes internal ids \(row "
            r"numbers in \[0, 300\)\): map ids to them first, e\.g\. with the model's "
            r"item_vocab\.lookup\(ids\)")
    for kw, name in (({"allow": ["50", "7"]}, "allow"), ({"deny": np.array([b"50"])}, "deny"),
                     ({"exclude": [[1], np.array(["50"], dtype=object)] + [[]] * 7},
                      r"exclude\[1\]")):
        with pytest.raises(DataError, match=rf"`{name}` must be a 1-D sequence of integer "
                                            rf"item ids, got .*{hint}"):
            built.search(Q, 5, **kw)
    with pytest.raises(DataError, match=rf"`table\[0\]` .*{hint}"):
        built.prepare_exclusions([["50"]])
    with pytest.raises(DataError, match=r"got float64 array of shape \(2,\)$"):
        built.search(Q, 5, allow=[1.0, 2.0])  # no text: no hint


def test_bools_among_ids_are_refused_in_every_form(built, catalogue):
    """True and False among integer ids (a bool array beside int rows, a bool in a list)
    were read as ids 1 and 0 by numpy, so a batch silently excluded, allowed or denied
    the wrong items (the same row alone was refused): refused in every form, named."""
    V, Q = catalogue
    bad = r"a bool is not an id \(numpy would read it as id {}\)$"
    for kw, name, at in (
            ({"exclude": [[5, True]] + [[]] * 8}, r"exclude\[0\]", r"True at position 1"),
            ({"exclude": [[5]] * 8 + [(2, np.False_)]}, r"exclude\[8\]",
             r"np\.False_ at position 1"),
            ({"allow": [False, 3]}, "allow", r"False at position 0"),
            ({"deny": {True, 7}}, "deny", r"True"),
            ({"exclude": [[4, np.True_]]}, r"exclude\[0\]", r"np\.True_ at position 1")):
        one = int("True" in at)
        with pytest.raises(DataError, match=rf"^`{name}` must be a 1-D sequence of integer "
                                            rf"item ids, got {at}: {bad.format(one)}"):
            built.search(Q[:len(kw.get("exclude", Q))], 5, **kw)
    # a bool array beside int arrays: concatenated, numpy made it ids 1 and 0
    rows = [np.array([True, False])] + [np.array([3])] * 8
    with pytest.raises(DataError, match=r"^`exclude\[0\]` must be a 1-D sequence of integer "
                                        r"item ids, got bool array of shape \(2,\)"):
        built.search(Q, 5, exclude=rows)
    with pytest.raises(DataError, match=r"^`table\[1\]` .* got True at position 0"):
        built.prepare_exclusions([np.array([2]), [True, 4]])
    # integer rows of other dtypes, lists and empty rows still go through, as ids
    mixed = [np.array([1], np.int32), [2, 3], (), np.array([], float)] + [np.array([4])] * 5
    _, got = built.search(Q, 5, exclude=mixed)
    _, ref = built.search(Q, 5, exclude=[np.asarray(r, np.int64).reshape(-1) for r in mixed])
    np.testing.assert_array_equal(got, ref)
    assert not np.isin(got[1], [2, 3]).any() and 1 not in got[0]


def test_objects_that_are_not_id_lists_are_named_with_the_argument_they_belong_to(
        built, catalogue):
    """A generator, or a prepared filter given to the wrong argument, was refused as "got
    object array of shape ()", which said neither what was passed nor where it goes."""
    V, Q = catalogue
    head = r"^`{}` must be a 1-D sequence of integer item ids, got "
    cases = (({"allow": (i for i in range(3))}, "allow", "generator: an iterator; pass a "
              "list or an array of the ids$"),
             ({"allow": built.prepare_deny([1])}, "allow",
              r"Denied: a prepared deny list \(prepare_deny\) goes to `deny`$"),
             ({"deny": built.prepare_exclusions([[1]] * 9).rows(np.arange(9))}, "deny",
              r"Exclusions: prepared exclusions \(prepare_exclusions\) go to `exclude`$"))
    for kw, name, tail in cases:
        with pytest.raises(DataError, match=head.format(name) + tail):
            built.search(Q, 5, **kw)


def test_a_bool_mask_for_ids_is_named_by_its_entry_with_the_form_expected(built, catalogue):
    """A bool mask given as the one query's exclude row was reported as `exclude` (the
    row, `exclude[0]`, only with two or more queries), with no word on the form: the row
    is named at any batch size and the message says to pass the ids the mask marks."""
    V, Q = catalogue
    mask = np.zeros(300, bool)
    mask[[3, 7]] = True
    hint = r"a bool mask; pass the ids it marks \(np\.flatnonzero\(mask\)\)"
    for kw, name in (({"exclude": [mask]}, r"exclude\[0\]"), ({"allow": mask}, "allow")):
        with pytest.raises(DataError, match=rf"^`{name}` must be a 1-D sequence of integer "
                                            rf"item ids, got bool array of shape \(300,\): "
                                            rf"{hint}$"):
            built.search(Q[:1], 5, **kw)
    with pytest.raises(DataError, match=r"`exclude\[0\]` ids must be internal ids in "
                                        r"\[0, 300\), got 300"):
        built.search(Q[:1], 5, exclude=[[300]])
