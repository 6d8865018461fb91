"""Authorization attack on live streams: what a socket keeps delivering after the caller lost access."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.api import create_conversation, join, start_thread, stream_cursor
from tests.harness import Actor
from tests.test_http_subscriptions import MultipartSubscription, subscribe  # noqa: F401 - the fixture
from tests.test_http_subscriptions import contents as http_contents
from tests.ws import CONVERSATION_EVENTS, VIEWER_EVENTS, WsClient

REMOVE = "mutation($c: ID!, $u: ID!) { participantRemove(conversationId: $c, userId: $u) }"
ROLE_SET = """mutation($c: ID!, $u: ID!, $r: ParticipantRole!) {
  participantRoleSet(conversationId: $c, userId: $u, role: $r) { role } }"""
QUIET = ("presence.update", "unread.update", "membership.changed", "typing.update")


def contents(events: list[dict[str, Any]]) -> list[str]:
    return [e["thread"]["root"]["content"] for e in events if e["type"] == "thread.new"]


def test_viewer_events_stop_carrying_a_conversation_after_the_removal(
    admin: Actor, make_user: Callable[..., Actor], ws: Callable[..., WsClient]
) -> None:
    member = make_user(admin)
    cid = create_conversation(admin)
    mine = create_conversation(member)
    join(admin, member, cid)
    client = ws(member)
    client.subscribe(VIEWER_EVENTS, {"s": stream_cursor(member)})
    start_thread(admin, cid, "before")
    assert contents(client.events(1, ignore=QUIET)) == ["before"]
    admin.client.ok(REMOVE, {"c": cid, "u": member.user_id})
    start_thread(admin, cid, "after the removal")
    start_thread(member, mine, "own")
    assert contents(client.events(1, ignore=QUIET)) == ["own"]


def test_a_replay_from_before_the_removal_leaves_out_the_conversation(
    admin: Actor, make_user: Callable[..., Actor], ws: Callable[..., WsClient]
) -> None:
    member = make_user(admin)
    cid = create_conversation(admin)
    mine = create_conversation(member)
    join(admin, member, cid)
    since = stream_cursor(member)
    start_thread(admin, cid, "while a participant")
    admin.client.ok(REMOVE, {"c": cid, "u": member.user_id})
    start_thread(admin, cid, "after the removal")
    start_thread(member, mine, "own")
    client = ws(member)
    client.subscribe(VIEWER_EVENTS, {"s": since})
    got = contents(client.events(1, ignore=QUIET))
    assert got == ["own"]


def test_a_removed_participants_http_stream_ends_and_their_viewer_stream_leaves_the_conversation(
    admin: Actor,
    make_user: Callable[..., Actor],
    subscribe: Callable[..., MultipartSubscription],  # noqa: F811 - the fixture
) -> None:
    member = make_user(admin)
    cid = create_conversation(admin)
    mine = create_conversation(member)
    join(admin, member, cid)
    since = {"s": stream_cursor(admin)}
    stream = subscribe(member, CONVERSATION_EVENTS, {"c": cid, **since})
    viewer = subscribe(member, VIEWER_EVENTS, since)
    start_thread(admin, cid, "before")
    assert http_contents(stream.events(1)) == ["before"]
    assert http_contents(viewer.events(1)) == ["before"]
    admin.client.ok(REMOVE, {"c": cid, "u": member.user_id})
    start_thread(admin, cid, "after the removal")
    rest = stream.until_end()
    # What was queued before the removal (an unread count, the removal itself) may still arrive; nothing after it.
    assert http_contents([next(iter(p["payload"]["data"].values())) for p in rest]) == []
    start_thread(member, mine, "own")
    assert http_contents(viewer.events(1)) == ["own"]
