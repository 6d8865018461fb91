"""All SQL of import, export, erasure and retention. Tenant first in every signature."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg

from threadline.conversations.repository import CONVERSATION_COLUMNS
from threadline.db import Executor, Transaction
from threadline.threads.repository import MESSAGE_COLUMNS

MESSAGE_COPY_COLUMNS = (
    "id", "tenant_id", "conversation_id", "root_id", "parent_id", "depth", "path", "seq", "child_count",
    "role", "content", "author_id", "model", "prompt_tokens", "completion_tokens", "created_at",
    "edited_at", "deleted_at", "usage_imported",
)  # fmt: skip
THREAD_COPY_COLUMNS = ("id", "tenant_id", "conversation_id", "reply_count", "last_seq", "created_at", "last_activity_at")


# -- import ------------------------------------------------------------------------------------------


async def imported_conversations(
    db: Executor, tenant_id: uuid.UUID, source: str, external_ids: list[str]
) -> dict[str, uuid.UUID]:
    rows = await db.fetch(
        """SELECT external_id, conversation_id FROM import_source
           WHERE tenant_id = $1 AND source = $2 AND external_id = ANY($3::varchar[])""",
        tenant_id,
        source,
        external_ids,
    )
    return {r["external_id"]: r["conversation_id"] for r in rows}


async def claim_source(
    db: Executor, tenant_id: uuid.UUID, source: str, external_id: str, conversation_id: uuid.UUID
) -> bool:
    """Record where a conversation came from; False if that source item was imported already."""
    row = await db.fetchval(
        """INSERT INTO import_source (id, tenant_id, source, external_id, conversation_id)
           VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id, source, external_id) DO NOTHING RETURNING id""",
        uuid.uuid4(),
        tenant_id,
        source,
        external_id,
        conversation_id,
    )
    return row is not None


async def insert_imported_conversation(
    db: Executor, tenant_id: uuid.UUID, owner_id: uuid.UUID, source: str, external_id: str, messages: int, **f: Any
) -> list[int] | None:
    """The conversation, its owner and its source in one round trip, with `messages` sequence numbers
    drawn for its messages; None (and nothing usable: roll back) if the source was imported already."""
    row = await db.fetchrow(
        """WITH conv AS (
               INSERT INTO conversation (id, tenant_id, owner_id, title, description, tags, status, session_id,
                   ai_provider, model, max_history_messages, message_count, token_count, created_at, updated_at,
                   last_activity_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) RETURNING id
           ), owner AS (
               INSERT INTO participant (id, tenant_id, conversation_id, user_id, role)
               SELECT $17, $2, id, $3, 'OWNER' FROM conv
           ), src AS (
               INSERT INTO import_source (id, tenant_id, source, external_id, conversation_id)
               SELECT $18, $2, $19, $20, id FROM conv
               ON CONFLICT (tenant_id, source, external_id) DO NOTHING RETURNING id
           )
           SELECT EXISTS (SELECT 1 FROM src) AS claimed,
                  ARRAY(SELECT nextval('message_seq_seq') FROM generate_series(1, $21)) AS seqs""",
        f["id"],
        tenant_id,
        owner_id,
        f["title"],
        f["description"],
        f["tags"],
        f["status"],
        f["session_id"],
        f["ai_provider"],
        f["model"],
        f["max_history_messages"],
        f["message_count"],
        f["token_count"],
        f["created_at"],
        f["updated_at"],
        f["last_activity_at"],
        uuid.uuid4(),
        uuid.uuid4(),
        source,
        external_id,
        messages,
    )
    assert row is not None
    return sorted(row["seqs"]) if row["claimed"] else None


async def next_seqs(db: Executor, count: int) -> list[int]:
    rows = await db.fetch("SELECT nextval('message_seq_seq') AS s FROM generate_series(1, $1)", count)
    return sorted(r["s"] for r in rows)


async def copy_messages(tx: Transaction, records: Sequence[tuple[Any, ...]]) -> None:
    """Bulk insert with COPY: one round trip for a whole conversation."""
    await tx.conn.copy_records_to_table("message", records=records, columns=MESSAGE_COPY_COLUMNS)


async def copy_threads(tx: Transaction, records: Sequence[tuple[Any, ...]]) -> None:
    await tx.conn.copy_records_to_table("thread", records=records, columns=THREAD_COPY_COLUMNS)


async def insert_attachments(db: Executor, records: Sequence[tuple[Any, ...]]) -> None:
    if records:
        await db.executemany(
            "INSERT INTO message_attachment (id, tenant_id, message_id, position, data) VALUES ($1, $2, $3, $4, $5)",
            records,
        )


# -- export ------------------------------------------------------------------------------------------


async def conversation_messages(db: Executor, tenant_id: uuid.UUID, conversation_id: uuid.UUID) -> list[asyncpg.Record]:
    """Every message of every thread: threads oldest first, each depth-first (one index range per thread)."""
    return await db.fetch(
        f"""SELECT {MESSAGE_COLUMNS} FROM message m JOIN message r ON r.id = m.root_id
            WHERE m.tenant_id = $1 AND m.conversation_id = $2
            ORDER BY r.created_at, r.seq, m.root_id, m.path""",
        tenant_id,
        conversation_id,
    )


async def conversation_attachments(
    db: Executor, tenant_id: uuid.UUID, conversation_id: uuid.UUID
) -> list[asyncpg.Record]:
    return await db.fetch(
        """SELECT a.message_id, a.data FROM message_attachment a JOIN message m ON m.id = a.message_id
           WHERE a.tenant_id = $1 AND m.conversation_id = $2 ORDER BY a.message_id, a.position""",
        tenant_id,
        conversation_id,
    )


async def table_exists(db: Executor, name: str) -> bool:
    return bool(await db.fetchval("SELECT to_regclass($1) IS NOT NULL", f"public.{name}"))


async def table_columns(db: Executor, name: str) -> set[str]:
    rows = await db.fetch(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'public' AND table_name = $1", name
    )
    return {r["column_name"] for r in rows}


async def rows_as_json(
    db: Executor, table: str, tenant_id: uuid.UUID, column: str, values: list[uuid.UUID]
) -> list[dict[str, Any]]:
    """Rows of a table we do not own (runs), as JSON objects, selected generically by one id column."""
    order = "created_at, id" if "created_at" in await table_columns(db, table) else "id"
    rows = await db.fetch(
        f"""SELECT to_jsonb(t) AS row FROM {table} t WHERE t.tenant_id = $1 AND t.{column} = ANY($2::uuid[])
            ORDER BY {order}""",
        tenant_id,
        values,
    )
    return [r["row"] for r in rows]


async def owned_conversation_ids(db: Executor, tenant_id: uuid.UUID, user_id: uuid.UUID) -> list[uuid.UUID]:
    rows = await db.fetch(
        "SELECT id FROM conversation WHERE tenant_id = $1 AND owner_id = $2 ORDER BY created_at, id", tenant_id, user_id
    )
    return [r["id"] for r in rows]


async def authored_elsewhere(db: Executor, tenant_id: uuid.UUID, user_id: uuid.UUID) -> list[asyncpg.Record]:
    """Messages a user wrote in conversations they do not own, with the conversation's id."""
    return await db.fetch(
        f"""SELECT {MESSAGE_COLUMNS} FROM message m JOIN conversation c ON c.id = m.conversation_id
            WHERE m.tenant_id = $1 AND m.author_id = $2 AND c.owner_id IS DISTINCT FROM $2
            ORDER BY m.conversation_id, m.seq""",
        tenant_id,
        user_id,
    )


async def conversation_row(db: Executor, tenant_id: uuid.UUID, conversation_id: uuid.UUID) -> asyncpg.Record | None:
    return await db.fetchrow(
        f"SELECT {CONVERSATION_COLUMNS} FROM conversation c WHERE c.tenant_id = $1 AND c.id = $2",
        tenant_id,
        conversation_id,
    )


async def tenant_of_conversation(db: Executor, conversation_id: uuid.UUID) -> uuid.UUID | None:
    """Not tenant-scoped by design: the operator's CLI names a conversation and learns its tenant."""
    value = await db.fetchval("SELECT tenant_id FROM conversation WHERE id = $1", conversation_id)
    return value if isinstance(value, uuid.UUID) else None


async def tenant_of_user(db: Executor, user_id: uuid.UUID) -> uuid.UUID | None:
    """Not tenant-scoped by design, like `tenant_of_conversation`."""
    value = await db.fetchval("SELECT tenant_id FROM app_user WHERE id = $1", user_id)
    return value if isinstance(value, uuid.UUID) else None
