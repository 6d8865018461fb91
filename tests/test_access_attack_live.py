"""Authorization attack on live streams: what a socket keeps delivering after the caller lost access."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.api import create_conversation, join, reply, start_thread, stream_cursor
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


def ws_result(client: WsClient, query: str, variables: dict[str, Any], op_id: str) -> dict[str, Any]:
    client.subscribe(query, variables, op_id)
    while True:
        message = client.receive()
        if message.get("id") != op_id:
            continue
        if message["type"] == "error":
            return {"errors": message["payload"]}
        assert message["type"] == "next", message
        result: dict[str, Any] = message["payload"]
        return result


def test_a_participant_made_viewer_cannot_write_over_an_open_socket(
    admin: Actor, make_user: Callable[..., Actor], ws: Callable[..., WsClient]
) -> None:
    member = make_user(admin)
    cid = create_conversation(admin)
    join(admin, member, cid)
    client = ws(member)
    start = "mutation($c: ID!, $x: String!) { threadStart(conversationId: $c, input: {content: $x}) { id } }"
    assert "errors" not in ws_result(client, start, {"c": cid, "x": "as a member"}, "a")
    admin.client.ok(ROLE_SET, {"c": cid, "u": member.user_id, "r": "VIEWER"})
    refused = ws_result(client, start, {"c": cid, "x": "as a viewer"}, "b")
    assert refused["errors"][0]["extensions"]["code"] == "FORBIDDEN"


def test_a_thread_of_another_conversation_cannot_be_followed_through_ones_own(
    admin: Actor, make_user: Callable[..., Actor], ws: Callable[..., WsClient]
) -> None:
    member = make_user(admin)
    theirs = create_conversation(admin)
    root = start_thread(admin, theirs, "theirs")
    mine = create_conversation(member)
    client = ws(member)
    refused = ws_result(client, CONVERSATION_EVENTS, {"c": mine, "r": root}, "2")
    assert refused["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    assert client.receive() == {"id": "2", "type": "complete"}
    reply(admin, root, "a secret reply")
    client.expect_quiet(0.5, ignore=QUIET)
