"""Once for real: `twotower serve RUN --port P` as a subprocess on a loopback port."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from twotower.service.protocol import unparsed_detail

TOKEN = "test-admin-token"


def _wait_healthy(proc: subprocess.Popen, base: str, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited early ({proc.returncode}): "
                                 f"{proc.stderr.read()[-2000:]}")
        try:
            r = httpx.get(f"{base}/healthz", timeout=1.0)
            if r.status_code == 200:
                return r.json()
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"server did not answer /healthz within {timeout} s")


def _wait_for(predicate, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def test_twotower_serve_subprocess(run_dir, free_port, tmp_path):
    port = free_port
    env = {**os.environ, "KERAS_BACKEND": "jax", "TWOTOWER_ADMIN_TOKEN": TOKEN,
           "PYTHONUNBUFFERED": "1"}
    deny = tmp_path / "oos.txt"
    deny.write_text("50\n181\n")
    proc = subprocess.Popen([sys.executable, "-m", "twotower.cli", "serve", str(run_dir),
                             "--port", str(port), "--deny", str(deny), "--max-body",
                             "65536"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        health = _wait_healthy(proc, base)
        assert health["status"] == "ok" and health["model"].startswith("tutorial@")
        with httpx.Client(base_url=base, timeout=10) as c:
            r = c.get("/v1/recommendations", params={"user_id": 42, "k": 10})
            assert r.status_code == 200 and len(r.json()["items"]) == 10
            r = c.post("/v1/recommendations", json={"user_ids": [1, 2, 3], "k": 3})
            assert r.status_code == 200 and len(r.json()["results"]) == 3
            assert c.get("/").status_code == 200
            # over the limits, answers in the service's JSON error shape: a body over
            # --max-body (the app's 413), a URL over 65,535 bytes (uvicorn's parser refuses
            # it: it was a plain-text "Invalid HTTP request received."), a body whose
            # chunked framing is broken (the same parser's; it named no model)
            body = json.dumps({"item_ids": list(range(20_000))}).encode()
            r = c.post("/v1/recommendations/by-history", content=body,
                       headers={"content-type": "application/json"})
            assert r.status_code == 413 and r.json() == {
                "model": health["model"],
                "detail": f"request body too large: {len(body):,} bytes, the limit is "
                          "65,536 bytes (twotower serve --max-body BYTES; create_app's "
                          "max_body_bytes)"}
            import http.client  # (httpx refuses to send such a URL)
            raw = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            raw.request("GET", "/v1/recommendations?user_id=" + "1" * 70_000)
            r = raw.getresponse()
            text = r.read().decode()
            raw.close()
            assert r.status == 400 and r.getheader("content-type") == "application/json"
            assert json.loads(text)["detail"].startswith("request URL too long: 70,")
            assert json.loads(text)["model"] == health["model"]
            assert "the limit is 65,535; send long id lists in a POST body" in text
            assert r.getheader("x-content-type-options") == "nosniff"
            import socket
            with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
                raw.sendall(b"POST /v1/recommendations HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                            b"Content-Type: application/json\r\nTransfer-Encoding: "
                            b"chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n")
                head, _, text = raw.recv(65536).decode().partition("\r\n\r\n")
            assert head.startswith("HTTP/1.1 400 ") and json.loads(text) == {
                "model": health["model"], "detail": unparsed_detail(None)}
            # a client that hangs up with its body cut short (Content-Length 100, 14 bytes
            # sent): logged as a 499, it was a 500 and an "Exception in ASGI application"
            with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
                raw.sendall(b"POST /v1/similar-items HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                            b"Content-Type: application/json\r\nContent-Length: 100\r\n"
                            b"\r\n{\"item_id\": 50,")
            # a request asking to upgrade (curl --http2 on plain HTTP) is served as
            # HTTP/1.1; uvicorn logged two warnings, one saying to install a WebSocket
            # library
            for upgrade in ("h2c", "websocket"):
                r = c.get("/healthz", headers={"connection": "Upgrade",
                                               "upgrade": upgrade})
                assert r.status_code == 200 and r.http_version == "HTTP/1.1"
            # the deny list, read again by a SIGHUP (it was read once, at start-up)
            info = c.get("/v1/model").json()["deny"]
            assert (info["file"], info["items"]) == (str(deny), 2)
            deny.write_text("50\n")
            # SIGHUP reloads the run in place, without dropping the service
            proc.send_signal(signal.SIGHUP)
            assert _wait_for(lambda: 'twotower_model_reloads_total{result="ok"} 1'
                             in c.get("/metrics").text)
            assert c.get("/healthz").status_code == 200
            assert c.get("/v1/model").json()["deny"]["items"] == 1
            r = c.post("/admin/reload", json={}, headers={"Authorization": f"Bearer {TOKEN}"})
            assert r.status_code == 200, r.text
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
    # uvicorn shuts down gracefully, then re-raises the SIGTERM it caught
    assert proc.returncode == -signal.SIGTERM, err[-2000:]
    # every line on stderr is one JSON object: uvicorn's own lines were plain text
    lines = [json.loads(line) for line in err.splitlines() if line.strip()]
    logged = [a for a in lines if "logger" in a]
    assert {"ts", "level", "logger", "message"} <= set(logged[0])
    assert any("Finished server process" in a["message"] for a in logged)
    assert any("reloaded" in a["message"] for a in logged)
    access = [a for a in lines if "method" in a]
    assert any(a["path"] == "/v1/recommendations" and a["status"] == 200 for a in access)
    assert {"method", "path", "status", "latency_ms", "model"} <= set(access[0])
    # each request names the model that answered it (a reload's both sides), or none
    assert {a["model"] for a in access if a["path"] == "/v1/recommendations"} == {
        health["model"]}
    assert {a["model"] for a in access if a["path"] == "/metrics"} == {None}
    # the request whose chunked body was broken: logged as the 400 it got, not a 500
    # with an "Exception in ASGI application" traceback
    assert "Exception in ASGI application" not in err
    assert "Unsupported upgrade" not in err and "WebSocket" not in err
    assert [a["status"] for a in access if a["path"] == "/v1/recommendations"
            and a["method"] == "POST"] == [200, 400]
    assert [a["status"] for a in access if a["path"] == "/v1/similar-items"] == [499]


def test_serve_refuses_a_broken_run_before_binding(broken_run, free_port):
    r = subprocess.run([sys.executable, "-m", "twotower.cli", "serve", str(broken_run),
                        "--port", str(free_port)], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "KERAS_BACKEND": "jax"})
    assert r.returncode != 0
    assert "arrays.npz" in r.stderr


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_several_workers_end_as_the_signal_that_stopped_them(run_dir, free_port, sig):
    """With ``--workers 2`` a SIGTERM or Ctrl-C ended the service with exit status 0 (a
    single worker's ends by the SIGTERM, or as interrupted): a service manager could not
    tell a stop from a clean exit. The workers still shut down first."""
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "twotower.cli", "serve", str(run_dir),
                             "--port", str(free_port), "--workers", "2"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_healthy(proc, f"http://127.0.0.1:{free_port}", timeout=120)
    finally:
        proc.send_signal(getattr(signal, sig))
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
    assert err.count("Finished server process") == 2, err[-2000:]
    if sig == "SIGTERM":
        assert proc.returncode == -signal.SIGTERM, err[-2000:]
    else:
        assert proc.returncode == 130 and "twotower: interrupted" in err, err[-2000:]
        assert "Traceback" not in err


@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_on_a_busy_port_or_bad_host_is_one_line_exit_2(run_dir, workers):
    import socket
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        for host, needle in (("127.0.0.1", f"cannot listen on 127.0.0.1:{port}: "),
                             ("256.1.1.1", "cannot listen on 256.1.1.1:")):
            r = subprocess.run([sys.executable, "-m", "twotower.cli", "serve", str(run_dir),
                                "--host", host, "--port", str(port), "--workers", workers],
                               capture_output=True, text=True, timeout=120,
                               env={**os.environ, "KERAS_BACKEND": "jax"})
            assert r.returncode == 2 and needle in r.stderr, r.stderr[-1000:]
            assert "Traceback" not in r.stderr


@pytest.fixture()
def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_worker_that_cannot_load_the_run_exits_with_one_line(broken_run, monkeypatch,
                                                               caplog):
    """With several workers, each loads the run (again on SIGHUP): a broken run was a
    45-line traceback in the log; now one error line and the worker's exit status 1."""
    import logging

    from twotower.service import server
    monkeypatch.setenv(server._ENV_RUN, str(broken_run))
    with caplog.at_level(logging.ERROR, logger="twotower.service"):
        with pytest.raises(SystemExit) as exc:
            server._app_from_env()
    assert exc.value.code == 1
    lines = [r.getMessage() for r in caplog.records if r.name == "twotower.service"]
    assert len(lines) == 1 and "cannot serve" in lines[0] and "arrays.npz" in lines[0], lines


def test_workers_get_every_limit_and_the_host_guard(run_dir, monkeypatch):
    """Workers (``--workers N``) build their app from the environment: every limit of
    the parent's, the host names included (only max_k reached them before)."""
    import json

    from fastapi.testclient import TestClient

    from twotower.service import server
    monkeypatch.setenv(server._ENV_RUN, str(run_dir))
    monkeypatch.setenv(server._ENV_SETTINGS, json.dumps(
        {"max_k": 5, "max_batch": 3, "max_results": 12, "access_log": False,
         "allowed_hosts": server.default_allowed_hosts("127.0.0.1")}))
    with TestClient(server._app_from_env(), base_url="http://127.0.0.1") as c:
        assert c.get("/v1/recommendations", params={"user_id": 1, "k": 6}).status_code == 422
        assert c.post("/v1/recommendations", json={"user_ids": [1, 2, 3, 4]}
                      ).status_code == 422
        r = c.post("/v1/recommendations", json={"user_ids": [1, 2, 3], "k": 5})
        assert r.status_code == 422 and "over the limit of 12" in r.json()["detail"]
        assert c.get("/healthz", headers={"host": "evil.example"}).status_code == 400


def test_serve_flags_reach_the_app(run_dir, monkeypatch):
    import twotower.service as service
    from twotower import cli
    got = {}
    monkeypatch.setattr(service, "serve", lambda run, **kw: got.update(kw))
    assert cli.main(["serve", str(run_dir), "--max-batch", "7", "--max-results", "70",
                     "--allowed-hosts", "a.example, b.example"]) == 0
    assert got["max_batch"] == 7 and got["max_results"] == 70
    assert got["allowed_hosts"] == ["a.example", "b.example"]
    assert cli.main(["serve", str(run_dir), "--allowed-hosts", " , "]) == 2


def test_the_parent_of_several_workers_lets_its_model_go(run_dir, monkeypatch):
    """The parent loads the run once to fail early on a bad one, then only supervises: it
    kept a whole copy of the model for its life (525 MB beside each worker's on a 315k-item
    run)."""
    import gc
    import weakref

    import uvicorn.supervisors

    from twotower.service import server, state
    loaded = []
    real = state.ServedModel.load

    def tracked(*a, **kw):
        m = real(*a, **kw)
        loaded.append(weakref.ref(m))
        return m
    monkeypatch.setattr(state.ServedModel, "load", tracked)

    class Supervisor:  # stands in for uvicorn's: starts no worker
        def __init__(self, config, sockets):
            self.sockets = sockets

        def run(self):
            gc.collect()
            assert loaded and all(r() is None for r in loaded), "the model is still held"
            for s in self.sockets:
                s.close()
    monkeypatch.setattr(uvicorn.supervisors, "Multiprocess", Supervisor)
    for key in (server._ENV_RUN, server._ENV_SETTINGS):  # serve sets them: undone after
        monkeypatch.setenv(key, "")
    server.serve(run_dir, port=0, workers=2, access_log=False)
    assert loaded
