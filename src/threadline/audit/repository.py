"""All SQL of the audit log. Tenant first in every signature."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg

from threadline.db import Executor
from threadline.db.repository import older_than

AUDIT_COLUMNS = "id, tenant_id, actor_id, action, target_kind, target_id, details, created_at"


async def insert_entry(
    db: Executor,
    tenant_id: uuid.UUID,
    *,
    actor_id: uuid.UUID | None,
    action: str,
    target_kind: str | None,
    target_id: uuid.UUID | None,
    details: dict[str, Any],
) -> None:
    await db.execute(
        """INSERT INTO audit_log (id, tenant_id, actor_id, action, target_kind, target_id, details)
           VALUES ($1, $2, $3, $4, $5, $6, $7)""",
        uuid.uuid4(),
        tenant_id,
        actor_id,
        action,
        target_kind,
        target_id,
        details,
    )


def _filters(
    tenant_id: uuid.UUID, action: str | None, actor_id: uuid.UUID | None, target_id: uuid.UUID | None
) -> tuple[str, list[Any]]:
    params: list[Any] = [tenant_id]
    where = ["tenant_id = $1"]
    for column, value in (("action", action), ("actor_id", actor_id), ("target_id", target_id)):
        if value is not None:
            params.append(value)
            where.append(f"{column} = ${len(params)}")
    return " AND ".join(where), params


async def entries_page(
    db: Executor,
    tenant_id: uuid.UUID,
    *,
    action: str | None,
    actor_id: uuid.UUID | None,
    target_id: uuid.UUID | None,
    limit: int,
    after: tuple[datetime, uuid.UUID] | None,
) -> list[asyncpg.Record]:
    """Newest first."""
    where, params = _filters(tenant_id, action, actor_id, target_id)
    where += older_than("created_at, id", after, params)
    params.append(limit)
    return await db.fetch(
        f"SELECT {AUDIT_COLUMNS} FROM audit_log WHERE {where} ORDER BY created_at DESC, id DESC LIMIT ${len(params)}",
        *params,
    )


async def count_entries(
    db: Executor,
    tenant_id: uuid.UUID,
    *,
    action: str | None,
    actor_id: uuid.UUID | None,
    target_id: uuid.UUID | None,
) -> int:
    where, params = _filters(tenant_id, action, actor_id, target_id)
    return int(await db.fetchval(f"SELECT count(*) FROM audit_log WHERE {where}", *params))


async def allow_rewrite(db: Executor, kind: str) -> None:
    """Lets the append-only trigger (migration 2026-12-06T05) pass `kind` ('erasure': user ids rewritten;
    'retention': old entries deleted) until the transaction ends."""
    await db.execute("SELECT set_config('threadline.audit_rewrite', $1, true)", kind)


async def reassign_user(
    db: Executor, tenant_id: uuid.UUID, user_id: uuid.UUID, placeholder_id: uuid.UUID
) -> None:
    """An erased user's past actions and the entries about them now point at the anonymous placeholder.

    The log is append-only (a trigger refuses updates and deletes); this rewrite of user ids, and nothing
    else of a row, is let through for the rest of the transaction."""
    await allow_rewrite(db, "erasure")
    await db.execute(
        "UPDATE audit_log SET actor_id = $3 WHERE tenant_id = $1 AND actor_id = $2",
        tenant_id,
        user_id,
        placeholder_id,
    )
    await db.execute(
        "UPDATE audit_log SET target_id = $3 WHERE tenant_id = $1 AND target_id = $2 AND target_kind = 'User'",
        tenant_id,
        user_id,
        placeholder_id,
    )


async def tenant_retention(db: Executor, tenant_id: uuid.UUID, key: str) -> Any:
    return await db.fetchval("SELECT settings -> $2::text FROM tenant WHERE id = $1", tenant_id, key)


async def set_tenant_retention(db: Executor, tenant_id: uuid.UUID, key: str, days: int | None) -> None:
    if days is None:
        await db.execute("UPDATE tenant SET settings = settings - $2::text WHERE id = $1", tenant_id, key)
    else:
        await db.execute(
            "UPDATE tenant SET settings = settings || jsonb_build_object($2::text, $3::int) WHERE id = $1",
            tenant_id,
            key,
            days,
        )


async def tenants_with_retention(db: Executor, key: str) -> list[asyncpg.Record]:
    return await db.fetch(
        """SELECT id, (settings ->> $1::text)::int AS days FROM tenant
           WHERE jsonb_typeof(settings -> $1::text) = 'number' ORDER BY id""",
        key,
    )


async def delete_older_than(db: Executor, tenant_id: uuid.UUID, days: int) -> int:
    """Needs `allow_rewrite(db, 'retention')` in the same transaction."""
    status = await db.execute(
        "DELETE FROM audit_log WHERE tenant_id = $1 AND created_at < now() - make_interval(days => $2)",
        tenant_id,
        days,
    )
    return int(status.split()[-1])


async def all_entries(db: Executor, tenant_id: uuid.UUID, since: datetime | None) -> list[asyncpg.Record]:
    """Oldest first, for an export (the log of one tenant; bounded by its retention)."""
    return await db.fetch(
        f"""SELECT {AUDIT_COLUMNS} FROM audit_log WHERE tenant_id = $1 AND ($2::timestamptz IS NULL OR created_at >= $2)
            ORDER BY created_at, id""",
        tenant_id,
        since,
    )
