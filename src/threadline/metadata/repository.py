"""All SQL of message metadata (conversation metadata is a column conversations.repository reads and writes).
Tenant first."""

from __future__ import annotations

import uuid

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


def conversations_holding(alias: str, tenant_param: str, metadata_param: str) -> str:
    """A WHERE fragment: `alias` is a conversation whose metadata holds every pair of `metadata_param`.

    The matching ids are read first, once, from the GIN index (an InitPlan), and the page is then sorted
    from them: left to itself the planner walks the activity index and tests each row, reading every
    conversation of the tenant when few or none match (it cannot estimate `@>` on metadata)."""
    return (
        f"{alias}.id = ANY(ARRAY(SELECT k.id FROM conversation k WHERE k.tenant_id = {tenant_param} "
        f"AND k.metadata @> {metadata_param}::jsonb))"
    )
