"""What titles, summaries, tags and the knowledge insights cost (issue 19 items 3, 4).

    .venv/bin/python bench/enrichment.py [--conversations 2000] [--rounds 5]

1. The write path. Every message bumps `conversation.message_count`; the enrichment trigger queues jobs at the
   first exchange and requeues a waiting summary when the count reaches `enrichment_due`, and its WHEN clause
   lets no other write call it. The bench times that
   UPDATE (the statement `touch_activity` sends) over `--conversations` conversations, in three states
   (before the first exchange, crossing it, and steady with a COMPLETED summary waiting), with the trigger
   enabled and, as the baseline measured in the same run, disabled (ALTER TABLE ... DISABLE TRIGGER).
2. The insights. Over the same conversations (a question and an answer each, a tenth of answers rated DOWN, a
   tenth regenerated, words drawn from a 300-word vocabulary), `topics`, `knowledgeGaps` and
   `conversationLength` through the insight service, as the tenant's admin, against the existing
   `messageActivity` (the per-day and per-hour counts) on the same window: median of `--rounds`.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from fixtures import Database, create_tenant
from threadline.auth.principal import Principal, Role
from threadline.db import Database as Pool
from threadline.search import insight_service
from threadline.threads.paths import encode_rank

VOCABULARY = [f"topic{i:03d}" for i in range(300)]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--conversations", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    database = Database()
    dsn = database.start()
    try:
        caller = create_tenant(dsn)
        asyncio.run(run(dsn, caller.tenant_id, caller.user_id, args.conversations, args.rounds))
    finally:
        database.stop()


async def seed_conversations(
    conn: asyncpg.Connection, tenant_id: uuid.UUID, user_id: uuid.UUID, n: int
) -> list[uuid.UUID]:
    ids = [uuid.uuid4() for _ in range(n)]
    now = datetime.now(UTC)
    await conn.executemany(
        """INSERT INTO conversation (id, tenant_id, owner_id, title, title_source, created_at, last_activity_at)
           VALUES ($1, $2, $3, 'New conversation', 'DEFAULT', $4, $4)""",
        [(cid, tenant_id, user_id, now - timedelta(minutes=i % 600)) for i, cid in enumerate(ids)],
    )
    await conn.executemany(
        "INSERT INTO participant (id, tenant_id, conversation_id, user_id, role) VALUES ($1, $2, $3, $4, 'OWNER')",
        [(uuid.uuid4(), tenant_id, cid, user_id) for cid in ids],
    )
    return ids


async def timed_updates(conn: asyncpg.Connection, tenant_id: uuid.UUID, ids: list[uuid.UUID]) -> float:
    """Microseconds per touch_activity UPDATE, one transaction each (as the API sends them)."""
    started = time.perf_counter()
    for cid in ids:
        async with conn.transaction():
            await conn.execute(
                """UPDATE conversation SET message_count = message_count + 1, token_count = token_count + 1,
                       last_activity_at = greatest(last_activity_at, now()), updated_at = now()
                   WHERE tenant_id = $1 AND id = $2""",
                tenant_id,
                cid,
            )
    return (time.perf_counter() - started) / len(ids) * 1e6


async def write_path(conn: asyncpg.Connection, tenant_id: uuid.UUID, user_id: uuid.UUID, n: int) -> None:
    print(f"1. touch_activity UPDATE, {n} conversations per state, one transaction each (us per statement)")
    print(f"{'state':<44} {'trigger off':>12} {'trigger on':>12} {'ratio':>7}")
    on = await seed_conversations(conn, tenant_id, user_id, n)  # written with the trigger enabled
    off = await seed_conversations(conn, tenant_id, user_id, n)  # the baseline: the same writes without it
    chunk = 200  # on and off alternate every `chunk` writes, so the machine's load drifts into both alike

    async def switch(enabled: bool) -> None:
        verb = "ENABLE" if enabled else "DISABLE"
        await conn.execute(f"ALTER TABLE conversation {verb} TRIGGER conversation_enrichment")

    for name in (
        "0 -> 1 message (no job)",
        "1 -> 2 messages (first exchange: 3 jobs)",
        "2 -> 3 messages (summary waits for 22)",
    ):
        if name.startswith("2 -> 3"):  # what the worker leaves after the first exchange: done, waiting for 22
            await conn.execute(
                "UPDATE enrichment_job SET status = 'COMPLETED', due_messages = 22 WHERE tenant_id = $1",
                tenant_id,
            )
            await conn.execute(
                "UPDATE conversation SET enrichment_due = 22 WHERE tenant_id = $1 AND id = ANY($2::uuid[])",
                tenant_id,
                on,
            )
        spent = {True: 0.0, False: 0.0}
        for start in range(0, n, chunk):
            for enabled, ids in ((True, on), (False, off)):
                await switch(enabled)
                spent[enabled] += await timed_updates(conn, tenant_id, ids[start : start + chunk]) * len(
                    ids[start : start + chunk]
                )
        await switch(True)
        with_trigger, without = spent[True] / n, spent[False] / n
        print(f"{name:<44} {without:>12.1f} {with_trigger:>12.1f} {with_trigger / without:>6.2f}x")


async def seed_exchanges(
    conn: asyncpg.Connection, tenant_id: uuid.UUID, user_id: uuid.UUID, ids: list[uuid.UUID]
) -> int:
    rng = random.Random(19)
    messages: list[tuple[Any, ...]] = []
    feedback: list[tuple[Any, ...]] = []
    now = datetime.now(UTC)
    seq = 0
    for i, cid in enumerate(ids):
        root = uuid.uuid4()
        words = " ".join(rng.choice(VOCABULARY) for _ in range(12))
        when = now - timedelta(minutes=i % 600)
        seq += 1
        messages.append(
            (root, tenant_id, cid, root, None, 0, encode_rank(0), seq, "USER", f"How do I {words}?", when)
        )
        for rank in range(2 if i % 10 == 1 else 1):
            answer = uuid.uuid4()
            seq += 1
            path = encode_rank(0) + encode_rank(rank)
            messages.append(
                (answer, tenant_id, cid, root, root, 1, path, seq, "ASSISTANT", f"Answer {words}.", when)
            )
            if i % 10 == 0:
                feedback.append((uuid.uuid4(), tenant_id, answer, user_id))
    await conn.executemany(
        """INSERT INTO message (id, tenant_id, conversation_id, root_id, parent_id, depth, path, seq, role, content,
               created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)""",
        messages,
    )
    await conn.executemany(
        "INSERT INTO message_feedback (id, tenant_id, message_id, user_id, rating, reasons) VALUES ($1, $2, $3, $4, 'DOWN', ARRAY[]::varchar[])",
        feedback,
    )
    return len(messages)


async def insights(dsn: str, tenant_id: uuid.UUID, user_id: uuid.UUID, rounds: int) -> None:
    db = await Pool.connect(dsn, 1, 2)
    try:
        admin = Principal(tenant_id, user_id, Role.ADMIN, None)
        window = insight_service.window(None, None)

        async def median(call: Any) -> float:
            samples = []
            for _ in range(rounds):
                started = time.perf_counter()
                await call()
                samples.append((time.perf_counter() - started) * 1000)
            return statistics.median(samples)

        baseline = await median(lambda: insight_service.message_activity(db, admin, window))
        print(f"{'messageActivity (baseline)':<44} {baseline:>9.1f} ms {1:>7.2f}x")
        for name, call in (
            ("topics(first: 10)", lambda: insight_service.topics(db, admin, window, 10)),
            ("knowledgeGaps(first: 10)", lambda: insight_service.knowledge_gaps(db, admin, window, 10)),
            ("conversationLength", lambda: insight_service.conversation_length(db, admin, window)),
        ):
            ms = await median(call)
            print(f"{name:<44} {ms:>9.1f} ms {ms / baseline:>7.2f}x")
    finally:
        await db.close()


async def run(dsn: str, tenant_id: uuid.UUID, user_id: uuid.UUID, n: int, rounds: int) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await write_path(conn, tenant_id, user_id, n)
        await conn.execute("TRUNCATE enrichment_job")
        ids = await seed_conversations(conn, tenant_id, user_id, n)
        count = await seed_exchanges(conn, tenant_id, user_id, ids)
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
    print(f"2. insights over {n} conversations, {count} messages, as the admin (median of {rounds})")
    await insights(dsn, tenant_id, user_id, rounds)


if __name__ == "__main__":
    main()
