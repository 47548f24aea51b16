"""Model swap without downtime: POST /admin/reload."""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest
from fastapi.testclient import TestClient

TOKEN = "test-admin-token"  # conftest.TOKEN
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture()
def fresh(run_dir):
    """A fresh app per test: reloads change its state."""
    from twotower.service import create_app
    return create_app(run_dir, admin_token=TOKEN, access_log=False)


def test_reload_to_a_new_run(fresh, history_run):
    c = TestClient(fresh)
    old = c.get("/healthz").json()["model"]
    assert c.post("/v1/recommendations/by-history", json={"item_ids": [50]}).status_code == 400
    r = c.post("/admin/reload", json={"run_dir": str(history_run[1])}, headers=AUTH)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["previous"] == old and body["current"].startswith("history@")
    assert body["run_loaded"] is True
    assert c.get("/healthz").json()["model"] == body["current"]
    assert c.get("/v1/model").json()["supports_history"] is True
    assert c.post("/v1/recommendations/by-history", json={"item_ids": [50]}).status_code == 200
    assert 'twotower_model_reloads_total{result="ok"} 1' in c.get("/metrics").text


def test_reload_without_a_body_rereads_the_current_run(fresh):
    c = TestClient(fresh)
    before = fresh.state.holder.current
    r = c.post("/admin/reload", headers=AUTH)
    assert r.status_code == 200, r.text
    assert fresh.state.holder.current is not before
    assert r.json()["current"] == before.label  # same files, same version
    # ...whose model in memory is kept, not read again (reuse=False reads them anyway)
    assert r.json()["run_loaded"] is False
    assert fresh.state.holder.current.model is before.model
    old, new = fresh.state.holder.reload(reuse=False)
    assert new.model is not before.model and new.label == before.label


def test_reload_rereads_a_symlinked_run_dir_as_it_points_now(run_dir, history_run, tmp_path):
    """Served as `current -> v1`, the run was kept as v1's resolved path: after the link was
    moved to v2, a reload read v1 again."""
    from twotower.service import create_app
    link = tmp_path / "current"
    link.symlink_to(run_dir, target_is_directory=True)
    app = create_app(link, admin_token=TOKEN, access_log=False)
    c = TestClient(app)
    first = c.get("/healthz").json()["model"]
    assert first.startswith(f"{run_dir.name}@")  # labelled by the run it names
    link.unlink()
    link.symlink_to(history_run[1], target_is_directory=True)
    r = c.post("/admin/reload", headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json()["previous"] == first and r.json()["current"].startswith("history@")
    assert c.get("/v1/model").json()["supports_history"] is True


@pytest.mark.parametrize("which", ["corrupt", "missing", "not_a_run"])
def test_a_broken_run_is_refused_and_the_old_keeps_serving(fresh, broken_run, tmp_path,
                                                            which):
    target = {"corrupt": broken_run, "missing": tmp_path / "nope",
              "not_a_run": tmp_path}[which]
    c = TestClient(fresh)
    old = c.get("/healthz").json()["model"]
    before = c.get("/v1/recommendations", params={"user_id": 42}).json()
    r = c.post("/admin/reload", json={"run_dir": str(target)}, headers=AUTH)
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert str(target) in detail and f"still serving {old}" in detail
    reason = {"corrupt": "arrays.npz", "missing": "not found", "not_a_run": "format.json"}
    assert reason[which] in detail
    assert c.get("/v1/recommendations", params={"user_id": 42}).json() == before
    assert 'twotower_model_reloads_total{result="error"} 1' in c.get("/metrics").text


def test_concurrent_reload_is_409(fresh, history_run):
    holder = fresh.state.holder
    holder._lock.acquire()  # a reload "in progress"
    try:
        r = TestClient(fresh).post("/admin/reload", json={"run_dir": str(history_run[1])},
                                   headers=AUTH)
    finally:
        holder._lock.release()
    assert r.status_code == 409 and "in progress" in r.json()["detail"]


def test_requests_during_a_reload_all_get_consistent_answers(fresh, history_run):
    """Hammer the app from 8 clients while it swaps models: every request is answered (200),
    and every answer is entirely from one model (the one its `model` field names)."""
    c = TestClient(fresh)
    old_label = c.get("/healthz").json()["model"]
    expected = {old_label: c.get("/v1/recommendations", params={"user_id": 42}).json()["items"]}
    answers: list[tuple[int, str | None, list | None]] = []
    stop = threading.Event()

    async def scenario() -> dict:
        transport = httpx.ASGITransport(app=fresh)
        async with httpx.AsyncClient(transport=transport, base_url="http://svc") as ac:
            async def hammer() -> None:
                while not stop.is_set():
                    r = await ac.get("/v1/recommendations", params={"user_id": 42})
                    body = r.json() if r.status_code == 200 else {}
                    answers.append((r.status_code, body.get("model"), body.get("items")))
                    await asyncio.sleep(0)

            async def swap() -> dict:
                await asyncio.sleep(0.05)
                r = await ac.post("/admin/reload", json={"run_dir": str(history_run[1])},
                                  headers=AUTH)
                await asyncio.sleep(0.05)
                stop.set()
                return r.json()

            *_, result = await asyncio.gather(*(hammer() for _ in range(8)), swap())
            return result

    result = asyncio.run(scenario())
    new_label = result["current"]
    expected[new_label] = c.get("/v1/recommendations", params={"user_id": 42}).json()["items"]
    assert new_label != old_label
    assert answers and all(status == 200 for status, _, _ in answers)
    labels = {label for _, label, _ in answers}
    assert labels == {old_label, new_label}
    for _, label, items in answers:
        assert items == expected[label]


def test_an_in_flight_request_finishes_on_the_old_model(run_dir, history_run, monkeypatch):
    from twotower.service import create_app
    fresh = create_app(run_dir, admin_token=TOKEN, access_log=False, inline_max_scores=0)
    c = TestClient(fresh)  # inline_max_scores=0: every search runs in the thread pool
    old = fresh.state.holder.current
    expected = c.get("/v1/recommendations", params={"user_id": 42}).json()
    entered, release = threading.Event(), threading.Event()
    real = old.model.recommend

    def slow(*args, **kwargs):
        entered.set()
        release.wait(10)
        return real(*args, **kwargs)

    monkeypatch.setattr(old.model, "recommend", slow)
    got = {}
    t = threading.Thread(target=lambda: got.update(
        r=c.get("/v1/recommendations", params={"user_id": 42})))
    t.start()
    assert entered.wait(10)
    r = c.post("/admin/reload", json={"run_dir": str(history_run[1])}, headers=AUTH)
    assert r.status_code == 200 and fresh.state.holder.current is not old
    release.set()
    t.join(10)
    assert got["r"].status_code == 200 and got["r"].json() == expected


def test_a_long_answer_is_built_off_the_event_loop(run_dir, monkeypatch):
    """The cost that decides inline vs thread pool counts the answer's items too: 100 users
    x k=100 is only 168k scored pairs but 10,000 JSON items."""
    from twotower.service import create_app

    app = create_app(run_dir, access_log=False, inline_max_scores=1 << 20)
    threads = []
    with TestClient(app) as c:
        model = app.state.holder.current.model
        real = model.recommend

        def spy(*a, **kw):
            threads.append(threading.current_thread().name)
            return real(*a, **kw)
        monkeypatch.setattr(model, "recommend", spy)
        assert c.get("/v1/recommendations", params={"user_id": 1, "k": 5}).status_code == 200
        r = c.post("/v1/recommendations", json={"user_ids": list(range(1, 101)), "k": 100})
        assert r.status_code == 200
    small, big = threads
    assert small != big  # the first ran on the event loop's thread, the second in the pool
