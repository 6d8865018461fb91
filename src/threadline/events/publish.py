"""publish(): an event row in the log and a NOTIFY, both inside the writer's transaction (the statement is
events.repository.insert_event; this module owns the lock protocol it follows). Services do not call it:
they use the typed `publish_*` of events.announce, its only caller (tests/test_architecture.py holds that).

Nothing is announced that did not commit (NOTIFY is delivered on commit), and nothing commits
unannounced (the row and the notification share the transaction). The notification carries ids only,
so it stays far below PostgreSQL's 8000-byte limit; the hub reads the payload from the log.

With THREADLINE_BROADCAST_URL=redis://... the transaction sends no NOTIFY (whose commit lock serialises every
publishing commit): the database's wake channel tells the hubs after the commit (streaming.redis_channel).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

from threadline.db import Executor
from threadline.db.database import WakeChannel
from threadline.events import repository as event_repo
from threadline.events.kinds import EventType

CHANNEL = "threadline_events"
# Every publishing transaction holds two kinds of shared advisory lock until it ends, both taken *before*
# it draws an id from the sequence (events.repository.insert_event takes them in the statement that draws it):
# - its floor, once per transaction: FLOOR_BASE + the sequence position read just before its first id, so
#   every id it can still commit is above it (pg_locks: bigint form, objsubid 1, classid >> 16 == FLOOR_TAG);
# - one per bucket of the conversations it publishes to (BUCKET_LOCK, bucket; two-int form, objsubid 2),
#   bucket 0 for events of no conversation (presence).
# The hub reads them (events.log.read_tail) to tell which ids may still commit, overall and per bucket:
# a cursor never passes the first, and an open writer only holds back its own buckets' conversations.
FLOOR_TAG = 0x7468
FLOOR_BASE = FLOOR_TAG << 48  # ids stay below 2**48
BUCKET_LOCK = 0x74686C63
BUCKETS = 256  # an open writer holds back at most 1/255 of the conversations (those sharing its bucket)
FLOOR_SETTING = "threadline.publish_floor"  # transaction-local: set once the floor lock is held


def bucket_of(conversation_id: uuid.UUID | None) -> int:
    return 0 if conversation_id is None else 1 + conversation_id.int % (BUCKETS - 1)


class _Deferred:
    """The events a bulk writer's transaction announced so far, in order, published together by `deferring`."""

    def __init__(self) -> None:
        self.rows: list[
            tuple[uuid.UUID, uuid.UUID | None, uuid.UUID | None, uuid.UUID | None, str, dict[str, Any]]
        ]
        self.rows = []


# Transactions publishing through `deferring`, by identity (the block holds the object, so its id is its own
# until the block removes it; executors may be plain asyncpg connections, which take no weak reference).
_DEFERRING: dict[int, _Deferred] = {}
DEFERRED_ID = 0  # what `publish` returns for a deferred event: its id is drawn when the batch is published


@contextlib.asynccontextmanager
async def deferring(tx: Executor) -> AsyncIterator[None]:
    """Within the block, `publish(tx, ...)` collects its events instead of inserting them, and the block's end
    publishes them all in one statement (events.repository.insert_events), in the order announced, still in
    `tx`: exactly once, on commit, as before. Why: a transaction holds back every stream's cursor from its first
    event id until it ends (the floor lock above), so a bulk writer (an import of 20,000 threads, a merge) that
    published as it went held back live delivery for its whole length; now only for its last statement and its
    commit. For writers whose work between events is long, not for a reply (one event, already at its end).
    Nothing is published if the block raises (the transaction rolls back anyway). A block inside another block of
    the same transaction adds to the outer one's batch (the outer block's end publishes it); if the inner block
    raises, what it added is dropped from the batch: a caller that goes on in the transaction after it rolled back
    to a savepoint (an all-or-nothing import retrying a batch alone) announces nothing of the undone writes."""
    outer = _DEFERRING.get(id(tx))
    if outer is not None:
        mark = len(outer.rows)
        try:
            yield
        except BaseException:
            del outer.rows[mark:]
            raise
        return
    batch = _DEFERRING[id(tx)] = _Deferred()
    try:
        yield
    finally:
        del _DEFERRING[id(tx)]
    if batch.rows:
        buckets = sorted({bucket_of(row[1]) for row in batch.rows})
        wake = _wake_of(tx)
        await event_repo.insert_events(
            tx,
            batch.rows,
            channel=CHANNEL if wake is None else "",
            bucket_lock=BUCKET_LOCK,
            buckets=buckets,
            floor_setting=FLOOR_SETTING,
            floor_base=FLOOR_BASE,
        )
        if wake is not None:
            wake.wake()


def _wake_of(tx: Executor) -> WakeChannel | None:
    """How hubs hear of `tx`'s events when not by NOTIFY (Redis: db.database.WakeChannel): a transaction passes the
    wake-up on after its commit, the pool (each statement its own transaction) at once. None: NOTIFY, as ever
    (also for a bare connection, which knows no channel)."""
    wake = getattr(tx, "wake", None)
    return wake if isinstance(wake, WakeChannel) else None


async def publish(
    tx: Executor,
    tenant_id: uuid.UUID,
    type: EventType,
    *,
    conversation_id: uuid.UUID | None,
    root_id: uuid.UUID | None = None,
    recipient_id: uuid.UUID | None = None,
    payload: dict[str, Any] | None = None,
) -> int:
    """The event's id; DEFERRED_ID inside `deferring(tx)` (published at the block's end)."""
    batch = _DEFERRING.get(id(tx)) if _DEFERRING else None
    if batch is not None:
        batch.rows.append((tenant_id, conversation_id, root_id, recipient_id, type.value, payload or {}))
        return DEFERRED_ID
    wake = _wake_of(tx)
    event_id = await event_repo.insert_event(
        tx,
        tenant_id,
        conversation_id,
        root_id,
        recipient_id,
        type.value,
        payload or {},
        channel=CHANNEL if wake is None else "",
        notice_prefix=_notice_prefix(conversation_id),
        bucket_lock=BUCKET_LOCK,
        bucket=bucket_of(conversation_id),
        floor_setting=FLOOR_SETTING,
        floor_base=FLOOR_BASE,
    )
    if wake is not None:
        wake.wake()
    return event_id


def _notice_prefix(conversation_id: uuid.UUID | None) -> str:
    # "<conversation hex>:<event id>": enough for a hub to decide whether it needs to read the log.
    return (conversation_id.hex if conversation_id else "") + ":"


def notice(raw: str) -> tuple[str, int]:
    conversation, _, event_id = raw.partition(":")
    return conversation, int(event_id)
