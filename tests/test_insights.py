"""Insights over GraphQL on a known data set: each scope sees exactly its conversations."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import asyncpg
import pytest

from tests.api import create_conversation
from tests.harness import Actor, Loop

INSIGHTS = """query($from: DateTime, $to: DateTime) { insights(from: $from, to: $to) {
  from to scope conversationCount messageCount averageMessagesPerConversation
  conversationsPerDay { day count }
  tokenUsagePerDay { day messages promptTokens completionTokens totalTokens }
  popularTags { tag count }
  providerDistribution { provider count share }
  peakUsageHours { hour count } } }"""
START = "mutation($c: ID!, $i: MessageInput!) { threadStart(conversationId: $c, input: $i) { id } }"
REPLY = "mutation($p: ID!, $i: MessageInput!) { messageReply(parentId: $p, input: $i) { id } }"
WINDOW = {"from": "2026-01-05T00:00:00Z", "to": "2026-01-08T00:00:00Z"}


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def message(content: str, usage: tuple[int, int] | None = None) -> dict[str, Any]:
    if usage is None:
        return {"content": content}
    return {
        "content": content,
        "role": "ASSISTANT",
        "usage": {"promptTokens": usage[0], "completionTokens": usage[1]},
    }


class DataSet:
    """Conversations created through the API, then moved to fixed times (no API writes the past)."""

    def __init__(self, loop: Loop, dsn: str) -> None:
        self.loop, self.dsn = loop, dsn
        self.moves: list[tuple[str, str, datetime]] = []

    def conversation(self, actor: Actor, title: str, created: str, **fields: Any) -> str:
        cid = create_conversation(actor, title, **fields)
        self.moves.append(("conversation", cid, at(created)))
        return cid

    def thread(self, actor: Actor, conversation: str, *messages: tuple[str, dict[str, Any]]) -> None:
        parent = None
        for when, body in messages:
            if parent is None:
                parent = actor.client.ok(START, {"c": conversation, "i": body})["threadStart"]["id"]
            else:
                parent = actor.client.ok(REPLY, {"p": parent, "i": body})["messageReply"]["id"]
            self.moves.append(("message", parent, at(when)))

    def commit(self) -> None:
        async def run() -> None:
            conn = await asyncpg.connect(self.dsn)
            try:
                for table, public_id, when in self.moves:
                    extra = ", last_activity_at = $1" if table == "conversation" else ""
                    await conn.execute(
                        f"UPDATE {table} SET created_at = $1{extra} WHERE id = $2::uuid", when, public_id[4:]
                    )
            finally:
                await conn.close()

        self.loop.run(run())


@pytest.fixture
def people(
    admin: Actor, make_user: Callable[..., Actor], make_tenant: Callable[..., Actor], loop: Loop, dsn: str
) -> dict[str, Actor]:
    manager = make_user(admin, role="MANAGER", team="red")
    red = make_user(admin, team="red")
    blue = make_user(admin, team="blue")
    stranger = make_tenant()
    data = DataSet(loop, dsn)

    a1 = data.conversation(red, "a1", "2026-01-05T09:10:00Z", aiProvider="openai", tags=["ops", "prod"])
    data.thread(
        red,
        a1,
        ("2026-01-05T09:10:00Z", message("question")),
        ("2026-01-05T09:20:00Z", message("answer", (100, 50))),
        ("2026-01-06T14:00:00Z", message("follow-up", (10, 5))),
    )
    a2 = data.conversation(red, "a2", "2026-01-06T14:30:00Z", aiProvider="anthropic", tags=["ops"])
    data.thread(red, a2, ("2026-01-06T14:30:00Z", message("hello")))
    b1 = data.conversation(blue, "b1", "2026-01-05T09:40:00Z", aiProvider="openai", tags=["secret"])
    data.thread(blue, b1, ("2026-01-05T09:40:00Z", message("blue answer", (1000, 1000))))
    m1 = data.conversation(manager, "m1", "2026-01-07T23:59:00Z")
    data.thread(
        manager, m1, ("2026-01-07T23:59:00Z", message("one")), ("2026-01-07T23:59:30Z", message("two"))
    )
    gone = data.conversation(admin, "gone", "2026-01-06T10:00:00Z", tags=["ops"])
    data.thread(admin, gone, ("2026-01-06T10:00:00Z", message("deleted later", (7, 7))))
    admin.client.ok("mutation($id: ID!) { conversationDelete(id: $id) { id } }", {"id": gone})
    old = data.conversation(admin, "old", "2025-12-01T10:00:00Z", tags=["ops"])
    data.thread(admin, old, ("2025-12-01T10:00:00Z", message("long ago", (3, 3))))
    foreign = data.conversation(stranger, "foreign", "2026-01-05T12:00:00Z", tags=["ops"])
    data.thread(stranger, foreign, ("2026-01-05T12:00:00Z", message("elsewhere", (9, 9))))
    data.commit()
    return {"admin": admin, "manager": manager, "red": red, "blue": blue}


def insights(actor: Actor, window: dict[str, str] | None = None) -> dict[str, Any]:
    result: dict[str, Any] = actor.client.ok(INSIGHTS, WINDOW if window is None else window)["insights"]
    return result


def usage(day: str, messages: int, prompt: int, completion: int) -> dict[str, Any]:
    return {
        "day": day,
        "messages": messages,
        "promptTokens": prompt,
        "completionTokens": completion,
        "totalTokens": prompt + completion,
    }


def test_member_sees_own_conversations(people: dict[str, Actor]) -> None:
    assert insights(people["red"]) == {
        "from": "2026-01-05T00:00:00+00:00",
        "to": "2026-01-08T00:00:00+00:00",
        "scope": "OWN",
        "conversationCount": 2,
        "messageCount": 4,
        "averageMessagesPerConversation": 2.0,
        "conversationsPerDay": [
            {"day": "2026-01-05", "count": 1},
            {"day": "2026-01-06", "count": 1},
            {"day": "2026-01-07", "count": 0},
        ],
        "tokenUsagePerDay": [
            usage("2026-01-05", 2, 100, 50),
            usage("2026-01-06", 2, 10, 5),
            usage("2026-01-07", 0, 0, 0),
        ],
        "popularTags": [{"tag": "ops", "count": 2}, {"tag": "prod", "count": 1}],
        "providerDistribution": [
            {"provider": "anthropic", "count": 1, "share": 0.5},
            {"provider": "openai", "count": 1, "share": 0.5},
        ],
        "peakUsageHours": [{"hour": 9, "count": 2}, {"hour": 14, "count": 2}],
    }


def test_manager_sees_the_team(people: dict[str, Actor]) -> None:
    result = insights(people["manager"])
    assert result["scope"] == "TEAM"
    assert result["conversationCount"] == 3
    assert result["messageCount"] == 6
    assert result["averageMessagesPerConversation"] == 2.0
    assert [d["count"] for d in result["conversationsPerDay"]] == [1, 1, 1]
    assert result["tokenUsagePerDay"] == [
        usage("2026-01-05", 2, 100, 50),
        usage("2026-01-06", 2, 10, 5),
        usage("2026-01-07", 2, 0, 0),
    ]
    assert result["providerDistribution"] == [
        {"provider": "anthropic", "count": 1, "share": pytest.approx(1 / 3)},
        {"provider": "openai", "count": 1, "share": pytest.approx(1 / 3)},
        {"provider": None, "count": 1, "share": pytest.approx(1 / 3)},
    ]
    assert result["peakUsageHours"] == [
        {"hour": 9, "count": 2},
        {"hour": 14, "count": 2},
        {"hour": 23, "count": 2},
    ]


def test_admin_sees_the_tenant_without_deleted_or_foreign_conversations(people: dict[str, Actor]) -> None:
    result = insights(people["admin"])
    assert result["scope"] == "TENANT"
    assert result["conversationCount"] == 4
    assert result["messageCount"] == 7
    assert result["averageMessagesPerConversation"] == 1.75
    assert [d["count"] for d in result["conversationsPerDay"]] == [2, 1, 1]
    assert result["tokenUsagePerDay"] == [
        usage("2026-01-05", 3, 1100, 1050),
        usage("2026-01-06", 2, 10, 5),
        usage("2026-01-07", 2, 0, 0),
    ]
    assert result["popularTags"] == [
        {"tag": "ops", "count": 2},
        {"tag": "prod", "count": 1},
        {"tag": "secret", "count": 1},
    ]
    assert result["providerDistribution"] == [
        {"provider": "openai", "count": 2, "share": 0.5},
        {"provider": "anthropic", "count": 1, "share": 0.25},
        {"provider": None, "count": 1, "share": 0.25},
    ]
    assert result["peakUsageHours"] == [
        {"hour": 9, "count": 3},
        {"hour": 14, "count": 2},
        {"hour": 23, "count": 2},
    ]


def test_window_bounds_are_start_inclusive_and_end_exclusive(people: dict[str, Actor]) -> None:
    result = insights(people["admin"], {"from": "2026-01-05T09:40:00Z", "to": "2026-01-07T23:59:00Z"})
    assert result["conversationCount"] == 2  # b1 at the start counts, m1 at the end does not
    assert [d["day"] for d in result["conversationsPerDay"]] == ["2026-01-05", "2026-01-06", "2026-01-07"]


def test_an_empty_window_has_zeros_and_no_division_by_zero(people: dict[str, Actor]) -> None:
    result = insights(people["blue"], {"from": "2026-02-01T00:00:00Z", "to": "2026-02-03T00:00:00Z"})
    assert result["conversationCount"] == 0
    assert result["averageMessagesPerConversation"] == 0.0
    assert result["conversationsPerDay"] == [
        {"day": "2026-02-01", "count": 0},
        {"day": "2026-02-02", "count": 0},
    ]
    assert (
        result["providerDistribution"] == []
        and result["peakUsageHours"] == []
        and result["popularTags"] == []
    )


def test_default_window_is_the_last_thirty_days(admin: Actor) -> None:
    result = admin.client.ok("{ insights { from to conversationsPerDay { day } } }")["insights"]
    assert (at(result["to"]) - at(result["from"])).days == 30
    assert len(result["conversationsPerDay"]) == 31


def test_bad_windows_are_bad_input(admin: Actor, anonymous: Any) -> None:
    assert (
        admin.client.code(INSIGHTS, {"from": "2026-01-08T00:00:00Z", "to": "2026-01-05T00:00:00Z"})
        == "BAD_USER_INPUT"
    )
    assert (
        admin.client.code(INSIGHTS, {"from": "2024-01-01T00:00:00Z", "to": "2026-01-05T00:00:00Z"})
        == "BAD_USER_INPUT"
    )
    assert admin.client.code("{ insights { popularTags(first: 101) { tag } } }") == "BAD_USER_INPUT"
    assert anonymous.code(INSIGHTS, WINDOW) == "UNAUTHENTICATED"
