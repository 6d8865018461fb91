"""A WebSocket's context lives as long as the socket: each query on it reads the data as it is now, never
what an earlier operation on the same socket loaded (the request-wide loaders are per operation)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from tests.api import create_conversation, join, reply, start_thread
from tests.harness import Actor, ServerThread
from tests.ws import WsClient

_op_ids = itertools.count(1)

PARTICIPANTS = "query($c: ID!) { conversation(id: $c) { participants { user { id } } } }"
REPLIES = "query($r: ID!) { threadTree(rootId: $r, maxDepth: 0) { root { replies { content } } } }"
EDITS = "query($m: ID!) { message(id: $m) { edits { content } } }"
REMOVE = "mutation($c: ID!, $u: ID!) { participantRemove(conversationId: $c, userId: $u) }"
EDIT = "mutation($m: ID!, $t: String!) { messageEdit(id: $m, content: $t) { id } }"


def over_socket(client: WsClient, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    """Runs a query on the socket; its `data` (no errors)."""
    op_id = f"op{next(_op_ids)}"
    client.subscribe(query, variables, op_id)
    result: dict[str, Any] | None = None
    while True:
        message = client.receive()
        if message.get("id") != op_id:
            continue
        assert message["type"] in ("next", "complete"), message
        if message["type"] == "next":
            result = message["payload"]
            continue
        assert result is not None and not result.get("errors"), result
        data: dict[str, Any] = result["data"]
        return data


def test_a_second_query_on_a_socket_sees_a_participant_removed_in_between(
    server: ServerThread, admin: Actor, make_user: Callable[..., Actor]
) -> None:
    bob = make_user(admin)
    conversation = create_conversation(admin)
    join(admin, bob, conversation)
    ws = WsClient(server.ws_url, admin.api_key)
    try:
        before = over_socket(ws, PARTICIPANTS, {"c": conversation})["conversation"]["participants"]
        assert sorted(p["user"]["id"] for p in before) == sorted([admin.user_id, bob.user_id])
        assert admin.client.ok(REMOVE, {"c": conversation, "u": bob.user_id}) == {"participantRemove": True}
        after = over_socket(ws, PARTICIPANTS, {"c": conversation})["conversation"]["participants"]
        assert [p["user"]["id"] for p in after] == [admin.user_id]
    finally:
        ws.close()


def test_a_second_query_on_a_socket_sees_a_reply_posted_in_between(
    server: ServerThread, admin: Actor
) -> None:
    root = start_thread(admin, create_conversation(admin))
    reply(admin, root, "first")
    ws = WsClient(server.ws_url, admin.api_key)
    try:
        before = over_socket(ws, REPLIES, {"r": root})["threadTree"]["root"]["replies"]
        assert before == [{"content": "first"}]
        reply(admin, root, "second")
        after = over_socket(ws, REPLIES, {"r": root})["threadTree"]["root"]["replies"]
        assert after == [{"content": "first"}, {"content": "second"}]
    finally:
        ws.close()


def test_a_second_query_on_a_socket_sees_an_edit_made_in_between(server: ServerThread, admin: Actor) -> None:
    message = start_thread(admin, create_conversation(admin), "v1")
    admin.client.ok(EDIT, {"m": message, "t": "v2"})
    ws = WsClient(server.ws_url, admin.api_key)
    try:
        assert over_socket(ws, EDITS, {"m": message})["message"]["edits"] == [{"content": "v1"}]
        admin.client.ok(EDIT, {"m": message, "t": "v3"})
        after = over_socket(ws, EDITS, {"m": message})["message"]["edits"]
        assert after == [{"content": "v1"}, {"content": "v2"}]
    finally:
        ws.close()
