"""All SQL of messages, threads, edits and read markers. Tenant first in every signature."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from threadline import crypto
from threadline.db import Executor
from threadline.threads.paths import subtree_upper_bound
from threadline.tiers import service as tiers

MESSAGE_COLUMNS = """m.id, m.tenant_id, m.conversation_id, m.root_id, m.parent_id, m.depth, m.path, m.seq,
    m.child_count, m.role, m.content, m.author_id, m.model, m.prompt_tokens, m.completion_tokens,
    m.created_at, m.edited_at, m.deleted_at, m.usage_imported, m.pii"""

# What a tree read turns into Messages (`tree_messages_in_slices`): no tenant, path or seq, which it does not use; a
# 10,000-node thread decodes ~20% faster.
TREE_FIELDS = (
    "id", "conversation_id", "root_id", "parent_id", "depth", "child_count", "role", "content",
    "author_id", "model", "prompt_tokens", "completion_tokens", "created_at", "edited_at", "deleted_at",
    "usage_imported", "pii",
)  # fmt: skip
TREE_COLUMNS = ", ".join(f"m.{name}" for name in TREE_FIELDS)

# The full-text vector of sealed content, from the plaintext passed as a parameter ($16 of insert_message, $5 of
# set_content; NULL when the content is stored plain and the trigger computes it). See crypto/.
_SEALED_VECTOR = "threadline_search_vector(threadline_search_config($2), $16::text)"
_SEALED_VECTOR_5 = "threadline_search_vector(threadline_search_config($1), $5::text)"

THREAD_COLUMNS = "t.id AS thread_id, t.reply_count, t.last_activity_at AS thread_last_activity_at, t.last_seq"


async def insert_message(
    db: Executor,
    tenant_id: uuid.UUID,
    *,
    message_id: uuid.UUID,
    conversation_id: uuid.UUID,
    root_id: uuid.UUID,
    parent_id: uuid.UUID | None,
    depth: int,
    path: bytes,
    role: str,
    content: str,
    author_id: uuid.UUID | None,
    model: str | None,
    prompt_tokens: int | None,
    completion_tokens: int | None,
    parts: list[dict[str, Any]] | None = None,
    pii: list[dict[str, Any]] | None = None,
) -> asyncpg.Record:
    stored = await crypto.seal(tenant_id, content, author_id)
    row = await db.fetchrow(
        f"""INSERT INTO message AS m (id, tenant_id, conversation_id, root_id, parent_id, depth, path,
                child_count, role, content, author_id, model, prompt_tokens, completion_tokens, parts, pii,
                search_vector)
            VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, $9, $10, $11, $12, $13, $14, $15, {_SEALED_VECTOR})
            RETURNING {MESSAGE_COLUMNS}""",
        message_id,
        tenant_id,
        conversation_id,
        root_id,
        parent_id,
        depth,
        path,
        role,
        stored,
        author_id,
        model,
        prompt_tokens,
        completion_tokens,
        await crypto.seal_parts(tenant_id, parts, author_id),
        pii,
        crypto.plain_for_index(stored, content),
    )
    assert row is not None
    return row


async def parts_of(db: Executor, tenant_id: uuid.UUID, message_ids: list[uuid.UUID]) -> list[asyncpg.Record]:
    """The stored content parts of those messages that have any (parts.model); plain-text ones are left out."""
    return await db.fetch(
        """SELECT id AS message_id, parts FROM message
           WHERE tenant_id = $1 AND id = ANY($2::uuid[]) AND parts IS NOT NULL""",
        tenant_id,
        message_ids,
    )


async def set_parts(
    db: Executor, tenant_id: uuid.UUID, message_id: uuid.UUID, parts: list[dict[str, Any]] | None
) -> None:
    await db.execute(
        "UPDATE message SET parts = $3 WHERE tenant_id = $1 AND id = $2",
        tenant_id,
        message_id,
        await crypto.seal_parts(tenant_id, parts),  # encryption at rest (crypto/): the tenant's key
    )


async def message(
    db: Executor, tenant_id: uuid.UUID, message_id: uuid.UUID, *, lock: bool = False
) -> asyncpg.Record | None:
    """The message; one in a cold conversation (tiers/) brings the conversation back first."""
    sql = f"SELECT {MESSAGE_COLUMNS} FROM message m WHERE m.tenant_id = $1 AND m.id = $2" + (
        " FOR UPDATE" if lock else ""
    )
    row = await db.fetchrow(sql, tenant_id, message_id)
    if row is None and await tiers.restore_holding_message(db, tenant_id, message_id):
        row = await db.fetchrow(sql, tenant_id, message_id)
    return row


async def messages_by_ids(db: Executor, tenant_id: uuid.UUID, ids: list[uuid.UUID]) -> list[asyncpg.Record]:
    """The hot messages of `ids` (any order, missing ones left out), in one statement."""
    return await db.fetch(
        f"SELECT {MESSAGE_COLUMNS} FROM message m WHERE m.tenant_id = $1 AND m.id = ANY($2::uuid[])",
        tenant_id,
        ids,
    )


async def thread_conversation(db: Executor, tenant_id: uuid.UUID, root_id: uuid.UUID) -> uuid.UUID | None:
    """The conversation of the thread whose root is `root_id`; None if that is no root of this tenant."""
    sql = "SELECT conversation_id FROM message WHERE tenant_id = $1 AND id = $2 AND parent_id IS NULL"
    value = await db.fetchval(sql, tenant_id, root_id)
    if value is None and await tiers.restore_holding_message(db, tenant_id, root_id):
        value = await db.fetchval(sql, tenant_id, root_id)
    return value if isinstance(value, uuid.UUID) else None


async def bump_child_count(db: Executor, tenant_id: uuid.UUID, message_id: uuid.UUID) -> None:
    await db.execute(
        "UPDATE message SET child_count = child_count + 1 WHERE tenant_id = $1 AND id = $2",
        tenant_id,
        message_id,
    )


async def subtree(
    db: Executor, tenant_id: uuid.UUID, root_id: uuid.UUID, path: bytes, max_depth: int | None
) -> list[asyncpg.Record]:
    """A node and its descendants in depth-first order: one range scan on (root_id, path)."""
    if max_depth is None:
        return await db.fetch(
            f"""SELECT {TREE_COLUMNS} FROM message m
                WHERE m.root_id = $2 AND m.path >= $3 AND m.path < $4 AND m.tenant_id = $1 ORDER BY m.path""",
            tenant_id,
            root_id,
            path,
            subtree_upper_bound(path),
        )
    return await db.fetch(
        f"""SELECT {TREE_COLUMNS} FROM message m
            WHERE m.root_id = $2 AND m.path >= $3 AND m.path < $4 AND m.tenant_id = $1 AND m.depth <= $5
            ORDER BY m.path""",
        tenant_id,
        root_id,
        path,
        subtree_upper_bound(path),
        max_depth,
    )


async def ids_by_paths(
    db: Executor, tenant_id: uuid.UUID, root_ids: list[uuid.UUID], paths: list[bytes]
) -> list[asyncpg.Record]:
    """(root_id, path, id) for each requested (root_id, path) pair, in one statement."""
    return await db.fetch(
        """SELECT m.root_id, m.path, m.id FROM message m
           JOIN unnest($2::uuid[], $3::bytea[]) AS k(root_id, path) ON m.root_id = k.root_id AND m.path = k.path
           WHERE m.tenant_id = $1""",
        tenant_id,
        root_ids,
        paths,
    )


async def ids_along_path(
    db: Executor, tenant_id: uuid.UUID, root_id: uuid.UUID, path: bytes, lengths: list[int]
) -> list[uuid.UUID]:
    """The ids of the messages of thread `root_id` whose paths are the prefixes of `path` of these lengths, in path
    order (root first), in one index scan on (root_id, path). The path goes once and the prefixes are cut from it
    here: sending each ancestor's whole path (`ids_by_paths`), and reading it back, moved O(depth^2) bytes for one
    message (~500 KB at depth 1,000, ~10 ms of a reply's 20 ms)."""
    rows = await db.fetch(
        """SELECT m.id FROM message m
           WHERE m.root_id = $2
             AND m.path = ANY(ARRAY(SELECT substring($3::bytea FROM 1 FOR n) FROM unnest($4::int[]) AS n))
             AND m.tenant_id = $1
           ORDER BY m.path""",
        tenant_id,
        root_id,
        path,
        lengths,
    )
    return [r["id"] for r in rows]


async def insert_thread(db: Executor, tenant_id: uuid.UUID, root: asyncpg.Record) -> None:
    await db.execute(
        """INSERT INTO thread (id, tenant_id, conversation_id, reply_count, last_seq, created_at, last_activity_at)
           VALUES ($1, $2, $3, 0, $4, $5, $5)""",
        root["id"],
        tenant_id,
        root["conversation_id"],
        root["seq"],
        root["created_at"],
    )


async def thread_activity(
    db: Executor, tenant_id: uuid.UUID, root_id: uuid.UUID, *, replies: int, last_seq: int | None
) -> asyncpg.Record:
    """Count a reply (or an edit/delete with replies=0) on the thread; row-locked, so writers add up."""
    row = await db.fetchrow(
        """UPDATE thread SET reply_count = reply_count + $3, last_activity_at = greatest(last_activity_at, now()),
               last_seq = greatest(last_seq, coalesce($4, last_seq))
           WHERE tenant_id = $1 AND id = $2 RETURNING id, reply_count, last_activity_at, last_seq""",
        tenant_id,
        root_id,
        replies,
        last_seq,
    )
    assert row is not None
    return row


def _unread_sql(user_param: str) -> str:
    return f"""(SELECT count(*) FROM message x
                WHERE x.root_id = t.id AND x.seq > coalesce(rm.last_read_seq, 0)
                  AND x.author_id IS DISTINCT FROM {user_param} AND x.deleted_at IS NULL) AS unread_count"""


async def threads_pages(
    db: Executor,
    tenant_id: uuid.UUID,
    conversation_ids: list[uuid.UUID],
    user_id: uuid.UUID,
    limit: int,
    after: tuple[Any, uuid.UUID] | None,
) -> list[asyncpg.Record]:
    """A page of threads for each conversation (newest activity first, each with its root and the viewer's
    unread count), all in one statement: a conversation list asking for threads costs one query."""
    params: list[Any] = [tenant_id, conversation_ids, user_id]
    cond = ""
    if after is not None:
        params.extend(after)
        cond = "AND (t.last_activity_at, t.id) < ($4, $5)"
    params.append(limit)
    return await db.fetch(
        f"""SELECT {THREAD_COLUMNS}, {MESSAGE_COLUMNS}, {_unread_sql("$3")}
            FROM unnest($2::uuid[]) AS wanted(id)
            CROSS JOIN LATERAL (
                SELECT t.* FROM thread t WHERE t.tenant_id = $1 AND t.conversation_id = wanted.id {cond}
                ORDER BY t.last_activity_at DESC, t.id DESC LIMIT ${len(params)}
            ) t
            JOIN message m ON m.id = t.id
            LEFT JOIN read_marker rm ON rm.root_id = t.id AND rm.user_id = $3
            ORDER BY t.conversation_id, t.last_activity_at DESC, t.id DESC""",
        *params,
    )


async def thread_with_root(
    db: Executor, tenant_id: uuid.UUID, root_id: uuid.UUID, user_id: uuid.UUID
) -> asyncpg.Record | None:
    return await db.fetchrow(
        f"""SELECT {THREAD_COLUMNS}, {MESSAGE_COLUMNS}, {_unread_sql("$3")}
            FROM thread t JOIN message m ON m.id = t.id
            LEFT JOIN read_marker rm ON rm.root_id = t.id AND rm.user_id = $3
            WHERE t.tenant_id = $1 AND t.id = $2""",
        tenant_id,
        root_id,
        user_id,
    )


async def count_threads(
    db: Executor, tenant_id: uuid.UUID, conversation_ids: list[uuid.UUID]
) -> list[asyncpg.Record]:
    return await db.fetch(
        """SELECT conversation_id, count(*) AS n FROM thread WHERE tenant_id = $1 AND conversation_id = ANY($2::uuid[])
           GROUP BY conversation_id""",
        tenant_id,
        conversation_ids,
    )


async def messages_pages(
    db: Executor,
    tenant_id: uuid.UUID,
    conversation_ids: list[uuid.UUID],
    *,
    limit: int,
    after_seq: int | None = None,
    offset: int | None = None,
) -> list[asyncpg.Record]:
    """A page of messages for each conversation, oldest first, in one statement."""
    return await db.fetch(
        f"""SELECT {MESSAGE_COLUMNS} FROM unnest($2::uuid[]) AS wanted(id)
            CROSS JOIN LATERAL (
                SELECT m.* FROM message m WHERE m.tenant_id = $1 AND m.conversation_id = wanted.id AND m.seq > $3
                ORDER BY m.seq OFFSET $4 LIMIT $5
            ) m
            ORDER BY m.conversation_id, m.seq""",
        tenant_id,
        conversation_ids,
        after_seq or 0,
        offset or 0,
        limit,
    )


async def count_messages(
    db: Executor, tenant_id: uuid.UUID, conversation_ids: list[uuid.UUID]
) -> list[asyncpg.Record]:
    return await db.fetch(
        """SELECT conversation_id, count(*) AS n FROM message WHERE tenant_id = $1 AND conversation_id = ANY($2::uuid[])
           GROUP BY conversation_id""",
        tenant_id,
        conversation_ids,
    )


async def record_edit(
    db: Executor, tenant_id: uuid.UUID, message_id: uuid.UUID, old_content: str, editor_id: uuid.UUID
) -> None:
    await db.execute(
        "INSERT INTO message_edit (id, tenant_id, message_id, content, editor_id) VALUES ($1, $2, $3, $4, $5)",
        uuid.uuid4(),
        tenant_id,
        message_id,
        await crypto.seal(tenant_id, old_content, editor_id),
        editor_id,
    )


async def set_content(
    db: Executor,
    tenant_id: uuid.UUID,
    message_id: uuid.UUID,
    content: str,
    pii: list[dict[str, Any]] | None = None,
    author_id: uuid.UUID | None = None,
) -> asyncpg.Record:
    """New text, with its PII detections (privacy.writing; None: not scanned). Sealed (encryption at rest) with
    the key of `author_id`, or of the message's author when not given."""
    if crypto.sealing() and author_id is None:
        author_id = await db.fetchval(
            "SELECT author_id FROM message WHERE tenant_id = $1 AND id = $2", tenant_id, message_id
        )
    stored = await crypto.seal(tenant_id, content, author_id)
    plain = crypto.plain_for_index(stored, content)
    await crypto.forget_messages(db, tenant_id, [message_id])  # the replaced text leaves this process's cache
    row = await db.fetchrow(
        f"""UPDATE message m SET content = $3, pii = $4, edited_at = now(),
                search_vector = CASE WHEN $5::text IS NULL THEN m.search_vector ELSE {_SEALED_VECTOR_5} END
            WHERE m.tenant_id = $1 AND m.id = $2
            RETURNING {MESSAGE_COLUMNS}""",
        tenant_id,
        message_id,
        stored,
        pii,
        plain,
    )
    assert row is not None
    return row


async def tombstone(db: Executor, tenant_id: uuid.UUID, message_id: uuid.UUID) -> asyncpg.Record:
    """Remove the content (its edit history and an import's attachment entries: names, a document's extracted
    text) but keep the node, so replies stay reachable. (The files it holds let go by trigger, its chunks by
    `drop_chunks`.)"""
    await crypto.forget_messages(db, tenant_id, [message_id])  # its opened text leaves this process's cache
    for table in ("message_edit", "message_attachment"):
        await db.execute(
            f"DELETE FROM {table} WHERE tenant_id = $1 AND message_id = $2", tenant_id, message_id
        )
    row = await db.fetchrow(
        f"""UPDATE message m SET content = '', parts = NULL, metadata = NULL, pii = NULL, deleted_at = now()
            WHERE m.tenant_id = $1 AND m.id = $2
            RETURNING {MESSAGE_COLUMNS}, m.import_key IS NOT NULL AS imported""",
        tenant_id,
        message_id,
    )
    assert row is not None
    if row["imported"]:
        await forget_import_digests(db, tenant_id, [message_id])
    return row


# What `porting.chatgpt_nodes.FORGOTTEN` is: the digest kept of a source node whose message was deleted.
_FORGOTTEN_DIGEST = ""


async def forget_import_digests(db: Executor, tenant_id: uuid.UUID, message_ids: list[uuid.UUID]) -> None:
    """Deleted or erased imported messages: the import identity of their conversation forgets what it kept of
    their source text, the digest of each one's node (kept as known, not compared: `porting.chatgpt_nodes.
    FORGOTTEN`) and the fingerprint of the whole conversation's bytes. Each confirmed a guess of the deleted text.
    A re-import reads the conversation again (no fingerprint) and leaves the deleted messages deleted."""
    await db.execute(
        """WITH gone AS (
               SELECT conversation_id, array_agg(import_key) AS keys FROM message
               WHERE tenant_id = $1 AND id = ANY($2::uuid[]) AND import_key IS NOT NULL
               GROUP BY conversation_id
           )
           UPDATE import_source s
           SET node_digests = s.node_digests || coalesce(
                   (SELECT jsonb_object_agg(k, $3::text) FROM unnest(gone.keys) AS k WHERE s.node_digests ? k),
                   '{}'::jsonb),
               fingerprint = NULL
           FROM gone WHERE s.tenant_id = $1 AND s.conversation_id = gone.conversation_id""",
        tenant_id,
        message_ids,
        _FORGOTTEN_DIGEST,
    )


async def drop_chunks(db: Executor, tenant_id: uuid.UUID, message_ids: list[uuid.UUID]) -> None:
    """Streamed pieces of messages whose text was replaced (edit) or removed (delete, erasure)."""
    await db.execute(
        "DELETE FROM message_chunk WHERE tenant_id = $1 AND message_id = ANY($2::uuid[])",
        tenant_id,
        message_ids,
    )


async def edits_of(db: Executor, tenant_id: uuid.UUID, message_ids: list[uuid.UUID]) -> list[asyncpg.Record]:
    return await db.fetch(
        """SELECT id, message_id, content, editor_id, edited_at FROM message_edit
           WHERE tenant_id = $1 AND message_id = ANY($2::uuid[]) ORDER BY edited_at, id""",
        tenant_id,
        message_ids,
    )


async def chunks_of(db: Executor, tenant_id: uuid.UUID, message_ids: list[uuid.UUID]) -> list[asyncpg.Record]:
    return await db.fetch(
        """SELECT id, message_id, index, content, run_id, created_at FROM message_chunk
           WHERE tenant_id = $1 AND message_id = ANY($2::uuid[]) ORDER BY message_id, index""",
        tenant_id,
        message_ids,
    )


async def mark_read(db: Executor, tenant_id: uuid.UUID, user_id: uuid.UUID, root_id: uuid.UUID) -> None:
    await db.execute(
        """INSERT INTO read_marker (id, tenant_id, user_id, root_id, last_read_seq, read_at)
           SELECT $4, $1, $2, t.id, t.last_seq, now() FROM thread t WHERE t.tenant_id = $1 AND t.id = $3
           ON CONFLICT (user_id, root_id) DO UPDATE
             SET last_read_seq = greatest(read_marker.last_read_seq, EXCLUDED.last_read_seq), read_at = now()""",
        tenant_id,
        user_id,
        root_id,
        uuid.uuid4(),
    )


async def unread_counts(
    db: Executor, tenant_id: uuid.UUID, root_id: uuid.UUID, user_ids: list[uuid.UUID]
) -> list[asyncpg.Record]:
    """Each given user's unread count in one thread (for unread.update events), in the order given: the live
    messages after their read marker that they did not write. One scan of the thread's messages after the earliest
    marker, whatever the number of users: per distinct marker the messages after it (users who never read share
    one), less each user's own among them. (Counting per user walked the unread part of the thread once per
    participant: a reply in a long thread of 100 members visited 100 times its messages under the parent's lock.)"""
    return await db.fetch(
        """WITH u AS (
               SELECT g.user_id, g.n, coalesce(rm.last_read_seq, 0) AS mark
               FROM unnest($3::uuid[]) WITH ORDINALITY AS g(user_id, n)
               LEFT JOIN read_marker rm ON rm.root_id = $2 AND rm.user_id = g.user_id AND rm.tenant_id = $1
           ),
           x AS MATERIALIZED (
               SELECT seq, author_id FROM message
               WHERE root_id = $2 AND deleted_at IS NULL AND seq > (SELECT min(mark) FROM u)
           ),
           t AS (
               SELECT m.mark, (SELECT count(*) FROM x WHERE x.seq > m.mark) AS total
               FROM (SELECT DISTINCT mark FROM u) AS m
           ),
           o AS (
               SELECT u.n, count(*) AS own FROM u JOIN x ON x.author_id = u.user_id AND x.seq > u.mark
               GROUP BY u.n
           )
           SELECT u.user_id, t.total - coalesce(o.own, 0) AS unread_count
           FROM u JOIN t ON t.mark = u.mark LEFT JOIN o ON o.n = u.n
           ORDER BY u.n""",
        tenant_id,
        root_id,
        user_ids,
    )
