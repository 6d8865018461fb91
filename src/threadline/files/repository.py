"""All SQL of files: blobs (deduplicated per tenant by checksum), their chunks, uploads, and the messages that
hold them. Tenant first in every signature."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

from threadline import crypto
from threadline.auth.principal import Principal
from threadline.conversations.repository import visibility_sql
from threadline.db import Executor
from threadline.errors import content_unavailable

FILE_COLUMNS = """f.id, f.tenant_id, f.blob_id, f.uploaded_by, f.filename, f.attached_at, f.created_at,
    b.sha256, b.size, b.content_type, b.storage"""


async def lock_tenant_files(db: Executor, tenant_id: uuid.UUID) -> None:
    """Serialises a tenant's file writes (quota, deduplication, directory clean-up) until the transaction ends."""
    await db.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('threadline-files:' || $1::uuid::text, 0))", tenant_id
    )


async def blob_by_checksum(db: Executor, tenant_id: uuid.UUID, sha256: bytes) -> asyncpg.Record | None:
    return await db.fetchrow(
        "SELECT id, size, content_type, storage FROM file_blob WHERE tenant_id = $1 AND sha256 = $2",
        tenant_id,
        sha256,
    )


async def stored_bytes(db: Executor, tenant_id: uuid.UUID) -> int:
    value = await db.fetchval("SELECT coalesce(sum(size), 0) FROM file_blob WHERE tenant_id = $1", tenant_id)
    return int(value or 0)


async def insert_blob(
    db: Executor, tenant_id: uuid.UUID, sha256: bytes, size: int, content_type: str, storage: str
) -> uuid.UUID:
    blob_id = uuid.uuid4()
    await db.execute(
        """INSERT INTO file_blob (id, tenant_id, sha256, size, content_type, storage)
           VALUES ($2, $1, $3, $4, $5, $6)""",
        tenant_id,
        blob_id,
        sha256,
        size,
        content_type,
        storage,
    )
    return blob_id


async def insert_chunks(
    db: Executor, tenant_id: uuid.UUID, blob_id: uuid.UUID, chunks: Sequence[bytes]
) -> None:
    await db.executemany(
        "INSERT INTO file_chunk (blob_id, tenant_id, seq, data) VALUES ($1, $2, $3, $4)",
        [
            (blob_id, tenant_id, seq, await crypto.seal_bytes(tenant_id, data))
            for seq, data in enumerate(chunks)
        ],
    )


async def insert_chunk(db: Executor, tenant_id: uuid.UUID, blob_id: uuid.UUID, seq: int, data: bytes) -> None:
    await db.execute(
        "INSERT INTO file_chunk (blob_id, tenant_id, seq, data) VALUES ($1, $2, $3, $4)",
        blob_id,
        tenant_id,
        seq,
        await crypto.seal_bytes(tenant_id, data),  # encryption at rest (crypto/): the tenant's key
    )


async def insert_file(
    db: Executor, tenant_id: uuid.UUID, blob_id: uuid.UUID, uploaded_by: uuid.UUID | None, filename: str
) -> asyncpg.Record:
    file_id = uuid.uuid4()
    await db.execute(
        "INSERT INTO file (id, tenant_id, blob_id, uploaded_by, filename) VALUES ($2, $1, $3, $4, $5)",
        tenant_id,
        file_id,
        blob_id,
        uploaded_by,
        filename,
    )
    row = await file(db, tenant_id, file_id)
    assert row is not None
    return row


async def file(db: Executor, tenant_id: uuid.UUID, file_id: uuid.UUID) -> asyncpg.Record | None:
    return await db.fetchrow(
        f"""SELECT {FILE_COLUMNS} FROM file f JOIN file_blob b ON b.id = f.blob_id
            WHERE f.tenant_id = $1 AND f.id = $2""",
        tenant_id,
        file_id,
    )


async def files(db: Executor, tenant_id: uuid.UUID, file_ids: Sequence[uuid.UUID]) -> list[asyncpg.Record]:
    return await db.fetch(
        f"""SELECT {FILE_COLUMNS} FROM file f JOIN file_blob b ON b.id = f.blob_id
            WHERE f.tenant_id = $1 AND f.id = ANY($2::uuid[])""",
        tenant_id,
        list(file_ids),
    )


async def readable_holder(db: Executor, principal: Principal, file_id: uuid.UUID) -> uuid.UUID | None:
    """A conversation the principal may read whose (not deleted) messages hold the file, if there is one: one
    statement however many conversations hold it."""
    params: list[Any] = []
    where = visibility_sql(principal, params)
    params.append(file_id)
    value = await db.fetchval(
        f"""SELECT m.conversation_id FROM message_file mf
            JOIN message m ON m.id = mf.message_id AND m.tenant_id = mf.tenant_id
            JOIN conversation c ON c.id = m.conversation_id
            WHERE mf.tenant_id = $1 AND mf.file_id = ${len(params)} AND m.deleted_at IS NULL AND {where}
            LIMIT 1""",
        *params,
    )
    return value if isinstance(value, uuid.UUID) else None


async def attach(
    db: Executor, tenant_id: uuid.UUID, message_id: uuid.UUID, file_ids: Sequence[uuid.UUID]
) -> None:
    """The message holds the files (in this order); each file counts as attached from now on."""
    await db.execute(
        """INSERT INTO message_file (tenant_id, message_id, file_id, position)
           SELECT $1, $2, f, p - 1 FROM unnest($3::uuid[]) WITH ORDINALITY AS t(f, p)
           ON CONFLICT DO NOTHING""",
        tenant_id,
        message_id,
        list(file_ids),
    )
    await db.execute(
        "UPDATE file SET attached_at = coalesce(attached_at, now()) WHERE tenant_id = $1 AND id = ANY($2::uuid[])",
        tenant_id,
        list(file_ids),
    )


async def chunk(db: Executor, tenant_id: uuid.UUID, blob_id: uuid.UUID, seq: int) -> bytes | None:
    value = await db.fetchval(
        "SELECT data FROM file_chunk WHERE tenant_id = $1 AND blob_id = $2 AND seq = $3",
        tenant_id,
        blob_id,
        seq,
    )
    if value is None:
        return None
    opened = await crypto.open_bytes(bytes(value))
    if opened is None:
        raise content_unavailable("This file's key was erased (encryption at rest): its bytes cannot be read")
    return opened


async def message_files(
    db: Executor, tenant_id: uuid.UUID, message_ids: Sequence[uuid.UUID]
) -> list[asyncpg.Record]:
    """(message_id, file columns) of every file the messages hold, in each message's order."""
    return await db.fetch(
        f"""SELECT mf.message_id, {FILE_COLUMNS} FROM message_file mf
            JOIN file f ON f.id = mf.file_id AND f.tenant_id = mf.tenant_id
            JOIN file_blob b ON b.id = f.blob_id
            WHERE mf.tenant_id = $1 AND mf.message_id = ANY($2::uuid[]) ORDER BY mf.message_id, mf.position""",
        tenant_id,
        list(message_ids),
    )


async def gone_blobs(db: Executor, storage: str, limit: int) -> list[asyncpg.Record]:
    """Blobs of `storage` deleted in the database whose bytes are still to remove (any tenant: a clean-up job)."""
    return await db.fetch(
        "SELECT id, tenant_id, sha256 FROM file_blob_gone WHERE storage = $1 ORDER BY gone_at LIMIT $2",
        storage,
        limit,
    )


async def forget_gone_blob(db: Executor, tenant_id: uuid.UUID, gone_id: uuid.UUID) -> None:
    await db.execute("DELETE FROM file_blob_gone WHERE tenant_id = $1 AND id = $2", tenant_id, gone_id)


async def imported_attachments(
    db: Executor, tenant_id: uuid.UUID, conversation_ids: Sequence[uuid.UUID]
) -> list[asyncpg.Record]:
    """The attachment entries an import kept (message_attachment) in those conversations, with the parts of
    their messages: where an archive's files are looked for."""
    return await db.fetch(
        """SELECT a.id, a.message_id, a.position, a.data FROM message_attachment a
           JOIN message m ON m.id = a.message_id AND m.tenant_id = a.tenant_id
           WHERE a.tenant_id = $1 AND m.conversation_id = ANY($2::uuid[]) AND m.deleted_at IS NULL
           ORDER BY a.message_id, a.position""",
        tenant_id,
        list(conversation_ids),
    )


async def set_attachment_data(
    db: Executor, tenant_id: uuid.UUID, attachment_id: uuid.UUID, data: dict[str, object]
) -> None:
    await db.execute(
        "UPDATE message_attachment SET data = $3 WHERE tenant_id = $1 AND id = $2",
        tenant_id,
        attachment_id,
        await crypto.seal_attachment(tenant_id, data),  # encryption at rest, as an import stores it
    )


async def delete_attachment(db: Executor, tenant_id: uuid.UUID, attachment_id: uuid.UUID) -> None:
    await db.execute(
        "DELETE FROM message_attachment WHERE tenant_id = $1 AND id = $2", tenant_id, attachment_id
    )


async def delete_unattached_before(db: Executor, before: datetime, limit: int) -> int:
    """Uploads no message ever held, made before `before` (any tenant: the retention job); their blobs follow
    by trigger when no other file names them."""
    status = await db.execute(
        """DELETE FROM file WHERE id IN (
               SELECT id FROM file WHERE attached_at IS NULL AND created_at < $1 ORDER BY created_at LIMIT $2)""",
        before,
        limit,
    )
    return int(status.split()[-1])
