"""All SQL of idempotency keys. Tenant first; the purge is the one statement across tenants."""

from __future__ import annotations

import uuid

import asyncpg

from threadline.db import Executor


async def claim(
    tx: Executor,
    tenant_id: uuid.UUID,
    user_id: uuid.UUID,
    key: str,
    operation: str,
    request_hash: str,
    ttl_seconds: float,
) -> bool:
    """Take `key` for this transaction: True if it was free (or expired), False if it holds an earlier
    request's result. A concurrent claim of the same key waits on the unique index until this transaction
    ends, then sees the committed result (or, after a rollback, takes the key itself)."""
    claimed = await tx.fetchval(
        """INSERT INTO idempotency_key (id, tenant_id, user_id, key, operation, request_hash, expires_at)
           VALUES ($1, $2, $3, $4, $5, $6, now() + make_interval(secs => $7))
           ON CONFLICT (tenant_id, user_id, key) DO UPDATE
               SET operation = EXCLUDED.operation, request_hash = EXCLUDED.request_hash, result = NULL,
                   created_at = now(), expires_at = EXCLUDED.expires_at
               WHERE idempotency_key.expires_at <= now()
           RETURNING true""",
        uuid.uuid4(),
        tenant_id,
        user_id,
        key,
        operation,
        request_hash,
        float(ttl_seconds),
    )
    return bool(claimed)


async def earlier(tx: Executor, tenant_id: uuid.UUID, user_id: uuid.UUID, key: str) -> asyncpg.Record | None:
    return await tx.fetchrow(
        """SELECT operation, request_hash, result FROM idempotency_key
           WHERE tenant_id = $1 AND user_id = $2 AND key = $3 AND expires_at > now()""",
        tenant_id,
        user_id,
        key,
    )


async def record_result(
    tx: Executor, tenant_id: uuid.UUID, user_id: uuid.UUID, key: str, ids: list[uuid.UUID]
) -> None:
    await tx.execute(
        "UPDATE idempotency_key SET result = $4 WHERE tenant_id = $1 AND user_id = $2 AND key = $3",
        tenant_id,
        user_id,
        key,
        [str(i) for i in ids],
    )


async def purge_expired(db: Executor, batch: int) -> int:
    """Deletes up to `batch` expired keys of any tenant (a maintenance pass, like retention's); returns how many."""
    status = await db.execute(
        """DELETE FROM idempotency_key WHERE id IN (
               SELECT id FROM idempotency_key WHERE expires_at <= now()
               ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED)""",
        batch,
    )
    return int(status.rsplit(" ", 1)[-1])
