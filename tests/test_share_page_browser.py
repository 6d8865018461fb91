"""The shared conversation page (GET /share/{token}) in a real headless browser with the network off: it shows
the messages, its one style sheet applies under its strict policy, and it loads nothing, from this server or
any other (issue 18 item 3). Drives Debian's Chromium through Playwright as tests/test_graphiql_offline.py does;
THREADLINE_SKIP_BROWSER=1 skips it where there is no browser."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests.api import create_conversation, reply, start_thread
from tests.harness import Actor, ServerThread
from tests.test_graphiql_offline import CHROMIUM, CHROMIUM_ARGS

CREATE = "mutation($c: ID!, $m: ID) { shareLinkCreate(conversationId: $c, messageId: $m) { url } }"


@pytest.fixture
def browser() -> Iterator[Any]:
    if os.environ.get("THREADLINE_SKIP_BROWSER") == "1":
        pytest.skip("THREADLINE_SKIP_BROWSER=1")
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (or THREADLINE_SKIP_BROWSER=1)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is missing: pip install -e '.[test]' (or THREADLINE_SKIP_BROWSER=1)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            launched.close()


# `admin` before `browser`: Playwright's sync API runs an event loop in this thread, where the tenant fixture
# runs its own.
def test_the_shared_branch_renders_in_a_browser_offline_loading_nothing(
    server: ServerThread, admin: Actor, browser: Any
) -> None:
    conversation = create_conversation(admin, "Recipe <ideas>")
    root = start_thread(admin, conversation, "What can I cook with leeks?")
    answer = reply(admin, root, "A leek and potato soup.\nOr <b>gratin</b>.", "ASSISTANT")
    reply(admin, root, "a sibling branch that is not shared")
    url = admin.client.ok(CREATE, {"c": conversation, "m": answer})["shareLinkCreate"]["url"]

    context = browser.new_context()  # no credentials of any kind
    requested: list[str] = []
    refused: list[str] = []

    def only_the_server(route: Any) -> None:
        requested.append(route.request.url)
        if route.request.url.startswith(f"{server.url}/"):
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort("internetdisconnected")

    context.route("**/*", only_the_server)
    page = context.new_page()
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    try:
        response = page.goto(f"{server.url}{url}")
        assert response is not None and response.status == 200
        assert page.title() == "Recipe <ideas>"
        assert page.inner_text("h1") == "Recipe <ideas>"
        articles = page.query_selector_all("main article")
        assert [a.get_attribute("aria-label") for a in articles] == ["User message", "Assistant message"]
        assert "What can I cook with leeks?" in articles[0].inner_text()
        # Markup in a message is text, line breaks are kept.
        assert "A leek and potato soup.\nOr <b>gratin</b>." in articles[1].inner_text()
        assert page.query_selector("main b") is None
        assert "sibling branch" not in page.content()
        assert page.evaluate("document.documentElement.lang") == "en"
        # The page's one style sheet applies under its policy (allowed by hash): a reply is indented.
        indent = page.evaluate("getComputedStyle(document.querySelectorAll('main article')[1]).marginLeft")
        assert indent == "16px"
        assert page.evaluate("document.scripts.length") == 0
        assert not [c for c in console if "Content Security Policy" in c], console
    finally:
        context.close()
    # The document itself and nothing else (favicon aside, which the policy and the server both refuse).
    assert refused == []
    assert [r for r in requested if not r.endswith("/favicon.ico")] == [f"{server.url}{url}"]
