"""Knowledge insights (issue 19 item 4) through the API: most discussed topics with example conversations,
conversation length, and knowledge gaps (down-rated, regenerated, abandoned), each only over what the caller
may read (OWN for members, TENANT for admins; other tenants never)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from tests.api import create_conversation, reply, start_thread
from tests.harness import Actor, Loop

TOPICS = """query($n: Int) { insights { topics(first: $n) { keyword conversationCount messageCount
  examples { id title } } } }"""
LENGTH = """{ insights { conversationLength { conversations averageMessages medianMessages
  averageDurationSeconds medianDurationSeconds } } }"""
GAPS = """query($n: Int) { insights { knowledgeGaps(first: $n) { question { id content conversationId }
  reasons answerCount downRatings } } }"""
RATE = "mutation($m: ID!) { messageFeedbackSet(messageId: $m, rating: DOWN) { id } }"
RUN = "mutation($m: ID!) { runCreate(input: {messageId: $m}) { id } }"
READ_RUN = "query($id: ID!) { run(id: $id) { status output { id } } }"
DELETE = "mutation($id: ID!) { messageDelete(id: $id) { id } }"


def talk(actor: Actor, title: str, *turns: str) -> str:
    conversation = create_conversation(actor, title)
    parent = start_thread(actor, conversation, turns[0])
    for i, content in enumerate(turns[1:]):
        parent = reply(actor, parent, content, "ASSISTANT" if i % 2 == 0 else "USER")
    return conversation


def test_topics_count_conversations_and_show_only_examples_the_caller_may_read(
    admin: Actor, make_user: Any, make_tenant: Any
) -> None:
    member = make_user(admin)
    first = talk(member, "one", "Replication lag on the replica again", "Check the slots.")
    second = talk(member, "two", "Is replication safe during failover? Replication worries me.", "Mostly.")
    hidden = talk(admin, "admin only", "Replication of the payroll database", "Done nightly.")
    stranger = make_tenant()
    talk(stranger, "theirs", "Replication everywhere, replication always", "Yes.")

    mine = member.client.ok(TOPICS, {"n": 3})["insights"]["topics"]
    assert mine[0] == {
        "keyword": "replication",
        "conversationCount": 2,
        "messageCount": 2,
        "examples": [{"id": second, "title": "two"}, {"id": first, "title": "one"}],
    }
    # Keywords named once (lag, replica, failover, ...) are no topic; the admin's words never reach the member.
    assert [t["keyword"] for t in mine] == ["replication"]

    everything = admin.client.ok(TOPICS, {"n": 10})["insights"]["topics"]
    top = everything[0]
    assert (top["keyword"], top["conversationCount"], top["messageCount"]) == ("replication", 3, 3)
    assert [e["id"] for e in top["examples"]] == [hidden, second, first]
    assert admin.client.error(TOPICS, {"n": 51})["extensions"]["code"] == "BAD_USER_INPUT"


def _set_times(loop: Loop, dsn: str, conversation: str, created: datetime, last: datetime) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(
                "UPDATE conversation SET created_at = $1, last_activity_at = $2 WHERE id = $3::uuid",
                created,
                last,
                conversation[4:],
            )
        finally:
            await conn.close()

    loop.run(run())


def test_conversation_length_in_messages_and_duration(
    admin: Actor, make_user: Any, loop: Loop, dsn: str
) -> None:
    member = make_user(admin)
    short = talk(member, "short", "hello there", "hi")
    long = talk(member, "long", "q1", "a1", "q2", "a2", "q3", "a3")
    other = talk(admin, "admin's", "x", "y", "z", "w")
    start = datetime.now(UTC) - timedelta(days=2)
    _set_times(loop, dsn, short, start, start + timedelta(seconds=60))
    _set_times(loop, dsn, long, start, start + timedelta(seconds=300))
    _set_times(loop, dsn, other, start, start + timedelta(seconds=3000))

    assert member.client.ok(LENGTH)["insights"]["conversationLength"] == {
        "conversations": 2,
        "averageMessages": 4.0,
        "medianMessages": 4.0,
        "averageDurationSeconds": 180.0,
        "medianDurationSeconds": 180.0,
    }
    assert admin.client.ok(LENGTH)["insights"]["conversationLength"] == {
        "conversations": 3,
        "averageMessages": 4.0,
        "medianMessages": 4.0,
        "averageDurationSeconds": 1120.0,
        "medianDurationSeconds": 300.0,
    }


def _finished_run(actor: Actor, message: str) -> dict[str, Any]:
    run_id = actor.client.ok(RUN, {"m": message})["runCreate"]["id"]
    deadline = time.monotonic() + 30
    while True:
        run = actor.client.ok(READ_RUN, {"id": run_id})["run"]
        if run["status"] in ("COMPLETED", "FAILED", "CANCELLED", "EXPIRED", "INCOMPLETE"):
            return run  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, run
        time.sleep(0.05)


def test_knowledge_gaps_are_down_rated_regenerated_or_abandoned_questions_the_caller_may_read(
    admin: Actor, make_user: Any, make_tenant: Any
) -> None:
    member = make_user(admin)
    conversation = create_conversation(member, "gaps")
    rated = start_thread(member, conversation, "Why is the build slow?")
    member.client.ok(RATE, {"m": reply(member, rated, "Because.", "ASSISTANT")})
    regenerated = start_thread(member, conversation, "How do I pin a dependency?")
    reply(member, regenerated, "Use a lock file.", "ASSISTANT")
    reply(member, regenerated, "Pin it in pyproject.", "ASSISTANT")
    abandoned = start_thread(member, conversation, "Explain the outage")
    run = _finished_run(member, abandoned)
    assert run["status"] == "COMPLETED"
    member.client.ok(DELETE, {"id": run["output"]["id"]})
    fine = start_thread(member, conversation, "What time is it?")
    reply(member, fine, "Noon.", "ASSISTANT")
    unanswered_without_run = start_thread(member, conversation, "Just a note to self")
    assert unanswered_without_run
    hidden = create_conversation(admin, "admin's")
    admin_question = start_thread(admin, hidden, "Admin question?")
    admin.client.ok(RATE, {"m": reply(admin, admin_question, "Admin answer.", "ASSISTANT")})
    stranger = make_tenant()
    theirs = create_conversation(stranger, "theirs")
    stranger_question = start_thread(stranger, theirs, "Their question?")
    stranger.client.ok(RATE, {"m": reply(stranger, stranger_question, "Theirs.", "ASSISTANT")})

    gaps = member.client.ok(GAPS, {"n": 10})["insights"]["knowledgeGaps"]
    assert [(g["question"]["id"], g["reasons"], g["answerCount"], g["downRatings"]) for g in gaps] == [
        (rated, ["DOWN_RATED"], 1, 1),
        (regenerated, ["REGENERATED"], 2, 0),
        (abandoned, ["ABANDONED"], 0, 0),
    ]
    assert gaps[0]["question"] == {
        "id": rated,
        "content": "Why is the build slow?",
        "conversationId": conversation,
    }

    everyone = admin.client.ok(GAPS, {"n": 2})["insights"]["knowledgeGaps"]
    assert [g["question"]["id"] for g in everyone] == [admin_question, rated]
    assert admin.client.error(GAPS, {"n": 51})["extensions"]["code"] == "BAD_USER_INPUT"
