"""A socket refused because its user already holds THREADLINE_WS_MAX_SOCKETS_PER_USER sockets (4429) costs nothing
from the user's `requests` budget (0a7da8b drew it first): a client reconnecting in a loop at the cap (retryAfter
1) drained the whole budget with refusals, and then every request of that user, HTTP too, was refused."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.harness import Actor, ServerThread, test_settings
from tests.test_ws_socket_cap import opens, refused
from tests.ws import WsClient


@pytest.fixture(scope="module")
def one_socket_small_budget(dsn: str) -> Iterator[ServerThread]:
    srv = ServerThread(
        test_settings(
            dsn,
            migrate_on_start=False,
            ws_max_sockets_per_user=1,
            rate_limit_requests=4,
            rate_limit_window_seconds=3600,
            rate_limit_lease_max=1,
        )
    )
    srv.start()
    yield srv
    srv.stop()


def test_a_socket_refused_at_the_users_cap_draws_nothing_from_the_budget(
    one_socket_small_budget: ServerThread, admin: Actor, make_user: Any
) -> None:
    url = one_socket_small_budget.ws_url
    user = make_user(admin)
    held = WsClient(url, user.api_key)  # one request of four
    try:
        for _ in range(5):
            code, reason = refused(url, user.api_key)
            assert code == 4429 and "THREADLINE_WS_MAX_SOCKETS_PER_USER" in reason, (code, reason)
    finally:
        held.close()
    # Its place freed (once the server has seen the close), a socket opens: the refusals spent nothing.
    deadline = time.monotonic() + 10
    while True:
        code, reason = refused_or_opened(url, user.api_key)
        if code == 0:
            break
        assert "THREADLINE_WS_MAX_SOCKETS_PER_USER" in reason, reason  # not the requests budget
        assert time.monotonic() < deadline, "the closed socket's place was not freed"
        time.sleep(0.1)
    assert opens(url, user.api_key)  # and the budget's last request


def refused_or_opened(url: str, token: str) -> tuple[int, str]:
    """(0, "") when the socket is acknowledged (and closed again), else its close code and reason."""
    if opens(url, token):
        return 0, ""
    return refused(url, token)
