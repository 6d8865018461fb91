"""Direct frames (streaming.direct) send exactly the bytes of the stock per-operation path.

Sockets opened with THREADLINE_STREAM_DIRECT_FRAMES on and off subscribe with the same query; every
event type is produced by real actions; the raw text frames of both must be identical, event by event.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import httpx
import pytest

from tests.harness import METRICS_HEADERS, Actor, ServerThread
from tests.ws import CONVERSATION_EVENTS, VIEWER_EVENTS, WsClient, position, read_frames

START = "mutation($c: ID!, $x: String!) { threadStart(conversationId: $c, input: {content: $x}) { id } }"
REPLY = "mutation($p: ID!, $x: String!, $r: MessageRole) { messageReply(parentId: $p, input: {content: $x, role: $r}) { id } }"
INVITE = "mutation($c: ID!, $u: ID!) { participantInvite(conversationId: $c, userId: $u) { id } }"


def metric(server: ServerThread, name: str) -> float:
    text = httpx.get(f"{server.url}/metrics", headers=METRICS_HEADERS, timeout=10).text
    line = next(x for x in text.splitlines() if x.startswith(name + " ") or x.startswith(name + "{"))
    return float(line.split()[-1])


def direct_deliveries(server: ServerThread) -> float:
    text = httpx.get(f"{server.url}/metrics", headers=METRICS_HEADERS, timeout=10).text
    line = next(
        x for x in text.splitlines() if x.startswith('threadline_stream_deliveries_total{path="direct"}')
    )
    return float(line.split()[-1])


@pytest.fixture
def sockets(server: ServerThread) -> Iterator[Callable[[Actor, bool], WsClient]]:
    opened: list[WsClient] = []
    services = server.app.state.services

    def open_(actor: Actor, direct: bool) -> WsClient:
        # The setting is read into the socket's context when it connects.
        original = services.settings
        services.settings = replace(original, stream_direct_frames=direct)
        try:
            client = WsClient(server.ws_url, actor.api_key)
        finally:
            services.settings = original
        opened.append(client)
        return client

    yield open_
    for client in opened:
        try:
            client.close()
        except Exception:
            pass


def frames_until(
    client: WsClient, done: Callable[[dict[str, Any]], bool], timeout: float = 15.0
) -> list[str]:
    """Raw text of every `next` frame (any operation) up to and including the one `done` accepts."""
    return read_frames(client, done, timeout=timeout)[0]


def each_operation_saw(node_id: str, operation_ids: set[str]) -> Callable[[dict[str, Any]], bool]:
    """For `frames_until`: done once every operation in `operation_ids` delivered an event naming `node_id`."""
    waiting = set(operation_ids)

    def done(message: dict[str, Any]) -> bool:
        if f'"{node_id}"' in json.dumps(message["payload"]):
            waiting.discard(message["id"])
        return not waiting

    return done


def by_cursor(frames: list[str], after: int, decode: Callable[[str], int]) -> dict[tuple[str, str], str]:
    """(operation id, cursor) -> raw frame, for events after `after`; positions (`decode`: cursors are opaque)
    rise per operation."""
    out: dict[tuple[str, str], str] = {}
    last: dict[str, int] = {}
    for raw in frames:
        message = json.loads(raw)
        event = next(iter(message["payload"]["data"].values()))
        cursor = decode(event["cursor"])
        assert cursor > last.get(message["id"], 0), "events out of order"
        last[message["id"]] = cursor
        if cursor > after:
            out[(message["id"], event["cursor"])] = raw
    return out


def test_direct_frames_equal_stock_frames_for_every_event_type(
    admin: Actor,
    make_user: Callable[..., Actor],
    server: ServerThread,
    sockets: Callable[[Actor, bool], WsClient],
) -> None:
    member = make_user(admin)
    cid = admin.client.ok('mutation { conversationCreate(input: {title: "direct"}) { id } }')[
        "conversationCreate"
    ]["id"]
    invite = admin.client.ok(INVITE, {"c": cid, "u": member.user_id})["participantInvite"]["id"]
    member.client.ok("mutation($i: ID!) { inviteAccept(id: $i) { id } }", {"i": invite})

    # Per user: a socket on each path. Each subscribes conversationEvents twice (op ids "1" and "a-2":
    # frames are per operation id) and viewerEvents once.
    pairs = []
    for actor in (admin, member):
        pair = []
        for direct in (True, False):
            client = sockets(actor, direct)
            client.subscribe(CONVERSATION_EVENTS, {"c": cid}, op_id="1")
            client.subscribe(CONVERSATION_EVENTS, {"c": cid}, op_id="a-2")
            client.subscribe(VIEWER_EVENTS, {}, op_id="v")
            pair.append(client)
        pairs.append(pair)
    deadline = time.monotonic() + 10
    while metric(server, "threadline_subscriptions_active") < 12:
        assert time.monotonic() < deadline, "the 12 subscriptions never registered"
        time.sleep(0.05)
    # Each subscription records its opening presence heartbeat (committed, maybe announced) before it
    # delivers anything: once every operation has delivered this warm-up thread, all those announcements
    # precede the marker below.
    warm_up = admin.client.ok(START, {"c": cid, "x": "warm-up"})["threadStart"]["id"]
    for pair in pairs:
        for client in pair:
            frames_until(client, each_operation_saw(warm_up, {"1", "a-2", "v"}))
    before = direct_deliveries(server)

    # The marker: frames before it may differ (presence of sockets opening after others); none after it.
    marker = admin.client.ok(START, {"c": cid, "x": "marker"})["threadStart"]["id"]
    # thread.new for its author and for a reader (different viewer classes), thread.activity for a reply,
    # an edit and a delete, unread.update, message.delta / message.done, typing, presence, membership.
    root = member.client.ok(START, {"c": cid, "x": 'héllo "quoted" ✓'})["threadStart"]["id"]
    reply = admin.client.ok(REPLY, {"p": root, "x": "a reply"})["messageReply"]["id"]
    admin.client.ok('mutation($m: ID!) { messageEdit(id: $m, content: "edited") { id } }', {"m": reply})
    assistant = admin.client.ok(REPLY, {"p": root, "x": "…", "r": "ASSISTANT"})["messageReply"]["id"]
    for piece in ("Hel", "lo", " 🌍" * 40):
        admin.client.ok(
            "mutation($m: ID!, $d: String!) { messageAppend(id: $m, delta: $d) { id } }",
            {"m": assistant, "d": piece},
        )
    admin.client.ok(
        "mutation($m: ID!) { messageFinish(id: $m, usage: {promptTokens: 3, completionTokens: 4}) { id } }",
        {"m": assistant},
    )
    member.client.ok("mutation($c: ID!) { typingSet(conversationId: $c, isTyping: true) }", {"c": cid})
    member.client.ok("mutation { presenceHeartbeat(status: AWAY) }")
    admin.client.ok(
        "mutation($c: ID!, $u: ID!) { participantRoleSet(conversationId: $c, userId: $u, role: VIEWER) { id } }",
        {"c": cid, "u": member.user_id},
    )
    admin.client.ok("mutation($m: ID!) { messageDelete(id: $m) { id } }", {"m": reply})
    last = admin.client.ok(START, {"c": cid, "x": "the end"})["threadStart"]["id"]

    def is_last(message: dict[str, Any]) -> bool:
        event = next(iter(message["payload"]["data"].values()))
        return (
            message["id"] == "v" and event["type"] == "thread.new" and event["thread"]["root"]["id"] == last
        )

    def decode(cursor: str) -> int:
        return position(server, admin.tenant_id, cursor)

    seen_types: set[str] = set()
    for direct_client, stock_client in pairs:
        direct_frames = frames_until(direct_client, is_last)
        stock_frames = frames_until(stock_client, is_last)
        marker_cursor = min(
            decode(next(iter(json.loads(f)["payload"]["data"].values()))["cursor"])
            for f in direct_frames
            if f'"{marker}"' in f
        )
        direct_events = by_cursor(direct_frames, marker_cursor - 1, decode)
        stock_events = by_cursor(stock_frames, marker_cursor - 1, decode)
        assert direct_events.keys() == stock_events.keys()
        for key, raw in direct_events.items():
            assert raw == stock_events[key], key
        seen_types |= {
            next(iter(json.loads(f)["payload"]["data"].values()))["type"] for f in direct_events.values()
        }
    assert seen_types >= {
        "thread.new",
        "thread.activity",
        "unread.update",
        "message.delta",
        "message.done",
        "typing.update",
        "presence.update",
        "membership.changed",
    }
    # The direct sockets really took the direct path (not only the stock one).
    assert direct_deliveries(server) - before >= 20
