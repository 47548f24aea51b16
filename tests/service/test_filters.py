"""``allow``/``deny`` lists in request bodies, and the server-wide deny list (``create_app(
deny=...)``, ``twotower serve --deny FILE``) kept across model swaps."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.service.conftest import TOKEN
from twotower.errors import ConfigError

AUTH = {"Authorization": f"Bearer {TOKEN}"}
OUT_OF_STOCK = [f"i{i}" for i in range(0, 10)] + ["SKU-unknown"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A run of 20 users and 30 items (``u0``.., ``i0``..) with a history tower."""
    from twotower import ModelConfig, TwoTower
    from twotower.data import Interactions
    rng = np.random.default_rng(1)
    x = Interactions.from_ids([f"u{u}" for u in rng.integers(0, 20, 500)],
                              [f"i{i}" for i in rng.integers(0, 30, 500)],
                              ratings=rng.integers(1, 6, 500))
    cfg = ModelConfig(query_tower="id+history", objective="bpr", epochs=1, batch_size=16,
                      embedding_dim=8)
    model = TwoTower(cfg).fit(x, verbose=0)
    run = tmp_path_factory.mktemp("runs") / "tiny"
    model.save(run)
    return model, run


@pytest.fixture(scope="module")
def client(tiny):
    from twotower.service import create_app
    with TestClient(create_app(tiny[1], max_filter=40)) as c:
        yield c


@pytest.fixture(scope="module")
def denying(tiny):
    """A service with the server-wide deny list ``OUT_OF_STOCK``."""
    from twotower.service import create_app
    with TestClient(create_app(tiny[1], admin_token=TOKEN, deny=OUT_OF_STOCK)) as c:
        yield c


def _ids(items):
    return [it["item_id"] for it in items]


def test_request_lists_filter_every_list(client, tiny):
    model, _ = tiny
    deny = [f"i{i}" for i in range(10, 20)] + ["nope"]
    allow = [f"i{i}" for i in range(5, 25)] + ["x", "y"]
    users = [f"u{u}" for u in range(20)]
    r = client.post("/v1/recommendations", json={"user_ids": users, "k": 8, "allow": allow,
                                                 "deny": deny})
    body = r.json()
    assert r.status_code == 200, body
    assert body["unknown_filter_ids"] == {"allow": 2, "deny": 1}
    want = model.recommend_ids(users, 8, allow=allow, deny=deny)[1]
    for row, w in zip(body["results"], want.tolist()):
        assert _ids(row["items"]) == [v for v in w if v is not None]
        assert set(_ids(row["items"])) <= set(allow) - set(deny)
    # no lists: no such member
    assert "unknown_filter_ids" not in client.post(
        "/v1/recommendations", json={"user_ids": ["u1"]}).json()
    # similar items: never the item itself, even allowed; padded lists are short
    r = client.post("/v1/similar-items", json={"item_id": "i5", "k": 10,
                                               "allow": ["i5", "i6", "i7", "i8"],
                                               "deny": ["i8"]})
    assert r.status_code == 200 and sorted(_ids(r.json()["items"])) == ["i6", "i7"]
    assert r.json()["unknown_filter_ids"] == {"allow": 0, "deny": 0}
    assert r.json()["item_id"] == "i5"
    # by history, the history left out
    r = client.post("/v1/recommendations/by-history",
                    json={"item_ids": ["i1", "i2"], "k": 10, "allow": ["i1", "i3", "i4"],
                          "deny": ["i4"]})
    assert r.status_code == 200 and _ids(r.json()["items"]) == ["i3"]
    # the popular fallback obeys them too
    r = client.post("/v1/recommendations", json={"user_ids": ["ghost"], "k": 3,
                                                 "fallback": "popular",
                                                 "allow": ["i3", "i4", "i5"],
                                                 "deny": ["i4"]})
    assert sorted(_ids(r.json()["results"][0]["items"])) == ["i3", "i5"]


@pytest.mark.parametrize("path,body,needle", [
    ("/v1/recommendations", {"user_ids": ["u1"], "deny": [f"x{i}" for i in range(41)]},
     "body field `deny`: List should have at most 40 items"),
    ("/v1/similar-items", {"item_id": "i1", "allow": []},
     "body field `allow`: List should have at least 1 item"),
    ("/v1/recommendations/by-history", {"item_ids": ["i1"], "allow": ["a", "b"]},
     "body field `allow`: none of its 2 item ids is in the catalogue"),
    ("/v1/similar-items", {"item_id": "i1", "deny": "i2"}, "body field `deny`"),
    ("/v1/similar-items", {"item_id": "i1", "deny": [["i2"]]}, "body field `deny.0`"),
])
def test_bad_lists_are_refused_naming_the_field(client, path, body, needle):
    r = client.post(path, json=body)
    # an allow-list of no known id: 404, as unknown ids are elsewhere
    status = 404 if "none of its" in needle else 422
    assert r.status_code == status and needle in r.json()["detail"], r.json()
    assert r.json()["model"].startswith("tiny@")


def test_the_server_deny_list_holds_for_every_answer_and_across_reloads(denying, tiny,
                                                                          tmp_path):
    model, run = tiny
    denied = set(OUT_OF_STOCK)
    info = denying.get("/v1/model").json()
    deny = info["deny"]
    assert {k: deny[k] for k in ("file", "reread_on_reload", "ids", "items", "unknown_ids")
            } == {"file": None, "reread_on_reload": False, "ids": 11, "items": 10,
                  "unknown_ids": 1}

    def check(c):
        listed = []
        for u in range(20):
            r = c.get("/v1/recommendations", params={"user_id": f"u{u}", "k": 20})
            listed += _ids(r.json()["items"])
        r = c.post("/v1/recommendations", json={"user_ids": ["u1", "ghost"], "k": 20,
                                                "fallback": "popular", "deny": ["i10"]})
        for row in r.json()["results"]:
            listed += _ids(row["items"])
            assert "i10" not in _ids(row["items"])  # the request's deny on top
        listed += _ids(c.get("/v1/similar-items", params={"item_id": "i12", "k": 28}
                             ).json()["items"])
        r = c.post("/v1/recommendations/by-history", json={"item_ids": ["i11"], "k": 28})
        listed += _ids(r.json()["items"])
        assert listed and not denied & set(listed)
        assert len(set(listed)) >= 15  # not every list empty

    check(denying)
    # a swap to another run (a copy: another label) keeps the list
    other = tmp_path / "other"
    shutil.copytree(run, other)
    r = denying.post("/admin/reload", json={"run_dir": str(other)}, headers=AUTH)
    assert r.status_code == 200, r.json()
    assert denying.get("/v1/model").json()["deny"] == deny  # the same reading
    check(denying)


def test_the_catalogue_endpoints_still_show_denied_items(denying):
    # as docs/serving.md says (it said "no answer of any endpoint lists these items",
    # where the item search and its most popular items listed them): the deny list keeps
    # items out of ranked lists; looking an item up still finds it
    assert denying.get("/v1/items/i0").status_code == 200
    assert denying.get("/v1/item", params={"item_id": "i0"}).status_code == 200
    r = denying.get("/v1/items", params={"search": "i0"})
    assert "i0" in _ids(r.json()["items"])
    r = denying.get("/v1/items", params={"limit": 100})
    assert set(OUT_OF_STOCK[:10]) <= set(_ids(r.json()["items"]))


@pytest.fixture()
def oos(tiny, tmp_path):
    """A deny file (``i0``..``i4`` and an id the run does not hold) and a service reading
    it (``create_app(deny_file=...)``)."""
    from twotower.service import create_app
    p = tmp_path / "oos.txt"
    p.write_text("i0\ni1\n\ni2\ni3\ni4\nSKU-gone\n")
    with TestClient(create_app(tiny[1], admin_token=TOKEN, deny_file=p,
                               access_log=False)) as c:
        yield p, c


def _listed(c):
    out = set()
    for u in range(20):
        out |= set(_ids(c.get("/v1/recommendations", params={"user_id": f"u{u}", "k": 25}
                              ).json()["items"]))
    return out


def test_a_reload_reads_the_deny_file_again(oos):
    """``--deny FILE`` was read once at start-up: a changed out-of-stock list needed a
    restart. Every reload reads it again; a reload of the same run keeps its model (the
    arrays are not read again) and prepares the new list."""
    p, c = oos
    info = c.get("/v1/model").json()["deny"]
    assert {k: info[k] for k in ("file", "reread_on_reload", "ids", "items", "unknown_ids")
            } == {"file": str(p), "reread_on_reload": True, "ids": 6, "items": 5,
                  "unknown_ids": 1}
    assert not {"i0", "i4"} & _listed(c)
    holder = c.app.state.holder
    before = holder.current
    p.write_text("i4\ni5\ni6\n")
    r = c.post("/admin/reload", headers=AUTH)
    assert r.status_code == 200 and r.json()["run_loaded"] is False, r.json()
    assert holder.current.model is before.model  # the run's files unchanged: kept
    after = c.get("/v1/model").json()["deny"]
    assert (after["ids"], after["items"], after["unknown_ids"]) == (3, 3, 0)
    assert after["digest"] != info["digest"] and after["read_at"] >= info["read_at"]
    listed = _listed(c)
    assert "i0" in listed and not {"i4", "i5", "i6"} & listed
    assert "i0" in _ids(c.post("/v1/recommendations", json={
        "user_ids": ["ghost"], "fallback": "popular", "k": 27}).json()["results"][0]["items"])


@pytest.mark.parametrize("fault", ["missing", "not_utf8", "columns"])
def test_a_reload_with_a_bad_deny_file_is_refused_as_a_whole(oos, tmp_path, fault, caplog,
                                                              monkeypatch):
    """A reload whose deny file is missing, unreadable or has a bad line serves neither
    the new run nor the new list: the old model and the old list keep serving, and the
    error names the file and the line."""
    import logging
    p, c = oos
    other = tmp_path / "other"  # a run of its own name: a swap would show in the label
    shutil.copytree(c.app.state.holder.current.run_dir, other)
    label, info, listed = (c.get("/healthz").json()["model"],
                           c.get("/v1/model").json()["deny"], _listed(c))
    if fault == "missing":
        p.unlink()
        where = f"file not found: {p}"
    elif fault == "not_utf8":
        p.write_bytes(b"i5\n\ni6\xff\n")
        where = f"{p}, line 3: not UTF-8 text"
    else:  # a file of two columns: its lines deny nothing
        p.write_text("i5\ni6,2\n")
        where = f"{p}, line 2: 'i6,2' is no item id of the run and holds ','"
    # (a `serve` run by another test keeps the service's lines from the root logger)
    monkeypatch.setattr(logging.getLogger("twotower.service"), "propagate", True)
    with caplog.at_level(logging.ERROR, logger="twotower.service"):
        r = c.post("/admin/reload", json={"run_dir": str(other)}, headers=AUTH)
    assert r.status_code == 422 and r.json()["model"] == label
    assert where in r.json()["detail"] and f"still serving {label}" in r.json()["detail"]
    assert any(where in rec.getMessage() for rec in caplog.records)
    assert c.get("/healthz").json()["model"] == label
    assert c.get("/v1/model").json()["deny"] == info and _listed(c) == listed
    assert 'twotower_model_reloads_total{result="error"} 1' in c.get("/metrics").text


def test_a_deny_list_from_stdin_is_kept_across_reloads(tiny, monkeypatch, capsys):
    """``--deny -`` cannot be read again: the list read at start-up stays, and
    ``GET /v1/model`` says so."""
    import io
    import sys

    from twotower.service import create_app
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"i0\ni1\n")))
    with TestClient(create_app(tiny[1], admin_token=TOKEN, deny_file="-")) as c:
        info = c.get("/v1/model").json()["deny"]
        assert (info["file"], info["reread_on_reload"], info["items"]) == ("<stdin>", False, 2)
        assert c.post("/admin/reload", headers=AUTH).status_code == 200
        assert c.get("/v1/model").json()["deny"] == info
        assert not {"i0", "i1"} & _listed(c)
    with pytest.raises(ConfigError, match="`deny` and `deny_file` both"):
        create_app(tiny[1], deny=["i1"], deny_file="-")


def test_serve_deny_file_reaches_the_service(tiny, tmp_path, monkeypatch, capsys):
    """``twotower serve --deny FILE`` hands the file to the service, which reads it (at
    start-up, and again on each reload); its faults are one line naming ``--deny``."""
    from tests.cli_run import run
    from twotower.service import create_app
    _, rundir = tiny
    got = {}
    monkeypatch.setattr("twotower.service.serve", lambda *a, **kw: got.update(kw))
    p = tmp_path / "oos.txt"
    p.write_text("i1\n\ni2\nSKU-9\n")
    code, out, err = run(capsys, "serve", rundir, "--deny", p, "--max-filter", "7",
                         "--max-body", "5000")
    # read as `--deny` (its reloads' messages name the flag), read again by every reload
    deny = got["deny"]
    assert code == 0 and got.get("deny_file") is None and got["max_filter"] == 7
    assert (deny.file, deny.name, deny.ids, deny.rereadable) == (
        str(p.absolute()), "--deny", ("i1", "i2", "SKU-9"), True)
    assert got["max_body_bytes"] == 5000
    code, out, err = run(capsys, "serve", rundir)
    assert code == 0 and got["deny"] is None and got["max_body_bytes"] is None
    # the service reads the file (here: its app, built as `serve` builds it)
    monkeypatch.setattr("twotower.service.serve",
                        lambda run_, **kw: create_app(run_, deny=kw["deny"],
                                                      max_body_bytes=kw["max_body_bytes"]))
    code, out, err = run(capsys, "serve", rundir, "--deny", tmp_path / "nothing.txt")
    assert code == 2 and "--deny: file not found: " in err and "nothing.txt" in err
    p.write_bytes(b"i1\n\xfe\n")
    code, out, err = run(capsys, "serve", rundir, "--deny", p)
    assert code == 2 and f"--deny: {p}, line 2: not UTF-8 text" in err
    code, out, err = run(capsys, "serve", rundir, "--max-body", "0")
    assert code == 2 and "--max-body must be an integer >= 1, got 0" in err


@pytest.mark.parametrize("fault", ["not_utf8", "columns"])
def test_a_refused_reload_names_the_file_as_the_user_gave_it(tiny, tmp_path, monkeypatch,
                                                             caplog, capsys, fault):
    """A reload refused for a bad deny file named create_app's argument (``cannot read
    the deny list again: `deny_file`: ...``) to a user who typed ``twotower serve --deny
    FILE``; a file of two columns was ``cannot load RUN: ...``, as if the run were at
    fault. Served from the CLI, the 422 and the log line name ``--deny``, the file and its
    line, and say what to do; a library user still reads ``deny_file``."""
    import logging

    from twotower.service import create_app
    p = tmp_path / "oos.txt"
    p.write_text("i0\ni1\n")
    apps = []
    monkeypatch.setattr("twotower.service.serve", lambda run_, **kw: apps.append(
        create_app(run_, deny=kw["deny"], admin_token=TOKEN, access_log=False)))
    from tests.cli_run import run
    assert run(capsys, "serve", tiny[1], "--deny", p)[0] == 0
    library = create_app(tiny[1], deny_file=p, admin_token=TOKEN, access_log=False)
    if fault == "not_utf8":
        p.write_bytes(b"i5\n\xffi6\n")
        where = f"{p.absolute()}, line 2: not UTF-8 text (byte 0xff, invalid start byte): " \
                "save the file as UTF-8"
    else:
        p.write_text("i5\ni6,2\n")
        where = (f"{p.absolute()}, line 2: 'i6,2' is no item id of the run and holds ',': "
                 "expected one item id a line, with no other columns")
    monkeypatch.setattr(logging.getLogger("twotower.service"), "propagate", True)
    for app, name in ((apps[0], "--deny"), (library, "`deny_file`")):
        caplog.clear()
        with caplog.at_level(logging.ERROR, logger="twotower.service"):
            r = TestClient(app).post("/admin/reload", headers=AUTH)
        label = app.state.holder.current.label
        read_at = app.state.holder.deny_list.read_at
        detail = (f"cannot read the deny list again: {name}: {where}; still serving {label} "
                  f"with the deny list read at {read_at}; correct the file, then reload "
                  "again")
        assert r.status_code == 422 and r.json()["detail"] == detail
        assert [rec.getMessage() for rec in caplog.records] == [f"reload refused: {detail}"]
    # the workers of `serve --workers N` (and their reloads) get the name with the list
    from twotower.service.deny import DenyList
    assert DenyList.from_json(apps[0].state.holder.deny_list.to_json()).name == "--deny"


def test_workers_start_from_the_reading_of_the_parent(tiny, tmp_path, monkeypatch):
    """The workers' factory builds its app from the reading the parent wrote."""
    from twotower.service import server
    from twotower.service.deny import DenyList
    p = tmp_path / "oos.txt"
    p.write_text("i3\ni4\n")
    ids = tmp_path / "deny.json"
    ids.write_text(DenyList.read(p).to_json())
    monkeypatch.setenv(server._ENV_RUN, str(tiny[1]))
    monkeypatch.setenv(server._ENV_DENY, str(ids))
    monkeypatch.setenv(server._ENV_SETTINGS, json.dumps({"max_filter": 5}))
    p.write_text("i5\n")  # read by the parent, not by each worker on its own
    holder = server._app_from_env().state.holder
    assert holder.current.deny.n_denied == 2 and holder.deny_list.file == str(p)


def test_several_workers_get_the_list_the_parent_read(tiny, monkeypatch):
    """``serve(..., workers=2, deny=ids)`` writes the ids once for the workers (a file:
    an environment variable holds 128 KiB at most) and removes it when it stops."""
    import uvicorn.supervisors

    from twotower.service import server
    seen = {}

    class Supervisor:  # stands in for uvicorn's: builds one worker's app, starts none
        def __init__(self, config, sockets):
            self.sockets = sockets

        def run(self):
            seen["path"] = os.environ[server._ENV_DENY]
            seen["deny"] = server._app_from_env().state.holder.current.deny
            for s in self.sockets:
                s.close()
    monkeypatch.setattr(uvicorn.supervisors, "Multiprocess", Supervisor)
    for key in (server._ENV_RUN, server._ENV_SETTINGS, server._ENV_DENY):
        monkeypatch.setenv(key, "")
    ids = [f"i{i}" for i in range(5)] + ["x" * 2000] * 100  # 200 KB of ids
    server.serve(tiny[1], port=0, workers=2, access_log=False, deny=ids)
    assert (seen["deny"].n_denied, seen["deny"].n_unknown) == (5, 100)
    assert not os.path.exists(seen["path"])


def test_a_sighup_gives_every_new_worker_the_new_list(tiny, tmp_path, monkeypatch, caplog):
    """With several workers, a SIGHUP has uvicorn replace them one by one, each building
    its app anew: the parent reads the deny file again first, once, and every replacement
    serves that reading (they started from the parent's start-up reading for good). A
    file that cannot be read skips the restart: the workers keep serving, list and all."""
    import logging

    import uvicorn.supervisors

    from twotower.service import server
    p = tmp_path / "oos.txt"
    p.write_text("i0\ni1\n")
    workers, restarts = [], []

    class Supervisor:  # stands in for uvicorn's: "workers" are apps built in process
        def __init__(self, config, sockets):
            self.sockets = sockets

        def start_workers(self):
            return [server._app_from_env().state.holder.current.deny.n_denied
                    for _ in range(2)]

        def handle_hup(self):  # uvicorn's restart_all: new workers, one by one
            restarts.append(os.environ[server._ENV_DENY])
            workers.append(self.start_workers())

        def run(self):
            workers.append(self.start_workers())
            p.write_text("i2\ni3\ni4\n")
            self.handle_hup()
            p.write_bytes(b"i5\n\xff\n")
            # (serve's logging config keeps the service's lines from the root logger)
            monkeypatch.setattr(logging.getLogger("twotower.service"), "propagate", True)
            with caplog.at_level(logging.ERROR, logger="twotower.service"):
                self.handle_hup()  # refused: the restart skipped
            p.write_text("i5\n")
            self.handle_hup()
            for s in self.sockets:
                s.close()
    monkeypatch.setattr(uvicorn.supervisors, "Multiprocess", Supervisor)
    for key in (server._ENV_RUN, server._ENV_SETTINGS, server._ENV_DENY):
        monkeypatch.setenv(key, "")
    server.serve(tiny[1], port=0, workers=2, access_log=False, deny_file=p)
    assert workers == [[2, 2], [3, 3], [1, 1]]
    assert len(restarts) == 2 and not any(os.path.exists(r) for r in restarts)
    assert any(f"{p}, line 2: not UTF-8 text" in r.getMessage() for r in caplog.records)


def test_an_integral_number_is_an_integer_id(client):
    """JSON Schema reads 5.0 as an integer (the schema test sent ``{"item_id": 10.0}``
    and was refused): an id given so is the integer id."""
    from twotower.service.schemas import _check_id
    assert _check_id(10.0) == 10 and type(_check_id(10.0)) is int
    with pytest.raises(ValueError):
        _check_id(10.5)
    r = client.post("/v1/similar-items", json={"item_id": "i1", "deny": [3.0]})
    assert r.status_code == 200 and r.json()["unknown_filter_ids"]["deny"] == 1
