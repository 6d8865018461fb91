"""A socket not authenticated yet holds its address's place (PendingSockets, a0279ab) until it ends, whichever way
it ends: refused credentials (4403), no connection_init in time (4408), an invalid init payload (4400), the client
gone before its init. Each frees the place once: with a cap of one, the next handshake is accepted after each."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from websockets.exceptions import ConnectionClosed

from tests.harness import Actor, ServerThread, test_settings
from tests.test_ws_socket_cap import handshake_refused
from tests.ws import WsClient

# Upper bound for a loaded machine (two shared cores), not a latency claim.
SETTLE_SECONDS = 20.0


@pytest.fixture(scope="module")
def one_pending(dsn: str) -> Iterator[ServerThread]:
    srv = ServerThread(
        test_settings(dsn, migrate_on_start=False, ws_max_sockets_per_user=1, ws_init_timeout_seconds=1)
    )
    srv.start()
    yield srv
    srv.stop()


def freed(url: str) -> None:
    deadline = time.monotonic() + SETTLE_SECONDS
    while handshake_refused(url):
        assert time.monotonic() < deadline, "the socket's place was not freed"
        time.sleep(0.1)


def closed_with(client: WsClient) -> int:
    with pytest.raises(ConnectionClosed) as closed:
        client.receive(timeout=SETTLE_SECONDS)
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code


@pytest.mark.parametrize("init", ["bad key", "not a dict", "none", "gone"])
def test_each_way_a_pending_socket_ends_frees_its_addresses_place_once(
    one_pending: ServerThread, admin: Actor, init: str
) -> None:
    url = one_pending.ws_url
    freed(url)
    client = WsClient(url, None, init=False)
    try:
        assert handshake_refused(url)  # it holds the one place
        if init == "bad key":
            client.send({"type": "connection_init", "payload": {"authorization": "Bearer tl_nope"}})
            assert closed_with(client) == 4403
        elif init == "not a dict":
            client.send({"type": "connection_init", "payload": [1]})
            assert closed_with(client) == 4400
        elif init == "none":
            assert closed_with(client) == 4408
        else:
            client.close()
    finally:
        client.close()
    freed(url)
    # The count is back where it was: one socket waiting holds the place again.
    first = WsClient(url, None, init=False)
    try:
        assert handshake_refused(url)
    finally:
        first.close()
    # And an authenticated socket after it is not refused for its address.
    authed = WsClient(url, admin.api_key)
    authed.close()
