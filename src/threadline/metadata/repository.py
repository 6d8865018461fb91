"""All SQL of message metadata (conversation metadata is a column conversations.repository reads and writes).
Tenant first."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from threadline.db import Executor


async def set_message_metadata(
    db: Executor, tenant_id: uuid.UUID, message_id: uuid.UUID, metadata: dict[str, str] | None
) -> None:
    await db.execute(
        "UPDATE message SET metadata = $3 WHERE tenant_id = $1 AND id = $2", tenant_id, message_id, metadata
    )


async def set_many_message_metadata(
    db: Executor, tenant_id: uuid.UUID, message_ids: list[uuid.UUID], metadata: list[dict[str, str]]
) -> None:
    """Metadata for many messages in one statement (imports)."""
    if not message_ids:
        return
    # One JSON array of {id, metadata}: arrays of jsonb do not bind as parameters.
    await db.execute(
        """UPDATE message m SET metadata = v.metadata
           FROM jsonb_to_recordset($2::jsonb) AS v(id uuid, metadata jsonb)
           WHERE m.tenant_id = $1 AND m.id = v.id""",
        tenant_id,
        [{"id": i, "metadata": m} for i, m in zip(message_ids, metadata, strict=True)],
    )


async def message_metadata(
    db: Executor, tenant_id: uuid.UUID, message_ids: list[uuid.UUID]
) -> list[asyncpg.Record]:
    """(id, metadata) of those of the messages that have any."""
    return await db.fetch(
        """SELECT id, metadata FROM message
           WHERE tenant_id = $1 AND id = ANY($2::uuid[]) AND metadata IS NOT NULL""",
        tenant_id,
        message_ids,
    )


async def held_by_at_most(db: Executor, tenant_id: uuid.UUID, metadata: dict[str, str], limit: int) -> bool:
    """Whether at most `limit` conversations of the tenant hold every pair (reads no more than limit + 1 of
    them, from the GIN index)."""
    found = await db.fetchval(
        """SELECT count(*) FROM (SELECT 1 FROM conversation k WHERE k.tenant_id = $1 AND k.metadata @> $2::jsonb
           LIMIT $3) AS held""",
        tenant_id,
        metadata,
        limit + 1,
    )
    return int(found) <= limit


def conversations_holding(
    alias: str, params: list[Any], tenant_id: uuid.UUID, pairs: dict[str, str], *, few: bool = True
) -> str:
    """A WHERE fragment (binding into `params`): `alias` is a conversation whose metadata holds every pair.

    With `few`, the matching ids are read first, once, from the GIN index (an InitPlan) and the page is sorted
    from them: left to itself the planner walks the activity index and tests each row, reading every
    conversation of the tenant when few or none match (it cannot estimate `@>` on metadata). Without, that walk
    is what a common value wants: its first rows hold a page."""
    params.append(pairs)
    wanted = f"${len(params)}::jsonb"
    if not few:
        return f"{alias}.metadata @> {wanted}"
    params.append(tenant_id)
    return (
        f"{alias}.id = ANY(ARRAY(SELECT k.id FROM conversation k WHERE k.tenant_id = ${len(params)} "
        f"AND k.metadata @> {wanted}))"
    )
