"""publish(): an event row in the log and a NOTIFY, both inside the writer's transaction.

Nothing is announced that did not commit (NOTIFY is delivered on commit), and nothing commits
unannounced (the row and the notification share the transaction). The notification carries ids only,
so it stays far below PostgreSQL's 8000-byte limit; the hub reads the payload from the log.
"""

from __future__ import annotations

import uuid
from typing import Any

from threadline.db import Executor
from threadline.events.kinds import EventType

CHANNEL = "threadline_events"
# Every publishing transaction holds two kinds of shared advisory lock until it ends, both taken *before*
# it draws an id from the sequence (the MATERIALIZED CTEs run before the INSERT's nextval):
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
    # The floor lock is taken once per transaction (a transaction-local setting remembers it): one lock per
    # bulk import, not one per event. The bucket lock is re-entrant, so repeating it adds nothing.
    event_id = int(
        await tx.fetchval(
            """WITH s AS MATERIALIZED (
                   SELECT coalesce(current_setting($10, true), '') = '' AS first,
                          CASE WHEN is_called THEN last_value ELSE last_value - 1 END AS floor
                   FROM stream_event_id_seq
               ),
               f AS MATERIALIZED (
                   SELECT CASE WHEN s.first THEN pg_try_advisory_xact_lock_shared($11::bigint + s.floor) END AS held,
                          CASE WHEN s.first THEN set_config($10, s.floor::text, true) END AS noted
                   FROM s
               ),
               x AS MATERIALIZED (
                   SELECT pg_advisory_xact_lock_shared($9::int, $12::int) AS locked, f.held, f.noted FROM f
               ),
               e AS (
                   INSERT INTO stream_event (id, tenant_id, conversation_id, root_id, recipient_id, type, payload)
                   SELECT nextval('stream_event_id_seq'), $1, $2, $3, $4, $5, $6 FROM x
                   RETURNING id
               )
               SELECT e.id FROM e, LATERAL pg_notify($7, $8 || e.id::text) n""",
            tenant_id,
            conversation_id,
            root_id,
            recipient_id,
            type.value,
            payload or {},
            CHANNEL,
            _notice_prefix(conversation_id),
            BUCKET_LOCK,
            FLOOR_SETTING,
            FLOOR_BASE,
            bucket_of(conversation_id),
        )
    )
    return event_id


def _notice_prefix(conversation_id: uuid.UUID | None) -> str:
    # "<conversation hex>:<event id>": enough for a hub to decide whether it needs to read the log.
    return (conversation_id.hex if conversation_id else "") + ":"


def notice(raw: str) -> tuple[str, int]:
    conversation, _, event_id = raw.partition(":")
    return conversation, int(event_id)
