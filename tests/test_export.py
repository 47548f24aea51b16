"""``twotower export RUN --items|--users --out FILE`` (``TwoTower.export_embeddings``): the
vectors with their ids, such that a dot product reproduces ``recommend``'s lists."""

from __future__ import annotations

import errno
import json
import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np
import pandas as pd
import pytest

from tests.cli_run import run


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """The default preset (id+history tower, genre features, item bias, EASE part; 1
    epochs) on a generated log of 60 users: 39 items with training rows, 5 cold items the
    genres place, and one (``i44``) whose only genre no trained item has: in no list."""
    from twotower.cli import main
    d = tmp_path_factory.mktemp("export-default")
    rng = np.random.default_rng(0)
    rows = [f"u{u},i{((u % 3) * 13 + rng.integers(0, 13)) % 40},{1000 * u + j}"
            for u in range(60) for j in range(8)]
    (d / "log.csv").write_text("user_id,item_id,timestamp\n" + "\n".join(rows) + "\n")
    genres = ["Action", "Drama", "Comedy"]
    (d / "items.csv").write_text("item_id,title,genres\n" + "".join(
        f"i{i},Item {i},{genres[(i // 13) % 3]}|{genres[i % 3]}\n" for i in range(44))
        + "i44,Item 44,Solo\n")
    code = main(["train", "--data", str(d / "log.csv"), "--items", str(d / "items.csv"),
                 "--split", "none", "--epochs", "1", "--out", str(d / "run")])
    assert code == 0
    return d / "run"


def _read(path):
    """(ids, listed or None, [n, d] float32 vectors) of an exported file, any format."""
    path = str(path)
    if path.endswith(".npz"):
        with np.load(path, allow_pickle=False) as z:
            key = next(k for k in z.files if k.endswith("_id"))
            return z[key], (z["listed"] if "listed" in z.files else None), z["vector"]
    if path.endswith(".parquet"):
        df = pd.read_parquet(path)
        vectors = np.stack(df["vector"].to_numpy()).astype(np.float32)
    elif path.endswith(".csv"):
        df = pd.read_csv(path)
        vectors = df.filter(regex=r"^v\d+$").to_numpy().astype(np.float32)
    else:
        df = pd.DataFrame([json.loads(ln) for ln in open(path, encoding="utf-8")])
        vectors = np.array(df["vector"].tolist(), dtype=np.float32)
    key = next(c for c in df.columns if c.endswith("_id"))
    listed = df["listed"].to_numpy(bool) if "listed" in df else None
    return df[key].to_numpy(), listed, vectors


@pytest.mark.parametrize("which,items_out,users_out", [
    ("tutorial", "items.parquet", "users.jsonl"),
    ("default", "items.csv", "users.parquet"),
    ("default", "items.jsonl", "users.npz"),
])
def test_a_dot_product_of_the_exported_vectors_reproduces_recommend(
        capsys, request, tmp_path, which, items_out, users_out):
    from twotower import TwoTower
    rundir = (request.getfixturevalue("tutorial_run")[1] if which == "tutorial"
              else request.getfixturevalue("default_run"))
    for flag, out in (("--items", items_out), ("--users", users_out)):
        code, _, err = run(capsys, "export", rundir, flag, "--out", tmp_path / out)
        assert code == 0, err
    item_ids, listed, items = _read(tmp_path / items_out)
    user_ids, no_listed, users = _read(tmp_path / users_out)
    model = TwoTower.load(rundir)
    assert no_listed is None and listed is not None
    assert item_ids.tolist() == model.item_vocab.ids.tolist()  # every item, ids as they are
    assert np.array_equal(listed, ~model.untrained_items())
    assert (~listed).any()  # both runs have items in no list: marked, not left out
    trained = ~model.untrained_users()
    assert user_ids.tolist() == model.user_vocab.ids[trained].tolist()
    picked = [user_ids[i] for i in (0, 7, len(user_ids) // 2, len(user_ids) - 1)]
    (tmp_path / "who.txt").write_text("".join(f"{u}\n" for u in picked))
    k = 10
    code, out, err = run(capsys, "recommend", rundir, "--users", tmp_path / "who.txt",
                         "-k", k, "--json")
    assert code == 0, err
    row_of = {u: i for i, u in enumerate(user_ids.tolist())}
    col_of = {t: j for j, t in enumerate(item_ids.tolist())}
    for line in out.splitlines():
        answer = json.loads(line)
        u = answer["user_id"]
        scores = items @ users[row_of[u]]
        scores[~listed] = -np.inf
        scores[model.seen_items(model.user_vocab.lookup([u]))[0]] = -np.inf
        top = np.argsort(-scores, kind="stable")[:k]
        theirs = [col_of[it["item_id"]] for it in answer["items"]]
        # recommend's scores are rounded to 6 decimals; ties may come in either order
        np.testing.assert_allclose([it["score"] for it in answer["items"]], scores[top],
                                   rtol=1e-5, atol=2e-6)
        np.testing.assert_allclose(scores[theirs], scores[top], rtol=1e-5, atol=1e-6)
        assert len(set(theirs)) == k and np.isfinite(scores[theirs]).all()


def test_tower_vectors_are_the_networks_own_and_pair_up(capsys, default_run, tmp_path):
    """--vectors tower: the candidate tower's output (id + genre embeddings), without the
    bias, the EASE part's columns or the blend's scale; the served rows hold them scaled."""
    from twotower import TwoTower
    from twotower.models.retriever import _to_host
    model = TwoTower.load(default_run, keras=True)
    d = model.config.embedding_dim
    for flag in ("--items", "--users"):
        code, out, err = run(capsys, "export", default_run, flag, "--vectors", "tower",
                             "--out", tmp_path / f"{flag[2:]}.parquet")
        assert code == 0 and f"tower vectors ({d} wide)" in out, err
    _, _, tower = _read(tmp_path / "items.parquet")
    np.testing.assert_allclose(tower, _to_host(model._net.item_table()), rtol=1e-5,
                               atol=1e-7)
    served = model.item_embeddings
    assert served.shape[1] > d + 1  # the bias column and the EASE part's
    np.testing.assert_allclose(served[:, :d], tower * model._linear.model_scale, rtol=1e-5,
                               atol=1e-7)
    _, _, queries = _read(tmp_path / "users.parquet")
    assert queries.shape == (len(model.user_vocab), d)


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".jsonl"])
def test_written_in_chunks_the_file_is_the_same(tutorial_run, tmp_path, suffix):
    model, _ = tutorial_run
    whole = model.export_embeddings(tmp_path / f"whole{suffix}", "items")
    parts = model.export_embeddings(tmp_path / f"parts{suffix}", "items", chunk_rows=100)
    assert whole["rows"] == parts["rows"] == model.n_items and whole["unlisted"] == 34
    for a, b in zip(_read(tmp_path / f"whole{suffix}"), _read(tmp_path / f"parts{suffix}")):
        assert np.array_equal(a, b)
    _, _, vectors = _read(tmp_path / f"parts{suffix}")
    assert np.array_equal(vectors, model.item_embeddings)  # text too: the exact float32s


def test_a_cosine_index_exports_the_normalised_vectors_it_compares(tutorial_run, tmp_path):
    import copy

    from twotower.index import IndexConfig
    model = copy.copy(tutorial_run[0])  # the fixture's index is shared: set one of its own
    model.set_index(IndexConfig(kind="exact", metric="cosine"))
    model.export_embeddings(tmp_path / "i.npz", "items")
    model.export_embeddings(tmp_path / "u.npz", "users")
    _, listed, items = _read(tmp_path / "i.npz")
    user_ids, _, users = _read(tmp_path / "u.npz")
    np.testing.assert_allclose(np.linalg.norm(items[listed], axis=1), 1.0, rtol=1e-5)
    u = model.user_vocab.lookup(user_ids[:3].tolist())
    scores, top = model.recommend(u, 5, model.seen_items(u))
    np.testing.assert_allclose(np.take_along_axis(users[:3] @ items.T, top, axis=1), scores,
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("argv,needle", [
    (["--items", "--out", "{tmp}/v.txt"], "--out: {tmp}/v.txt: expected a .parquet, .csv, "
                                          ".jsonl (JSON lines) or .npz (numpy) file, got '.txt'"),
    (["--items", "--out", "{tmp}"], "--out: {tmp} is a directory; give the name of a file"),
    (["--users", "--out", "{tmp}/f.csv/v.csv"], "--out: cannot write {tmp}/f.csv/v.csv: "
                                                "{tmp}/f.csv is not a directory"),
    (["--out", "{tmp}/v.csv"], "one of the arguments --items --users --keras is required"),
    (["--items", "--users", "--out", "{tmp}/v.csv"], "not allowed with argument"),
    (["--keras", "--out", "{tmp}/m.npz"], "--out: {tmp}/m.npz: --keras writes a .keras file"),
    (["--items", "-k", "5", "--out", "{tmp}/v.csv"], "-k is read with --keras only"),
    (["--users", "--ids", "indices", "--out", "{tmp}/v.csv"], "--ids is read with --keras only"),
    (["--items", "--history", "--out", "{tmp}/v.csv"], "--history is read with --keras only"),
    (["--keras", "--vectors", "tower", "--out", "{tmp}/m.keras"],
     "--vectors is read with --items/--users only"),
])
def test_an_out_it_cannot_write_is_refused_before_the_work(capsys, tutorial_run, tmp_path,
                                                          argv, needle):
    (tmp_path / "f.csv").write_text("a file")
    code, _, err = run(capsys, "export", tutorial_run[1],
                       *[a.format(tmp=tmp_path) for a in argv])
    assert code == 2 and needle.format(tmp=tmp_path) in err, err


def test_a_write_that_fails_leaves_the_previous_file_and_no_temporary(capsys, tutorial_run,
                                                                     tmp_path, monkeypatch):
    import pyarrow.parquet as pq
    out = tmp_path / "items.parquet"
    out.write_bytes(b"previous")
    calls = []

    def cut(self, table, *a, **kw):
        calls.append(len(table))
        raise KeyboardInterrupt if len(calls) == 1 else OSError(errno.ENOSPC,
                                                              "No space left on device")
    monkeypatch.setattr(pq.ParquetWriter, "write_table", cut)
    code, _, err = run(capsys, "export", tutorial_run[1], "--items", "--out", out)
    assert code == 130 and "interrupted" in err
    assert [p.name for p in tmp_path.iterdir()] == ["items.parquet"]
    code, _, err = run(capsys, "export", tutorial_run[1], "--items", "--out", out)
    assert code == 2 and err.strip() == (f"twotower: error: --out: cannot write {out}: No "
                                         f"space left on device; {out} is unchanged"), err
    assert [p.name for p in tmp_path.iterdir()] == ["items.parquet"]
    assert out.read_bytes() == b"previous"


def test_library_arguments_are_checked(tutorial_run, tmp_path):
    from twotower.errors import ConfigError
    model, _ = tutorial_run
    with pytest.raises(ConfigError, match="`what` must be 'items' or 'users', got 'item'"):
        model.export_embeddings(tmp_path / "x.csv", "item")
    with pytest.raises(ConfigError, match="`vectors` must be 'served'"):
        model.export_embeddings(tmp_path / "x.csv", vectors="raw")
    with pytest.raises(ConfigError, match="`chunk_rows` must be between 1"):
        model.export_embeddings(tmp_path / "x.csv", chunk_rows=0)
    with pytest.raises(ConfigError, match=r"`out`: .*x\.txt: expected a \.parquet"):
        model.export_embeddings(tmp_path / "x.txt")
    assert list(tmp_path.iterdir()) == []


def test_users_never_trained_on_are_left_out_and_counted(tutorial_run, tmp_path):
    """A user with no training rows (a split can leave one) has an untrained query:
    recommend serves them only with a fallback, and the export leaves them out."""
    import copy

    import scipy.sparse as sp
    model = copy.copy(tutorial_run[0])
    keep = np.ones(len(model.user_vocab))
    keep[3] = 0
    model._seen = sp.csr_matrix(sp.diags(keep) @ model._seen)
    model._seen.eliminate_zeros()
    report = model.export_embeddings(tmp_path / "u.jsonl", "users")
    assert report["untrained_left_out"] == 1 and report["rows"] == len(model.user_vocab) - 1
    ids, _, vectors = _read(tmp_path / "u.jsonl")
    assert model.user_vocab.ids[3] not in ids.tolist() and len(vectors) == len(ids)
    from twotower.errors import UnknownIdError  # asked for by id: refused, as recommend_ids
    with pytest.raises(UnknownIdError, match="has no training interactions"):
        model.export_embeddings(tmp_path / "v.jsonl", "users", ids=model.user_vocab.ids[2:4])


def test_keras_writes_the_runs_top_k_as_one_model_file(capsys, tutorial_run, tmp_path,
                                                       monkeypatch):
    """``export --keras``: ``TwoTower.to_keras`` saved atomically; loaded back (in this
    process) it lists what ``recommend_ids`` lists. A save cut short leaves the previous
    file and no temporary one."""
    import keras

    import twotower.models.keras_layers  # noqa: F401  (registers the layers)
    model, run_dir = tutorial_run
    out = tmp_path / "m.keras"
    code, said, err = run(capsys, "export", run_dir, "--keras", "-k", "7", "--out", out)
    assert code == 0 and f"top-7 lists to {out}" in said, err
    net = keras.saving.load_model(out)
    users = np.array(model.user_vocab.ids[[0, 5, 42]])
    got = net.predict(users.astype("int32"), verbose=0)
    scores, ids = model.recommend_ids(users, k=7)
    np.testing.assert_allclose(got["scores"], scores, rtol=1e-5, atol=1e-5)
    assert (got["item_ids"] == ids).mean() > 0.95  # (near-ties may swap)
    before = out.read_bytes()

    def cut(self, path, *a, **kw):  # half a file written, then Ctrl-C
        open(path, "wb").write(b"half")
        raise KeyboardInterrupt
    monkeypatch.setattr(keras.Model, "save", cut)
    code, _, err = run(capsys, "export", run_dir, "--keras", "--include-seen", "--out", out)
    assert code == 130 and "interrupted" in err
    assert [p.name for p in tmp_path.iterdir()] == ["m.keras"] and out.read_bytes() == before


def test_keras_on_a_run_of_text_ids_names_the_flag_that_takes_them(capsys, default_run,
                                                                   tmp_path):
    """A run of text ids (``u0``, ``i0``) cannot be exported with integer ids in and out: the
    command says which of its flags to give (``--ids indices``), not the library's keyword,
    and writes nothing; with the flag it writes the model."""
    out = tmp_path / "m.keras"
    code, _, err = run(capsys, "export", default_run, "--keras", "--out", out)
    assert code == 2 and "--ids indices" in err and "ids='" not in err, err
    assert "user ids are text (e.g. 'u0')" in err and not out.exists()
    code, said, err = run(capsys, "export", default_run, "--keras", "--ids", "indices",
                          "--out", out)
    assert code == 0 and out.exists(), err


@pytest.mark.parametrize("k", ["0", "46"])
def test_keras_names_its_k_flag_when_k_is_out_of_range(capsys, default_run, tmp_path, k):
    """``export --keras -k`` out of 1..catalogue: the message names ``-k``, as recommend's
    does, not the library's `k`."""
    code, _, err = run(capsys, "export", default_run, "--keras", "--ids", "indices", "-k", k,
                       "--out", tmp_path / "m.keras")
    assert code == 2 and f"-k must be between 1 and 45 (the catalogue size), got {k}" in err
    assert "`k`" not in err, err


def test_users_or_items_from_a_file_export_only_those_in_its_order(capsys, tutorial_run,
                                                                   tmp_path):
    """``export --users FILE`` takes a file of ids as ``recommend --users FILE`` does: only
    those rows, in the file's order, each once; the vectors equal the full export's."""
    model, run_dir = tutorial_run
    users = [str(u) for u in model.user_vocab.ids[[7, 2, 7, 30]]]
    (tmp_path / "users.txt").write_text("\n".join(users) + "\n")
    code, _, err = run(capsys, "export", run_dir, "--users", tmp_path / "users.txt",
                       "--out", tmp_path / "some.npz")
    assert code == 0, err
    assert run(capsys, "export", str(run_dir), "--users", "--out",
               str(tmp_path / "all.npz"))[0] == 0
    ids, _, vectors = _read(tmp_path / "some.npz")
    all_ids, _, all_vectors = _read(tmp_path / "all.npz")
    assert [str(i) for i in ids] == [users[0], users[1], users[3]]
    pos = {str(u): j for j, u in enumerate(all_ids)}
    np.testing.assert_array_equal(vectors, all_vectors[[pos[u] for u in ids.astype(str)]])
    items = [str(i) for i in model.item_vocab.ids[[5, 1]]]
    (tmp_path / "items.txt").write_text("\n".join(items) + "\n")
    assert run(capsys, "export", str(run_dir), "--items", str(tmp_path / "items.txt"),
               "--out", str(tmp_path / "items.csv"))[0] == 0
    ids, listed, vectors = _read(tmp_path / "items.csv")
    assert [str(i) for i in ids] == items and len(listed) == 2
    np.testing.assert_array_equal(vectors, model._item_vectors(np.array([5, 1])))


def test_an_id_the_run_cannot_export_is_named_with_its_line(capsys, tutorial_run, tmp_path):
    model, run_dir = tutorial_run
    known = str(model.user_vocab.ids[0])
    (tmp_path / "users.txt").write_text(f"{known}\nnobody\n")
    code, _, err = run(capsys, "export", run_dir, "--users", tmp_path / "users.txt",
                       "--out", tmp_path / "u.csv")
    assert code != 0 and "line 2: unknown user id 'nobody'" in err
    assert not (tmp_path / "u.csv").exists()
    from twotower.errors import UnknownIdError
    with pytest.raises(UnknownIdError, match="nobody"):
        model.export_embeddings(tmp_path / "u.csv", "users", ids=[known, "nobody"])
    from twotower.errors import DataError
    with pytest.raises(DataError, match="single id"):
        model.export_embeddings(tmp_path / "u.csv", "users", ids=known)
    with pytest.raises(DataError, match="got none"):
        model.export_embeddings(tmp_path / "u.csv", "users", ids=[])


def test_keras_history_writes_the_model_for_new_users(capsys, default_run, tutorial_run,
                                                      tmp_path):
    """``export --keras --history``: padded histories in, the lists
    ``recommend_from_history`` gives (their items left out); a run of text ids names
    ``--ids indices`` (its item ids are the ones in and out); an id tower is refused."""
    import keras

    import twotower.models.keras_layers  # noqa: F401  (registers the layers)
    from twotower import TwoTower
    out = tmp_path / "new.keras"
    code, _, err = run(capsys, "export", default_run, "--keras", "--history", "--out", out)
    assert code == 2 and "item ids are text (e.g. 'i0')" in err and "--ids indices" in err
    assert "user_ids" not in err and not out.exists(), err
    code, said, err = run(capsys, "export", default_run, "--keras", "--history", "--ids",
                          "indices", "-k", "6", "--out", out)
    assert code == 0 and f"top-6 lists for new users' histories to {out}" in said, err
    model = TwoTower.load(default_run)
    n = model.n_items
    cold = int(np.flatnonzero(model.item_popularity == 0)[0])
    histories = [[3, cold, 17, n + 2], [5, 5, 30, 2, 8], [cold]]
    width = max(map(len, histories))
    got = keras.saving.load_model(out).predict(
        np.array([h + [-1] * (width - len(h)) for h in histories], np.int32), verbose=0)
    rows = [np.array([i for i in h if i < n]) for h in histories]
    scores, idx = model.recommend_from_history(rows, 6, rows)
    np.testing.assert_allclose(got["scores"], scores, rtol=1e-5, atol=1e-5)
    assert (got["item_indices"] == idx).mean() > 0.95  # (near-ties may swap)
    code, _, err = run(capsys, "export", tutorial_run[1], "--keras", "--history", "--out", out)
    assert code == 2 and "export --history: this run's query tower is 'id'" in err, err
    assert "history=True" not in err


@pytest.mark.parametrize("flag", ["--items", "--users"])
def test_an_empty_file_name_is_named_with_its_flag(capsys, tutorial_run, tmp_path, flag):
    """``--items ''`` (an unset shell variable) is no file: refused naming the flag it was
    given to (it was read as --users without a file, and crashed)."""
    code, _, err = run(capsys, "export", tutorial_run[1], flag, "", "--out", tmp_path / "v.csv")
    assert code == 2 and f"{flag}: expected a file of " in err, err
    assert "Traceback" not in err and not (tmp_path / "v.csv").exists()


def test_keras_history_names_ids_indices_when_an_item_id_is_the_padding(capsys, tmp_path):
    """Item id -1 pads a history model's input (``--ids external``): such a run is told
    to give ``--ids indices``, the CLI's flag, not the library's ``ids='indices'``."""
    from twotower import ModelConfig, TwoTower
    from twotower.data import Interactions
    rng = np.random.default_rng(0)
    x = Interactions.from_ids(rng.integers(0, 10, 120).tolist(),
                              (rng.integers(0, 12, 120) - 1).tolist())
    assert -1 in x.item_vocab.ids
    TwoTower(ModelConfig(query_tower="history", objective="bpr", epochs=1, batch_size=16,
                         embedding_dim=4)).fit(x, verbose=0).save(tmp_path / "run")
    out = tmp_path / "m.keras"
    code, _, err = run(capsys, "export", tmp_path / "run", "--keras", "--history", "--out", out)
    assert code == 2 and "--ids indices" in err and "ids='indices'" not in err, err
    assert not out.exists()
    assert run(capsys, "export", tmp_path / "run", "--keras", "--out", out)[0] == 0


def test_keras_history_of_an_id_tower_says_so_before_asking_for_indices(capsys, tmp_path):
    """An id tower over text ids: --history cannot be exported whatever --ids says, so
    that is the error, not the advice to give --ids indices (which then failed too)."""
    from twotower import ModelConfig, TwoTower
    from twotower.data import Interactions
    rng = np.random.default_rng(0)
    x = Interactions.from_ids([f"u{u}" for u in rng.integers(0, 10, 120)],
                              [f"m{i}" for i in rng.integers(0, 12, 120)],
                              ratings=rng.integers(1, 6, 120))
    TwoTower(ModelConfig.preset("tutorial", epochs=1, embedding_dim=4)).fit(
        x, verbose=0).save(tmp_path / "run")
    code, _, err = run(capsys, "export", tmp_path / "run", "--keras", "--history",
                       "--out", tmp_path / "m.keras")
    assert code == 2 and "query tower is 'id'" in err and "--ids indices" not in err, err


def test_the_run_may_follow_items_or_users_as_before_they_took_a_file(capsys, tutorial_run,
                                                                      tmp_path):
    """``export --items RUN --out F`` (the order that worked before ``--items`` took an
    optional FILE) exports the run's every item, as ``export RUN --items`` does; with the run
    first (or after the FILE), ``--items FILE`` is still the file. No run at all is named."""
    model, run_dir = tutorial_run
    for flag in ("--items", "--users"):
        code, _, err = run(capsys, "export", flag, run_dir, "--out", tmp_path / "late.npz")
        assert code == 0, err
        assert run(capsys, "export", run_dir, flag, "--out", tmp_path / "first.npz")[0] == 0
        late, first = _read(tmp_path / "late.npz"), _read(tmp_path / "first.npz")
        assert len(late[0]) == len(first[0]) > 100
        np.testing.assert_array_equal(late[0], first[0])
        np.testing.assert_array_equal(late[2], first[2])
    items = [str(i) for i in model.item_vocab.ids[[5, 1]]]
    (tmp_path / "items.txt").write_text("\n".join(items) + "\n")
    for argv in ((run_dir, "--items", tmp_path / "items.txt"),
                 ("--items", tmp_path / "items.txt", run_dir)):
        code, _, err = run(capsys, "export", *argv, "--out", tmp_path / "some.npz")
        assert code == 0, err
        assert [str(i) for i in _read(tmp_path / "some.npz")[0]] == items
    code, _, err = run(capsys, "export", "--keras", "--out", tmp_path / "m.keras")
    assert code == 2 and "the following arguments are required: run" in err, err
    code, out, _ = run(capsys, "export", "-h")
    assert code == 0 and "usage: twotower export [-h] run (--items [FILE] |" in out, out
