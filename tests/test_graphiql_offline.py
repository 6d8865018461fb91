"""GraphiQL works without internet: its assets come from the package (issue 21 item 4).

The browser test drives Debian's Chromium (`apt-get install chromium`; .ci/run installs it) through Playwright,
with every request that is not to the test server refused, so a page that still loads anything from a CDN
fails. Without Chromium or Playwright it fails, unless THREADLINE_SKIP_BROWSER=1 says to skip it.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import harness
from tests.api import create_conversation, start_thread
from tests.harness import METRICS_HEADERS, Actor, ServerThread

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
IMMUTABLE = "public, max-age=31536000, immutable"


class _Assets(HTMLParser):
    """Every URL the page loads by itself (script src, link href)."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value is not None and (tag, name) in {("script", "src"), ("link", "href")}:
                self.urls.append(value)


def page_assets(html: str) -> list[str]:
    parser = _Assets()
    parser.feed(html)
    return parser.urls


@pytest.fixture(scope="module")
def production(dsn: str) -> Iterator[ServerThread]:
    srv = ServerThread(harness.test_settings(dsn, migrate_on_start=False, production=True))
    srv.start()
    yield srv
    srv.stop()


def test_the_page_loads_only_assets_served_by_the_server_with_long_cache_headers(
    server: ServerThread,
) -> None:
    page = httpx.get(f"{server.url}/graphql", headers=BROWSER)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    # The browser itself refuses anything not from this server.
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "https://" not in page.text and "unpkg.com" not in page.text
    urls = [url for url in page_assets(page.text) if not url.startswith("data:")]
    assert len(urls) == 6, urls  # react, react-dom, graphiql (js, css), the explorer plugin (js, css)
    for url in urls:
        assert url.startswith("/graphql/static/graphiql/") and "?v=" in url, url
        asset = httpx.get(f"{server.url}{url}")
        assert asset.status_code == 200, url
        assert asset.headers["cache-control"] == IMMUTABLE
        expected = "text/css" if url.split("?")[0].endswith(".css") else "javascript"
        assert expected in asset.headers["content-type"], (url, asset.headers["content-type"])
    licence = httpx.get(f"{server.url}/graphql/static/graphiql/graphiql-3.8.3/LICENSE")
    assert licence.status_code == 200 and "MIT License" in licence.text


def test_production_mode_serves_neither_the_page_nor_its_assets(
    server: ServerThread, production: ServerThread
) -> None:
    url = page_assets(httpx.get(f"{server.url}/graphql", headers=BROWSER).text)[-1]
    assert httpx.get(f"{production.url}{url}").status_code == 404
    assert "graphiql" not in httpx.get(f"{production.url}/graphql", headers=BROWSER).text.lower()


def test_the_assets_are_in_the_package() -> None:
    # The wheel holds src/threadline whole (pyproject: [tool.hatch.build.targets.wheel] packages), so the
    # assets must live inside it and not be ignored by git (hatch leaves out what .gitignore names).
    import threadline.graphql.graphiql as graphiql

    for rel in graphiql.ASSETS.values():
        path = graphiql.STATIC_DIR / rel
        assert path.is_file() and path.stat().st_size > 0, rel
        assert (path.parent / "LICENSE").is_file(), rel
    assert Path(graphiql.__file__).is_relative_to(Path(harness.__file__).parents[1] / "src" / "threadline")


# --- in a real browser, offline ------------------------------------------------------------------------------


@pytest.fixture
def chromium() -> Iterator[Any]:
    if os.environ.get("THREADLINE_SKIP_BROWSER") == "1":
        pytest.skip("THREADLINE_SKIP_BROWSER=1")
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (or THREADLINE_SKIP_BROWSER=1)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is missing: pip install -e '.[test]' (or THREADLINE_SKIP_BROWSER=1)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def editor_value(page: Any, selector: str) -> str:
    return str(page.evaluate(f"document.querySelector({selector!r}).CodeMirror.getValue()"))


def run_in_graphiql(page: Any, document: str) -> None:
    page.evaluate(
        "(text) => document.querySelector('.graphiql-query-editor .CodeMirror').CodeMirror.setValue(text)",
        document,
    )
    page.click(".graphiql-execute-button")


def wait_for(check: Callable[[], bool], what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def active_subscriptions(server: ServerThread) -> float:
    text = httpx.get(f"{server.url}/metrics", headers=METRICS_HEADERS).text
    match = re.search(r"^threadline_subscriptions_active(?:\{[^}]*\})? (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


# `admin` before `chromium`: Playwright's sync API runs an event loop in this thread, where the tenant fixture
# runs its own.
def test_graphiql_runs_a_query_and_a_subscription_offline(
    server: ServerThread, admin: Actor, chromium: Any
) -> None:
    context = chromium.new_context()
    refused: list[str] = []
    sockets: list[str] = []

    def only_the_server(route: Any) -> None:
        # The network is "off": anything not served by the test server (a CDN) fails to load.
        url = route.request.url
        if url.startswith(f"{server.url}/"):
            route.continue_()
        else:
            refused.append(url)
            route.abort("internetdisconnected")

    context.route("**/*", only_the_server)
    page = context.new_page()
    frames: list[str] = []

    def on_socket(socket: Any) -> None:
        sockets.append(socket.url)
        socket.on("framereceived", lambda frame: frames.append(str(frame)))

    page.on("websocket", on_socket)
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    try:
        page.goto(f"{server.url}/graphql")  # a browser's Accept: text/html
        page.wait_for_selector(".graphiql-query-editor .CodeMirror", timeout=30_000)

        # The key, entered once in its own field, serves queries (HTTP) and subscriptions (WebSocket).
        page.fill("#threadline-key-input", admin.api_key)
        page.click("#threadline-key-use")
        assert "sessionStorage" in page.inner_text("#threadline-key-note")
        assert page.evaluate("window.sessionStorage.getItem('threadline.apiKey')") == admin.api_key
        assert admin.api_key not in str(page.evaluate("JSON.stringify(window.localStorage)"))

        run_in_graphiql(page, "{ viewer { id } }")
        wait_for(
            lambda: admin.user_id in editor_value(page, ".graphiql-response .CodeMirror"),
            "the query's result",
        )

        # The viewer's streams cover the conversations they are in when subscribing (and those they join).
        conversation = create_conversation(admin, "from graphiql")
        before = active_subscriptions(server)
        run_in_graphiql(page, "subscription { viewerEvents { type } }")
        wait_for(lambda: active_subscriptions(server) >= before + 1, "the subscription to start")
        # An event may still race the subscription's registration: each round triggers a new one.
        for _ in range(5):
            start_thread(admin, conversation)
            try:
                wait_for(
                    lambda: "thread.new" in editor_value(page, ".graphiql-response .CodeMirror"),
                    "the event",
                    6,
                )
                break
            except AssertionError:
                continue
        assert "thread.new" in editor_value(page, ".graphiql-response .CodeMirror"), frames
        assert sockets and all(url.startswith(f"ws://127.0.0.1:{server.port}/graphql") for url in sockets), (
            sockets
        )
        assert refused == []
        assert admin.api_key not in str(page.evaluate("JSON.stringify(window.localStorage)"))
        assert not [message for message in console if "Content Security Policy" in message], console

        page.click("#threadline-key-forget")
        assert page.evaluate("window.sessionStorage.getItem('threadline.apiKey')") is None
    finally:
        context.close()
