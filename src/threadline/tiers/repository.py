"""All SQL of the storage tiers: the catalog the plan is read from, moving rows into and out of a cold
document, the cold documents themselves, and the tier policy. Tenant first in every signature."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from threadline.db import Executor

# The tenant setting: conversations archived, or without activity, for this many days go cold.
POLICY_KEY = "coldAfterDays"


# -- the catalog -----------------------------------------------------------------------------------------


async def foreign_keys(db: Executor) -> list[asyncpg.Record]:
    """Every single-column foreign key of the public schema: (tbl, col, ref, ref_col, on_delete)."""
    return await db.fetch(
        """SELECT c.conrelid::regclass::text AS tbl, a.attname::text AS col,
                  c.confrelid::regclass::text AS ref, ra.attname::text AS ref_col,
                  c.confdeltype::text AS on_delete
           FROM pg_constraint c
           JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
           JOIN pg_attribute ra ON ra.attrelid = c.confrelid AND ra.attnum = c.confkey[1]
           WHERE c.contype = 'f' AND c.connamespace = 'public'::regnamespace AND cardinality(c.conkey) = 1
           ORDER BY 1, 2"""
    )


async def table_columns(db: Executor, tables: list[str]) -> list[asyncpg.Record]:
    """(tbl, col, type, generated, identity) of every live column of `tables`, in column order."""
    return await db.fetch(
        """SELECT c.relname::text AS tbl, a.attname::text AS col, format_type(a.atttypid, a.atttypmod) AS type,
                  a.attgenerated <> '' AS generated, a.attidentity <> '' AS identity
           FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid
           WHERE c.relnamespace = 'public'::regnamespace AND c.relname = ANY($1::text[])
             AND a.attnum > 0 AND NOT a.attisdropped
           ORDER BY c.relname, a.attnum""",
        tables,
    )


# -- moving rows (SQL built by tiers.plan from the catalog: identifiers only, values bound) ---------------


async def blocked(db: Executor, tenant_id: uuid.UUID, conversation_id: uuid.UUID, sql: str) -> bool:
    """Whether the conversation must stay hot (`sql` from the plan: references from outside, open runs)."""
    return bool(await db.fetchval(sql, tenant_id, conversation_id))


async def dump_rows(
    db: Executor, tenant_id: uuid.UUID, conversation_id: uuid.UUID, sql: str, excluded: list[str]
) -> asyncpg.Record:
    """(rows, bytes, json) of one table's rows of the conversation: `json` is their array as text."""
    row = await db.fetchrow(sql, tenant_id, conversation_id, excluded)
    assert row is not None
    return row


async def delete_rows(db: Executor, tenant_id: uuid.UUID, conversation_id: uuid.UUID, sql: str) -> None:
    await db.execute(sql, tenant_id, conversation_id)


async def insert_rows(db: Executor, sql: str, rows_json: str) -> int:
    status = await db.execute(sql, rows_json)
    return int(status.rsplit(" ", 1)[-1])


async def set_tier_move(db: Executor, on: bool) -> None:
    """Transaction-local: the attachment trigger keeps uploads whose last message moves into a document."""
    await db.execute("SELECT set_config('threadline.tier_move', $1, true)", "on" if on else "off")


async def uploaders(
    db: Executor, tenant_id: uuid.UUID, table: str, col: str, key: str, ids: list[Any]
) -> list[Any]:
    """Values of `col` on the rows of `table` whose `key` is one of `ids` (who uploaded an attached file)."""
    return [
        r[0]
        for r in await db.fetch(
            f'SELECT DISTINCT "{col}" FROM "{table}" WHERE tenant_id = $1 AND "{key}"::text = ANY($2::text[])'
            f' AND "{col}" IS NOT NULL',
            tenant_id,
            [str(i) for i in ids],
        )
    ]


# -- cold documents --------------------------------------------------------------------------------------


async def cold_flags(db: Executor, tenant_id: uuid.UUID, ids: list[uuid.UUID]) -> set[uuid.UUID]:
    rows = await db.fetch(
        """SELECT conversation_id FROM conversation_tier
           WHERE tenant_id = $1 AND conversation_id = ANY($2::uuid[]) AND document IS NOT NULL""",
        tenant_id,
        ids,
    )
    return {r["conversation_id"] for r in rows}


async def store_document(
    db: Executor,
    tenant_id: uuid.UUID,
    conversation_id: uuid.UUID,
    *,
    document: bytes,
    codec: str,
    hot_bytes: int,
    row_count: int,
    message_ids: list[uuid.UUID],
    run_ids: list[uuid.UUID],
    user_ids: list[uuid.UUID],
) -> None:
    await db.execute(
        """INSERT INTO conversation_tier AS t (conversation_id, tenant_id, document, codec, hot_bytes, cold_bytes,
               row_count, message_ids, run_ids, user_ids, frozen_at, restored_at)
           VALUES ($2, $1, $3::bytea, $4, $5, octet_length($3::bytea), $6, $7, $8, $9, now(), NULL)
           ON CONFLICT (conversation_id) DO UPDATE SET document = EXCLUDED.document, codec = EXCLUDED.codec,
               hot_bytes = EXCLUDED.hot_bytes, cold_bytes = EXCLUDED.cold_bytes, row_count = EXCLUDED.row_count,
               message_ids = EXCLUDED.message_ids, run_ids = EXCLUDED.run_ids, user_ids = EXCLUDED.user_ids,
               frozen_at = now(), restored_at = NULL, deep = false""",
        tenant_id,
        conversation_id,
        document,
        codec,
        hot_bytes,
        row_count,
        message_ids,
        run_ids,
        user_ids,
    )


async def take_document(
    db: Executor, tenant_id: uuid.UUID, conversation_id: uuid.UUID
) -> asyncpg.Record | None:
    """The cold document (document, codec), locked; None when the conversation is not cold (any more).

    A second restorer waits on the row lock and then finds no document: restoring is idempotent."""
    return await db.fetchrow(
        """SELECT document, codec, deep, row_count FROM conversation_tier
           WHERE tenant_id = $1 AND conversation_id = $2 AND document IS NOT NULL FOR UPDATE""",
        tenant_id,
        conversation_id,
    )


async def peek_document(
    db: Executor, tenant_id: uuid.UUID, conversation_id: uuid.UUID
) -> asyncpg.Record | None:
    return await db.fetchrow(
        """SELECT document, codec FROM conversation_tier
           WHERE tenant_id = $1 AND conversation_id = $2 AND document IS NOT NULL""",
        tenant_id,
        conversation_id,
    )


async def mark_restored(db: Executor, tenant_id: uuid.UUID, conversation_id: uuid.UUID) -> None:
    """The document is gone (its rows are hot again); the row stays with the restore time. The message and run
    ids stay too: a lookup that missed a row while another transaction was restoring it finds where to look
    again (ids only; the users it named are forgotten)."""
    await db.execute(
        """UPDATE conversation_tier SET document = NULL, hot_bytes = 0, cold_bytes = 0, row_count = 0,
               user_ids = ARRAY[]::uuid[], restored_at = now(), deep = false
           WHERE tenant_id = $1 AND conversation_id = $2""",
        tenant_id,
        conversation_id,
    )


async def tenant_of_cold(db: Executor, conversation_id: uuid.UUID) -> uuid.UUID | None:
    """The tenant of a cold conversation (an operator names only the conversation)."""
    value = await db.fetchval(
        "SELECT tenant_id FROM conversation_tier WHERE conversation_id = $1 AND document IS NOT NULL",
        conversation_id,
    )
    return value if isinstance(value, uuid.UUID) else None


async def holding_message(db: Executor, tenant_id: uuid.UUID, message_id: uuid.UUID) -> uuid.UUID | None:
    value = await db.fetchval(
        """SELECT conversation_id FROM conversation_tier
           WHERE tenant_id = $1 AND message_ids @> ARRAY[$2::uuid]""",
        tenant_id,
        message_id,
    )
    return value if isinstance(value, uuid.UUID) else None


async def holding_run(db: Executor, tenant_id: uuid.UUID, run_id: uuid.UUID) -> uuid.UUID | None:
    value = await db.fetchval(
        """SELECT conversation_id FROM conversation_tier
           WHERE tenant_id = $1 AND run_ids @> ARRAY[$2::uuid]""",
        tenant_id,
        run_id,
    )
    return value if isinstance(value, uuid.UUID) else None


async def naming_user(db: Executor, tenant_id: uuid.UUID, user_id: uuid.UUID) -> list[uuid.UUID]:
    """Cold conversations whose document names the user (author, editor, reader, rater, uploader...)."""
    rows = await db.fetch(
        """SELECT conversation_id FROM conversation_tier
           WHERE tenant_id = $1 AND user_ids @> ARRAY[$2::uuid] AND document IS NOT NULL
           ORDER BY conversation_id""",
        tenant_id,
        user_id,
    )
    return [r["conversation_id"] for r in rows]


async def cold_documents(db: Executor, tenant_id: uuid.UUID | None) -> list[asyncpg.Record]:
    """Every cold document's conversation and codec (all tenants when `tenant_id` is None)."""
    return await db.fetch(
        """SELECT tenant_id, conversation_id, codec FROM conversation_tier
           WHERE document IS NOT NULL AND ($1::uuid IS NULL OR tenant_id = $1) ORDER BY conversation_id""",
        tenant_id,
    )


# -- the pass and the report -----------------------------------------------------------------------------


async def tenants_with_policy(db: Executor) -> list[asyncpg.Record]:
    return await db.fetch(
        f"""SELECT id, (settings ->> '{POLICY_KEY}')::float8 AS days FROM tenant
            WHERE jsonb_typeof(settings -> '{POLICY_KEY}') = 'number' ORDER BY id"""
    )


async def claim_candidates(
    db: Executor, tenant_id: uuid.UUID, days: float, after: uuid.UUID | None, limit: int
) -> list[uuid.UUID]:
    """Up to `limit` conversations (ids above `after`, in id order) archived or idle for `days`, not cold and
    not restored within `days`; locked, skipping rows another transaction holds."""
    rows = await db.fetch(
        """SELECT c.id FROM conversation c
           WHERE c.tenant_id = $1 AND ($3::uuid IS NULL OR c.id > $3)
             AND c.status IN ('ACTIVE', 'ARCHIVED')
             AND ((c.status = 'ARCHIVED' AND c.updated_at <= now() - make_interval(secs => $2 * 86400))
                  OR c.last_activity_at <= now() - make_interval(secs => $2 * 86400))
             AND NOT EXISTS (SELECT 1 FROM conversation_tier t WHERE t.conversation_id = c.id AND t.tenant_id = $1
                             AND (t.document IS NOT NULL
                                  OR t.restored_at > now() - make_interval(secs => $2 * 86400)))
           ORDER BY c.id LIMIT $4 FOR UPDATE OF c SKIP LOCKED""",
        tenant_id,
        days,
        after,
        limit,
    )
    return [r["id"] for r in rows]


async def lock_conversation(db: Executor, tenant_id: uuid.UUID, conversation_id: uuid.UUID) -> bool:
    """The conversation row, locked (waiting for writers that hold it); False when there is none."""
    value = await db.fetchval(
        "SELECT 1 FROM conversation WHERE tenant_id = $1 AND id = $2 FOR UPDATE", tenant_id, conversation_id
    )
    return value is not None


async def storage_report(db: Executor, tenant_id: uuid.UUID | None) -> asyncpg.Record:
    row = await db.fetchrow(
        """SELECT count(*) AS conversations, coalesce(sum(row_count), 0)::bigint AS rows,
                  coalesce(sum(hot_bytes), 0)::bigint AS hot_bytes, coalesce(sum(cold_bytes), 0)::bigint AS cold_bytes
           FROM conversation_tier WHERE document IS NOT NULL AND ($1::uuid IS NULL OR tenant_id = $1)""",
        tenant_id,
    )
    assert row is not None
    return row


async def tenant_policy(db: Executor, tenant_id: uuid.UUID) -> float | None:
    value = await db.fetchval(
        f"SELECT (settings ->> '{POLICY_KEY}')::float8 FROM tenant WHERE id = $1 "
        f"AND jsonb_typeof(settings -> '{POLICY_KEY}') = 'number'",
        tenant_id,
    )
    return float(value) if value is not None else None


async def set_tenant_policy(db: Executor, tenant_id: uuid.UUID, days: int | None) -> None:
    if days is None:
        await db.execute(f"UPDATE tenant SET settings = settings - '{POLICY_KEY}' WHERE id = $1", tenant_id)
    else:
        await db.execute(
            "UPDATE tenant SET settings = coalesce(settings, '{}'::jsonb) || jsonb_build_object($2::text, $3::int)"
            " WHERE id = $1",
            tenant_id,
            POLICY_KEY,
            days,
        )


# -- deep storage ----------------------------------------------------------------------------------------

DEEP_KEY = "deepAfterDays"


async def tenants_with_deep_policy(db: Executor) -> list[asyncpg.Record]:
    return await db.fetch(
        f"""SELECT id, (settings ->> '{DEEP_KEY}')::float8 AS days FROM tenant
            WHERE jsonb_typeof(settings -> '{DEEP_KEY}') = 'number' ORDER BY id"""
    )


async def claim_deepen(db: Executor, tenant_id: uuid.UUID, days: float, limit: int) -> list[asyncpg.Record]:
    """Up to `limit` cold documents frozen `days` ago or more and not deep yet, locked (SKIP LOCKED)."""
    return await db.fetch(
        """SELECT conversation_id, document, codec FROM conversation_tier
           WHERE tenant_id = $1 AND document IS NOT NULL AND NOT deep
             AND frozen_at <= now() - make_interval(secs => $2 * 86400)
           ORDER BY conversation_id LIMIT $3 FOR UPDATE SKIP LOCKED""",
        tenant_id,
        days,
        limit,
    )


async def store_deep(
    db: Executor, tenant_id: uuid.UUID, conversation_id: uuid.UUID, document: bytes, codec: str
) -> None:
    await db.execute(
        """UPDATE conversation_tier SET document = $3::bytea, codec = $4, cold_bytes = octet_length($3::bytea),
               deep = true
           WHERE tenant_id = $1 AND conversation_id = $2""",
        tenant_id,
        conversation_id,
        document,
        codec,
    )


async def tenant_deep_policy(db: Executor, tenant_id: uuid.UUID) -> float | None:
    value = await db.fetchval(
        f"SELECT (settings ->> '{DEEP_KEY}')::float8 FROM tenant WHERE id = $1 "
        f"AND jsonb_typeof(settings -> '{DEEP_KEY}') = 'number'",
        tenant_id,
    )
    return float(value) if value is not None else None


async def set_tenant_deep_policy(db: Executor, tenant_id: uuid.UUID, days: int | None) -> None:
    if days is None:
        await db.execute(f"UPDATE tenant SET settings = settings - '{DEEP_KEY}' WHERE id = $1", tenant_id)
    else:
        await db.execute(
            "UPDATE tenant SET settings = coalesce(settings, '{}'::jsonb) || jsonb_build_object($2::text, $3::int)"
            " WHERE id = $1",
            tenant_id,
            DEEP_KEY,
            days,
        )


async def record_progress(
    db: Executor, tenant_id: uuid.UUID, conversation_id: uuid.UUID, state: str, done: int, total: int
) -> None:
    """Progress of an explicit restore; `db` is the pool (autocommit), so readers see it while it runs."""
    await db.execute(
        """INSERT INTO tier_restore AS r (conversation_id, tenant_id, state, rows_done, rows_total)
           VALUES ($2, $1, $3, $4, $5)
           ON CONFLICT (conversation_id) DO UPDATE SET state = EXCLUDED.state, rows_done = EXCLUDED.rows_done,
               rows_total = EXCLUDED.rows_total, updated_at = now(),
               started_at = CASE WHEN EXCLUDED.state = 'RESTORING' AND EXCLUDED.rows_done = 0 THEN now()
                                 ELSE r.started_at END""",
        tenant_id,
        conversation_id,
        state,
        done,
        total,
    )


async def storage_states(db: Executor, tenant_id: uuid.UUID, ids: list[uuid.UUID]) -> list[asyncpg.Record]:
    """Per conversation: its tier and its latest explicit restore (rows only for conversations that have one)."""
    return await db.fetch(
        """SELECT c.id, (t.document IS NOT NULL) AS cold, coalesce(t.deep, false) AS deep,
                  r.state, r.rows_done, r.rows_total, r.started_at, r.updated_at
           FROM unnest($2::uuid[]) AS c(id)
           LEFT JOIN conversation_tier t ON t.conversation_id = c.id AND t.tenant_id = $1
           LEFT JOIN tier_restore r ON r.conversation_id = c.id AND r.tenant_id = $1""",
        tenant_id,
        ids,
    )


async def index_sealed_messages(db: Executor, tenant_id: uuid.UUID, conversation_id: uuid.UUID) -> None:
    """Restored messages whose content is sealed (crypto/) get their full-text vector back from the plaintext (the
    document leaves derived columns out, and the trigger cannot read sealed text)."""
    rows = await db.fetch(
        """SELECT id, content FROM message
           WHERE tenant_id = $1 AND conversation_id = $2 AND search_vector IS NULL AND deleted_at IS NULL
             AND left(content, 5) = chr(30) || 'tl1:'""",
        tenant_id,
        conversation_id,
    )
    if rows:
        await db.execute(
            """UPDATE message m SET search_vector = threadline_search_vector(threadline_search_config($1), v.body)
               FROM unnest($2::uuid[], $3::text[]) AS v(id, body) WHERE m.tenant_id = $1 AND m.id = v.id""",
            tenant_id,
            [r["id"] for r in rows],
            [r["content"] for r in rows],
        )
