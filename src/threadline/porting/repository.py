"""All SQL of import, export, erasure and retention. Tenant first in every signature."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

from threadline import crypto
from threadline.conversations.repository import CONVERSATION_COLUMNS
from threadline.db import Executor, Transaction
from threadline.threads import repository as threads_repo
from threadline.threads.repository import MESSAGE_COLUMNS

THREAD_COPY_COLUMNS = (
    "id",
    "tenant_id",
    "conversation_id",
    "reply_count",
    "last_seq",
    "created_at",
    "last_activity_at",
)


# -- import ------------------------------------------------------------------------------------------


async def imported_conversations(
    db: Executor, tenant_id: uuid.UUID, owner_id: uuid.UUID, source: str, external_ids: list[str]
) -> dict[str, asyncpg.Record]:
    """(conversation_id, status, ...) of each source item this user imported before, with the node digests and
    the fingerprint (porting.jsonstream.fingerprint) of the item it was last imported or merged from."""
    rows = await db.fetch(
        """SELECT s.external_id, s.conversation_id, c.status, c.imported_from IS NULL AS no_origin, s.node_digests,
                  s.fingerprint
           FROM import_source s
           JOIN conversation c ON c.id = s.conversation_id
           WHERE s.tenant_id = $1 AND s.owner_id = $2 AND s.source = $3 AND s.external_id = ANY($4::varchar[])""",
        tenant_id,
        owner_id,
        source,
        external_ids,
    )
    return {r["external_id"]: r for r in rows}


async def release_deleted_source(
    db: Executor, tenant_id: uuid.UUID, owner_id: uuid.UUID, source: str, external_id: str
) -> None:
    """Forget the user's import of a source item whose conversation they deleted: it can be imported again
    (as a new conversation; the deleted one stays restorable, without the import identity)."""
    await db.execute(
        """DELETE FROM import_source s USING conversation c
           WHERE s.tenant_id = $1 AND s.owner_id = $2 AND s.source = $3 AND s.external_id = $4
             AND c.id = s.conversation_id AND c.status = 'DELETED'""",
        tenant_id,
        owner_id,
        source,
        external_id,
    )


async def claim_source(
    db: Executor,
    tenant_id: uuid.UUID,
    owner_id: uuid.UUID,
    source: str,
    external_id: str,
    conversation_id: uuid.UUID,
) -> bool:
    """Record where a conversation came from; False if this user imported that source item already."""
    row = await db.fetchval(
        """INSERT INTO import_source (id, tenant_id, owner_id, source, external_id, conversation_id)
           VALUES ($1, $2, $3, $4, $5, $6)
           ON CONFLICT (tenant_id, owner_id, source, external_id) DO NOTHING RETURNING id""",
        uuid.uuid4(),
        tenant_id,
        owner_id,
        source,
        external_id,
        conversation_id,
    )
    return row is not None


async def merge_targets(
    db: Executor, tenant_id: uuid.UUID, conversation_id: uuid.UUID
) -> list[asyncpg.Record]:
    """Every message of a conversation as a merge re-import compares it: source id, id, the md5 of its text
    (not the text: few messages change; a sealed one's text, opened: merging.stored_digest), whether it is
    deleted."""
    return await db.fetch(
        """SELECT m.import_key, m.id, m.root_id, m.path, md5(m.content) AS digest, m.deleted_at IS NOT NULL AS deleted,
                  CASE WHEN left(m.content, 5) = chr(30) || 'tl1:' THEN m.content END AS sealed
           FROM message m
           WHERE m.tenant_id = $1 AND m.conversation_id = $2""",
        tenant_id,
        conversation_id,
    )


async def merge_parents(db: Executor, tenant_id: uuid.UUID, ids: list[uuid.UUID]) -> list[asyncpg.Record]:
    """Where the messages that get new replies in a merge sit: root, depth, path, child count. Locked, as a
    live reply locks its parent: the next reply's rank is the child count, so it must not move under us."""
    if not ids:
        return []
    return await db.fetch(
        """SELECT m.id, m.root_id, m.depth, m.path, m.child_count FROM message m
           WHERE m.tenant_id = $1 AND m.id = ANY($2::uuid[]) ORDER BY m.id FOR UPDATE""",
        tenant_id,
        ids,
    )


async def merged_thread_activity(
    db: Executor,
    tenant_id: uuid.UUID,
    root_id: uuid.UUID,
    replies: int,
    last_seq: int | None,
    newest: datetime | None,
) -> asyncpg.Record:
    """Count replies a merge re-import added to a thread; its last activity moves to the newest of them
    (their source times, as for a first import), never back. With no replies, just the thread's counters."""
    row = await db.fetchrow(
        """UPDATE thread SET reply_count = reply_count + $3, last_seq = greatest(last_seq, coalesce($4, last_seq)),
               last_activity_at = greatest(last_activity_at, coalesce($5, last_activity_at))
           WHERE tenant_id = $1 AND id = $2 RETURNING id, reply_count, last_activity_at, last_seq""",
        tenant_id,
        root_id,
        replies,
        last_seq,
        newest,
    )
    assert row is not None
    return row


async def merged_threads_activity(
    db: Executor,
    tenant_id: uuid.UUID,
    root_ids: list[uuid.UUID],
    replies: list[int],
    last_seqs: list[int],
    newest: list[datetime],
) -> dict[uuid.UUID, asyncpg.Record]:
    """`merged_thread_activity` for several threads in one statement: each thread's new replies counted."""
    if not root_ids:
        return {}
    rows = await db.fetch(
        """UPDATE thread t SET reply_count = t.reply_count + k.n, last_seq = greatest(t.last_seq, k.seq),
               last_activity_at = greatest(t.last_activity_at, k.newest)
           FROM unnest($2::uuid[], $3::int[], $4::bigint[], $5::timestamptz[]) AS k(id, n, seq, newest)
           WHERE t.tenant_id = $1 AND t.id = k.id RETURNING t.id, t.reply_count, t.last_activity_at, t.last_seq""",
        tenant_id,
        root_ids,
        replies,
        last_seqs,
        newest,
    )
    return {r["id"]: r for r in rows}


async def add_child_counts(
    db: Executor, tenant_id: uuid.UUID, message_ids: list[uuid.UUID], added: list[int]
) -> None:
    await db.execute(
        """UPDATE message m SET child_count = m.child_count + k.n
           FROM unnest($2::uuid[], $3::int[]) AS k(id, n) WHERE m.tenant_id = $1 AND m.id = k.id""",
        tenant_id,
        message_ids,
        added,
    )


async def insert_imported_conversation(
    db: Executor,
    tenant_id: uuid.UUID,
    owner_id: uuid.UUID,
    source: str,
    external_id: str,
    messages: int,
    **f: Any,
) -> list[int] | None:
    """The conversation, its owner and its source in one round trip, with `messages` sequence numbers
    drawn for its messages; None (and nothing usable: roll back) if the source was imported already."""
    row = await db.fetchrow(
        """WITH conv AS (
               INSERT INTO conversation (id, tenant_id, owner_id, title, description, tags, status, session_id,
                   ai_provider, model, max_history_messages, message_count, token_count, created_at, updated_at,
                   last_activity_at, imported_from)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $22) RETURNING id
           ), owner AS (
               INSERT INTO participant (id, tenant_id, conversation_id, user_id, role)
               SELECT $17, $2, id, $3, 'OWNER' FROM conv
           ), src AS (
               INSERT INTO import_source (id, tenant_id, owner_id, source, external_id, conversation_id, node_digests)
               SELECT $18, $2, $3, $19, $20, id, $23 FROM conv
               ON CONFLICT (tenant_id, owner_id, source, external_id) DO NOTHING RETURNING id
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
        f.get("imported_from"),
        f.get("node_digests"),
    )
    assert row is not None
    return sorted(row["seqs"]) if row["claimed"] else None


async def next_seqs(db: Executor, count: int) -> list[int]:
    rows = await db.fetch("SELECT nextval('message_seq_seq') AS s FROM generate_series(1, $1)", count)
    return sorted(r["s"] for r in rows)


async def copy_threads(tx: Transaction, records: Sequence[tuple[Any, ...]]) -> None:
    await tx.conn.copy_records_to_table("thread", records=records, columns=THREAD_COPY_COLUMNS)


# -- export ------------------------------------------------------------------------------------------


async def conversation_messages(
    db: Executor, tenant_id: uuid.UUID, conversation_id: uuid.UUID
) -> list[asyncpg.Record]:
    """Every message of every thread: threads oldest first, each depth-first (one index range per thread)."""
    return await db.fetch(
        f"""SELECT {MESSAGE_COLUMNS}, m.parts FROM message m JOIN message r ON r.id = m.root_id
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
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'public' AND table_name = $1",
        name,
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
        "SELECT id FROM conversation WHERE tenant_id = $1 AND owner_id = $2 ORDER BY created_at, id",
        tenant_id,
        user_id,
    )
    return [r["id"] for r in rows]


async def authored_elsewhere(db: Executor, tenant_id: uuid.UUID, user_id: uuid.UUID) -> list[asyncpg.Record]:
    """Messages a user wrote in conversations they do not own, with the conversation's id."""
    return await db.fetch(
        f"""SELECT {MESSAGE_COLUMNS}, m.parts FROM message m JOIN conversation c ON c.id = m.conversation_id
            WHERE m.tenant_id = $1 AND m.author_id = $2 AND c.owner_id IS DISTINCT FROM $2
            ORDER BY m.conversation_id, m.seq""",
        tenant_id,
        user_id,
    )


async def conversation_row(
    db: Executor, tenant_id: uuid.UUID, conversation_id: uuid.UUID
) -> asyncpg.Record | None:
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


# -- tenant settings (retention policy, erasure placeholder) ------------------------------------------


async def tenant_settings(db: Executor, tenant_id: uuid.UUID, *, lock: bool = False) -> dict[str, Any]:
    """The tenant's settings object; with `lock`, the tenant row stays locked until the transaction ends."""
    value = await db.fetchval(
        "SELECT settings FROM tenant WHERE id = $1" + (" FOR UPDATE" if lock else ""), tenant_id
    )
    return value if isinstance(value, dict) else {}


async def merge_tenant_settings(db: Executor, tenant_id: uuid.UUID, values: dict[str, Any]) -> None:
    """Set these keys of the tenant's settings (bound as a parameter: Piccolo mangles literal braces)."""
    await db.execute("UPDATE tenant SET settings = settings || $2::jsonb WHERE id = $1", tenant_id, values)


async def drop_tenant_setting(db: Executor, tenant_id: uuid.UUID, key: str) -> None:
    await db.execute("UPDATE tenant SET settings = settings - $2::text WHERE id = $1", tenant_id, key)


# -- erasure and retention ---------------------------------------------------------------------------


async def delete_conversations(db: Executor, tenant_id: uuid.UUID, ids: list[uuid.UUID]) -> None:
    """Hard-delete conversations with everything in them (cascade) and their events in the log."""
    await db.execute(
        "DELETE FROM stream_event WHERE tenant_id = $1 AND conversation_id = ANY($2::uuid[])", tenant_id, ids
    )
    await db.execute("DELETE FROM conversation WHERE tenant_id = $1 AND id = ANY($2::uuid[])", tenant_id, ids)


async def lock_owned_conversations(db: Executor, tenant_id: uuid.UUID, user_id: uuid.UUID) -> list[uuid.UUID]:
    rows = await db.fetch(
        "SELECT id FROM conversation WHERE tenant_id = $1 AND owner_id = $2 FOR UPDATE", tenant_id, user_id
    )
    return [r["id"] for r in rows]


async def lock_authored_messages(db: Executor, tenant_id: uuid.UUID, user_id: uuid.UUID) -> list[uuid.UUID]:
    rows = await db.fetch(
        "SELECT id FROM message WHERE tenant_id = $1 AND author_id = $2 FOR UPDATE", tenant_id, user_id
    )
    return [r["id"] for r in rows]


async def redact_messages(
    db: Executor, tenant_id: uuid.UUID, message_ids: list[uuid.UUID]
) -> list[asyncpg.Record]:
    """Messages become tombstones: content, edit history, chunks and attachments go; the nodes stay.
    Returns (id, content, edited_at, deleted_at) of each, for the event scrub."""
    await crypto.forget_messages(db, tenant_id, message_ids)  # their opened text leaves this process's cache
    for table in ("message_edit", "message_chunk", "message_attachment"):
        await db.execute(
            f"DELETE FROM {table} WHERE tenant_id = $1 AND message_id = ANY($2::uuid[])",
            tenant_id,
            message_ids,
        )
    await threads_repo.forget_import_digests(db, tenant_id, message_ids)
    return await db.fetch(
        """UPDATE message SET content = '', parts = NULL, metadata = NULL, deleted_at = coalesce(deleted_at, now())
           WHERE tenant_id = $1 AND id = ANY($2::uuid[]) RETURNING id, content, edited_at, deleted_at""",
        tenant_id,
        message_ids,
    )


async def delete_events_mentioning(
    db: Executor, tenant_id: uuid.UUID, user_id: uuid.UUID, public_user_id: str, public_message_ids: list[str]
) -> None:
    """Events addressed to the user, naming them anywhere in their payload, or carrying one of the messages."""
    await db.execute(
        """DELETE FROM stream_event WHERE tenant_id = $1 AND (recipient_id = $2 OR strpos(payload::text, $3) > 0
               OR payload -> 'message' ->> 'id' = ANY($4::text[]))""",
        tenant_id,
        user_id,
        public_user_id,
        public_message_ids,
    )


async def user_references(db: Executor) -> list[tuple[str, str, bool]]:
    """Every (table, column) with a foreign key to app_user, whoever's domain it belongs to, and whether
    the table has a tenant_id column (the catalog itself has no tenant)."""
    rows = await db.fetch(
        """SELECT c.conrelid::regclass::text AS tbl, a.attname AS col,
                  EXISTS (SELECT 1 FROM pg_attribute t WHERE t.attrelid = c.conrelid AND t.attname = 'tenant_id'
                          AND NOT t.attisdropped) AS scoped
           FROM pg_constraint c JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey)
           WHERE c.contype = 'f' AND c.confrelid = 'app_user'::regclass ORDER BY 1, 2"""
    )
    return [(r["tbl"].strip('"'), r["col"], r["scoped"]) for r in rows]


def _naming_user(column: str, scoped: bool) -> str:
    # Names come from the catalog (user_references), never from input.
    return f"tenant_id = $1 AND {column} = $2" if scoped else f"{column} = $2 AND $1::uuid IS NOT NULL"


async def reassign_user_rows(
    db: Executor,
    tenant_id: uuid.UUID,
    table: str,
    column: str,
    scoped: bool,
    user_id: uuid.UUID,
    to: uuid.UUID,
) -> None:
    """Rows of `table` whose `column` names the user now name `to` (a reference found by user_references).
    An import identity moved to another user (`userAnonymise`'s pseudonym, who has no credentials: nobody imports as
    them again) keeps nothing of the source text: the node digests and the fingerprint of the bytes its messages
    came from each confirmed a guess of what was masked in them."""
    forget = ", node_digests = NULL, fingerprint = NULL" if table == "import_source" else ""
    await db.execute(
        f"UPDATE {table} SET {column} = $3{forget} WHERE {_naming_user(column, scoped)}",
        tenant_id,
        user_id,
        to,
    )


async def delete_user_rows(
    db: Executor, tenant_id: uuid.UUID, table: str, column: str, scoped: bool, user_id: uuid.UUID
) -> None:
    await db.execute(f"DELETE FROM {table} WHERE {_naming_user(column, scoped)}", tenant_id, user_id)


async def delete_user(db: Executor, tenant_id: uuid.UUID, user_id: uuid.UUID) -> None:
    await db.execute("DELETE FROM app_user WHERE tenant_id = $1 AND id = $2", tenant_id, user_id)


async def tenants_with_retention(db: Executor) -> list[asyncpg.Record]:
    """(id, days) of every tenant with a retention policy: the purge job's work list, over all tenants."""
    return await db.fetch(
        """SELECT id, (settings ->> 'retentionDays')::int AS days FROM tenant
           WHERE jsonb_typeof(settings -> 'retentionDays') = 'number'"""
    )


async def lock_expired_conversations(
    db: Executor, tenant_id: uuid.UUID, days: int, limit: int
) -> list[uuid.UUID]:
    """Up to `limit` conversations deleted, or without activity, for `days` or more; rows another process
    is purging are skipped."""
    rows = await db.fetch(
        """SELECT id FROM conversation
           WHERE tenant_id = $1 AND (last_activity_at < now() - make_interval(days => $2)
               OR (status = 'DELETED' AND updated_at < now() - make_interval(days => $2)))
           ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED""",
        tenant_id,
        days,
        limit,
    )
    return [r["id"] for r in rows]


async def set_node_digests(
    db: Executor, tenant_id: uuid.UUID, conversation_id: uuid.UUID, source: str, digests: dict[str, str]
) -> None:
    """The source nodes as this import saw them (a later re-import reads only the new ones). Those whose message is
    deleted here are forgotten (`chatgpt_nodes.FORGOTTEN`), also one deleted after the caller read the rows (no
    lock is held: the delete found no digests to forget then)."""
    await db.execute(
        """UPDATE import_source SET node_digests = $4::jsonb || coalesce(
               (SELECT jsonb_object_agg(m.import_key, '') FROM message m
                WHERE m.tenant_id = $1 AND m.conversation_id = $2 AND m.deleted_at IS NOT NULL
                  AND $4::jsonb ? m.import_key),
               '{}'::jsonb)
           WHERE tenant_id = $1 AND conversation_id = $2 AND source = $3""",
        tenant_id,
        conversation_id,
        source,
        digests,
    )


async def set_origin(
    db: Executor, tenant_id: uuid.UUID, conversation_id: uuid.UUID, origin: dict[str, Any]
) -> None:
    """Where a conversation came from, for one imported before this was recorded (a merge re-import)."""
    await db.execute(
        """UPDATE conversation SET imported_from = $3
           WHERE tenant_id = $1 AND id = $2 AND imported_from IS NULL""",
        tenant_id,
        conversation_id,
        origin,
    )


async def origins(
    db: Executor, tenant_id: uuid.UUID, conversation_ids: Sequence[uuid.UUID]
) -> list[asyncpg.Record]:
    """Each imported conversation's origin (Conversation.importedFrom, exports)."""
    return await db.fetch(
        """SELECT c.id, c.imported_from FROM conversation c
           WHERE c.tenant_id = $1 AND c.id = ANY($2::uuid[]) AND c.imported_from IS NOT NULL""",
        tenant_id,
        list(conversation_ids),
    )
