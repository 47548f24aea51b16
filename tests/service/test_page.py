"""The web page in a real browser: headless Chromium (playwright) against a real uvicorn."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time

import pytest

CHROMIUM = os.environ.get("TWOTOWER_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage"]

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM),
    reason=f"no Chromium at {CHROMIUM} (install it: apt-get install -y chromium)")


@pytest.fixture(scope="module")
def live_server(run_dir):
    yield from _serve(run_dir)


def _serve(run_dir):
    import uvicorn

    from twotower.service import create_app
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(run_dir, access_log=False)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", app
    server.should_exit = True
    thread.join(10)


@contextlib.contextmanager
def _page(sync_api, base, outside=None):
    """A headless page on the service's `/`, loaded (the model line shown), and the list
    its JavaScript errors go to; ``outside`` collects requests to anywhere else."""
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page()
            if outside is not None:
                page.on("request", lambda req: outside.append(req.url)
                        if not req.url.startswith(base) else None)
            errors = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(base + "/")
            page.wait_for_function("document.getElementById('model-info').textContent"
                                   ".includes('@')")
            yield page, errors
        finally:
            browser.close()


def test_page_shows_recommendations_and_similar_movies(live_server):
    sync_api = pytest.importorskip("playwright.sync_api")
    base, app = live_server
    model = app.state.holder.current.model
    u = model.user_vocab.lookup([42])
    _, idx = model.recommend(u, 10, model.seen_items(u))
    expected = model.titles(idx[0]).tolist()

    outside = []
    with _page(sync_api, base, outside) as (page, errors):
        page.fill("#user-id", "42")
        page.click("#go")
        page.wait_for_function("document.querySelectorAll('#recs li').length === 10")
        titles = page.locator("#recs li .title").all_text_contents()
        assert titles == expected
        assert page.locator("#history li").count() > 0
        assert "for user 42" in page.locator("#recs-for").text_content()
        # click a recommendation: its similar items appear
        page.locator("#recs li").first.click()
        page.wait_for_function("document.querySelectorAll('#similar li').length === 10")
        assert expected[0] in page.locator("#similar-to").text_content()
        # an unknown user shows the service's message
        page.fill("#user-id", "ghost")
        page.click("#go")
        page.wait_for_selector("#error:not([hidden])")
        assert "ghost" in page.locator("#error").text_content()
        assert not errors, errors
        assert not outside, f"the page fetched outside the service: {outside}"


@pytest.fixture(scope="module")
def many_users_run(tmp_path_factory):
    """A tiny run with 1,500 users (more than one page of /v1/users)."""
    import numpy as np

    from twotower import ModelConfig, TwoTower
    from twotower.data import Interactions
    rng = np.random.default_rng(0)
    users = [f"u{u}" for u in range(1500)]
    rows = [(u, f"m{j}") for u in users for j in rng.choice(40, 3, replace=False)]
    data = Interactions.from_ids([u for u, _ in rows], [i for _, i in rows])
    cfg = ModelConfig.preset("tutorial", objective="softmax", epochs=1, embedding_dim=8)
    run = tmp_path_factory.mktemp("runs") / "many"
    TwoTower(cfg).fit(data, verbose=0).save(run)
    return run


def test_page_suggests_and_draws_from_every_user(many_users_run):
    """The page listed, and drew random users from, only the first 1,000 users."""
    sync_api = pytest.importorskip("playwright.sync_api")
    gen = _serve(many_users_run)
    base, app = next(gen)
    try:
        with _page(sync_api, base) as (page, errors):
            # suggestions: the ids that start with what is typed, past the first 1,000
            page.fill("#user-id", "u149")
            page.wait_for_function(
                "document.querySelectorAll('#user-ids option').length === 11")
            got = page.eval_on_selector_all("#user-ids option", "os => os.map(o => o.value)")
            assert sorted(got) == ["u149"] + [f"u149{d}" for d in range(10)]
            # random users: drawn from all 1,500 (the page used only the first 1,000)
            order = app.state.holder.current.model.user_vocab.ids.tolist()
            page.evaluate("Math.random = () => 0.999")
            page.click("#random-user")
            page.wait_for_function("document.getElementById('recs-for').textContent"
                                   ".startsWith('for user')")
            assert page.input_value("#user-id") == order[1498]
            assert not errors, errors
    finally:
        next(gen, None)
