import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from twotower import ArtifactError, NotFittedError, TwoTower
from twotower.artifacts import FORMAT_VERSION, atomic_directory


def _top(model, users=(0, 1, 2, 41), k=10):
    u = np.array(users)
    return model.recommend(u, k, model.seen_items(u))


def test_save_load_identical_topk(tutorial_run):
    model, run = tutorial_run
    loaded = TwoTower.load(run)
    s1, i1 = _top(model)
    s2, i2 = _top(loaded)
    assert np.array_equal(i1, i2) and np.allclose(s1, s2)
    assert loaded.config == model.config and loaded.item_vocab == model.item_vocab
    assert np.array_equal(loaded.similar_items([5], 10)[1], model.similar_items([5], 10)[1])
    assert loaded.titles([0])[0] == model.titles([0])[0]
    assert loaded.history == model.history
    # each training pair's recency (evaluate's temporal baselines read it): 0 = latest
    assert model._seen_recency is not None and model._seen_recency.dtype == np.int32
    np.testing.assert_array_equal(loaded._seen_recency, model._seen_recency)
    u = 41
    lo, hi = model._seen.indptr[u], model._seen.indptr[u + 1]
    assert sorted(model._seen_recency[lo:hi].tolist()) == list(range(hi - lo))


def test_keras_weights_round_trip(tutorial_run):
    model, run = tutorial_run
    loaded = TwoTower.load(run, keras=True)
    u = np.arange(5)
    assert np.array_equal(loaded.raw_tutorial_top_ids(u), model.raw_tutorial_top_ids(u))


def test_unfitted_model_says_call_fit():
    with pytest.raises(NotFittedError, match="call fit first"):
        TwoTower().recommend(np.array([0]), 10)


def test_missing_corrupt_and_newer_format(tutorial_run, tmp_path):
    _, run = tutorial_run
    with pytest.raises(ArtifactError, match="not found"):
        TwoTower.load(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArtifactError, match="not a twotower model directory"):
        TwoTower.load(tmp_path / "empty")
    import shutil
    bad = tmp_path / "bad"
    shutil.copytree(run, bad)
    with open(bad / "arrays.npz", "r+b") as fh:
        fh.seek(200)
        fh.write(b"garbage!")
    with pytest.raises(ArtifactError, match="arrays.npz is corrupt"):
        TwoTower.load(bad)
    newer = tmp_path / "newer"
    shutil.copytree(run, newer)
    meta = json.loads((newer / "format.json").read_text())
    meta["format_version"] = FORMAT_VERSION + 1
    (newer / "format.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="newer than this twotower"):
        TwoTower.load(newer)
    missing = tmp_path / "missing"
    shutil.copytree(run, missing)
    (missing / "item_vocab.json").unlink()
    with pytest.raises(ArtifactError, match="item_vocab.json is missing"):
        TwoTower.load(missing)
    # a directory where format.json should be: a raw IsADirectoryError before
    (tmp_path / "dir_format").mkdir()
    (tmp_path / "dir_format" / "format.json").mkdir()
    with pytest.raises(ArtifactError, match=r"dir_format/format\.json cannot be read: "):
        TwoTower.load(tmp_path / "dir_format")


def test_failed_save_leaves_previous_model(tutorial_run, tmp_path):
    model, _ = tutorial_run
    run = tmp_path / "run"
    model.save(run)
    before = _top(TwoTower.load(run))[1]

    def explode(tmp):
        (tmp / "half.bin").write_bytes(b"x" * 100)
        raise KeyboardInterrupt  # Ctrl-C mid-save

    with pytest.raises(KeyboardInterrupt):
        atomic_directory(run, explode)
    assert np.array_equal(_top(TwoTower.load(run))[1], before)
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # no temp dirs left behind


def test_killed_process_mid_save_leaves_previous_model(tutorial_run, tmp_path):
    """A real crash: SIGKILL a process while it writes the new version."""
    model, _ = tutorial_run
    run = tmp_path / "run"
    model.save(run)
    before = _top(TwoTower.load(run))[1]
    script = textwrap.dedent(f"""
        import time
        from twotower.artifacts import atomic_directory
        def write(tmp):
            (tmp / "format.json").write_text("{{}}")
            print("writing", flush=True)
            time.sleep(60)
        atomic_directory({str(run)!r}, write)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert np.array_equal(_top(TwoTower.load(run))[1], before)
    # the killed save's temporary directory is left; the next save beside it removes it
    left = [p.name for p in tmp_path.iterdir() if p.name.startswith(".run.tmp-")]
    assert left and left[0].startswith(f".run.tmp-{proc.pid}-")
    model.save(run)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_save_refuses_to_replace_what_is_not_a_run(tutorial_run, tmp_path):
    """A save replaces the whole directory: only a run (or an empty directory) may be."""
    model, _ = tutorial_run
    data = tmp_path / "data"
    data.mkdir()
    (data / "ratings.csv").write_text("user,item\n1,2\n")
    with pytest.raises(ArtifactError, match="not a twotower run"):
        model.save(data)
    assert [p.name for p in data.iterdir()] == ["ratings.csv"]
    afile = tmp_path / "ratings.csv"
    afile.write_text("user,item\n")
    with pytest.raises(ArtifactError, match="not a directory"):
        model.save(afile)
    assert afile.read_text() == "user,item\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "ratings.csv"]
    empty = tmp_path / "empty"
    empty.mkdir()
    model.save(empty)
    model.save(empty)  # now a run: replaced
    assert TwoTower.load(empty).n_items == model.n_items
    umask = os.umask(0o022)
    os.umask(umask)  # readable by others as the umask allows (not mkdtemp's 0700)
    assert empty.stat().st_mode & 0o777 == 0o777 & ~umask


def _old_run(tmp_path: Path) -> Path:
    """A directory that passes for a run (``format.json``) and holds ``old.txt``."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "format.json").write_text("{}")
    (run / "old.txt").write_text("old")
    return run


def _swap_version(run: Path, rename, exchange: bool = False) -> None:
    """``atomic_directory`` replacing ``run`` with a directory holding ``new.txt``, with
    ``os.rename`` replaced by ``rename(real, src, dst)``; by two renames, as on a system
    with no one-step swap, unless ``exchange`` (then where the system has one)."""
    import twotower.artifacts as art
    real, real_exchange = os.rename, art._exchange

    def write(tmp: Path) -> None:
        (tmp / "format.json").write_text("{}")
        (tmp / "new.txt").write_text("new")

    art.os.rename = lambda src, dst: rename(real, src, dst)
    if not exchange:
        art._exchange = lambda a, b: False
    try:
        atomic_directory(run, write)
    finally:
        art.os.rename, art._exchange = real, real_exchange


def test_error_between_the_renames_puts_the_previous_version_back(tmp_path):
    run = _old_run(tmp_path)
    calls = []

    def rename(real, src, dst):
        calls.append((Path(src).name, Path(dst).name))
        if len(calls) == 2:  # the new version's rename into place
            raise OSError("disk gone")
        real(src, dst)

    with pytest.raises(OSError, match="disk gone"):
        _swap_version(run, rename)
    assert calls[0] == ("run", ".run.old")
    assert sorted(p.name for p in run.iterdir()) == ["format.json", "old.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_a_one_step_swap_leaves_only_the_new_run(tmp_path):
    import twotower.artifacts as art
    a, b = tmp_path / "probe-a", tmp_path / "probe-b"
    a.mkdir(), b.mkdir()
    if not art._exchange(a, b):
        pytest.skip("this system or file system swaps no directories in one step")
    a.rmdir(), b.rmdir()
    run = _old_run(tmp_path)
    calls = []

    def rename(real, src, dst):
        calls.append((Path(src).name, Path(dst).name))
        real(src, dst)
    _swap_version(run, rename, exchange=True)
    assert sorted(p.name for p in run.iterdir()) == ["format.json", "new.txt"]
    # the run itself is never renamed: the old version leaves from the temporary name
    assert calls[0][0].startswith(".run.tmp-") and calls[0][1] == ".run.old", calls
    assert "run" not in [src for src, _ in calls]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_a_one_step_swap_the_system_refuses_falls_back_to_renames(tmp_path, monkeypatch):
    """Only some refusals fell back (EINVAL, ENOSYS, EOPNOTSUPP): EPERM from a sandbox
    that does not know the call failed the save, where two renames would have done it."""
    import twotower.artifacts as art
    monkeypatch.setattr(art, "_renameat2", lambda *a: -1)  # refused, whatever the errno
    run = _old_run(tmp_path)
    _swap_version(run, lambda real, src, dst: real(src, dst), exchange=True)
    assert sorted(p.name for p in run.iterdir()) == ["format.json", "new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_a_previous_version_left_by_a_killed_save_survives_the_next_save(tmp_path):
    """A save killed between its renames leaves the previous run only in `.run.old`; the
    next save removed it before its own run was in place, so a second crash lost both."""
    run = _old_run(tmp_path)
    os.rename(run, tmp_path / ".run.old")  # killed right after the first rename
    calls = []

    def rename(real, src, dst):
        calls.append((Path(src).name, Path(dst).name))
        if Path(src).name.startswith(".run.tmp-"):  # this save's run into place: a crash
            raise OSError("disk gone")
        real(src, dst)

    with pytest.raises(OSError, match="disk gone"):
        _swap_version(run, rename)
    assert calls[0] == (".run.old", "run")  # put back first
    assert sorted(p.name for p in run.iterdir()) == ["format.json", "old.txt"]
    _swap_version(run, lambda real, src, dst: real(src, dst))  # and the next save works
    assert sorted(p.name for p in run.iterdir()) == ["format.json", "new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_a_save_killed_while_it_removes_the_previous_version_leaves_no_half_old(
        tmp_path, monkeypatch):
    """A save killed while it removed the replaced version left a half-removed `.run.old`
    (a killing test found one holding only `training.json`): the error for a missing run
    then said "rename it back", and the next save renamed it back in place of a run. The
    replaced version is renamed to a `.run.trash-*` name first, which the next save
    removes."""
    import twotower.artifacts as art
    run = _old_run(tmp_path)
    (run / "training.json").write_text("{}")
    real = art.shutil.rmtree

    class Killed(BaseException):
        pass

    dead = []

    def killed_midway(path, *a, **kw):  # removes one file, then the process "dies"
        if dead:  # (a killed process runs no clean-up)
            return None
        if ".run.trash-" in Path(path).name or Path(path).name == ".run.old":
            (Path(path) / "format.json").unlink()
            dead.append(path)
            raise Killed
        return real(path, *a, **kw)
    monkeypatch.setattr(art.shutil, "rmtree", killed_midway)
    with pytest.raises(Killed):
        _swap_version(run, lambda real_rename, src, dst: real_rename(src, dst))
    monkeypatch.undo()
    assert sorted(p.name for p in run.iterdir()) == ["format.json", "new.txt"]
    assert not (tmp_path / ".run.old").exists()
    assert [p.name.split("-")[0] for p in tmp_path.glob(".run.*")] == [".run.trash"]
    _swap_version(run, lambda real_rename, src, dst: real_rename(src, dst))  # sweeps it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_ctrl_c_between_the_renames_waits_for_both(tmp_path):
    """SIGINT arriving between the two renames is held back until the new version is in
    place (then raised): the run is never missing."""
    run = _old_run(tmp_path)

    def rename(real, src, dst):
        real(src, dst)
        if Path(dst).name == ".run.old":
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C right after the first rename
            for _ in range(1000):  # let Python act on it, were it not held
                run.exists()

    from twotower.artifacts import SAVED, _is_temp_sibling, temp_sibling
    before = SAVED.count
    # Python's own Ctrl-C handler, whatever started this process (a shell's background job
    # starts with SIGINT ignored, and the held signal would then be ignored too)
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            _swap_version(run, rename)
    finally:
        signal.signal(signal.SIGINT, old)
    assert sorted(p.name for p in run.iterdir()) == ["format.json", "new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    # the save completed while the signal waited: recorded, so the CLI can say so
    assert SAVED.count == before + 1 and SAVED.last in (run, run.resolve())
    # without a signal too: one that comes after the save returns can say it is complete
    _swap_version(run, lambda real, src, dst: real(src, dst))
    assert SAVED.count == before + 2 and SAVED.last in (run, run.resolve())
    # a save inside another save's temporary directory (a run's index) never counts
    tmp = temp_sibling(tmp_path / "other")
    assert _is_temp_sibling(tmp) and not _is_temp_sibling(run)


def test_ctrl_c_while_the_old_version_is_removed_counts_the_save_complete(tmp_path,
                                                                         monkeypatch):
    """The new version is in place; a signal while the old one is deleted ended the command
    with a bare "interrupted". The save is recorded as complete (the CLI then says so)."""
    import shutil

    import twotower.artifacts as art
    from twotower.artifacts import SAVED
    run = _old_run(tmp_path)
    real, fired = shutil.rmtree, []

    def rmtree(path, *a, **kw):
        if Path(path).name.startswith(".run.trash-") and not fired:  # (``_discard``)
            fired.append(path)
            raise KeyboardInterrupt
        return real(path, *a, **kw)
    monkeypatch.setattr(art.shutil, "rmtree", rmtree)
    before = SAVED.count
    with pytest.raises(KeyboardInterrupt):
        _swap_version(run, lambda real_rename, src, dst: real_rename(src, dst))
    assert fired and sorted(p.name for p in run.iterdir()) == ["format.json", "new.txt"]
    assert SAVED.count == before + 1 and SAVED.last in (run, run.resolve())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # the old one removed


def test_seen_rows_exclude_what_seen_items_exclude(tutorial_run):
    """``seen_rows`` (CSR) holds each user's ``seen_items``; it and ``seen_exclusions``
    (prepared rows: what ``recommend_ids`` and the batch endpoints pass) give the same
    lists, before and after a save/load."""
    model, run = tutorial_run
    users = np.array([0, 1, 2, 41, 41, 900])
    rows = model.seen_rows(users)
    assert rows.shape == (len(users), model.n_items)
    for r, items in enumerate(model.seen_items(users)):
        assert sorted(rows[r].indices.tolist()) == sorted(items.tolist())
    loaded = TwoTower.load(run)
    for m in (model, loaded):
        s1, i1 = m.recommend(users, 10, m.seen_items(users))
        s2, i2 = m.recommend(users, 10, m.seen_rows(users))
        assert np.array_equal(i1, i2) and np.allclose(s1, s2)
        # prepared rows (what recommend_ids, `twotower recommend` and the batch endpoint
        # pass): the same exclusions
        s3, i3 = m.recommend(users, 10, m.seen_exclusions(users))
        assert np.array_equal(i1, i3) and np.allclose(s1, s3)
    # a new index: the table is prepared again for it (a stale one would be refused)
    from twotower.index import IndexConfig
    loaded.set_index(IndexConfig(kind="exact", chunk_size=256))
    s4, i4 = loaded.recommend(users, 10, loaded.seen_exclusions(users))
    assert np.array_equal(i1, i4) and np.allclose(s1, s4)
    ids = model.user_vocab.ids[users]
    _, top = model.recommend_ids(ids, k=10)
    seen = model.seen_items(users)
    for r in range(len(users)):
        got = model.item_vocab.lookup([t for t in top[r] if t is not None])
        assert not set(got.tolist()) & set(seen[r].tolist())


def test_a_resave_keeps_when_the_model_was_trained(tutorial_run, tmp_path):
    """`twotower index` loads and saves a run again: /v1/model's "trained at" stays the
    training's time, not the index build's."""
    import time

    from twotower.artifacts import read_manifest
    from twotower.service.state import ServedModel
    model, run = tutorial_run
    assert model.trained_at and model.trained_at.endswith("+00:00")
    time.sleep(1.1)
    loaded = TwoTower.load(run)
    loaded.save(tmp_path / "again")
    assert read_manifest(tmp_path / "again")["created_at"] != model.trained_at
    assert TwoTower.load(tmp_path / "again").trained_at == model.trained_at
    assert ServedModel.load(tmp_path / "again").trained_at == model.trained_at


def test_metadata_of_mixed_types_saves_as_text(tmp_path):
    """A metadata column mixing numbers and text (price 1.5 and "n/a") failed the save
    with a raw pyarrow error after training; it is saved as text."""
    import pandas as pd

    from twotower import ModelConfig
    from twotower.data import Interactions
    rng = np.random.default_rng(0)
    items = [f"i{i}" for i in range(12)]
    info = pd.DataFrame({"title": [f"T{i}" for i in range(12)],
                         "price": [1.5, "n/a", None] * 4}, index=items)
    data = Interactions.from_ids(rng.integers(0, 30, 200).tolist(),
                                 [items[i] for i in rng.integers(0, 12, 200)], item_info=info)
    model = TwoTower(ModelConfig.preset("tutorial", objective="softmax", epochs=1,
                                        embedding_dim=4)).fit(data, verbose=0)
    model.save(tmp_path / "run")
    back = TwoTower.load(tmp_path / "run").item_info.set_index("id")["price"]
    assert [back["i0"], back["i1"]] == ["1.5", "n/a"] and pd.isna(back["i2"])


def _damaged(run, tmp_path, name, change):
    """A copy of ``run`` with file ``name`` changed by ``change(path)`` and its checksum
    updated (damage the checksums alone would not catch)."""
    import shutil

    from twotower.artifacts import _sha256
    copy = tmp_path / f"damaged-{len(list(tmp_path.iterdir()))}"
    shutil.copytree(run, copy)
    change(copy / name)
    fmt = json.loads((copy / "format.json").read_text())
    fmt["files"][name] = _sha256(copy / name)
    (copy / "format.json").write_text(json.dumps(fmt))
    return copy


def test_damaged_runs_give_artifact_errors(tutorial_run, tmp_path):
    """A run that is damaged beyond its checksums (hand edits) loads with an ArtifactError
    naming the file, never with defaults, wrong arrays or raw exceptions."""
    import shutil
    _, run = tutorial_run
    bad = tmp_path / "files-list"
    shutil.copytree(run, bad)
    fmt = json.loads((bad / "format.json").read_text())
    (bad / "format.json").write_text(json.dumps(dict(fmt, files=[])))
    with pytest.raises(ArtifactError, match="format.json is corrupt"):
        TwoTower.load(bad)

    def edit_config(model):
        def change(p):
            cfg = json.loads(p.read_text())
            p.write_text(json.dumps(model(cfg)))
        return change
    for change, match in (
            (edit_config(lambda c: dict(c, model=None)), "no \"model\" settings"),
            (edit_config(lambda c: []), "no \"model\" settings")):
        with pytest.raises(ArtifactError, match=match):
            TwoTower.load(_damaged(run, tmp_path, "config.json", change))

    def arrays(edit):
        def change(p):
            with np.load(p) as z:
                a = {k: z[k] for k in z.files}
            edit(a)
            np.savez(p, **a)
        return change
    for edit, match in (
            (lambda a: a.update(user_embeddings=a["user_embeddings"][:10]),
             "user_embeddings has shape"),
            (lambda a: a["item_embeddings"].__setitem__((3, 0), np.nan),
             "item_embeddings holds NaN"),
            (lambda a: a.update(item_embeddings=a["item_embeddings"][:, :3]),
             "item_embeddings are 3 wide"),
            (lambda a: a.update(user_embeddings=a["user_embeddings"][:, :3]),
             "probe query fails")):
        with pytest.raises(ArtifactError, match=match):
            TwoTower.load(_damaged(run, tmp_path, "arrays.npz", arrays(edit)))


def test_re_signed_index_and_array_damage_is_refused(tutorial_run, tmp_path):
    """Hand edits whose checksums were rewritten too: a truncated arrays.npz, an index whose
    kind or state does not match its files, config.json naming another index kind. Each
    was a raw exception or silently wrong results."""
    from twotower.index import IndexConfig
    _, run = tutorial_run
    with pytest.raises(ArtifactError, match="cannot load model \\(BadZipFile"):
        TwoTower.load(_damaged(run, tmp_path, "arrays.npz",
                               lambda p: p.write_bytes(p.read_bytes()[:5000])))
    ivf = tmp_path / "ivf"
    model = TwoTower.load(run)
    model.set_index(IndexConfig(kind="ivf", nlist=20))
    model.save(ivf)

    def index_json(edit):
        def change(p):
            meta = json.loads(p.read_text())
            edit(meta)
            p.write_text(json.dumps(meta))
        return change
    for edit, match in (
            (lambda m: m["config"].update(kind="hnsw"),
             "index.faiss holds a IndexIVFFlat, not the IndexHNSWFlat of kind 'hnsw'"),
            (lambda m: m.update(state=None), "state lacks max_norm")):
        with pytest.raises(ArtifactError, match=match):
            TwoTower.load(_damaged(ivf, tmp_path, "index/index.json", index_json(edit)))

    def config_kind(p):
        cfg = json.loads(p.read_text())
        cfg["index"]["kind"] = "exact"
        p.write_text(json.dumps(cfg))
    with pytest.raises(ArtifactError, match="config.json names index kind 'exact', .* "
                                            "holds 'ivf'"):
        TwoTower.load(_damaged(ivf, tmp_path, "config.json", config_kind))


def _small(tmp_path, name, shift=0):
    from twotower import ModelConfig
    from twotower.data import Interactions
    rng = np.random.default_rng(shift)
    x = Interactions.from_ids(rng.integers(0, 20, 300) + shift, rng.integers(0, 30, 300) + shift)
    model = TwoTower(ModelConfig.preset("tutorial", objective="softmax", epochs=1,
                                        embedding_dim=8)).fit(x, verbose=0)
    return model


def test_a_save_killed_at_its_commit_leaves_a_whole_run_in_place(tmp_path):
    """A process killed outright between the save's two renames (the run moved to
    ``.R.old``, the new one not yet in place) left no run at R: `recommend`, `serve` and
    a reload refused it until someone renamed ``.R.old`` back. Where the system swaps two
    directories in one step (Linux), there is no such moment."""
    from twotower import artifacts
    a, b = tmp_path / "probe-a", tmp_path / "probe-b"
    a.mkdir(), b.mkdir()
    if not artifacts._exchange(a, b):
        pytest.skip("this system or file system swaps no directories in one step")
    script = textwrap.dedent("""
        import os, sys
        from pathlib import Path
        from twotower import artifacts
        run = Path(sys.argv[1])

        def files(tag):
            def write(tmp):
                (tmp / "format.json").write_text("{}")
                (tmp / "which").write_text(tag)
            return write
        artifacts.atomic_directory(run, files("old"))
        real, calls = os.rename, []

        def rename(src, dst):  # killed at the commit's second rename
            calls.append(src)
            if len(calls) == 2:
                os._exit(9)
            real(src, dst)

        def write_new(tmp):
            files("new")(tmp)
            os.rename = rename  # the commit's renames only
        artifacts.atomic_directory(run, write_new)
    """)
    run = tmp_path / "R"
    proc = subprocess.run([sys.executable, "-c", script, str(run)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 9, proc.stderr[-2000:]
    assert (run / "which").read_text() == "new"
    # the next save beside it clears what the killed one left
    artifacts.atomic_directory(run, lambda tmp: (tmp / "format.json").write_text("{}"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["R", "probe-a", "probe-b"]


def test_a_load_that_a_save_overtakes_reads_the_new_run_whole(tmp_path, monkeypatch):
    """`recommend` or a service reload reading a run while `train --out` replaced it
    loaded a mix of both runs (vocabularies of one, embeddings of the other) and
    answered wrongly, or called the run corrupt."""
    from twotower import artifacts
    a, b = _small(tmp_path, "a"), _small(tmp_path, "b", shift=1000)
    run = tmp_path / "R"
    a.save(run)
    real, calls = artifacts._load_once, []

    def overtaken(d, **kw):
        calls.append(1)
        if len(calls) == 1:
            got = real(d, **kw)  # A's files ...
            b.save(run)          # ... then the run is replaced before the load ends
            return got
        return real(d, **kw)
    monkeypatch.setattr(artifacts, "_load_once", overtaken)
    loaded = TwoTower.load(run)
    assert len(calls) == 2 and loaded.user_vocab == b.user_vocab
    # a save between the checksum check and the reads: "corrupt" was a false alarm
    calls.clear()

    def half(d, **kw):
        calls.append(1)
        if len(calls) == 1:
            a.save(run)
            raise ArtifactError(f"{d}: file arrays.npz is corrupt (checksum mismatch)")
        return real(d, **kw)
    monkeypatch.setattr(artifacts, "_load_once", half)
    assert TwoTower.load(run).user_vocab == a.user_vocab and len(calls) == 2
    # a run that is damaged as it stands is still an error at once
    monkeypatch.setattr(artifacts, "_load_once", real)
    (run / "arrays.npz").write_bytes(b"x")
    with pytest.raises(ArtifactError, match="arrays.npz is corrupt"):
        TwoTower.load(run)


def test_a_load_reads_each_file_once_the_bytes_it_checked(tmp_path, replace_once_checked):
    """load_model hashed every file against format.json, then read arrays.npz and the
    index files from disk again: each read twice, and a file replaced in between loaded
    unchecked. It loads the bytes it hashed."""
    from twotower.index import IndexConfig
    a = _small(tmp_path, "a")
    b = _small(tmp_path, "b", shift=1000)
    for model, name in ((a, "A"), (b, "B")):
        model.set_index(IndexConfig(kind="hnsw"))  # a run with index/ and similar/
        model.save(tmp_path / name)
    run = tmp_path / "A"
    want = _top(TwoTower.load(run), users=(0, 1, 2))
    files = json.loads((run / "format.json").read_text())["files"]
    assert {"arrays.npz", "index/index.faiss", "similar/index.faiss"} <= set(files)
    replace_once_checked(run, files, tmp_path / "B")
    got = _top(TwoTower.load(run), users=(0, 1, 2))
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(got[0], want[0])
    with pytest.raises(ArtifactError, match="checksum mismatch"):  # swapped once checked
        TwoTower.load(run)


def test_saves_refuse_places_they_cannot_finish_and_say_why(tmp_path, monkeypatch):
    import errno

    from twotower import artifacts
    model = _small(tmp_path, "a")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ArtifactError, match=r"afile is a file, not a directory"):
        artifacts.check_replaceable(tmp_path / "afile" / "R", "--out")
    run = tmp_path / "R"
    model.save(run)
    (tmp_path / ".R.old").write_text("stray")
    with pytest.raises(ArtifactError, match=r"\.R\.old is in the way"):
        artifacts.check_replaceable(run, "--out")
    (tmp_path / ".R.old").unlink()

    def full(tmp):
        raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(ArtifactError, match=r"--out: cannot save the run .*R: no space left "
                                            r"on the device; the previous version is "
                                            r"unchanged"):
        artifacts.atomic_directory(run, full, "--out")
    assert TwoTower.load(run).user_vocab == model.user_vocab
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_a_place_that_takes_no_new_directory_is_refused_by_the_check(tmp_path, monkeypatch):
    """The check made no directory, so it passed places where access() says yes but no
    directory can be made (/proc for root, a file system out of inodes); the save then
    failed after the work, and its temporary directory's error was raw."""
    import errno

    from twotower import artifacts
    real_mkdir = Path.mkdir

    def no_inodes(self, *a, **k):
        if self.parent == tmp_path:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_mkdir(self, *a, **k)
    monkeypatch.setattr(Path, "mkdir", no_inodes)
    with pytest.raises(ArtifactError, match=r"--out: cannot save the run .*R: no space left "
                                            r"on the device; nothing was written"):
        artifacts.check_replaceable(tmp_path / "R", "--out")
    monkeypatch.setattr(Path, "mkdir", real_mkdir)
    assert artifacts.check_replaceable(tmp_path / "R", "--out") == tmp_path / "R"
    assert list(tmp_path.iterdir()) == []  # the probe's directory is gone


def test_a_temporary_directory_that_cannot_be_made_names_the_save(tmp_path, monkeypatch):
    from twotower import artifacts
    monkeypatch.setattr(artifacts, "_check_writable_place", lambda *a: None)
    monkeypatch.setattr(artifacts, "temp_sibling", lambda t: (_ for _ in ()).throw(
        FileNotFoundError(2, "No such file or directory", str(t))))
    with pytest.raises(ArtifactError, match=r"--out: cannot save the run .*R: No such file "
                                            r"or directory; nothing was written"):
        artifacts.atomic_directory(tmp_path / "R", lambda tmp: None, "--out")


def test_leftovers_of_killed_saves_go_even_with_this_process_id(tmp_path):
    """In a container every command is PID 1: a killed save's `.R.tmp-1-...` looked like
    this process's own and was never removed. No process holds its lock: it goes."""
    from twotower import artifacts
    run = tmp_path / "R"
    left = tmp_path / f".R.tmp-{os.getpid()}-deadbeef"
    (left / "index").mkdir(parents=True)
    artifacts.atomic_directory(run, lambda tmp: (tmp / "format.json").write_text("{}"))
    assert not left.exists() and (run / "format.json").is_file()


def test_a_stop_python_dropped_keeps_the_previous_run(tmp_path):
    """A Ctrl-C raised inside a garbage-collection callback is dropped by Python; the
    command went on, replaced the run and exited 0. The save now asks first."""
    from twotower import artifacts
    run = tmp_path / "R"
    artifacts.atomic_directory(run, lambda tmp: (tmp / "format.json").write_text("old"))

    def stop():
        raise KeyboardInterrupt
    artifacts.BEFORE_COMMIT = stop
    try:
        with pytest.raises(KeyboardInterrupt):
            artifacts.atomic_directory(run, lambda t: (t / "format.json").write_text("new"))
    finally:
        artifacts.BEFORE_COMMIT = None
    assert (run / "format.json").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["R"]


def test_manifests_that_would_skip_checks_are_refused(tutorial_run, tmp_path):
    import shutil
    _, src = tutorial_run
    run = tmp_path / "R"
    shutil.copytree(src, run)
    fmt = run / "format.json"
    good = fmt.read_bytes()
    fmt.write_bytes(good[:40] + bytes([good[40] ^ 0xFF]) + good[41:])
    with pytest.raises(ArtifactError, match="format.json is corrupt"):
        TwoTower.load(run)
    manifest = json.loads(good)
    for bad in ({**manifest, "files": {}}, {**manifest, "format_version": True},
                {**manifest, "format_version": 0}):
        fmt.write_text(json.dumps(bad))
        with pytest.raises(ArtifactError, match="format.json is corrupt"):
            TwoTower.load(run)
    # a newer format may list other files: "upgrade", not "corrupt"
    fmt.write_text(json.dumps({"format_version": FORMAT_VERSION + 1,
                               "files": {"model.safetensors": "x"}}))
    with pytest.raises(ArtifactError, match="newer than this twotower understands"):
        TwoTower.load(run)


def test_a_save_holds_its_directory_from_the_moment_it_has_its_name(tmp_path):
    """Across containers or hosts on one volume a live save's process id looks dead: the
    lock decides. A save makes and locks its directory under a name the sweep passes over
    (``.new-``) and only then renames it: a young staging directory is left alone, an old
    one (a save killed in that moment) goes."""
    from twotower import artifacts
    held = artifacts.temp_sibling(tmp_path / "R")
    assert held.name.startswith(".R.tmp-") and artifacts._unheld(held) is False
    young = tmp_path / ".R.new-999999-aaaaaaaa"
    old = tmp_path / ".R.new-999999-bbbbbbbb"
    young.mkdir()
    old.mkdir()
    os.utime(old, (os.path.getmtime(old) - artifacts._SWEEP_AGE_S - 5,) * 2)
    artifacts.atomic_directory(tmp_path / "R",
                               lambda t: (t / "format.json").write_text("{}"))
    assert young.exists() and not old.exists() and held.exists()  # held: another save's
    artifacts._release(held)


def test_held_signals_come_back_as_one_stop_the_stronger_first():
    """Both SIGINT and SIGTERM held: only the first was raised (a scheduler's SIGTERM during
    a Ctrl-C's save ended as 'interrupted', 130); and a hold for callables only leaves a
    default SIGTERM (end at once) as it is."""
    import signal

    from twotower.artifacts import _signals_held
    got = []
    old = {s: signal.signal(s, lambda n, _f: got.append(n))
           for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with _signals_held():
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGTERM)
            signal.raise_signal(signal.SIGINT)
            assert got == []  # held
        assert got == [signal.SIGTERM]
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        with _signals_held(callables_only=True) as held:
            assert signal.SIGTERM not in held.saved and signal.SIGINT in held.saved
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def test_an_integer_too_large_for_a_float_is_named():
    from twotower.errors import ConfigError
    from twotower.evaluation.baselines import EASEConfig
    with pytest.raises(ConfigError, match="lambda_"):
        EASEConfig(lambda_=10**400)


def test_re_signed_side_files_are_refused_naming_them(tutorial_run, tmp_path):
    """config.json's data, test.npz, eval.json and a vocabulary edited by hand with their
    checksums rewritten: evaluate, index and serve met AttributeError, ValueError and
    JSONDecodeError tracebacks, or a message that named no file."""
    from twotower.artifacts import load_metrics, load_test
    _, run = tutorial_run

    def set_data(value):
        def change(p):
            p.write_text(json.dumps(dict(json.loads(p.read_text()), data=value)))
        return change
    for value in ("movielens", {"source": "x.csv", "columns": ["user_id", "item_id"]}):
        with pytest.raises(ArtifactError, match="config.json is corrupt: \"data\" is not"):
            TwoTower.load(_damaged(run, tmp_path, "config.json", set_data(value)))

    def pickled(p):
        np.savez(p, users=np.array([{"a": 1}], dtype=object), items=np.array([1]))
    for change, match in ((pickled, "test.npz is corrupt: ValueError"),
                          (lambda p: np.savez(p, users=np.arange(3), items=np.arange(4)),
                           "test.npz is corrupt: users and items are not")):
        with pytest.raises(ArtifactError, match=match):
            load_test(_damaged(run, tmp_path, "test.npz", change))
    for text, match in (("{not json", "eval.json is corrupt: Expecting"),
                        ('{"model": [1, 2]}', "eval.json is corrupt: not a JSON object")):
        with pytest.raises(ArtifactError, match=match):
            load_metrics(_damaged(run, tmp_path, "eval.json", lambda p: p.write_text(text)))
    with pytest.raises(ArtifactError, match=r"user_vocab.json is corrupt: vocabulary: missing"):
        TwoTower.load(_damaged(run, tmp_path, "user_vocab.json",
                               lambda p: p.write_text('{"name": "user", "ids": [1]}')))


def test_save_refuses_metrics_that_load_would_call_corrupt(tmp_path):
    # a flat dict (recommend_and_evaluate's own) was saved, then refused by every reader
    from twotower import ModelConfig
    from twotower.data import Interactions
    from twotower.errors import ConfigError
    x = Interactions.from_ids(["a", "a", "b"], ["x", "y", "x"])
    model = TwoTower(ModelConfig.preset("tutorial", objective="softmax", epochs=1,
                                        embedding_dim=4)).fit(x, verbose=0)
    with pytest.raises(ConfigError, match="method -> metric"):
        model.save(tmp_path / "flat", metrics={"recall@10": 0.25})
    assert not (tmp_path / "flat").exists()


def test_a_damaged_file_inside_the_index_directory_fails_its_checksum(tutorial_run, tmp_path):
    """The files under index/ (and similar/) are checksummed too, not only the top level."""
    import shutil
    _, run = tutorial_run
    bad = tmp_path / "bad"
    shutil.copytree(run, bad)
    files = sorted(p for p in (bad / "index").rglob("*") if p.is_file())
    assert files
    for p in files:  # one byte changed, checksums left as saved
        b = bytearray(p.read_bytes())
        b[-2] ^= 1
        p.write_bytes(bytes(b))
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        TwoTower.load(bad)


def test_saving_a_loaded_run_over_itself_keeps_its_data_and_says_what_it_drops(tutorial_run,
                                                                            tmp_path):
    """`TwoTower.load(run)`, a new index, `save(run)` dropped the held-out split, the
    metrics and the data source silently; `evaluate` then blamed `--split none`. The data
    source is kept now, and the save warns that the split goes (the CLI's `index` keeps it)."""
    import json
    import shutil
    import warnings

    from twotower import IndexConfig, ModelConfig, TwoTower
    _, src = tutorial_run
    run = tmp_path / "run"
    shutil.copytree(src, run)
    m = TwoTower.load(run)
    m.set_index(IndexConfig(kind="hnsw"))
    with pytest.warns(UserWarning, match=r"held-out split \(test\.npz\) and metrics"):
        m.save(run)
    assert not (run / "test.npz").exists()
    assert json.loads((run / "config.json").read_text())["data"] == {"source": "movielens-100k"}
    with warnings.catch_warnings():  # elsewhere (a copy), or with its split: no word
        warnings.simplefilter("error")
        TwoTower.load(src).save(tmp_path / "copy")
    assert json.loads((tmp_path / "copy" / "config.json").read_text())["data"] == {
        "source": "movielens-100k"}
    # trained anew, the model is no longer that run: no data source carried over
    small = TwoTower.load(src)
    train = __import__("twotower").Interactions.from_ids([1, 2, 1], [5, 6, 6])
    small.config = ModelConfig.preset("tutorial", objective="softmax", epochs=1,
                                      embedding_dim=4)
    small.fit(train, verbose=0).save(tmp_path / "new")
    assert json.loads((tmp_path / "new" / "config.json").read_text())["data"] == {}
