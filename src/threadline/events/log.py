"""Reading the event log: the hub's commit-safe tail, replay for `since`, and retention (the statements are
events.repository's; this module turns their rows into LoggedEvent and OpenPublishers)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from threadline.db import Database, Executor
from threadline.events import repository as event_repo
from threadline.events.payloads import EventPayload
from threadline.events.publish import BUCKET_LOCK, FLOOR_TAG
from threadline.events.stored import decode


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
    return _publishers(await event_repo.open_publishers(db, floor_tag=FLOOR_TAG, bucket_lock=BUCKET_LOCK))


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
    rows = await event_repo.read_tail(db, after, limit, floor_tag=FLOOR_TAG, bucket_lock=BUCKET_LOCK)
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
    rows = await event_repo.replay(
        db,
        tenant_id,
        after=after,
        through=through,
        conversation_ids=conversation_ids,
        recipient_id=recipient_id,
        limit=limit,
    )
    return [_event(r) for r in rows]


async def pruned_through(db: Executor) -> int:
    """The highest id retention removed: a cursor below it may have lost events."""
    return await event_repo.pruned_through(db)


async def prune(db: Database, older_than_days: float, batch: int = 10_000) -> int:
    """Delete events older than the retention age, remembering the highest id removed."""
    removed = 0
    while True:
        async with db.transaction() as tx:
            n, top = await event_repo.prune_batch(tx, older_than_days * 86400.0, batch)
            if n:
                assert top is not None
                await event_repo.note_pruned_through(tx, top)
        removed += n
        if n < batch:
            return removed
