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
# Advisory lock key held (shared) by every transaction that publishes; it shows in pg_locks as
# locktype 'advisory', classid 0, objid PUBLISH_LOCK.
PUBLISH_LOCK = 0x74686C65


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
    # The transaction takes the shared publish lock *before* it draws an id from the sequence (the
    # MATERIALIZED CTE runs first) and holds it until it ends. The hub relies on that to tell a gap in
    # the ids that may still fill (its writer still holds the lock) from one that never will.
    event_id = int(
        await tx.fetchval(
            """WITH x AS MATERIALIZED (SELECT pg_advisory_xact_lock_shared($9::bigint) AS locked),
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
            PUBLISH_LOCK,
        )
    )
    return event_id


def _notice_prefix(conversation_id: uuid.UUID | None) -> str:
    # "<conversation hex>:<event id>": enough for a hub to decide whether it needs to read the log.
    return (conversation_id.hex if conversation_id else "") + ":"


def notice(raw: str) -> tuple[str, int]:
    conversation, _, event_id = raw.partition(":")
    return conversation, int(event_id)
