"""An all-or-nothing import (`conversationImport`, one transaction) publishes its events in one statement before
its commit, not batch by batch: an event id drawn holds back every hub's cursor for tenant-wide streams until its
transaction ends (events.publish's floor lock), and this transaction lasts the whole import. And a nested
`deferring` block that raises drops what it announced (a batch rolled back to its savepoint announces nothing)."""

from __future__ import annotations

import functools
import uuid

import asyncpg

from tests.harness import Actor, Loop
from tests.test_import_atomic import _claude, paused_import
from tests.test_porting_import import IMPORT, sql
from threadline.events import publish as events_publish
from threadline.events.kinds import EventType

FLOOR_LOCKS = """SELECT count(*) FROM pg_locks
    WHERE locktype = 'advisory' AND objsubid = 1 AND (classid::bigint >> 16) = $1 AND pid = $2"""


def test_an_all_or_nothing_import_holds_no_publish_floor_until_its_end(
    admin: Actor, loop: Loop, dsn: str
) -> None:
    prefix = f"floor-{uuid.uuid4()}"
    # An earlier import, grown in the new input's first batch: its merge announces the new messages.
    admin.client.ok(IMPORT, {"i": {"format": "CLAUDE", "data": [_claude(f"{prefix}-000", "q", "a")]}})
    data = [_claude(f"{prefix}-000", "q", "a", "a follow-up", "its answer")]
    data += [_claude(f"{prefix}-{i:03}", f"question {i}") for i in range(1, 60)]
    data[55] = _claude(f"{prefix}-055", "pause here")  # in the second batch (50 a batch)

    async def floors_held(watcher: asyncpg.Connection, pid: int) -> int:
        return int(await watcher.fetchval(FLOOR_LOCKS, events_publish.FLOOR_TAG, pid))

    call = functools.partial(admin.client.raw, IMPORT, {"i": {"format": "CLAUDE", "data": data}})
    floors, body = loop.run(paused_import(dsn, call, floors_held))
    assert "errors" not in body, body
    assert len(body["data"]["conversationImport"]) == 60
    assert floors == 0  # the first batch's merge drew no event id while the import was still open
    # Its events went out with the commit: the merge's new messages are announced.
    (merged,) = sql(loop, dsn, "SELECT id FROM conversation WHERE title = $1", f"{prefix}-000")
    announced = sql(loop, dsn, "SELECT type FROM stream_event WHERE conversation_id = $1", merged["id"])
    assert "thread.activity" in {r["type"] for r in announced}


def test_a_nested_deferring_block_that_raises_announces_nothing(loop: Loop, dsn: str, admin: Actor) -> None:
    (tenant,) = sql(loop, dsn, "SELECT id FROM tenant LIMIT 1")
    marker = f"nested-{uuid.uuid4()}"

    async def run() -> list[str]:
        conn = await asyncpg.connect(dsn)
        try:
            async with conn.transaction():
                async with events_publish.deferring(conn):
                    await events_publish.publish(
                        conn,
                        tenant["id"],
                        EventType.PRESENCE_UPDATE,
                        conversation_id=None,
                        payload={"m": marker},
                    )
                    try:
                        async with conn.transaction(), events_publish.deferring(conn):  # a savepoint
                            await events_publish.publish(
                                conn,
                                tenant["id"],
                                EventType.PRESENCE_UPDATE,
                                conversation_id=None,
                                payload={"m": marker, "undone": True},
                            )
                            raise RuntimeError("the batch fails")
                    except RuntimeError:
                        pass
            rows = await conn.fetch(
                "SELECT payload::text AS p FROM stream_event WHERE payload->>'m' = $1", marker
            )
            return [r["p"] for r in rows]
        finally:
            await conn.close()

    payloads = loop.run(run())
    assert len(payloads) == 1 and "undone" not in payloads[0]
