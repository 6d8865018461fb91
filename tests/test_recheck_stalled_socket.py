"""Credentials are live even on a socket whose client stopped reading (streaming.sessions, streaming.transport).

A client that stops reading fills its socket's buffers; closing that socket cannot wait for them to drain. When
its credential is revoked, its streams end at once and nothing more is written to it, its connection is cut
after a short grace if the close is not answered, and the user's other sockets are checked meanwhile.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import jwt

from tests.harness import TEST_JWT_SECRET, Actor, Client, ServerThread
from tests.test_streaming import REPLY, START, conversation, join, live
from tests.test_streaming_parked import wait_for
from tests.ws import CONVERSATION_EVENTS, StalledWsClient, WsClient
from threadline.ids import Kind, decode_id

KEY_CREATE = 'mutation($u: ID!) { apiKeyCreate(userId: $u, name: "k") { secret apiKey { id } } }'
KEY_REVOKE = "mutation($k: ID!) { apiKeyRevoke(id: $k) { id revoked } }"
ROLE_SET = "mutation($u: ID!, $r: Role!) { userRoleSet(userId: $u, role: $r) { id role } }"
VIEWER = "{ viewer { id } }"
# Upper bounds for a loaded machine (two shared cores), not latency claims.
SETTLE_SECONDS = 30.0


def server_side(server: ServerThread, client: StalledWsClient) -> Any:
    """The server's protocol object of the stalled client's connection (found by its address)."""
    address = client.sock.getsockname()[:2]
    found = [p for p in list(server.server.server_state.connections) if getattr(p, "client", None) == address]
    assert len(found) == 1, found
    return found[0]


def subscriptions(server: ServerThread, cid: str, user: uuid.UUID) -> list[Any]:
    hub = server.app.state.services.hub
    return [
        s for s in list(hub._by_conversation.get(decode_id(cid, Kind.CONVERSATION), ())) if s.user_id == user
    ]


def sessions_of(server: ServerThread, user: uuid.UUID) -> int:
    """How many open sockets (and HTTP streams) of the user the server's session registry lists."""
    while True:
        try:
            return len(server.app.state.services.hub.sessions.of_user(user))
        except RuntimeError:  # the registry changed while this thread read it: read again
            time.sleep(0.01)


def until_complete(client: WsClient, op_id: str = "1") -> list[dict[str, Any]]:
    """The messages of `op_id` up to its `complete` (fails if the stream does not end in time)."""
    got = []
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        message = client.receive(timeout=max(deadline - time.monotonic(), 0.01))
        if message.get("id") != op_id:
            continue
        if message["type"] == "complete":
            return got
        got.append(message)


def test_revoking_the_key_of_a_socket_that_stopped_reading_ends_its_streams_cuts_it_and_checks_the_users_others(
    admin: Actor, make_user: Callable[..., Actor], server: ServerThread
) -> None:
    boss = make_user(admin, "ADMIN")
    boss_id = decode_id(boss.user_id, Kind.USER)
    created = boss.client.ok(KEY_CREATE, {"u": boss.user_id})["apiKeyCreate"]
    busy = conversation(admin)  # the stalled socket follows it
    join(admin, boss, busy)
    root = admin.client.ok(START, {"c": busy, "x": "root"})["threadStart"]["id"]
    watched = conversation(admin)  # boss reads it only as a tenant admin

    other = WsClient(server.ws_url, boss.api_key)  # the same user, another key (it stays valid)
    stalled: StalledWsClient | None = None
    try:
        other.subscribe(CONVERSATION_EVENTS, {"c": watched, "s": live(admin)})
        admin.client.ok(START, {"c": watched, "x": "before"})
        first = other.events(1, ignore=("presence.update", "unread.update", "membership.changed"))[0]
        assert first["thread"]["root"]["content"] == "before"

        stalled = StalledWsClient(server.ws_url, created["secret"], CONVERSATION_EVENTS, {"c": busy})
        protocol = server_side(server, stalled)
        wait_for(
            lambda: len(subscriptions(server, busy, boss_id)) == 1, "the stalled socket never subscribed"
        )
        (revoked,) = subscriptions(server, busy, boss_id)
        assert sessions_of(server, boss_id) == 2
        fill(admin, root, protocol)

        admin.client.ok(KEY_REVOKE, {"k": created["apiKey"]["id"]})
        role = admin.client.ok(ROLE_SET, {"u": boss.user_id, "r": "MEMBER"})["userRoleSet"]["role"]
        assert role == "MEMBER"

        # The user's other socket is checked: the stream it may no longer read ends; the socket stays open.
        until_complete(other)
        admin.client.ok(START, {"c": watched, "x": "not for a member"})
        other.expect_quiet(0.5, ignore=("presence.update", "unread.update"))
        # The revoked socket's stream is over, and nothing more is written to it (its close frame aside): an event
        # routed after the revocation (a watcher of the conversation got it) adds nothing to what its buffer holds.
        wait_for(
            lambda: revoked.ended is not None, "the revoked socket's stream kept running", SETTLE_SECONDS
        )
        assert protocol.close_sent
        buffered = protocol.transport.get_write_buffer_size()
        watcher = WsClient(server.ws_url, admin.api_key)
        try:
            watcher.subscribe(CONVERSATION_EVENTS, {"c": busy, "s": live(admin)})
            admin.client.ok(REPLY, {"p": root, "x": "after the revocation"})
            event = watcher.events(1, ignore=("presence.update", "unread.update", "membership.changed"))[0]
            assert event["changedMessage"]["content"] == "after the revocation"
        finally:
            watcher.close()
        assert protocol.transport.get_write_buffer_size() <= buffered  # less once the connection is cut
        # Its connection is cut although the client never reads: out of the session registry and the server.
        wait_for(
            lambda: sessions_of(server, boss_id) == 1, "the stalled socket stayed registered", SETTLE_SECONDS
        )
        wait_for(
            lambda: protocol not in server.server.server_state.connections,
            "the stalled connection stayed open",
            SETTLE_SECONDS,
        )
        assert protocol.disconnected
    finally:
        other.close()
        if stalled is not None:
            stalled.close()


def fill(admin: Actor, root: str, protocol: Any) -> None:
    """Events the client never reads, until the server's writes to it back up (its transport is paused)."""
    sent = 0
    while protocol.writable.is_set():
        admin.client.ok(REPLY, {"p": root, "x": "x" * 200_000})
        sent += 1
        assert sent < 200, "the server's writes to the stalled socket never backed up"


def test_a_socket_whose_token_expires_is_cut_off_although_its_client_stopped_reading(
    admin: Actor, server: ServerThread
) -> None:
    expires = time.time() + 20  # time enough to connect and fill the socket's buffers first
    claims = {
        "sub": f"jay-{uuid.uuid4().hex[:8]}",
        "tenant": admin.tenant_id,
        "role": "MEMBER",
        "exp": int(expires),
    }
    bearer = jwt.encode(claims, TEST_JWT_SECRET, algorithm="HS256")
    as_jay = Client(server.url, bearer)
    try:
        jay = Actor(admin.tenant_id, as_jay.ok(VIEWER)["viewer"]["id"], bearer, as_jay)
        cid = conversation(admin)
        join(admin, jay, cid)
    finally:
        as_jay.close()
    jay_id = decode_id(jay.user_id, Kind.USER)
    root = admin.client.ok(START, {"c": cid, "x": "root"})["threadStart"]["id"]
    stalled = StalledWsClient(server.ws_url, bearer, CONVERSATION_EVENTS, {"c": cid})
    try:
        protocol = server_side(server, stalled)
        wait_for(lambda: len(subscriptions(server, cid, jay_id)) == 1, "the stalled socket never subscribed")
        fill(admin, root, protocol)
        assert time.time() < expires, "the socket's buffers filled only after its token expired"

        # Once the token expired the socket is closed (4401), and its connection cut although the client never
        # reads: out of the session registry and the server.
        wait_for(
            lambda: protocol.close_sent, "the socket was not closed at its token's expiry", SETTLE_SECONDS
        )
        wait_for(
            lambda: sessions_of(server, jay_id) == 0, "the stalled socket stayed registered", SETTLE_SECONDS
        )
        wait_for(
            lambda: protocol not in server.server.server_state.connections,
            "the stalled connection stayed open",
            SETTLE_SECONDS,
        )
        assert protocol.disconnected
    finally:
        stalled.close()


def test_a_socket_that_stopped_reading_and_answering_pings_is_cut_off(
    admin: Actor, server: ServerThread
) -> None:
    # Pings often enough for a test, rarely enough that the socket's buffers fill before the first one is due.
    config = server.server.config
    before = config.ws_ping_interval, config.ws_ping_timeout
    config.ws_ping_interval, config.ws_ping_timeout = 10.0, 5.0
    try:
        cid = conversation(admin)
        root = admin.client.ok(START, {"c": cid, "x": "root"})["threadStart"]["id"]
        admin_id = decode_id(admin.user_id, Kind.USER)
        stalled = StalledWsClient(server.ws_url, admin.api_key, CONVERSATION_EVENTS, {"c": cid})
    finally:
        config.ws_ping_interval, config.ws_ping_timeout = before
    try:
        protocol = server_side(server, stalled)
        wait_for(
            lambda: len(subscriptions(server, cid, admin_id)) == 1, "the stalled socket never subscribed"
        )
        fill(admin, root, protocol)
        assert not protocol.close_sent, "the socket's buffers filled only after its ping went unanswered"

        # Its pong never comes: the socket fails (1011), and its connection is cut although the client never
        # reads: out of the server and of the session registry.
        wait_for(lambda: protocol.close_sent, "the unanswered ping did not fail the socket", SETTLE_SECONDS)
        wait_for(
            lambda: protocol not in server.server.server_state.connections,
            "the stalled connection stayed open",
            SETTLE_SECONDS,
        )
        assert protocol.disconnected
        wait_for(
            lambda: sessions_of(server, admin_id) == 0, "the stalled socket stayed registered", SETTLE_SECONDS
        )
    finally:
        stalled.close()
