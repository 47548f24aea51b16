"""The web page in a real browser: headless Chromium (playwright) against a real uvicorn."""

from __future__ import annotations

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


def test_page_shows_recommendations_and_similar_movies(live_server):
    sync_api = pytest.importorskip("playwright.sync_api")
    base, app = live_server
    model = app.state.holder.current.model
    u = model.user_vocab.lookup([42])
    _, idx = model.recommend(u, 10, model.seen_items(u))
    expected = model.titles(idx[0]).tolist()

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page()
            outside = []
            page.on("request", lambda req: outside.append(req.url)
                    if not req.url.startswith(base) else None)
            errors = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(base + "/")
            page.wait_for_function("document.getElementById('model-info').textContent"
                                   ".includes('@')")
            page.fill("#user-id", "42")
            page.click("#go")
            page.wait_for_function("document.querySelectorAll('#recs li').length === 10")
            titles = page.locator("#recs li .title").all_text_contents()
            assert titles == expected
            assert page.locator("#history li").count() > 0
            assert "for user 42" in page.locator("#recs-for").text_content()
            # click a recommendation: its similar movies appear
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
        finally:
            browser.close()
