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
    # The transaction gets its xid *before* it draws an id from the sequence (the MATERIALIZED CTE runs
    # first). The hub relies on that to tell a gap that may still fill from one that never will.
    event_id = int(
        await tx.fetchval(
            """WITH x AS MATERIALIZED (SELECT pg_current_xact_id() AS xid),
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
        )
    )
    return event_id


def _notice_prefix(conversation_id: uuid.UUID | None) -> str:
    # "<conversation hex>:<event id>": enough for a hub to decide whether it needs to read the log.
    return (conversation_id.hex if conversation_id else "") + ":"


def notice(raw: str) -> tuple[str, int]:
    conversation, _, event_id = raw.partition(":")
    return conversation, int(event_id)
