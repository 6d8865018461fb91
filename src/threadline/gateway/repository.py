"""All SQL of the gateway: a conversation by its session id, and the leaf a session continues. Tenant first."""

from __future__ import annotations

import uuid
from typing import Any

from threadline.auth.principal import Principal
from threadline.conversations.repository import visibility_sql
from threadline.db import Executor


async def session_conversation(db: Executor, principal: Principal, session_id: str) -> uuid.UUID | None:
    """The most recently active conversation with this `sessionId` that the caller may read (and that is not
    deleted); several may share one, as clients choose session ids."""
    params: list[Any] = []
    visible = visibility_sql(principal, params)
    params.append(session_id)
    value = await db.fetchval(
        f"""SELECT c.id FROM conversation c
            WHERE {visible} AND c.session_id = ${len(params)} AND c.status <> 'DELETED'
            ORDER BY c.last_activity_at DESC, c.id DESC LIMIT 1""",
        *params,
    )
    return value if isinstance(value, uuid.UUID) else None


async def latest_thread(db: Executor, tenant_id: uuid.UUID, conversation_id: uuid.UUID) -> uuid.UUID | None:
    """The root of the conversation's most recently active thread; None for a conversation without threads."""
    value = await db.fetchval(
        """SELECT t.id FROM thread t WHERE t.tenant_id = $1 AND t.conversation_id = $2
           ORDER BY t.last_activity_at DESC, t.id DESC LIMIT 1""",
        tenant_id,
        conversation_id,
    )
    return value if isinstance(value, uuid.UUID) else None
