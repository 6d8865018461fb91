"""A subscription that selects a field depending on who asks (`Message.feedback` is the viewer's own rating)
gets its own value on every socket: subscribers with the same query share an event's execution only when every
field it selects is rendered from the event or listed in `streaming.fanout.SHARED_RESOLVERS`. Before, the first
subscriber's result went to all of them (a member saw the admin's rating)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from graphql import parse

from tests.harness import Actor
from tests.test_streaming import START, conversation, join, live
from tests.test_streaming_direct import sockets  # noqa: F401  (a fixture)
from tests.ws import WsClient
from threadline.schema import schema
from threadline.streaming.fanout import SHARED_RESOLVERS, per_viewer

REPLY = "mutation($p: ID!, $x: String!) { messageReply(parentId: $p, input: {content: $x}) { id } }"
SET = "mutation($m: ID!, $r: FeedbackRating) { messageFeedbackSet(messageId: $m, rating: $r) { id } }"
EDIT = "mutation($m: ID!, $x: String!) { messageEdit(id: $m, content: $x) { id } }"
INLINE = """subscription($c: ID!, $s: String) { conversationEvents(conversationId: $c, since: $s) {
  type ... on ThreadActivityEvent { action changedMessage { id content mine: feedback { rating } } } } }"""
NAMED = """subscription($c: ID!, $s: String) { conversationEvents(conversationId: $c, since: $s) {
  type ...Activity } }
fragment Activity on ThreadActivityEvent { action changedMessage { ...Rated } }
fragment Rated on Message { id feedback { rating } }"""
SHARED = """subscription($c: ID!, $s: String) { conversationEvents(conversationId: $c, since: $s) {
  type ... on ThreadActivityEvent { action changedMessage { id author { id displayName } siblingIndex
  siblingCount feedbackSummary { up down } metadata } } } }"""
READ_SHARED = """query($m: ID!) { message(id: $m) { id author { id displayName } siblingIndex siblingCount
  feedbackSummary { up down } metadata } }"""
IGNORED = ("presence.update", "membership.changed", "message.feedback", "branch.current", "branch.sibling")


def _rated_conversation(admin: Actor, member: Actor) -> tuple[str, str]:
    """A conversation with one answer the admin rated UP and the member DOWN: (conversation id, answer id)."""
    cid = conversation(admin)
    join(admin, member, cid)
    root = admin.client.ok(START, {"c": cid, "x": "question"})["threadStart"]["id"]
    answer = admin.client.ok(REPLY, {"p": root, "x": "answer"})["messageReply"]["id"]
    admin.client.ok(SET, {"m": answer, "r": "UP"})
    member.client.ok(SET, {"m": answer, "r": "DOWN"})
    return cid, answer


def _edit_event(client: WsClient) -> dict[str, Any]:
    (event,) = client.events(1, ignore=IGNORED, timeout=15)
    assert event["type"] == "thread.activity" and event["action"] == "EDIT", event
    return event


@pytest.mark.parametrize("query", [INLINE, NAMED], ids=["inline", "named-fragments"])
@pytest.mark.parametrize("direct", [True, False], ids=["direct-frames", "stock"])
def test_each_subscriber_gets_its_own_feedback(
    admin: Actor,
    make_user: Callable[..., Actor],
    sockets: Callable[[Actor, bool], WsClient],  # noqa: F811
    query: str,
    direct: bool,
) -> None:
    member = make_user(admin)
    cid, answer = _rated_conversation(admin, member)
    # Two sockets of the admin's and two of the member's, subscribed in alternation, the member first.
    clients = [(actor, sockets(actor, direct)) for actor in (member, admin, member, admin)]
    for actor, client in clients:
        client.subscribe(query, {"c": cid, "s": live(actor)})
    time.sleep(0.3)
    admin.client.ok(EDIT, {"m": answer, "x": "edited"})
    field = "mine" if query is INLINE else "feedback"
    for actor, client in clients:
        event = _edit_event(client)
        expected = "UP" if actor is admin else "DOWN"
        assert event["changedMessage"][field] == {"rating": expected}, (actor is admin, event)


@pytest.mark.parametrize("direct", [True, False], ids=["direct-frames", "stock"])
def test_shared_fields_are_what_every_viewer_reads(
    admin: Actor,
    make_user: Callable[..., Actor],
    sockets: Callable[[Actor, bool], WsClient],  # noqa: F811
    direct: bool,
) -> None:
    """The fields SHARED_RESOLVERS lets subscribers share: each viewer's event carries what that viewer reads
    with a query of its own."""
    member = make_user(admin)
    cid, answer = _rated_conversation(admin, member)
    clients = [(actor, sockets(actor, direct)) for actor in (member, admin)]
    for actor, client in clients:
        client.subscribe(SHARED, {"c": cid, "s": live(actor)})
    admin.client.ok(
        "mutation($m: ID!, $d: JSON!) { messageMetadataSet(id: $m, metadata: $d) { id } }",
        {"m": answer, "d": {"source": "test"}},
    )
    time.sleep(0.3)
    admin.client.ok(EDIT, {"m": answer, "x": "edited again"})
    for actor, client in clients:
        event = _edit_event(client)
        read = actor.client.ok(READ_SHARED, {"m": answer})["message"]
        assert event["changedMessage"] == read
        assert read["feedbackSummary"] == {"up": 1, "down": 1} and read["author"]["id"] == admin.user_id
        assert read["metadata"] == {"source": "test"}


def _operation_per_viewer(source: str) -> bool:
    document = parse(source)
    return per_viewer(schema._schema, document, (source, None))


def test_which_documents_are_per_viewer() -> None:
    assert not _operation_per_viewer(SHARED)
    assert not _operation_per_viewer(
        "subscription($c: ID!) { conversationEvents(conversationId: $c) { cursor type occurredAt "
        "... on ThreadActivityEvent { replyCount changedMessage { id content } } "
        "... on MessageDeltaEvent { messageId index delta } } }"
    )
    assert _operation_per_viewer(INLINE)
    assert _operation_per_viewer(NAMED)  # reached through two named fragments
    # Fields with resolvers not in the list: the viewer's branch, masked parts, similar messages.
    for selection in (
        "... on ThreadNewEvent { thread { currentLeaf { id } } }",
        "... on ThreadActivityEvent { changedMessage { parts { __typename } } }",
        "... on ThreadActivityEvent { changedMessage { author { id } replies { id } } }",
    ):
        query = f"subscription($c: ID!) {{ conversationEvents(conversationId: $c) {{ type {selection} }} }}"
        assert _operation_per_viewer(query), selection


def test_shared_resolvers_name_fields_with_resolvers() -> None:
    """Each listed field exists and has a resolver (a renamed field must not linger in the list unnoticed)."""
    for coordinate in SHARED_RESOLVERS:
        type_name, field_name = coordinate.split(".")
        field = schema._schema.type_map[type_name].fields[field_name]  # type: ignore[union-attr]
        assert field.extensions["strawberry-definition"].base_resolver is not None, coordinate


SHARED_LIVE = """subscription($c: ID!) { conversationEvents(conversationId: $c) {
  type ... on ThreadActivityEvent { action changedMessage { id author { id displayName } siblingCount
  feedbackSummary { up down } } } ... on ThreadNewEvent { thread { root { id author { id displayName } } } } } }"""


def test_fields_loaded_for_all_go_out_as_direct_frames(
    admin: Actor,
    make_user: Callable[..., Actor],
    server: Any,
    sockets: Callable[[Actor, bool], WsClient],  # noqa: F811
) -> None:
    """A shared field whose resolver loads (the author) is awaited once by the hub before its pass, so idle
    subscribers get it as direct frames (before, each woke its own stock path for it), byte for byte what a
    stock socket receives."""
    from tests.test_streaming_direct import direct_deliveries, frames_until

    member = make_user(admin)
    cid = conversation(admin)
    join(admin, member, cid)
    root = admin.client.ok(START, {"c": cid, "x": "question"})["threadStart"]["id"]
    direct = [(actor, sockets(actor, True)) for actor in (admin, member, admin, member)]
    stock = [(actor, sockets(actor, False)) for actor in (admin, member)]
    for _, client in direct + stock:
        client.subscribe(SHARED_LIVE, {"c": cid})
    time.sleep(0.5)  # every subscription live and idle: their lanes open, in one group
    before = direct_deliveries(server)
    reply = admin.client.ok(REPLY, {"p": root, "x": "answer"})["messageReply"]["id"]
    second = admin.client.ok(START, {"c": cid, "x": "another question"})["threadStart"]["id"]

    def has_both(message: dict[str, Any]) -> bool:
        return second in str(message["payload"])

    received: dict[str, list[str]] = {}
    for actor, client in direct + stock:
        frames = [f for f in frames_until(client, has_both) if reply in f or second in f]
        assert len(frames) == 2, frames
        received.setdefault(actor.user_id, []).append("\n".join(frames))
    for frames in received.values():
        assert len(set(frames)) == 1, frames  # direct and stock sockets of a user: the same bytes
    assert received[admin.user_id][0].count(admin.user_id) == 2  # the reply's author and the new root's
    # The four direct sockets took both events as direct frames (the stock sockets add none).
    assert direct_deliveries(server) - before >= 8


def test_a_failure_executing_ahead_leaves_the_events_to_the_stock_path(
    admin: Actor,
    server: Any,
    sockets: Callable[[Actor, bool], WsClient],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The hub's head start must never hold events back: if it raises, the pass routes them as before."""
    from threadline.streaming.direct import LaneGroup

    def broken(self: Any, event: Any) -> list[Any]:
        raise RuntimeError("ahead")

    monkeypatch.setattr(LaneGroup, "start_shared", broken)
    cid = conversation(admin)
    root = admin.client.ok(START, {"c": cid, "x": "question"})["threadStart"]["id"]
    clients = [sockets(admin, True) for _ in range(3)]
    for client in clients:
        client.subscribe(SHARED_LIVE, {"c": cid})
    time.sleep(0.5)
    for n in range(3):
        admin.client.ok(REPLY, {"p": root, "x": f"answer {n}"})
    for client in clients:
        events = client.events(3, ignore=IGNORED, timeout=15)
        assert [e["changedMessage"]["author"]["id"] for e in events] == [admin.user_id] * 3
