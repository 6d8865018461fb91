"""Opening a WebSocket is not free: it draws one from the caller's `requests` budget, and one user holds at most
THREADLINE_WS_MAX_SOCKETS_PER_USER open sockets in a process. Before, a key could open sockets by the thousand
(each authenticated, registered for revocation and held in memory) without spending anything. Refusals close
with 4429 (graphql-transport-ws's "too many") and a reason naming the limit."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.harness import Actor, ServerThread, test_settings
from tests.ws import WsClient

VIEWER = "{ viewer { id } }"


def opens(url: str, token: str) -> bool:
    """Whether a socket is accepted (acknowledged); it is closed again either way."""
    client = WsClient(url, token, init=False)
    try:
        client.send({"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}})
        try:
            return client.receive(timeout=10)["type"] == "connection_ack"
        except ConnectionClosed:
            return False
    finally:
        client.close()


def refused(url: str, token: str) -> tuple[int, str]:
    """The close code and reason of a socket refused at connection_init."""
    client = WsClient(url, token, init=False)
    try:
        client.send({"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}})
        with pytest.raises(ConnectionClosed) as closed:
            client.receive(timeout=10)
        rcvd = closed.value.rcvd
        assert rcvd is not None
        return rcvd.code, rcvd.reason
    finally:
        client.close()


def capped_server(dsn: str) -> Iterator[ServerThread]:
    """An in-process server capping each user's sockets (and each address's sockets not authenticated yet) at 2."""
    srv = ServerThread(test_settings(dsn, migrate_on_start=False, ws_max_sockets_per_user=2))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def capped(dsn: str) -> Iterator[ServerThread]:
    yield from capped_server(dsn)


def test_a_user_holds_at_most_the_cap_of_open_sockets_in_a_process(
    capped: ServerThread, admin: Actor, make_user: Any
) -> None:
    first, second = WsClient(capped.ws_url, admin.api_key), WsClient(capped.ws_url, admin.api_key)
    try:
        code, reason = refused(capped.ws_url, admin.api_key)
        assert code == 4429
        assert "THREADLINE_WS_MAX_SOCKETS_PER_USER" in reason or "limit is 2" in reason, reason
        # Another user of the tenant is not held back by this one's sockets.
        member = make_user(admin)
        WsClient(capped.ws_url, member.api_key).close()
        # A closed socket frees its place (once the server has seen the close).
        first.close()
        deadline = time.monotonic() + 10
        while not opens(capped.ws_url, admin.api_key):
            assert time.monotonic() < deadline, "the closed socket's place was not freed"
            time.sleep(0.1)
    finally:
        first.close()
        second.close()


@pytest.fixture(scope="module")
def budgeted(dsn: str) -> Iterator[ServerThread]:
    srv = ServerThread(
        test_settings(
            dsn,
            migrate_on_start=False,
            rate_limit_requests=3,
            rate_limit_window_seconds=3600,
            rate_limit_lease_max=1,
        )
    )
    srv.start()
    yield srv
    srv.stop()


def test_opening_a_socket_draws_from_the_callers_requests_budget(
    budgeted: ServerThread, admin: Actor
) -> None:
    opened = []
    try:
        for _ in range(3):
            client = WsClient(budgeted.ws_url, admin.api_key)
            opened.append(client)
            client.close()
        code, reason = refused(budgeted.ws_url, admin.api_key)
        assert code == 4429, (code, reason)
    finally:
        for client in opened:
            client.close()


def handshake_refused(url: str) -> bool:
    """Whether the WebSocket handshake itself is refused (before any connection_init)."""
    try:
        client = WsClient(url, None, init=False)
    except InvalidStatus as exc:
        assert exc.response.status_code == 403
        return True
    client.close()
    return False


def test_an_address_holds_at_most_the_cap_of_sockets_not_authenticated_yet(
    capped: ServerThread, admin: Actor
) -> None:
    """A socket waits for its connection_init (THREADLINE_WS_INIT_TIMEOUT_SECONDS) holding memory: before, one
    address could open any number of them. Now at most the per-user cap wait per address; an authenticated socket
    counts by its user, and a closed one frees its place."""
    waiting = [WsClient(capped.ws_url, None, init=False) for _ in range(2)]
    try:
        assert handshake_refused(capped.ws_url)
        # One of them authenticates: it no longer counts as waiting, so another handshake is accepted.
        waiting[0].send({"type": "connection_init", "payload": {"authorization": f"Bearer {admin.api_key}"}})
        assert waiting[0].receive()["type"] == "connection_ack"
        deadline = time.monotonic() + 10
        while handshake_refused(capped.ws_url):
            assert time.monotonic() < deadline, "an authenticated socket still counts as waiting"
            time.sleep(0.1)
        # One that was waiting closes: its place frees too.
        third = WsClient(capped.ws_url, None, init=False)
        waiting.append(third)
        assert handshake_refused(capped.ws_url)
        third.close()
        deadline = time.monotonic() + 10
        while handshake_refused(capped.ws_url):
            assert time.monotonic() < deadline, "a closed socket still counts as waiting"
            time.sleep(0.1)
    finally:
        for client in waiting:
            client.close()


@pytest.fixture(scope="module")
def unlimited(dsn: str) -> Iterator[ServerThread]:
    srv = ServerThread(
        test_settings(
            dsn,
            migrate_on_start=False,
            rate_limit_enabled=False,
            rate_limit_requests=1,
            rate_limit_window_seconds=3600,
        )
    )
    srv.start()
    yield srv
    srv.stop()


def test_with_rate_limits_off_opening_sockets_draws_nothing(unlimited: ServerThread, admin: Actor) -> None:
    """THREADLINE_RATE_LIMIT_ENABLED=false turns every budget off, the sockets' too."""
    for _ in range(3):
        assert opens(unlimited.ws_url, admin.api_key)
