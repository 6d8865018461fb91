"""SQL of streamed output: the messages a run reads and writes, their chunks and stream state.

Tenant first in every signature. (The message table belongs to threads; these are the writes only
streaming makes: appending content and chunks, restarting a stream, recording final usage.)
"""

from __future__ import annotations

import uuid

import asyncpg

from threadline import crypto
from threadline.db import Executor
from threadline.threads.repository import MESSAGE_COLUMNS


async def messages_by_ids(db: Executor, tenant_id: uuid.UUID, ids: list[uuid.UUID]) -> list[asyncpg.Record]:
    """The messages a run's context reads, with their content parts (tool calls and results)."""
    return await db.fetch(
        f"SELECT {MESSAGE_COLUMNS}, m.parts FROM message m WHERE m.tenant_id = $1 AND m.id = ANY($2::uuid[])",
        tenant_id,
        ids,
    )


async def open_stream(db: Executor, tenant_id: uuid.UUID, message_id: uuid.UUID) -> None:
    await db.execute(
        "INSERT INTO message_stream (id, tenant_id) VALUES ($2, $1) ON CONFLICT (id) DO NOTHING",
        tenant_id,
        message_id,
    )


async def take_chunk_index(db: Executor, tenant_id: uuid.UUID, message_id: uuid.UUID) -> int | None:
    """The next chunk index of an unfinished stream (and advance it); None if finished or absent."""
    value = await db.fetchval(
        """UPDATE message_stream SET next_index = next_index + 1, updated_at = now()
           WHERE tenant_id = $1 AND id = $2 AND finished_at IS NULL RETURNING next_index - 1""",
        tenant_id,
        message_id,
    )
    return int(value) if value is not None else None


async def append_content(
    db: Executor,
    tenant_id: uuid.UUID,
    message_id: uuid.UUID,
    delta: str,
    run_id: uuid.UUID | None,
    index: int,
) -> bool:
    """Append to the content and store the chunk; False if the message was deleted meanwhile. Sealed content
    (crypto/) grows by one sealed segment per delta, appended without reading what is there."""
    delta = await crypto.seal(tenant_id, delta)
    appended = await db.fetchval(
        """WITH m AS (
               UPDATE message SET content = content || $3, pii = NULL  -- rescanned when final (privacy)
               WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL
               RETURNING id
           )
           INSERT INTO message_chunk (tenant_id, message_id, index, content, run_id)
           SELECT $1, m.id, $5, $3, $4 FROM m RETURNING index""",
        tenant_id,
        message_id,
        delta,
        run_id,
        index,
    )
    return appended is not None


async def finish_stream(db: Executor, tenant_id: uuid.UUID, message_id: uuid.UUID) -> bool:
    """Mark the stream final; False if it already was."""
    value = await db.fetchval(
        """INSERT INTO message_stream (id, tenant_id, finished_at) VALUES ($2, $1, now())
           ON CONFLICT (id) DO UPDATE SET finished_at = now(), updated_at = now()
           WHERE message_stream.finished_at IS NULL
           RETURNING id""",
        tenant_id,
        message_id,
    )
    return value is not None


async def restart_stream(db: Executor, tenant_id: uuid.UUID, message_id: uuid.UUID) -> None:
    """Discard a lost attempt's output so a requeued run writes the message from the start again."""
    await db.execute(
        "DELETE FROM message_chunk WHERE tenant_id = $1 AND message_id = $2", tenant_id, message_id
    )
    await db.execute(
        """UPDATE message SET content = '', parts = NULL, pii = NULL, prompt_tokens = NULL, completion_tokens = NULL
           WHERE tenant_id = $1 AND id = $2""",
        tenant_id,
        message_id,
    )
    await db.execute(
        """INSERT INTO message_stream (id, tenant_id) VALUES ($2, $1)
           ON CONFLICT (id) DO UPDATE SET next_index = 0, finished_at = NULL, updated_at = now()""",
        tenant_id,
        message_id,
    )


async def seal_final(db: Executor, tenant_id: uuid.UUID, message_id: uuid.UUID) -> None:
    """A finished stream's sealed segments become one sealed value, and its full-text vector is computed from the
    whole plaintext (the trigger cannot read sealed text). Nothing without encryption."""
    if not crypto.sealing():
        return
    row = await db.fetchrow(
        "SELECT content, author_id FROM message WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL",
        tenant_id,
        message_id,
    )
    if row is None or not row["content"]:
        return
    stored = await crypto.seal(tenant_id, row["content"], row["author_id"])
    await db.execute("SELECT set_config('threadline.resealing', 'on', true)")
    await db.execute(
        """UPDATE message SET content = $3, search_vector = threadline_search_vector(threadline_search_config($1), $4)
           WHERE tenant_id = $1 AND id = $2""",
        tenant_id,
        message_id,
        stored,
        row["content"],
    )
    await db.execute("SELECT set_config('threadline.resealing', 'off', true)")


async def set_message_usage(
    db: Executor, tenant_id: uuid.UUID, message_id: uuid.UUID, prompt_tokens: int, completion_tokens: int
) -> asyncpg.Record:
    row = await db.fetchrow(
        f"""UPDATE message m SET prompt_tokens = $3, completion_tokens = $4 WHERE m.tenant_id = $1 AND m.id = $2
            RETURNING {MESSAGE_COLUMNS}""",
        tenant_id,
        message_id,
        prompt_tokens,
        completion_tokens,
    )
    assert row is not None
    return row
