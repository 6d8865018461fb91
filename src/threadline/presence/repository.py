"""All SQL of presence and typing indicators. Tenant first in every signature.

The two expiry sweeps are the exception: they are maintenance over every tenant (like the run queue's
claim), and each row they return names its tenant.
"""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg

from threadline.db import Executor

# A sweep ends at most this many rows per transaction, so one pass never holds many locks for long.
SWEEP_BATCH = 1000


async def presence_status(db: Executor, tenant_id: uuid.UUID, user_id: uuid.UUID) -> str | None:
    """The user's stored status, row-locked until the transaction ends (None before the first heartbeat)."""
    value = await db.fetchval(
        "SELECT status FROM presence WHERE tenant_id = $1 AND id = $2 FOR UPDATE", tenant_id, user_id
    )
    return value if isinstance(value, str) else None


async def record_presence(db: Executor, tenant_id: uuid.UUID, user_id: uuid.UUID, status: str) -> datetime:
    """Store a sign of life with `status`; returns its time (last_seen_at)."""
    row = await db.fetchrow(
        """INSERT INTO presence AS p (id, tenant_id, status, last_seen_at) VALUES ($2, $1, $3, now())
           ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, last_seen_at = now()
           RETURNING p.last_seen_at""",
        tenant_id,
        user_id,
        status,
    )
    assert row is not None
    return row["last_seen_at"]  # type: ignore[no-any-return]


async def expire_presence(db: Executor, timeout_seconds: float) -> list[asyncpg.Record]:
    """Users of any tenant silent for longer than `timeout_seconds` go OFFLINE (rows: id, tenant_id,
    last_seen_at); rows another process is expiring are skipped."""
    return await db.fetch(
        """UPDATE presence SET status = 'OFFLINE'
           WHERE id IN (SELECT id FROM presence WHERE status <> 'OFFLINE'
                        AND last_seen_at < now() - make_interval(secs => $1)
                        ORDER BY last_seen_at LIMIT $2 FOR UPDATE SKIP LOCKED)
           RETURNING id, tenant_id, last_seen_at""",
        timeout_seconds,
        SWEEP_BATCH,
    )


async def typing_state(
    db: Executor, tenant_id: uuid.UUID, conversation_id: uuid.UUID, user_id: uuid.UUID
) -> asyncpg.Record | None:
    """The user's typing indicator in a conversation (active, root_id), row-locked; None if there is none."""
    return await db.fetchrow(
        """SELECT expires_at > now() AS active, root_id FROM typing_state
           WHERE tenant_id = $1 AND conversation_id = $2 AND user_id = $3 FOR UPDATE""",
        tenant_id,
        conversation_id,
        user_id,
    )


async def start_typing(
    db: Executor,
    tenant_id: uuid.UUID,
    conversation_id: uuid.UUID,
    user_id: uuid.UUID,
    root_id: uuid.UUID | None,
    timeout_seconds: float,
) -> None:
    """Start or renew the indicator: it expires `timeout_seconds` from now unless renewed."""
    await db.execute(
        """INSERT INTO typing_state AS t (id, tenant_id, conversation_id, user_id, root_id, expires_at)
           VALUES ($5, $1, $2, $3, $4, now() + make_interval(secs => $6))
           ON CONFLICT (conversation_id, user_id) DO UPDATE
             SET root_id = EXCLUDED.root_id, expires_at = EXCLUDED.expires_at""",
        tenant_id,
        conversation_id,
        user_id,
        root_id,
        uuid.uuid4(),
        timeout_seconds,
    )


async def stop_typing(
    db: Executor, tenant_id: uuid.UUID, conversation_id: uuid.UUID, user_id: uuid.UUID
) -> asyncpg.Record | None:
    """Remove the indicator; the removed one (was_active, root_id), or None if there was none."""
    return await db.fetchrow(
        """DELETE FROM typing_state WHERE tenant_id = $1 AND conversation_id = $2 AND user_id = $3
           RETURNING expires_at > now() AS was_active, root_id""",
        tenant_id,
        conversation_id,
        user_id,
    )


async def expire_typing(db: Executor) -> list[asyncpg.Record]:
    """Indicators of any tenant not renewed in time are removed (rows: tenant_id, conversation_id, user_id,
    root_id); rows another process is expiring are skipped."""
    return await db.fetch(
        """DELETE FROM typing_state WHERE id IN (
               SELECT id FROM typing_state WHERE expires_at < now()
               ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED)
           RETURNING tenant_id, conversation_id, user_id, root_id""",
        SWEEP_BATCH,
    )
