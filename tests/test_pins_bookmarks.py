"""Pins (per user, ordered, listed first with `conversations(pinnedFirst: true)`) and bookmarks on messages
(per user, with a note, listed newest first), with their bounds and the access rules."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import asyncpg

from tests import harness
from tests.api import create_conversation, join, reply, start_thread
from tests.harness import Actor, Client, Loop, ServerThread

PIN = "mutation($c: ID!, $p: Int) { conversationPin(conversationId: $c, position: $p) { id } }"
UNPIN = "mutation($c: ID!) { conversationUnpin(conversationId: $c) { id } }"
PINNED_FIRST = """query($first: Int, $after: String) {
  conversations(pinnedFirst: true, first: $first, after: $after) {
    edges { node { title } } pageInfo { hasNextPage endCursor } } }"""
BOOKMARK = """mutation($m: ID!, $n: String) {
  bookmarkSet(messageId: $m, note: $n) { id note messageId conversationId message { id content } } }"""
UNBOOKMARK = "mutation($m: ID!) { bookmarkRemove(messageId: $m) }"
BOOKMARKS = """query($first: Int, $after: String, $c: ID) {
  bookmarks(first: $first, after: $after, conversationId: $c) {
    totalCount edges { node { note message { content } } } pageInfo { hasNextPage endCursor } } }"""


def titles(actor: Actor, first: int = 50) -> list[str]:
    data = actor.client.ok(PINNED_FIRST, {"first": first})["conversations"]
    return [e["node"]["title"] for e in data["edges"]]


def test_pinned_conversations_come_first_in_pin_order(admin: Actor) -> None:
    ids = {t: create_conversation(admin, t) for t in ("a", "b", "c", "d", "e")}
    # Without pins: most recent activity first.
    assert titles(admin) == ["e", "d", "c", "b", "a"]
    admin.client.ok(PIN, {"c": ids["b"]})
    admin.client.ok(PIN, {"c": ids["d"]})
    admin.client.ok(PIN, {"c": ids["a"], "p": 0})
    assert titles(admin) == ["a", "b", "d", "e", "c"]
    # Pinning a pinned conversation moves it.
    admin.client.ok(PIN, {"c": ids["a"], "p": 99})
    assert titles(admin) == ["b", "d", "a", "e", "c"]
    admin.client.ok(UNPIN, {"c": ids["d"]})
    assert titles(admin) == ["b", "a", "e", "d", "c"]


def test_pinned_first_pages_with_cursors_across_pins_and_the_rest(admin: Actor) -> None:
    ids = [create_conversation(admin, f"c{n}") for n in range(6)]
    admin.client.ok(PIN, {"c": ids[1]})
    admin.client.ok(PIN, {"c": ids[4]})
    seen: list[str] = []
    after = None
    while True:
        page = admin.client.ok(PINNED_FIRST, {"first": 2, "after": after})["conversations"]
        seen += [e["node"]["title"] for e in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert seen == ["c1", "c4", "c5", "c3", "c2", "c0"]
    # A cursor of the other ordering is refused, not misread.
    plain = admin.client.ok("{ conversations(first: 1) { pageInfo { endCursor } } }")
    cursor = plain["conversations"]["pageInfo"]["endCursor"]
    assert admin.client.code(PINNED_FIRST, {"first": 1, "after": cursor}) == "BAD_USER_INPUT"


def test_pins_are_per_user(admin: Actor, make_user: Callable[..., Actor]) -> None:
    other = make_user(admin)
    first = create_conversation(admin, "first")
    second = create_conversation(admin, "second")
    join(admin, other, first)
    join(admin, other, second)
    admin.client.ok(PIN, {"c": first})
    assert titles(admin) == ["first", "second"]
    assert titles(other) == ["second", "first"]


def test_pinning_a_conversation_the_caller_cannot_read_is_not_found(
    admin: Actor, make_user: Callable[..., Actor]
) -> None:
    stranger = make_user(admin)
    cid = create_conversation(admin, "private")
    assert stranger.client.code(PIN, {"c": cid}) == "NOT_FOUND"
    assert stranger.client.code(PIN, {"c": cid, "p": -1}) == "BAD_USER_INPUT"


def test_pins_are_bounded_per_user(dsn: str, loop: Loop) -> None:
    srv = ServerThread(harness.test_settings(dsn, migrate_on_start=False, pins_max=2, bookmarks_max=1))
    srv.start()
    try:
        actor = harness.create_admin(loop, dsn, srv.url)
        try:
            ids = [create_conversation(actor, f"c{n}") for n in range(3)]
            actor.client.ok(PIN, {"c": ids[0]})
            actor.client.ok(PIN, {"c": ids[1]})
            error = actor.client.error(PIN, {"c": ids[2]})
            assert error["extensions"] == {"code": "BAD_USER_INPUT", "argument": "conversationId", "limit": 2}
            # Moving a pinned one is no new pin.
            actor.client.ok(PIN, {"c": ids[1], "p": 0})
            root = start_thread(actor, ids[0], "hello")
            other = reply(actor, root, "again")
            actor.client.ok(BOOKMARK, {"m": root})
            actor.client.ok(BOOKMARK, {"m": root, "n": "changing the note is fine"})
            error = actor.client.error(BOOKMARK, {"m": other})
            assert error["extensions"] == {"code": "BAD_USER_INPUT", "argument": "messageId", "limit": 1}
        finally:
            actor.client.close()
    finally:
        srv.stop()


def test_concurrent_pins_and_moves_keep_pin_order_dense(
    admin: Actor, server: ServerThread, dsn: str, loop: Loop
) -> None:
    ids = [create_conversation(admin, f"c{n}") for n in range(10)]
    calls = [{"c": cid, "p": (n * 3) % 5} for n, cid in enumerate(ids)] * 3

    def run(variables: dict[str, Any]) -> None:
        client = Client(server.url, admin.api_key)
        try:
            client.ok(PIN, variables)
        finally:
            client.close()

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(run, calls))
    pinned = titles(admin)
    assert sorted(pinned) == sorted(f"c{n}" for n in range(10))

    async def positions() -> list[int]:
        conn = await asyncpg.connect(dsn)
        try:
            rows = await conn.fetch("SELECT position FROM conversation_pin ORDER BY position")
            return [r["position"] for r in rows]
        finally:
            await conn.close()

    assert loop.run(positions()) == list(range(10))


def test_bookmarks_with_notes_are_listed_per_user_newest_first(
    admin: Actor, make_user: Callable[..., Actor]
) -> None:
    other = make_user(admin)
    cid = create_conversation(admin, "talk")
    join(admin, other, cid)
    root = start_thread(admin, cid, "the question")
    answer = reply(admin, root, "the answer")
    made = admin.client.ok(BOOKMARK, {"m": root, "n": "  start here  "})["bookmarkSet"]
    assert made["note"] == "start here"
    assert made["messageId"] == root and made["conversationId"] == cid
    assert made["message"] == {"id": root, "content": "the question"}
    admin.client.ok(BOOKMARK, {"m": answer})
    listed = admin.client.ok(BOOKMARKS)["bookmarks"]
    assert listed["totalCount"] == 2
    assert [e["node"] for e in listed["edges"]] == [
        {"note": None, "message": {"content": "the answer"}},
        {"note": "start here", "message": {"content": "the question"}},
    ]
    # Setting again changes the note of the one bookmark.
    admin.client.ok(BOOKMARK, {"m": answer, "n": "good"})
    assert admin.client.ok(BOOKMARKS, {"first": 1})["bookmarks"]["edges"][0]["node"]["note"] == "good"
    page = admin.client.ok(BOOKMARKS, {"first": 1})["bookmarks"]
    rest = admin.client.ok(BOOKMARKS, {"first": 1, "after": page["pageInfo"]["endCursor"]})["bookmarks"]
    assert rest["edges"][0]["node"]["note"] == "start here"
    assert rest["pageInfo"]["hasNextPage"] is False
    # Another participant's bookmarks are their own.
    assert other.client.ok(BOOKMARKS)["bookmarks"]["totalCount"] == 0
    assert other.client.code(UNBOOKMARK, {"m": root}) == "NOT_FOUND"
    assert admin.client.ok(UNBOOKMARK, {"m": root}) == {"bookmarkRemove": True}
    assert admin.client.ok(BOOKMARKS, {"c": cid})["bookmarks"]["totalCount"] == 1


def test_bookmarks_follow_access(admin: Actor, make_user: Callable[..., Actor]) -> None:
    member = make_user(admin)
    stranger = make_user(admin)
    cid = create_conversation(admin, "talk")
    root = start_thread(admin, cid, "secret")
    assert stranger.client.code(BOOKMARK, {"m": root}) == "NOT_FOUND"
    assert stranger.client.code(BOOKMARKS, {"c": cid}) == "NOT_FOUND"
    join(admin, member, cid)
    member.client.ok(BOOKMARK, {"m": root, "n": "mine"})
    assert member.client.ok(BOOKMARKS)["bookmarks"]["totalCount"] == 1
    # Removed from the conversation: the bookmark no longer shows (nor its message).
    admin.client.ok(
        "mutation($c: ID!, $u: ID!) { participantRemove(conversationId: $c, userId: $u) }",
        {"c": cid, "u": member.user_id},
    )
    assert member.client.ok(BOOKMARKS)["bookmarks"] == {
        "totalCount": 0,
        "edges": [],
        "pageInfo": {"hasNextPage": False, "endCursor": None},
    }
    assert admin.client.code(BOOKMARK, {"m": root, "n": "x" * 2001}) == "BAD_USER_INPUT"
