"""Reading the event log: the hub's commit-safe tail, replay for `since`, and retention."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from threadline.db import Database, Executor

EVENT_COLUMNS = "id, tenant_id, conversation_id, root_id, recipient_id, type, payload, created_at"


@dataclass(frozen=True, slots=True)
class LoggedEvent:
    id: int
    tenant_id: uuid.UUID
    conversation_id: uuid.UUID | None
    root_id: uuid.UUID | None
    recipient_id: uuid.UUID | None
    type: str
    payload: dict[str, Any]
    created_at: datetime


def _event(row: Any) -> LoggedEvent:
    return LoggedEvent(
        row["id"],
        row["tenant_id"],
        row["conversation_id"],
        row["root_id"],
        row["recipient_id"],
        row["type"],
        row["payload"],
        row["created_at"],
    )


@dataclass(frozen=True)
class Tail:
    events: list[LoggedEvent]
    # Transactions holding the publish lock, read after the events' snapshot (see read_tail).
    publishers: frozenset[str]


async def read_tail(db: Database, after: int, limit: int) -> Tail:
    """Committed events after `after`, and the transactions holding the publish lock when they were read.

    One statement (one round trip): its snapshot is taken when it starts, and pg_locks is read live
    while it runs, so the holders are read after the events' snapshot: any writer that drew an id below
    the highest id read and had not committed by then is among them, unless it ended in between (and
    then the next read sees its event)."""
    from threadline.events.publish import PUBLISH_LOCK

    rows = await db.fetch(
        f"""SELECT p.publishers, e.* FROM (
                SELECT array(SELECT virtualtransaction FROM pg_locks
                             WHERE locktype = 'advisory' AND classid = 0 AND objid = $3 AND objsubid = 1
                               AND granted) AS publishers
            ) p
            LEFT JOIN LATERAL (
                SELECT {EVENT_COLUMNS} FROM stream_event WHERE id > $1 ORDER BY id LIMIT $2
            ) e ON true
            ORDER BY e.id""",
        after,
        limit,
        PUBLISH_LOCK,
    )
    events = [_event(r) for r in rows if r["id"] is not None]
    return Tail(events, frozenset(rows[0]["publishers"]) if rows else frozenset())


async def current_position(db: Executor) -> int:
    """The highest id handed out so far (a safe starting point for a new hub: it replays nothing)."""
    # A sequence that was never used reports last_value 1 with is_called false: nothing handed out yet.
    value = await db.fetchval(
        "SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END FROM stream_event_id_seq"
    )
    return int(value or 0)


async def replay(
    db: Executor,
    tenant_id: uuid.UUID,
    *,
    after: int,
    through: int,
    conversation_ids: list[uuid.UUID] | None,
    recipient_id: uuid.UUID,
    limit: int,
) -> list[LoggedEvent]:
    """A subscriber's missed events in (after, through]: its conversations' events, plus those addressed to it."""
    if conversation_ids is None:
        rows = await db.fetch(
            f"""SELECT {EVENT_COLUMNS} FROM stream_event
                WHERE tenant_id = $1 AND id > $2 AND id <= $3 AND recipient_id = $4
                ORDER BY id LIMIT $5""",
            tenant_id,
            after,
            through,
            recipient_id,
            limit,
        )
    else:
        rows = await db.fetch(
            f"""SELECT {EVENT_COLUMNS} FROM stream_event
                WHERE tenant_id = $1 AND id > $2 AND id <= $3
                  AND (conversation_id = ANY($4::uuid[]) OR recipient_id = $5)
                ORDER BY id LIMIT $6""",
            tenant_id,
            after,
            through,
            conversation_ids,
            recipient_id,
            limit,
        )
    return [_event(r) for r in rows]


async def pruned_through(db: Executor) -> int:
    value = await db.fetchval("SELECT value FROM stream_state WHERE id = 'pruned_through'")
    return int(value or 0)


async def prune(db: Database, older_than_days: float, batch: int = 10_000) -> int:
    """Delete events older than the retention age, remembering the highest id removed."""
    removed = 0
    while True:
        async with db.transaction() as tx:
            row = await tx.fetchrow(
                """WITH gone AS (
                       DELETE FROM stream_event WHERE id IN (
                           SELECT id FROM stream_event WHERE created_at < now() - make_interval(secs => $1)
                           ORDER BY id LIMIT $2)
                       RETURNING id)
                   SELECT count(*) AS n, max(id) AS top FROM gone""",
                older_than_days * 86400.0,
                batch,
            )
            assert row is not None
            if row["n"]:
                await tx.execute(
                    """INSERT INTO stream_state (id, value) VALUES ('pruned_through', $1)
                       ON CONFLICT (id) DO UPDATE SET value = greatest(stream_state.value, EXCLUDED.value)""",
                    row["top"],
                )
        removed += int(row["n"])
        if row["n"] < batch:
            return removed
