"""All SQL of message feedback. Tenant first."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from threadline.db import Executor

FEEDBACK_COLUMNS = "f.message_id, f.user_id, f.rating, f.reasons, f.comment, f.created_at, f.updated_at"


async def upsert(
    db: Executor,
    tenant_id: uuid.UUID,
    message_id: uuid.UUID,
    user_id: uuid.UUID,
    rating: str,
    reasons: list[str],
    comment: str,
) -> asyncpg.Record:
    """One row per user and message: a second rating replaces the first."""
    row = await db.fetchrow(
        f"""INSERT INTO message_feedback AS f (id, tenant_id, message_id, user_id, rating, reasons, comment)
            VALUES ($1, $2, $3, $4, $5, $6, $7)
            ON CONFLICT (message_id, user_id) DO UPDATE
              SET rating = EXCLUDED.rating, reasons = EXCLUDED.reasons, comment = EXCLUDED.comment, updated_at = now()
            RETURNING {FEEDBACK_COLUMNS}""",
        uuid.uuid4(),
        tenant_id,
        message_id,
        user_id,
        rating,
        reasons,
        comment,
    )
    assert row is not None
    return row


async def remove(db: Executor, tenant_id: uuid.UUID, message_id: uuid.UUID, user_id: uuid.UUID) -> None:
    await db.execute(
        "DELETE FROM message_feedback WHERE tenant_id = $1 AND message_id = $2 AND user_id = $3",
        tenant_id,
        message_id,
        user_id,
    )


async def insert_many(
    db: Executor, tenant_id: uuid.UUID, user_id: uuid.UUID, rows: list[tuple[Any, ...]]
) -> None:
    """(message id, rating, reasons, comment, created at, updated at) of one user, in one statement (imports):
    the rows travel as one JSON array (arrays of arrays do not bind as parameters)."""
    if not rows:
        return
    names = ("message_id", "rating", "reasons", "comment", "created_at", "updated_at")
    await db.execute(
        """INSERT INTO message_feedback (id, tenant_id, message_id, user_id, rating, reasons, comment, created_at,
               updated_at)
           SELECT gen_random_uuid(), $1, v.message_id, $2, v.rating,
                  ARRAY(SELECT jsonb_array_elements_text(v.reasons))::varchar[], v.comment,
                  coalesce(v.created_at, now()), coalesce(v.updated_at, v.created_at, now())
           FROM jsonb_to_recordset($3::jsonb) AS v(message_id uuid, rating text, reasons jsonb, comment text,
                created_at timestamptz, updated_at timestamptz)
           ON CONFLICT (message_id, user_id) DO NOTHING""",
        tenant_id,
        user_id,
        [dict(zip(names, row, strict=True)) for row in rows],
    )


async def of_viewer(
    db: Executor, tenant_id: uuid.UUID, user_id: uuid.UUID, message_ids: list[uuid.UUID]
) -> list[asyncpg.Record]:
    return await db.fetch(
        f"""SELECT {FEEDBACK_COLUMNS} FROM message_feedback f
            WHERE f.tenant_id = $1 AND f.user_id = $2 AND f.message_id = ANY($3::uuid[])""",
        tenant_id,
        user_id,
        message_ids,
    )


async def summaries(db: Executor, tenant_id: uuid.UUID, message_ids: list[uuid.UUID]) -> list[asyncpg.Record]:
    """Up and down counts of each message that has any feedback, in one statement."""
    return await db.fetch(
        """SELECT f.message_id, count(*) FILTER (WHERE f.rating = 'UP') AS up,
                  count(*) FILTER (WHERE f.rating = 'DOWN') AS down
           FROM message_feedback f WHERE f.tenant_id = $1 AND f.message_id = ANY($2::uuid[])
           GROUP BY f.message_id""",
        tenant_id,
        message_ids,
    )


async def summary(db: Executor, tenant_id: uuid.UUID, message_id: uuid.UUID) -> tuple[int, int]:
    rows = await summaries(db, tenant_id, [message_id])
    return (int(rows[0]["up"]), int(rows[0]["down"])) if rows else (0, 0)


async def of_user_in_conversation(
    db: Executor, tenant_id: uuid.UUID, user_id: uuid.UUID, conversation_id: uuid.UUID
) -> list[asyncpg.Record]:
    """A user's feedback on a conversation's messages (exports)."""
    return await db.fetch(
        f"""SELECT {FEEDBACK_COLUMNS} FROM message_feedback f JOIN message m ON m.id = f.message_id
            WHERE f.tenant_id = $1 AND f.user_id = $2 AND m.conversation_id = $3""",
        tenant_id,
        user_id,
        conversation_id,
    )
