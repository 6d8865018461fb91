"""Keep-alive pings of sockets with a subscription (streaming.transport `Keepalive`): one timer a second for all
of them instead of uvicorn's timer per socket (idle sockets' memory), with uvicorn's behaviour: a ping every
`ws_ping_interval`, and a socket whose pong does not come within `ws_ping_timeout` fails with 1011."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.api import create_conversation, start_thread
from tests.harness import Actor, ServerThread
from tests.test_streaming_parked import wait_for
from tests.ws import CONVERSATION_EVENTS, StalledWsClient, WsClient
from threadline.streaming.transport import Keepalive


@pytest.fixture
def short_pings(server: ServerThread) -> Iterator[None]:
    """Sockets opened meanwhile ping every second and wait a second for the pong (uvicorn's settings)."""
    config = server.server.config
    before = config.ws_ping_interval, config.ws_ping_timeout
    config.ws_ping_interval, config.ws_ping_timeout = 1.0, 1.0
    try:
        yield
    finally:
        config.ws_ping_interval, config.ws_ping_timeout = before


def open_protocols(server: ServerThread) -> list[Any]:
    return [
        p
        for p in list(server.server.server_state.connections)
        if getattr(p, "handshake_complete", False) and not p.close_sent
    ]


def in_wheel(protocol: Any) -> bool:
    wheel = Keepalive._by_loop.get(protocol.loop)
    return wheel is not None and any(protocol in bucket for bucket in list(wheel._buckets.values()))


@pytest.mark.usefixtures("short_pings")
def test_a_subscribed_socket_is_pinged_by_the_shared_wheel_without_a_timer_of_its_own(
    admin: Actor, server: ServerThread, ws: Callable[..., WsClient]
) -> None:
    cid = create_conversation(admin)
    client = ws(admin)
    client.subscribe(CONVERSATION_EVENTS, {"c": cid})
    wait_for(lambda: any(in_wheel(p) for p in open_protocols(server)), "the socket's pings never moved")
    (protocol,) = [p for p in open_protocols(server) if in_wheel(p)]
    assert protocol.ping_timer is None and protocol.pong_timer is None

    # Pings keep coming (the client answers them: websockets does), and the socket stays open.
    first = protocol.ping_sent_at
    wait_for(lambda: protocol.ping_sent_at > first, "no ping after the first")
    second = protocol.ping_sent_at
    wait_for(lambda: protocol.ping_sent_at > second, "no ping after the second")
    # A ping goes only once the previous one's pong came (else the socket fails): both were answered.
    assert not protocol.close_sent
    assert protocol.ping_timer is None and protocol.pong_timer is None

    start_thread(admin, cid, "still open")
    event = client.events(1, ignore=("presence.update", "unread.update"))[0]
    assert event["thread"]["root"]["content"] == "still open"

    client.close()
    wait_for(lambda: not in_wheel(protocol), "a closed socket stayed in the wheel")


@pytest.mark.usefixtures("short_pings")
def test_a_subscribed_socket_that_does_not_answer_pings_fails_with_1011(
    admin: Actor, server: ServerThread
) -> None:
    cid = create_conversation(admin)
    stalled = StalledWsClient(server.ws_url, admin.api_key, CONVERSATION_EVENTS, {"c": cid})
    try:
        wait_for(lambda: any(in_wheel(p) for p in open_protocols(server)), "the socket's pings never moved")
        stalled.sock.settimeout(15)
        protocol = stalled.protocol
        while protocol.close_rcvd is None:  # it reads, but never sends the pongs it queues
            data = stalled.sock.recv(65536)
            if not data:
                break
            protocol.receive_data(data)
            protocol.events_received()
        assert protocol.close_rcvd is not None, "closed without a close frame"
        assert (protocol.close_rcvd.code, protocol.close_rcvd.reason) == (1011, "keepalive ping timeout")
    finally:
        stalled.close()


@pytest.mark.usefixtures("short_pings")
def test_a_socket_is_pinged_by_the_wheel_from_its_accept_before_any_subscription(
    admin: Actor, server: ServerThread, ws: Callable[..., WsClient]
) -> None:
    ws(admin)  # connection_init acknowledged, nothing subscribed
    wait_for(lambda: any(in_wheel(p) for p in open_protocols(server)), "the socket's pings never moved")
    (protocol,) = [p for p in open_protocols(server) if in_wheel(p)]
    first = protocol.ping_sent_at
    wait_for(lambda: protocol.ping_sent_at > first, "no ping from the wheel")
    assert protocol.ping_timer is None and protocol.pong_timer is None and not protocol.close_sent
