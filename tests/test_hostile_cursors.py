"""Stream cursors are opaque per tenant (issue 12 item 14): they no longer show positions in the one global
event sequence, so a tenant cannot count the platform's events between two of its own; a cursor works only
for the tenant it was issued to; every server process issues the same cursor for the same event; the numeric
cursor "0" that clients already use still replays everything, and a resume still has no gap or duplicate."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any

from tests.api import create_conversation, reply, start_thread, stream_cursor
from tests.harness import Actor, Client, ServerThread, test_settings
from tests.ws import CONVERSATION_EVENTS, VIEWER_EVENTS, WsClient, position

OPAQUE = re.compile(r"c1\.[0-9a-f]{24}")


def refusal(client: WsClient) -> str:
    """The error code a subscription was refused with."""
    message = client.receive()
    assert message["type"] in ("next", "error"), message
    errors = message["payload"]["errors"] if message["type"] == "next" else message["payload"]
    return str(errors[0]["extensions"]["code"])


def test_two_tenants_see_different_cursors_for_the_same_position(
    make_tenant: Callable[..., Actor], server: ServerThread
) -> None:
    a, b = make_tenant(), make_tenant()
    for _ in range(20):  # nothing is written meanwhile, but another test's server may be: retry
        first, second = stream_cursor(a), stream_cursor(b)
        if position(server, a.tenant_id, first) == position(server, b.tenant_id, second):
            break
    else:
        raise AssertionError("the two tenants never read the same position")
    assert OPAQUE.fullmatch(first) and OPAQUE.fullmatch(second), (first, second)
    assert first != second


def test_another_tenants_cursor_or_an_altered_one_is_bad_user_input(
    make_tenant: Callable[..., Actor], ws: Callable[..., WsClient]
) -> None:
    a, b = make_tenant(), make_tenant()
    a_conversation = create_conversation(a, "a")
    b_conversation = create_conversation(b, "b")
    watcher = ws(a)
    watcher.subscribe(CONVERSATION_EVENTS, {"c": a_conversation, "s": stream_cursor(a)})
    start_thread(a, a_conversation, "a's event")
    a_event_cursor = watcher.events(1)[0]["cursor"]
    body = a_event_cursor[3:]
    altered = "c1." + body[:10] + ("0" if body[10] != "0" else "1") + body[11:]
    for since in (
        stream_cursor(a),
        a_event_cursor,
        altered,
        "c1." + body[:-2],
        "c1.zz" + body[2:],
        "c2." + body,
    ):
        client = ws(b)
        client.subscribe(CONVERSATION_EVENTS, {"c": b_conversation, "s": since})
        assert refusal(client) == "BAD_USER_INPUT", since
    viewer = ws(b)
    viewer.subscribe(VIEWER_EVENTS, {"s": a_event_cursor})
    assert refusal(viewer) == "BAD_USER_INPUT"
    # The owner's own cursors are accepted, by both subscriptions.
    own = ws(a)
    own.subscribe(CONVERSATION_EVENTS, {"c": a_conversation, "s": stream_cursor(a)})
    own.subscribe(VIEWER_EVENTS, {"s": a_event_cursor}, op_id="v")
    start_thread(a, a_conversation, "accepted")
    # The two operations' frames may arrive in either order: read until each has its event.
    seen: dict[str, str] = {}
    while len(seen) < 2:
        message = own.receive()
        assert message["type"] == "next", message
        event = next(iter(message["payload"]["data"].values()))
        if event["type"] == "thread.new":
            seen[message["id"]] = event["thread"]["root"]["content"]
    assert seen == {"1": "accepted", "v": "accepted"}


def test_cursors_do_not_show_how_many_events_other_tenants_wrote_in_between(
    make_tenant: Callable[..., Actor], ws: Callable[..., WsClient]
) -> None:
    a, b = make_tenant(), make_tenant()
    a_conversation = create_conversation(a, "a")
    b_root = start_thread(b, create_conversation(b, "b"), "b")
    watcher = ws(a)
    watcher.subscribe(CONVERSATION_EVENTS, {"c": a_conversation, "s": stream_cursor(a)})
    a_root = start_thread(a, a_conversation, "a")
    others = [3, 0, 7, 1, 12, 0, 5, 2, 9, 4, 0, 6]  # how many replies tenant B writes before each of A's
    for count in others:
        for i in range(count):
            reply(b, b_root, f"b{i}")
        reply(a, a_root, "a")
    events = watcher.events(1 + len(others), ignore=("presence.update", "unread.update"))
    cursors = [e["cursor"] for e in events]
    assert all(OPAQUE.fullmatch(c) for c in cursors), cursors
    assert len(set(cursors)) == len(cursors)
    # Neither as text nor as numbers do they follow the order of the events (a global position does), so
    # their differences say nothing about B's activity. (12 random values in order: 1 chance in 13!.)
    as_numbers = [int(c[3:], 16) for c in cursors]
    assert cursors != sorted(cursors) and as_numbers != sorted(as_numbers)
    assert not any(
        0 <= later - earlier <= 1000 for earlier, later in zip(as_numbers, as_numbers[1:], strict=False)
    )


def test_numeric_zero_still_replays_everything_and_other_numbers_are_no_longer_issued(
    admin: Actor, server: ServerThread, ws: Callable[..., WsClient]
) -> None:
    cid = create_conversation(admin, "legacy")
    root = start_thread(admin, cid, "first")
    for i in range(3):
        reply(admin, root, f"r{i}")
    legacy = ws(admin)
    legacy.subscribe(CONVERSATION_EVENTS, {"c": cid, "s": "0"})
    replayed = legacy.events(4, ignore=("presence.update", "unread.update"))
    assert [e["type"] for e in replayed] == ["thread.new"] + ["thread.activity"] * 3
    assert [e["changedMessage"]["content"] for e in replayed[1:]] == ["r0", "r1", "r2"]
    assert all(OPAQUE.fullmatch(e["cursor"]) for e in replayed)
    # A number above where opaque cursors began was never issued: finding one's own events' global positions
    # by bisection over numbers is not possible.
    issued_through = server.app.state.services.hub.cursors.numeric_through
    above = position(server, admin.tenant_id, replayed[0]["cursor"])
    assert above > issued_through
    for number in (str(above), str(issued_through + 1)):
        client = ws(admin)
        client.subscribe(CONVERSATION_EVENTS, {"c": cid, "s": number})
        assert refusal(client) == "CURSOR_EXPIRED"


def test_resuming_with_an_emitted_cursor_has_no_gap_or_duplicate(
    admin: Actor, ws: Callable[..., WsClient]
) -> None:
    cid = create_conversation(admin, "resume")
    root = start_thread(admin, cid, "root")
    first = ws(admin)
    first.subscribe(CONVERSATION_EVENTS, {"c": cid, "s": stream_cursor(admin)})
    for i in range(5):
        reply(admin, root, f"before-{i}")
    got = first.events(5, ignore=("presence.update", "unread.update"))
    first.close()
    for i in range(4):
        reply(admin, root, f"after-{i}")
    resumed = ws(admin)
    resumed.subscribe(CONVERSATION_EVENTS, {"c": cid, "s": got[2]["cursor"]})
    rest = resumed.events(6, ignore=("presence.update", "unread.update"))
    assert [e["changedMessage"]["content"] for e in rest] == ["before-3", "before-4"] + [
        f"after-{i}" for i in range(4)
    ]
    assert [e["cursor"] for e in rest[:2]] == [e["cursor"] for e in got[3:]]
    resumed.expect_quiet(0.3, ignore=("presence.update", "unread.update"))


def _second_server(server: ServerThread, **overrides: Any) -> ServerThread:
    settings = server.app.state.services.settings
    other = ServerThread(
        dataclasses.replace(test_settings(settings.database_url, migrate_on_start=False), **overrides)
    )
    other.start()
    return other


def test_two_server_processes_issue_the_same_cursor_for_the_same_event(
    admin: Actor, server: ServerThread, ws: Callable[..., WsClient]
) -> None:
    other = _second_server(server)
    keyed = _second_server(server, cursor_secret="an operator's own cursor secret")
    try:
        cid = create_conversation(admin, "two processes")
        sockets = []
        for on in (server, other, keyed):
            client = ws(admin, on)
            http = Client(on.url, admin.api_key)  # each process's own streamCursor
            try:
                client.subscribe(
                    CONVERSATION_EVENTS, {"c": cid, "s": http.ok("{ streamCursor }")["streamCursor"]}
                )
            finally:
                http.close()
            sockets.append(client)
        start_thread(admin, cid, "seen by every process")
        here, there, with_setting = (client.events(1)[0]["cursor"] for client in sockets)
        # The stored secret: every process agrees (a resume may land on any of them).
        assert OPAQUE.fullmatch(here) and here == there
        # THREADLINE_CURSOR_SECRET replaces it.
        assert OPAQUE.fullmatch(with_setting) and with_setting != here
        resumed = ws(admin, other)
        resumed.subscribe(CONVERSATION_EVENTS, {"c": cid, "s": here})
        start_thread(admin, cid, "after the resume")
        assert resumed.events(1)[0]["thread"]["root"]["content"] == "after the resume"
    finally:
        other.stop()
        keyed.stop()
