"""``twotower recommend/similar --allow FILE --deny FILE``: one item id a line; unknown ids
ignored and counted on stderr, a bad file named with its line."""

from __future__ import annotations

import io
import json
import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np
import pytest

from tests.cli_run import run


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """20 users, 30 items with text ids ``i0``..``i29`` (1 epoch)."""
    from twotower import ModelConfig, TwoTower
    from twotower.data import Interactions
    rng = np.random.default_rng(0)
    x = Interactions.from_ids([f"u{u}" for u in rng.integers(0, 20, 400)],
                              [f"i{i}" for i in rng.integers(0, 30, 400)],
                              ratings=rng.integers(1, 6, 400))
    model = TwoTower(ModelConfig.preset("tutorial", epochs=1, embedding_dim=8)).fit(
        x, verbose=0)
    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    model.save(run_dir)
    return model, run_dir


def _ids(out):
    return [[it["item_id"] for it in json.loads(ln)["items"]] for ln in out.splitlines()]


def test_recommend_and_similar_obey_allow_and_deny_files(capsys, tiny_run, tmp_path):
    model, rundir = tiny_run
    deny = tmp_path / "deny.txt"
    deny.write_text("i0\ni1\ni2\n\nSKU-gone\ni3\nother-gone\n")
    allow = tmp_path / "allow.txt"
    allow.write_text("\ufeffi2\ni3\ni4\ni5\ni6\ni7\n")  # a byte order mark is no part of it
    code, out, err = run(capsys, "recommend", rundir, "--all-users", "--json", "-k", "10",
                         "--deny", deny, "--include-seen")
    assert code == 0, err
    lists = _ids(out)
    assert len(lists) == 20 and all(len(r) == 10 for r in lists)
    assert not {"i0", "i1", "i2", "i3"} & {i for r in lists for i in r}
    assert (f"--deny: 2 of the 6 ids in {deny} are not items of the run and are ignored "
            "(the first: line 5, 'SKU-gone')") in err
    # the same lists as the library gives for the same deny list
    users = [json.loads(ln)["user_id"] for ln in out.splitlines()]
    want = model.recommend_ids(users, 10, exclude_seen=False,
                               deny=["i0", "i1", "i2", "i3", "SKU-gone"])[1]
    assert lists == want.tolist()
    # allow and deny together: i4..i7 qualify, padded lists are short
    code, out, err = run(capsys, "recommend", rundir, "--user", "u1", "--json", "-k", "10",
                         "--allow", allow, "--deny", deny, "--include-seen")
    assert code == 0 and sorted(_ids(out)[0]) == ["i4", "i5", "i6", "i7"]
    code, out, err = run(capsys, "recommend", rundir, "--user", "u1", "-k", "10",
                         "--allow", allow, "--deny", deny, "--include-seen")
    assert "(only 4 items left: of the 30, 4 are named by --deny and 22 are not " \
           "in --allow)" in out
    code, out, err = run(capsys, "similar", rundir, "--item", "i4", "--json", "-k", "5",
                         "--allow", allow, "--deny", deny)
    got = [it["item_id"] for it in json.loads(out)["items"]]
    assert code == 0 and sorted(got) == ["i5", "i6", "i7"]  # never i4 itself
    code, out, err = run(capsys, "similar", rundir, "--item", "i4", "-k", "5",
                         "--allow", allow, "--deny", deny)
    assert "others are left out by --deny and --allow" in out


def test_popular_fallback_lists_obey_the_filters_too(capsys, tiny_run, tmp_path):
    _, rundir = tiny_run
    deny = tmp_path / "deny.txt"
    deny.write_text("\n".join(f"i{i}" for i in range(25)))
    code, out, err = run(capsys, "recommend", rundir, "--user", "ghost", "--json", "-k", "8",
                         "--deny", deny, "--fallback", "popular")
    row = json.loads(out)
    assert code == 0 and row["fallback"] == "popular"
    assert sorted(it["item_id"] for it in row["items"]) == [f"i{i}" for i in range(25, 30)]


def test_filter_files_from_standard_input(capsys, tiny_run, tmp_path, monkeypatch):
    _, rundir = tiny_run
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"i0\ni1\n")))
    code, out, err = run(capsys, "similar", rundir, "--item", "i5", "--json", "-k", "28",
                         "--deny", "-")
    got = [it["item_id"] for it in json.loads(out)["items"]]
    assert code == 0 and len(got) == 27 and not {"i0", "i1", "i5"} & set(got)
    code, out, err = run(capsys, "recommend", rundir, "--users", "-", "--deny", "-")
    assert code == 2 and "--users and --deny both read standard input (-)" in err


@pytest.mark.parametrize("flag,text,needle", [
    ("--allow", "\n \n", "--allow: {p} holds no item id (expected one id a line)"),
    ("--allow", "nope\nnada\n", "--allow: none of the 2 ids in {p} is an item of the run "
                                "(line 1: 'nope'; ids are like"),
    ("--deny", "i1\ni2,0\n", "--deny: {p}, line 2: 'i2,0' is no item id of the run and "
                             "holds ',': expected one item id a line"),
    ("--deny", b"i1\n\xff\n", "--deny: {p}, line 2: not UTF-8 text"),
])
def test_bad_filter_files_are_named_with_their_line(capsys, tiny_run, tmp_path, flag, text,
                                                    needle):
    _, rundir = tiny_run
    p = tmp_path / "ids.txt"
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    for cmd in (["recommend", rundir, "--user", "u1"], ["similar", rundir, "--item", "i1"]):
        code, out, err = run(capsys, *cmd, flag, p)
        assert code == 2 and out == "" and needle.format(p=p) in err, err
    code, _, err = run(capsys, "similar", rundir, "--item", "i1", "--deny", tmp_path / "no")
    assert code == 2 and "--deny: " in err


def test_an_empty_deny_file_denies_nothing(capsys, tiny_run, tmp_path):
    _, rundir = tiny_run
    (tmp_path / "d.txt").write_text("")
    code, out, err = run(capsys, "recommend", rundir, "--user", "u1", "--json", "-k", "3",
                         "--deny", tmp_path / "d.txt")
    assert code == 0 and len(_ids(out)[0]) == 3 and err == ""


@pytest.fixture(scope="module")
def history_run(tmp_path_factory):
    """tiny_run's log with an id+history query tower (reads histories), and an item whose
    id holds a comma (``Smith, J.``: --history cannot name it, --history-file can)."""
    from twotower import ModelConfig, TwoTower
    from twotower.data import Interactions
    rng = np.random.default_rng(0)
    x = Interactions.from_ids([f"u{u}" for u in rng.integers(0, 20, 400)] + ["u1", "u2", "u3"],
                              [f"i{i}" for i in rng.integers(0, 30, 400)] + ["Smith, J."] * 3)
    model = TwoTower(ModelConfig(query_tower="id+history", objective="bpr", epochs=1,
                                 batch_size=16, embedding_dim=8)).fit(x, verbose=0)
    run_dir = tmp_path_factory.mktemp("runs") / "history"
    model.save(run_dir)
    return model, run_dir


def test_recommend_for_a_new_user_by_history(capsys, history_run, tmp_path):
    """``recommend --history`` is the library's ``recommend_from_history_ids`` (the
    service's by-history answer): the history's items left out unless --include-seen,
    --allow/--deny obeyed."""
    model, rundir = history_run
    code, out, err = run(capsys, "recommend", rundir, "--history", "i3, i7,i11", "-k", 6,
                         "--json")
    assert code == 0, err
    got = json.loads(out)
    ref_scores, ref = model.recommend_from_history_ids([["i3", "i7", "i11"]], 6)
    assert got["history"] == ["i3", "i7", "i11"]
    assert [it["item_id"] for it in got["items"]] == ref[0].tolist()
    np.testing.assert_allclose([it["score"] for it in got["items"]], ref_scores[0], atol=1e-6)
    assert not {"i3", "i7", "i11"} & set(ref[0].tolist())
    kept = _ids(run(capsys, "recommend", rundir, "--history", "i3,i7,i11", "-k", 31,
                    "--include-seen", "--json")[1])[0]  # -k 31: the catalogue
    assert {"i3", "i7", "i11"} <= set(kept)
    deny = tmp_path / "deny.txt"
    deny.write_text("\n".join(ref[0].tolist()[:3]) + "\n")
    denied = _ids(run(capsys, "recommend", rundir, "--history", "i3,i7,i11", "-k", 6,
                      "--deny", deny, "--json")[1])[0]
    assert not set(denied) & set(ref[0].tolist()[:3]) and len(denied) == 6
    code, out, _ = run(capsys, "recommend", rundir, "--history", "i3,i7,i11", "-k", 3)
    assert code == 0 and "new user (history of 3 items, left out of the list):" in out
    assert out.count("\n") == 4 and f"1. {ref[0][0]}" in out
    out = run(capsys, "recommend", rundir, "--history", "i3,i7,i3", "-k", 3)[1]
    assert "new user (history of 2 items, left out of the list):" in out  # i3 once


@pytest.mark.parametrize("history,message", [
    ("i3,nope", "--history: unknown item id 'nope'"),
    ("i3,,i4", "--history: expected item ids separated by commas"),
])
def test_a_bad_history_is_named(capsys, history_run, history, message):
    code, _, err = run(capsys, "recommend", history_run[1], "--history", history)
    assert code != 0 and message in err, err


def test_history_needs_a_history_tower_and_gives_one_list(capsys, tiny_run, history_run,
                                                          tmp_path):
    code, _, err = run(capsys, "recommend", tiny_run[1], "--history", "i3,i4")
    assert code != 0 and "--history: this model's query tower is 'id'" in err, err
    code, _, err = run(capsys, "recommend", history_run[1], "--history", "i3", "--out",
                       tmp_path / "x.jsonl")
    assert code != 0 and "--out is read with --user/--users/--all-users" in err, err


def test_a_bad_k_with_history_names_k_not_history(capsys, history_run):
    """Only the query tower's error is --history's: an out-of-range -k is named as -k is
    for --user."""
    code, _, err = run(capsys, "recommend", history_run[1], "--history", "i3", "-k", 500)
    assert code != 0 and "-k must be between 1 and" in err, err
    assert "--history" not in err, err


def test_a_short_history_list_says_why_as_it_was_asked(capsys, history_run, tmp_path):
    """With --include-seen the history's items are in the list: the note of a short list
    does not give them as a reason (and counts 1 item as one)."""
    allow = tmp_path / "allow.txt"
    allow.write_text("i3\ni4\n")
    code, out, err = run(capsys, "recommend", history_run[1], "--history", "i3", "-k", 5,
                         "--allow", allow)
    assert code == 0 and "(only 1 item left: the history's own items" in out, out + err
    code, out, err = run(capsys, "recommend", history_run[1], "--history", "i3", "-k", 5,
                         "--allow", allow, "--include-seen")
    assert code == 0 and "(only 2 items left: " in out, out + err
    assert "history's own" not in out, out


@pytest.mark.parametrize("extra", [["--out", "x.txt"], ["--out", "x.jsonl", "--json"]])
def test_out_with_history_is_refused_first(capsys, history_run, tmp_path, extra):
    """--history gives one list on stdout: --out is refused as such, not first checked
    for its suffix or against --json (whose advice, --out FILE.jsonl, --history refuses)."""
    extra = [str(tmp_path / e) if e.startswith("x.") else e for e in extra]
    code, _, err = run(capsys, "recommend", history_run[1], "--history", "i3", *extra)
    assert code != 0 and "--out is read with --user/--users/--all-users" in err, err


def test_a_history_file_reads_ids_that_hold_a_comma(capsys, history_run, tmp_path,
                                                    monkeypatch):
    """``--history-file``: one id a line (blank lines skipped, as --users' are), the same
    list as --history gives for the same ids, ``-`` for standard input."""
    model, rundir = history_run
    f = tmp_path / "history.txt"
    f.write_text("i3\n\n i7 \ni11\n")
    deny = tmp_path / "deny.txt"
    deny.write_text("i0\n")
    for extra in (["-k", 6, "--json", "--deny", deny], ["-k", 4], ["--include-seen"]):
        given = run(capsys, "recommend", rundir, "--history", "i3,i7,i11", *extra)
        assert given[0] == 0 and given == run(capsys, "recommend", rundir,
                                              "--history-file", f, *extra), extra
    f.write_text("Smith, J.\ni7\n")
    code, out, err = run(capsys, "recommend", rundir, "--history-file", f, "-k", 5, "--json")
    assert code == 0, err
    got = json.loads(out)
    ref = model.recommend_from_history_ids([["Smith, J.", "i7"]], 5)[1]
    assert got["history"] == ["Smith, J.", "i7"]
    assert [it["item_id"] for it in got["items"]] == ref[0].tolist()
    assert "Smith, J." not in ref[0].tolist()
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"Smith, J.\ni7\n")))
    assert run(capsys, "recommend", rundir, "--history-file", "-", "-k", 5, "--json")[1] == out


@pytest.mark.parametrize("text,needle", [
    ("", "--history-file: {p} holds no item id (expected one id a line)"),
    ("\n \n", "--history-file: {p} holds no item id (expected one id a line)"),
    ("i3\n\ni3,i7\n", "--history-file: {p}, line 3: unknown item id 'i3,i7' (the run's "
                      "item ids are like"),
])
def test_a_bad_history_file_is_named_with_its_line(capsys, history_run, tmp_path, text,
                                                   needle):
    p = tmp_path / "history.txt"
    p.write_text(text)
    code, out, err = run(capsys, "recommend", history_run[1], "--history-file", p)
    assert code == 2 and out == "" and needle.format(p=p) in err, err


def test_history_file_is_refused_as_history_is(capsys, tiny_run, history_run, tmp_path):
    """The checks --history has are --history-file's, under its name; one flag at most
    reads standard input."""
    p = tmp_path / "history.txt"
    p.write_text("i3\n")
    code, _, err = run(capsys, "recommend", tiny_run[1], "--history-file", p)
    assert code != 0 and "--history-file: this model's query tower is 'id'" in err, err
    code, _, err = run(capsys, "recommend", history_run[1], "--history-file", p, "--out",
                       tmp_path / "x.jsonl")
    assert code != 0 and "--history-file gives one new user's list" in err, err
    code, _, err = run(capsys, "recommend", history_run[1], "--history-file", "-",
                       "--deny", "-")
    assert code == 2 and "--history-file and --deny both read standard input" in err, err
    code, _, err = run(capsys, "recommend", history_run[1], "--history-file", p,
                       "--history", "i3")
    assert code == 2 and "not allowed with argument" in err, err


def test_text_lists_on_a_stream_that_cannot_write_an_id(monkeypatch, tmp_path):
    """A user id or title the terminal's encoding cannot write (an ASCII or latin-1
    stdout) is escaped, as --json escapes it, not a UnicodeEncodeError traceback; an
    --item typed in a latin-1 terminal (a lone surrogate in argv) is named, not a crash."""
    from twotower import ModelConfig, TwoTower
    from twotower.cli import main
    from twotower.data import Interactions
    rng = np.random.default_rng(0)
    x = Interactions.from_ids([["Zoë", "日本", "u2", "u3"][u % 4] for u in range(40)],
                              [f"café {i}" for i in rng.integers(0, 12, 40)])
    TwoTower(ModelConfig.preset("tutorial", objective="softmax", epochs=1,
                                embedding_dim=4)).fit(x, verbose=0).save(tmp_path / "run")
    out = io.BytesIO()
    monkeypatch.setattr("sys.stdout", io.TextIOWrapper(out, encoding="ascii",
                                                       write_through=True))
    assert main(["recommend", str(tmp_path / "run"), "--user", "日本", "-k", "2"]) == 0
    text = out.getvalue().decode("ascii")
    assert text.startswith("user \\u65e5\\u672c:") and "caf\\xe9 " in text, text
    assert main(["similar", str(tmp_path / "run"), "--item", "caf\udce9 1"]) == 2


@pytest.mark.parametrize("argv", [
    ["recommend", "{run}", "--user", "Zo\udceb", "--fallback", "popular", "--out", "{tmp}/r.parquet"],
    ["recommend", "{run}", "--history", "i1,caf\udce9", "--out", "{tmp}/r.csv"],
    ["similar", "{run}", "--item", "caf\udce9"],
])
def test_an_id_argument_that_is_not_utf8_is_refused_naming_its_flag(capsys, history_run,
                                                                      tmp_path, argv):
    # typed in a latin-1 terminal, Python's argv holds the byte 0xeb as a lone surrogate:
    # `--out r.parquet` crashed in pyarrow with a UnicodeEncodeError traceback (an id file
    # that is not UTF-8, and the service's JSON, are refused so already)
    code, _, err = run(capsys, *[a.format(run=history_run[1], tmp=tmp_path) for a in argv])
    flag = argv[2]
    assert code == 2 and f"argument {flag}: not UTF-8 text (byte 0x" in err, err


def test_an_id_typed_in_another_unicode_form_is_said_so(capsys, tmp_path):
    """An id typed in NFD (macOS input: "Zoe\u0308") against a run holding its NFC form
    ("Zo\u00eb") was "unknown" with no hint: --user, --history and similar --item say the
    run holds it in another form (ids stay exact: still refused)."""
    from twotower import ModelConfig, TwoTower
    from twotower.data import Interactions
    rng = np.random.default_rng(0)
    x = Interactions.from_ids([["Zo\u00eb", "u1", "u2", "u3"][u % 4] for u in range(60)],
                              [f"caf\u00e9 {i}" for i in rng.integers(0, 12, 60)])
    TwoTower(ModelConfig(query_tower="id+history", objective="bpr", epochs=1, batch_size=16,
                         embedding_dim=4)).fit(x, verbose=0).save(tmp_path / "run")
    said = "written in another Unicode form (NFC)"
    for argv in (("recommend", "--user", "Zoe\u0308"),
                 ("recommend", "--history", "cafe\u0301 1"),
                 ("similar", "--item", "cafe\u0301 1")):
        code, _, err = run(capsys, argv[0], tmp_path / "run", *argv[1:])
        held = "Zo\u00eb" if argv[1] == "--user" else "caf\u00e9 1"
        assert code == 2 and f"holds {held!r} {said}" in err, (argv, err)
    code, _, err = run(capsys, "recommend", tmp_path / "run", "--user", "Zoe")
    assert code == 2 and "Unicode" not in err, err
