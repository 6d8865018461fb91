"""publish(): an event row in the log and a NOTIFY, both inside the writer's transaction (the statement is
events.repository.insert_event; this module owns the lock protocol it follows). Services do not call it:
they use the typed `publish_*` of events.announce, its only caller (tests/test_architecture.py holds that).

Nothing is announced that did not commit (NOTIFY is delivered on commit), and nothing commits
unannounced (the row and the notification share the transaction). The notification carries ids only,
so it stays far below PostgreSQL's 8000-byte limit; the hub reads the payload from the log.
"""

from __future__ import annotations

import uuid
from typing import Any

from threadline.db import Executor
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
    return await event_repo.insert_event(
        tx,
        tenant_id,
        conversation_id,
        root_id,
        recipient_id,
        type.value,
        payload or {},
        channel=CHANNEL,
        notice_prefix=_notice_prefix(conversation_id),
        bucket_lock=BUCKET_LOCK,
        bucket=bucket_of(conversation_id),
        floor_setting=FLOOR_SETTING,
        floor_base=FLOOR_BASE,
    )


def _notice_prefix(conversation_id: uuid.UUID | None) -> str:
    # "<conversation hex>:<event id>": enough for a hub to decide whether it needs to read the log.
    return (conversation_id.hex if conversation_id else "") + ":"


def notice(raw: str) -> tuple[str, int]:
    conversation, _, event_id = raw.partition(":")
    return conversation, int(event_id)
