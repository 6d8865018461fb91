"""An all-or-nothing import (`conversationImport`, one transaction) publishes its events in one statement before
its commit, not batch by batch: an event id drawn holds back every hub's cursor for tenant-wide streams until its
transaction ends (events.publish's floor lock), and this transaction lasts the whole import. And a nested
`deferring` block that raises drops what it announced (a batch rolled back to its savepoint announces nothing)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg

from tests.harness import Actor, Loop
from tests.test_import_atomic import _claude
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
    key = 424_242_002

    async def run() -> tuple[int, Any]:
        holder = await asyncpg.connect(dsn)
        watcher = await asyncpg.connect(dsn)
        try:
            await holder.execute(
                f"""CREATE FUNCTION test_floor_pause() RETURNS trigger LANGUAGE plpgsql AS $$
                    BEGIN PERFORM pg_advisory_xact_lock({key}); RETURN NEW; END $$;
                    CREATE TRIGGER test_floor_pause BEFORE INSERT ON message FOR EACH ROW
                        WHEN (NEW.content LIKE 'pause%') EXECUTE FUNCTION test_floor_pause()"""
            )
            await holder.execute("SELECT pg_advisory_lock($1)", key)
            call = asyncio.get_running_loop().run_in_executor(
                None, lambda: admin.client.raw(IMPORT, {"i": {"format": "CLAUDE", "data": data}})
            )
            pid = None
            for _ in range(600):  # until the import waits on the lock (a bound, not a timing assertion)
                pid = await watcher.fetchval(
                    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objid = $1 AND NOT granted", key
                )
                if pid is not None:
                    break
                await asyncio.sleep(0.1)
            assert pid is not None
            floors = await watcher.fetchval(FLOOR_LOCKS, events_publish.FLOOR_TAG, pid)
            await holder.execute("SELECT pg_advisory_unlock($1)", key)
            return int(floors), await call
        finally:
            await holder.execute("DROP TRIGGER IF EXISTS test_floor_pause ON message")
            await holder.execute("DROP FUNCTION IF EXISTS test_floor_pause()")
            await holder.close()
            await watcher.close()

    floors, body = loop.run(run())
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
