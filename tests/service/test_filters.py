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
    assert info["deny"] == {"items": 10, "unknown_ids": 1}

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
    assert denying.get("/v1/model").json()["deny"] == {"items": 10, "unknown_ids": 1}
    check(denying)


def test_serve_deny_file_reaches_every_worker(tiny, tmp_path, monkeypatch, capsys):
    """``twotower serve --deny FILE`` reads the file once and hands its ids to ``serve``;
    with several workers each worker's app gets them from the file the parent wrote."""
    from tests.cli_run import run
    from twotower.service import server
    _, rundir = tiny
    got = {}
    monkeypatch.setattr("twotower.service.serve", lambda *a, **kw: got.update(kw))
    p = tmp_path / "oos.txt"
    p.write_text("i1\n\ni2\nSKU-9\n")
    code, out, err = run(capsys, "serve", rundir, "--deny", p, "--max-filter", "7")
    assert code == 0 and got["deny"] == ["i1", "i2", "SKU-9"] and got["max_filter"] == 7
    code, out, err = run(capsys, "serve", rundir, "--deny", tmp_path / "nothing.txt")
    assert code == 2 and "--deny: " in err and "nothing.txt" in err
    p.write_bytes(b"i1\n\xfe\n")
    code, out, err = run(capsys, "serve", rundir, "--deny", p)
    assert code == 2 and f"--deny: {p}, line 2: not UTF-8 text" in err
    # the workers' factory
    ids = tmp_path / "deny.json"
    ids.write_text(json.dumps(["i3", "i4"]))
    monkeypatch.setenv(server._ENV_RUN, str(rundir))
    monkeypatch.setenv(server._ENV_DENY, str(ids))
    monkeypatch.setenv(server._ENV_SETTINGS, json.dumps({"max_filter": 5}))
    app = server._app_from_env()
    assert app.state.holder.current.deny.n_denied == 2


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


def test_an_integral_number_is_an_integer_id(client):
    """JSON Schema reads 5.0 as an integer (the schema test sent ``{"item_id": 10.0}``
    and was refused): an id given so is the integer id."""
    from twotower.service.schemas import _check_id
    assert _check_id(10.0) == 10 and type(_check_id(10.0)) is int
    with pytest.raises(ValueError):
        _check_id(10.5)
    r = client.post("/v1/similar-items", json={"item_id": "i1", "deny": [3.0]})
    assert r.status_code == 200 and r.json()["unknown_filter_ids"]["deny"] == 1
