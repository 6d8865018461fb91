"""Reading the event log: the hub's commit-safe tail, replay for `since`, and retention."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from threadline.db import Database, Executor
from threadline.events.payloads import EventPayload
from threadline.events.stored import decode

EVENT_COLUMNS = "id, tenant_id, conversation_id, root_id, recipient_id, type, payload, created_at"


@dataclass(frozen=True, slots=True)
class LoggedEvent:
    id: int
    tenant_id: uuid.UUID
    conversation_id: uuid.UUID | None
    root_id: uuid.UUID | None
    recipient_id: uuid.UUID | None
    type: str
    payload: dict[str, Any]  # as stored (events.stored); read it through `data`
    created_at: datetime
    _data: EventPayload | None = field(default=None, init=False, compare=False, repr=False)

    @property
    def data(self) -> EventPayload:
        """The typed payload (events.payloads), decoded once per object: live routing hands one object to
        every subscriber, so the hub and each rendering share the decoding."""
        found = self._data
        if found is None:
            found = decode(self.type, self.payload)
            object.__setattr__(self, "_data", found)
        return found


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
class OpenPublishers:
    """What may still commit, read live (see read_tail): the sequence position, then the open publishers'
    floors (every id they can still commit is above their floor) and the buckets they publish to."""

    position: int
    floors: dict[str, int]  # per transaction that holds a floor lock
    buckets: dict[int, int]  # bucket -> the lowest floor of the transactions holding it

    @property
    def safe(self) -> int:
        """No id at or below this may still commit: every lower id is committed or gone."""
        return min(self.position, *self.floors.values()) if self.floors else self.position

    def safe_for(self, bucket: int) -> int:
        """The same for the ids of one bucket's conversations (and of events of no conversation, bucket 0):
        a transaction publishing to another bucket draws this bucket's ids only after taking its lock,
        which is after this was read, so above `position`."""
        return min(self.position, self.buckets.get(bucket, self.position), self.buckets.get(0, self.position))


NO_PUBLISHERS = OpenPublishers(0, {}, {})


@dataclass(frozen=True)
class Tail:
    events: list[LoggedEvent]
    # The publishers, read after the events' snapshot (see read_tail).
    publishers: OpenPublishers


# The sequence position first, then the publish locks: a transaction whose locks are not seen draws its
# ids after the position was read, so above it. (The lateral subquery refers to the position, so it can
# only run once the position is read; pg_lock_status() runs inside it.)
_PUBLISHERS = """
    SELECT s.position, l.txs, l.floors, l.buckets FROM (
        SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END AS position
        FROM stream_event_id_seq OFFSET 0
    ) s
    CROSS JOIN LATERAL (
        SELECT array_agg(virtualtransaction) AS txs,
               array_agg(CASE WHEN objsubid = 1 THEN ((classid::int8 & 65535) << 32) | objid::int8 END) AS floors,
               array_agg(CASE WHEN objsubid = 2 THEN objid::int8 END) AS buckets
        FROM pg_locks
        WHERE locktype = 'advisory' AND granted AND s.position IS NOT NULL
          AND ((objsubid = 1 AND classid::int8 >> 16 = $1) OR (objsubid = 2 AND classid::int8 = $2))
    ) l"""


def _publishers(row: Any) -> OpenPublishers:
    floors: dict[str, int] = {}
    held: list[tuple[str, int]] = []
    for tx, floor, bucket in zip(row["txs"] or (), row["floors"] or (), row["buckets"] or (), strict=True):
        if floor is not None:
            floors[tx] = min(floor, floors.get(tx, floor))
        else:
            held.append((tx, bucket))
    position = int(row["position"] or 0)
    buckets: dict[int, int] = {}
    for tx, bucket in held:
        # Taken after the floor: a holder without a visible floor is impossible, but stay on the safe side.
        floor = floors.get(tx, 0)
        buckets[bucket] = min(floor, buckets.get(bucket, floor))
    return OpenPublishers(position, floors, buckets)


async def open_publishers(db: Executor) -> OpenPublishers:
    from threadline.events.publish import BUCKET_LOCK, FLOOR_TAG

    return _publishers(await db.fetchrow(_PUBLISHERS, FLOOR_TAG, BUCKET_LOCK))


async def safe_position(db: Executor) -> int:
    """A cursor no open transaction can still commit an event at or below: a new hub starts there, and
    `streamCursor` returns it (the sequence position alone counts ids drawn by transactions still open)."""
    return (await open_publishers(db)).safe


async def read_tail(db: Database, after: int, limit: int) -> Tail:
    """Committed events after `after`, and the open publishers read just after them.

    One statement (one round trip): its snapshot is taken when it starts, and the sequence and pg_locks
    are read live while it runs, so after the events' snapshot. The hub uses each read's publishers for
    the *next* read: a transaction not among them either had ended (its event is in the next read's
    snapshot) or drew its ids later (above their position)."""
    from threadline.events.publish import BUCKET_LOCK, FLOOR_TAG

    rows = await db.fetch(
        f"""SELECT p.position, p.txs, p.floors, p.buckets, e.* FROM ({_PUBLISHERS}) p
            LEFT JOIN LATERAL (
                SELECT {EVENT_COLUMNS} FROM stream_event WHERE id > $3 ORDER BY id LIMIT $4
            ) e ON true
            ORDER BY e.id""",
        FLOOR_TAG,
        BUCKET_LOCK,
        after,
        limit,
    )
    events = [_event(r) for r in rows if r["id"] is not None]
    return Tail(events, _publishers(rows[0]) if rows else NO_PUBLISHERS)


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
