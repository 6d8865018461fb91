"""All SQL of tags and bulk lifecycle: tag counts, batch tagging, archiving by age."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg

from threadline.auth.principal import Principal
from threadline.conversations.repository import CONVERSATION_COLUMNS, visibility_sql
from threadline.db import Executor


async def tag_counts(db: Executor, principal: Principal, limit: int) -> list[asyncpg.Record]:
    """Each tag and how many readable, not deleted conversations carry it; most used first."""
    params: list[Any] = []
    where = visibility_sql(principal, params)
    params.append(limit)
    return await db.fetch(
        f"""SELECT t.tag, count(*) AS count
            FROM conversation c CROSS JOIN LATERAL unnest(c.tags) AS t(tag)
            WHERE {where} AND c.status <> 'DELETED'
            GROUP BY t.tag ORDER BY count DESC, t.tag LIMIT ${len(params)}""",
        *params,
    )


async def set_tags(
    db: Executor, tenant_id: uuid.UUID, changes: list[tuple[uuid.UUID, list[str]]]
) -> list[asyncpg.Record]:
    """Replace the tags of several conversations in one statement."""
    payload = [{"id": str(cid), "tags": tags} for cid, tags in changes]
    return await db.fetch(
        f"""UPDATE conversation AS c SET tags = v.tags, updated_at = now()
            FROM jsonb_to_recordset($2::jsonb) AS v(id uuid, tags varchar[])
            WHERE c.tenant_id = $1 AND c.id = v.id
            RETURNING {CONVERSATION_COLUMNS}""",
        tenant_id,
        payload,
    )


async def archive_batch(db: Executor, tenant_id: uuid.UUID, inactive_before: datetime, limit: int) -> int:
    """Archive up to `limit` ACTIVE conversations idle since before `inactive_before`; how many were."""
    status = await db.execute(
        """WITH batch AS (
               SELECT id FROM conversation
               WHERE tenant_id = $1 AND status = 'ACTIVE' AND last_activity_at < $2
               ORDER BY last_activity_at, id LIMIT $3 FOR UPDATE SKIP LOCKED)
           UPDATE conversation c SET status = 'ARCHIVED', updated_at = now()
           FROM batch WHERE c.id = batch.id""",
        tenant_id,
        inactive_before,
        limit,
    )
    return int(status.split()[-1])
