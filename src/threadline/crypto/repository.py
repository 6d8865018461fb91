"""All SQL of data keys, rotation progress and re-encryption. Tenant first where a tenant scopes it."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from threadline.db import Executor

KEY_COLUMNS = "id, tenant_id, user_id, master_key_id, wrapped, active, shredded_at"

# The sealed columns `keys rotate --reencrypt` walks, in keyset batches by id. A value is sealed again under the
# active key of the same owner (tenant, or tenant and user) as the key it was sealed with.
SEALED_COLUMNS: tuple[tuple[str, str], ...] = (
    ("message", "content"),
    ("message_edit", "content"),
    ("message_chunk", "content"),
    ("conversation", "title"),
    ("conversation", "description"),
    ("enrichment_job", "result_text"),
)


# Tables of SEALED_COLUMNS whose ids are bigint (the others' are uuid): keyset cursors and arrays follow the type.
BIGINT_IDS = frozenset({"message_chunk"})


def _ids(table: str) -> str:
    return "bigint[]" if table in BIGINT_IDS else "uuid[]"


async def keys_by_ids(db: Executor, ids: list[uuid.UUID]) -> list[asyncpg.Record]:
    return await db.fetch(f"SELECT {KEY_COLUMNS} FROM data_key WHERE id = ANY($1::uuid[])", ids)


async def active_key(db: Executor, tenant_id: uuid.UUID, user_id: uuid.UUID | None) -> asyncpg.Record | None:
    return await db.fetchrow(
        f"""SELECT {KEY_COLUMNS} FROM data_key
            WHERE tenant_id = $1 AND user_id IS NOT DISTINCT FROM $2 AND active""",
        tenant_id,
        user_id,
    )


async def insert_key(
    db: Executor,
    tenant_id: uuid.UUID,
    user_id: uuid.UUID | None,
    key_id: uuid.UUID,
    master_key_id: str,
    wrapped: bytes,
) -> None:
    """A new active key; nothing if another writer made one first (the caller reads the active one again)."""
    await db.execute(
        """INSERT INTO data_key (id, tenant_id, user_id, master_key_id, wrapped) VALUES ($3, $1, $2, $4, $5)
           ON CONFLICT DO NOTHING""",
        tenant_id,
        user_id,
        key_id,
        master_key_id,
        wrapped,
    )


async def retire_active(db: Executor, tenant_id: uuid.UUID, user_id: uuid.UUID | None) -> None:
    await db.execute(
        """UPDATE data_key SET active = false, retired_at = now()
           WHERE tenant_id = $1 AND user_id IS NOT DISTINCT FROM $2 AND active""",
        tenant_id,
        user_id,
    )


async def shred(db: Executor, tenant_id: uuid.UUID, user_id: uuid.UUID | None) -> list[uuid.UUID]:
    """Erase the wrapped keys of a user (or, with no user, every key of the tenant); their ids."""
    rows = await db.fetch(
        """UPDATE data_key SET wrapped = NULL, master_key_id = NULL, active = false,
               shredded_at = coalesce(shredded_at, now()), retired_at = coalesce(retired_at, now())
           WHERE tenant_id = $1 AND ($2::uuid IS NULL OR user_id = $2) RETURNING id""",
        tenant_id,
        user_id,
    )
    return [r["id"] for r in rows]


async def any_key(db: Executor) -> asyncpg.Record | None:
    """One wrapped key (startup checks a master key can unwrap it)."""
    return await db.fetchrow(
        f"SELECT {KEY_COLUMNS} FROM data_key WHERE wrapped IS NOT NULL ORDER BY created_at DESC LIMIT 1"
    )


async def masters_in_use(db: Executor) -> list[str]:
    rows = await db.fetch("SELECT DISTINCT master_key_id FROM data_key WHERE wrapped IS NOT NULL")
    return [r["master_key_id"] for r in rows]


async def keys_to_rewrap(
    db: Executor, master_key_id: str, after: uuid.UUID, limit: int
) -> list[asyncpg.Record]:
    return await db.fetch(
        f"""SELECT {KEY_COLUMNS} FROM data_key
            WHERE id > $2 AND wrapped IS NOT NULL AND master_key_id <> $1 ORDER BY id LIMIT $3 FOR UPDATE""",
        master_key_id,
        after,
        limit,
    )


async def rewrap(db: Executor, key_id: uuid.UUID, master_key_id: str, wrapped: bytes) -> None:
    await db.execute(
        "UPDATE data_key SET master_key_id = $2, wrapped = $3 WHERE id = $1 AND wrapped IS NOT NULL",
        key_id,
        master_key_id,
        wrapped,
    )


async def key_owners(db: Executor) -> list[asyncpg.Record]:
    """Every (tenant, user) with an active key (re-encryption gives each a new one)."""
    return await db.fetch("SELECT tenant_id, user_id FROM data_key WHERE active ORDER BY tenant_id, user_id")


async def rotation(db: Executor, job: str = "rotate") -> asyncpg.Record | None:
    """The progress row of `keys rotate` ("rotate") or of `keys seal` ("seal")."""
    return await db.fetchrow("SELECT * FROM key_rotation WHERE id = $1", job)


async def start_rotation(
    db: Executor, target: str, reencrypt: bool, job: str = "rotate", phase: str = "rewrap"
) -> None:
    await db.execute(
        """INSERT INTO key_rotation (id, target_master_key_id, reencrypt, phase, position)
           VALUES ($3, $1, $2, $4, NULL)
           ON CONFLICT (id) DO UPDATE SET target_master_key_id = $1, reencrypt = $2, phase = $4,
               position = NULL, keys_done = 0, rows_done = 0, started_at = now(), updated_at = now(),
               finished_at = NULL""",
        target,
        reencrypt,
        job,
        phase,
    )


async def note_rotation(
    db: Executor,
    phase: str,
    position: dict[str, Any] | None,
    keys: int = 0,
    rows: int = 0,
    job: str = "rotate",
) -> None:
    await db.execute(
        """UPDATE key_rotation SET phase = $1, position = $2, keys_done = keys_done + $3, rows_done = rows_done + $4,
               updated_at = now(), finished_at = CASE WHEN $1 = 'done' THEN now() END
           WHERE id = $5""",
        phase,
        position,
        keys,
        rows,
        job,
    )


async def sealed_batch(
    db: Executor, table: str, column: str, after: uuid.UUID | int, limit: int
) -> list[asyncpg.Record]:
    """The next rows of `table` whose `column` is sealed, by id, locked for this batch's short transaction; the
    value as bytes, which the pool's decoders leave sealed. (`table` and `column` come from SEALED_COLUMNS.)"""
    assert (table, column) in SEALED_COLUMNS
    return await db.fetch(
        f"""SELECT id, convert_to({column}, 'UTF8') AS raw FROM {table}
            WHERE id > $1 AND left({column}, 5) = chr(30) || 'tl1:' ORDER BY id LIMIT $2 FOR UPDATE""",
        after,
        limit,
    )


async def reseal(
    db: Executor, table: str, column: str, ids: list[uuid.UUID] | list[int], values: list[str]
) -> None:
    """Write re-sealed values; the triggers that follow content changes stay quiet (same text, new key)."""
    assert (table, column) in SEALED_COLUMNS
    await db.execute("SELECT set_config('threadline.resealing', 'on', true)")
    await db.execute(
        f"""UPDATE {table} t SET {column} = v.value FROM unnest($1::{_ids(table)}, $2::text[]) AS v(id, value)
            WHERE t.id = v.id""",
        ids,
        values,
    )


async def tenants_of_user_keys(db: Executor, user_id: uuid.UUID) -> list[uuid.UUID]:
    rows = await db.fetch("SELECT DISTINCT tenant_id FROM data_key WHERE user_id = $1", user_id)
    return [r["tenant_id"] for r in rows]


async def key_counts(db: Executor) -> list[asyncpg.Record]:
    """Data keys by master key and state (`keys status`)."""
    return await db.fetch(
        """SELECT master_key_id, active, shredded_at IS NOT NULL AS shredded, count(*) AS n FROM data_key
           GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"""
    )


# Who owns the key a plain value of each sealed column is sealed with by `keys seal` (NULL: the tenant).
OWNERS = {"message": "author_id", "message_edit": "editor_id"}


async def plain_batch(
    db: Executor, table: str, column: str, after: uuid.UUID | int, limit: int
) -> list[asyncpg.Record]:
    """The next rows of `table` whose `column` holds plain text (not empty, not sealed), by id, locked for this
    batch's short transaction, with their tenant and the user whose key seals them."""
    assert (table, column) in SEALED_COLUMNS
    owner = OWNERS.get(table, "NULL::uuid")
    return await db.fetch(
        f"""SELECT id, tenant_id, {owner} AS user_id, {column} AS value FROM {table}
            WHERE id > $1 AND {column} <> '' AND left({column}, 5) <> chr(30) || 'tl1:'
            ORDER BY id LIMIT $2 FOR UPDATE""",
        after,
        limit,
    )


# JSON columns whose strings `keys seal` seals (crypto.seal_parts, crypto.seal_attachment), after SEALED_COLUMNS.
JSON_SEALED: tuple[tuple[str, str], ...] = (("message", "parts"), ("message_attachment", "data"))
JSON_OWNERS = {"message": "author_id"}


async def json_batch(
    db: Executor, table: str, column: str, after: uuid.UUID, limit: int
) -> list[asyncpg.Record]:
    """The next rows of `table` holding a `column`, by id, locked for this batch, with their tenant, the user whose
    key seals them, and the value as JSON text (text the decoders leave as stored)."""
    assert (table, column) in JSON_SEALED
    owner = JSON_OWNERS.get(table, "NULL::uuid")
    return await db.fetch(
        f"""SELECT id, tenant_id, {owner} AS user_id, {column}::text AS raw FROM {table}
            WHERE id > $1 AND {column} IS NOT NULL ORDER BY id LIMIT $2 FOR UPDATE""",
        after,
        limit,
    )


async def set_json(db: Executor, table: str, column: str, ids: list[uuid.UUID], values: list[str]) -> None:
    assert (table, column) in JSON_SEALED
    await db.execute("SELECT set_config('threadline.resealing', 'on', true)")
    await db.execute(
        f"""UPDATE {table} t SET {column} = v.value::jsonb FROM unnest($1::uuid[], $2::text[]) AS v(id, value)
            WHERE t.id = v.id""",
        ids,
        values,
    )


async def events_batch(db: Executor, after: int, limit: int) -> list[asyncpg.Record]:
    """The next logged events by id, locked for this batch, their payload as JSON text (`keys seal`: text, which the
    pool's decoders leave as stored, sealed values and all)."""
    return await db.fetch(
        "SELECT id, tenant_id, payload::text AS raw FROM stream_event WHERE id > $1 ORDER BY id LIMIT $2 FOR UPDATE",
        after,
        limit,
    )


async def set_payloads(db: Executor, ids: list[int], payloads: list[str]) -> None:
    await db.execute(
        """UPDATE stream_event e SET payload = v.payload::jsonb FROM unnest($1::bigint[], $2::text[]) AS v(id, payload)
           WHERE e.id = v.id""",
        ids,
        payloads,
    )


async def stored_forms(db: Executor, tenant_id: uuid.UUID, message_ids: list[uuid.UUID]) -> list[str]:
    """The sealed values (as stored, not opened: read as bytes, which no decoder opens) of these messages'
    content, edits and chunks, and of the logged events carrying their text (snapshots, deltas)."""
    rows = await db.fetch(
        """SELECT convert_to(content, 'UTF8') AS v FROM message
               WHERE tenant_id = $1 AND id = ANY($2::uuid[]) AND left(content, 5) = chr(30) || 'tl1:'
           UNION ALL SELECT convert_to(content, 'UTF8') FROM message_edit
               WHERE tenant_id = $1 AND message_id = ANY($2::uuid[]) AND left(content, 5) = chr(30) || 'tl1:'
           UNION ALL SELECT convert_to(content, 'UTF8') FROM message_chunk
               WHERE tenant_id = $1 AND message_id = ANY($2::uuid[]) AND left(content, 5) = chr(30) || 'tl1:'
           UNION ALL SELECT convert_to(t, 'UTF8') FROM (
               SELECT coalesce(payload -> 'message' ->> 'content', payload ->> 'delta') AS t FROM stream_event
               WHERE tenant_id = $1 AND message_id = ANY($2::uuid[])) e
               WHERE left(t, 5) = chr(30) || 'tl1:'""",
        tenant_id,
        message_ids,
    )
    return [bytes(r["v"]).decode() for r in rows]


# -- re-encryption and sealing of the other places sealed values live (crypto.rotation) ------------------------


async def now(db: Executor) -> Any:
    """The database's clock (a rotation's retire time, compared with key rows' retired_at)."""
    return await db.fetchval("SELECT now()")


async def chunks_batch(
    db: Executor, after_blob: uuid.UUID, after_seq: int, limit: int
) -> list[asyncpg.Record]:
    """The next file chunks stored in PostgreSQL by (blob, seq), locked for this batch; `data` as stored (no decoder
    opens bytea)."""
    return await db.fetch(
        """SELECT blob_id, seq, tenant_id, data FROM file_chunk WHERE (blob_id, seq) > ($1, $2)
           ORDER BY blob_id, seq LIMIT $3 FOR UPDATE""",
        after_blob,
        after_seq,
        limit,
    )


async def set_chunks(db: Executor, blob_ids: list[uuid.UUID], seqs: list[int], data: list[bytes]) -> None:
    await db.execute(
        """UPDATE file_chunk c SET data = v.data FROM unnest($1::uuid[], $2::int[], $3::bytea[]) AS v(blob_id, seq, data)
           WHERE c.blob_id = v.blob_id AND c.seq = v.seq""",
        blob_ids,
        seqs,
        data,
    )


async def stored_blobs_batch(db: Executor, after: uuid.UUID, limit: int) -> list[asyncpg.Record]:
    """The next blobs whose bytes are outside PostgreSQL (the directory or the S3-compatible store), by id."""
    return await db.fetch(
        """SELECT id, tenant_id, sha256, storage FROM file_blob WHERE id > $1 AND storage <> 'postgres'
           ORDER BY id LIMIT $2""",
        after,
        limit,
    )


async def blob_present(db: Executor, tenant_id: uuid.UUID, blob_id: uuid.UUID) -> bool:
    """Whether the blob is still stored (its tenant's file lock held: no upload or clean-up changes it meanwhile)."""
    return bool(
        await db.fetchval(
            "SELECT EXISTS (SELECT 1 FROM file_blob WHERE tenant_id = $1 AND id = $2)", tenant_id, blob_id
        )
    )


async def cold_batch(
    db: Executor, after: uuid.UUID, limit: int, frozen_since: Any = None
) -> list[asyncpg.Record]:
    """The next cold documents by conversation, locked for this batch (a restore waits, then reads the new one);
    with `frozen_since`, only those frozen at or after it."""
    return await db.fetch(
        """SELECT conversation_id, tenant_id, document, codec FROM conversation_tier
           WHERE conversation_id > $1 AND document IS NOT NULL AND ($3::timestamptz IS NULL OR frozen_at >= $3)
           ORDER BY conversation_id LIMIT $2 FOR UPDATE""",
        after,
        limit,
        frozen_since,
    )


async def set_cold(db: Executor, conversation_id: uuid.UUID, document: bytes) -> None:
    await db.execute(
        """UPDATE conversation_tier SET document = $2::bytea, cold_bytes = octet_length($2::bytea)
           WHERE conversation_id = $1 AND document IS NOT NULL""",
        conversation_id,
        document,
    )


async def shred_retired(db: Executor, retired_by: Any) -> list[uuid.UUID]:
    """Erase the data keys retired at or before `retired_by` (a finished re-encryption's retire time), not shredded
    yet; their ids."""
    rows = await db.fetch(
        """UPDATE data_key SET wrapped = NULL, master_key_id = NULL, shredded_at = now()
           WHERE NOT active AND shredded_at IS NULL AND retired_at <= $1 RETURNING id""",
        retired_by,
    )
    return [r["id"] for r in rows]
