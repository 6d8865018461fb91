"""Per-user bounds of pins and bookmarks count what the user can see and remove."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests import harness
from tests.api import create_conversation, join, start_thread
from tests.harness import Actor, Client, Loop, ServerThread

PIN = "mutation($c: ID!) { conversationPin(conversationId: $c) { id pinPosition } }"
BOOKMARK = "mutation($m: ID!) { bookmarkSet(messageId: $m) { id } }"
REMOVE = "mutation($c: ID!, $u: ID!) { participantRemove(conversationId: $c, userId: $u) }"


def member_of(admin: Actor, server: ServerThread) -> Actor:
    user = admin.client.ok(
        "mutation($i: UserCreateInput!) { userCreate(input: $i) { id } }",
        {"i": {"email": f"{harness.unique('u')}@example.com", "role": "MEMBER"}},
    )["userCreate"]
    key = admin.client.ok(
        'mutation($u: ID!) { apiKeyCreate(userId: $u, name: "test") { secret } }', {"u": user["id"]}
    )["apiKeyCreate"]["secret"]
    return Actor(admin.tenant_id, user["id"], key, Client(server.url, key))


@pytest.fixture(scope="module")
def bounded(dsn: str) -> Iterator[ServerThread]:
    srv = ServerThread(harness.test_settings(dsn, migrate_on_start=False, pins_max=2, bookmarks_max=1))
    srv.start()
    yield srv
    srv.stop()


def test_pins_and_bookmarks_in_conversations_one_was_removed_from_hold_no_places(
    bounded: ServerThread, loop: Loop, dsn: str
) -> None:
    """Removed from the conversations they pinned and bookmarked in, a member could see and remove none of those
    (unpinning and unbookmarking need read access) but they still filled the bounds: no pin or bookmark ever again."""
    owner = harness.create_admin(loop, dsn, bounded.url)
    member = member_of(owner, bounded)
    try:
        shared = [create_conversation(owner, f"shared {n}") for n in range(2)]
        root = start_thread(owner, shared[0], "read once")
        for conversation in shared:
            join(owner, member, conversation)
            member.client.ok(PIN, {"c": conversation})
        member.client.ok(BOOKMARK, {"m": root})
        for conversation in shared:
            owner.client.ok(REMOVE, {"c": conversation, "u": member.user_id})
        own = create_conversation(member, "mine")
        assert member.client.ok(PIN, {"c": own})["conversationPin"]["pinPosition"] == 0
        member.client.ok(BOOKMARK, {"m": start_thread(member, own, "mine")})
        # The bounds still hold for what can be seen.
        other = create_conversation(member, "mine too")
        member.client.ok(PIN, {"c": other})
        error = member.client.error(PIN, {"c": create_conversation(member, "one more")})
        assert error["extensions"] == {"code": "BAD_USER_INPUT", "argument": "conversationId", "limit": 2}
        error = member.client.error(BOOKMARK, {"m": start_thread(member, other, "one more")})
        assert error["extensions"] == {"code": "BAD_USER_INPUT", "argument": "messageId", "limit": 1}
    finally:
        owner.client.close()
        member.client.close()
