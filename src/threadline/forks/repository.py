"""All SQL of forks: the set-based copy of a thread's rows and the provenance lookups. Tenant first."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from threadline.auth.principal import Principal
from threadline.conversations.repository import CONVERSATION_COLUMNS, visibility_sql
from threadline.db import Executor
from threadline.db.repository import older_than
from threadline.threads.paths import ancestor_paths, subtree_upper_bound

# What a mode copies, and where each copy sits in the new tree. `k` holds the message's position: the paths
# of the message and its ancestors, its own path, the end of its subtree and its depth. THREAD keeps paths
# and child counts as they are (every row is copied). PATH_ONLY and BRANCH drop the ancestors' other
# replies: each ancestor then has one reply (rank 0, byte 0x00 per level, as threads.paths encodes it), and
# BRANCH's descendants keep their ranks under the message's new path.
_POSITION = "(SELECT $3::bytea[] AS paths, $4::bytea AS own, $5::bytea AS upper, $6::int AS depth) AS k"
_SELECTION = {
    "THREAD": "m.tenant_id = $1 AND m.root_id = $2",
    "PATH_ONLY": "m.tenant_id = $1 AND m.root_id = $2 AND m.path = ANY(k.paths)",
    "BRANCH": "m.tenant_id = $1 AND m.root_id = $2 AND (m.path = ANY(k.paths) OR (m.path > k.own AND m.path < k.upper))",
}
_FIRST_REPLIES = "decode(repeat('00', m.depth), 'hex')"
_PATH = {
    "THREAD": "m.path",
    "PATH_ONLY": _FIRST_REPLIES,
    "BRANCH": f"""CASE WHEN m.depth <= k.depth THEN {_FIRST_REPLIES}
                  ELSE decode(repeat('00', k.depth), 'hex') || substring(m.path from length(k.own) + 1) END""",
}
_CHILD_COUNT = {
    "THREAD": "m.child_count",
    "PATH_ONLY": "CASE WHEN m.depth < k.depth THEN 1 ELSE 0 END",
    "BRANCH": "CASE WHEN m.depth < k.depth THEN 1 ELSE m.child_count END",
}


def _params(tenant_id: uuid.UUID, message: asyncpg.Record) -> list[Any]:
    path = bytes(message["path"])
    return [
        tenant_id,
        message["root_id"],
        [*ancestor_paths(path), path],
        path,
        subtree_upper_bound(path),
        message["depth"],
    ]


async def count_at_most(
    db: Executor, tenant_id: uuid.UUID, message: asyncpg.Record, mode: str, cap: int
) -> int:
    """How many messages `mode` would copy from `message`'s thread, counting no further than `cap` + 1 (a
    million-message thread is refused without being counted whole)."""
    return int(
        await db.fetchval(
            f"SELECT count(*) FROM (SELECT 1 FROM message m, {_POSITION} WHERE {_SELECTION[mode]} LIMIT $7) AS wanted",
            *_params(tenant_id, message),
            cap + 1,
        )
    )


async def copy_messages(
    db: Executor, tenant_id: uuid.UUID, message: asyncpg.Record, mode: str, conversation_id: uuid.UUID
) -> asyncpg.Record:
    """Copy the rows `mode` selects into `conversation_id` in one statement: new ids, parents and root mapped
    to the copies, seqs drawn in the source's order. Roles, content, authors, models, usage, timestamps,
    tombstones, metadata, content parts and the files they hold (message_file, message_attachment) are kept; the usage is flagged as not counted (the source's messages spent it).
    Returns the copies' count, the new root and forked message ids, and the highest seq."""
    return await db.fetchrow(
        f"""WITH src AS MATERIALIZED (
                SELECT m.id, m.root_id, m.parent_id, m.depth, {_PATH[mode]} AS path,
                       {_CHILD_COUNT[mode]} AS child_count, m.role, m.content, m.author_id, m.model,
                       m.prompt_tokens, m.completion_tokens, m.created_at, m.edited_at, m.deleted_at, m.metadata,
                       m.parts, m.seq, gen_random_uuid() AS new_id,
                       -- sealed content (crypto/) brings its vector: the trigger cannot read it
                       CASE WHEN left(m.content, 5) = chr(30) || 'tl1:' THEN m.search_vector END AS search_vector
                FROM message m, {_POSITION} WHERE {_SELECTION[mode]}
            ), copied AS (
                INSERT INTO message (id, tenant_id, conversation_id, root_id, parent_id, depth, path, child_count,
                    role, content, author_id, model, prompt_tokens, completion_tokens, created_at, edited_at,
                    deleted_at, usage_imported, metadata, parts, search_vector)
                SELECT s.new_id, $1, $7, r.new_id, p.new_id, s.depth, s.path, s.child_count, s.role, s.content,
                       s.author_id, s.model, s.prompt_tokens, s.completion_tokens, s.created_at, s.edited_at,
                       s.deleted_at, s.prompt_tokens IS NOT NULL OR s.completion_tokens IS NOT NULL, s.metadata,
                       s.parts, s.search_vector
                FROM src s JOIN src r ON r.id = s.root_id LEFT JOIN src p ON p.id = s.parent_id
                ORDER BY s.seq
                RETURNING id, parent_id, seq
            ), files AS (
                -- The copies hold the files the source messages hold, so the forker keeps reading them
                -- through the fork (files are readable through any message the caller may read), and the
                -- fork's exports carry them. Same file rows: no bytes are copied, no quota is spent.
                INSERT INTO message_file (tenant_id, message_id, file_id, position)
                SELECT $1, s.new_id, mf.file_id, mf.position
                FROM src s JOIN message_file mf ON mf.tenant_id = $1 AND mf.message_id = s.id
                WHERE s.deleted_at IS NULL
            ), attachments AS (
                -- What an import kept of the export's attachments (names, sizes), as the source has it.
                INSERT INTO message_attachment (id, tenant_id, message_id, position, data)
                SELECT gen_random_uuid(), $1, s.new_id, a.position, a.data
                FROM src s JOIN message_attachment a ON a.tenant_id = $1 AND a.message_id = s.id
                WHERE s.deleted_at IS NULL
            )
            SELECT (SELECT count(*) FROM copied) AS copied,
                   (SELECT max(seq) FROM copied) AS last_seq,
                   (SELECT id FROM copied WHERE parent_id IS NULL) AS root_id,
                   (SELECT new_id FROM src WHERE id = $8) AS message_id""",
        *_params(tenant_id, message),
        conversation_id,
        message["id"],
    )


async def insert_thread(
    db: Executor,
    tenant_id: uuid.UUID,
    conversation_id: uuid.UUID,
    root_id: uuid.UUID,
    replies: int,
    last_seq: int,
) -> asyncpg.Record:
    """The fork's thread row: its copies counted, active now (the fork is new activity)."""
    row = await db.fetchrow(
        """INSERT INTO thread (id, tenant_id, conversation_id, reply_count, last_seq, created_at, last_activity_at)
           SELECT m.id, m.tenant_id, m.conversation_id, $4, $5, m.created_at, now()
           FROM message m WHERE m.tenant_id = $1 AND m.id = $3 AND m.conversation_id = $2
           RETURNING id, reply_count, last_activity_at, last_seq""",
        tenant_id,
        conversation_id,
        root_id,
        replies,
        last_seq,
    )
    assert row is not None
    return row


async def copied_message(db: Executor, tenant_id: uuid.UUID, message_id: uuid.UUID) -> asyncpg.Record | None:
    return await db.fetchrow(
        """SELECT m.id, m.conversation_id, m.root_id, m.parent_id, m.depth, m.path, m.child_count, m.role,
                  m.content, m.author_id, m.model, m.prompt_tokens, m.completion_tokens, m.created_at, m.edited_at,
                  m.deleted_at, m.usage_imported
           FROM message m WHERE m.tenant_id = $1 AND m.id = $2""",
        tenant_id,
        message_id,
    )


async def readable_conversations(
    db: Executor, principal: Principal, ids: list[uuid.UUID]
) -> list[asyncpg.Record]:
    """Those of `ids` the principal may read (provenance shows only what the viewer may read)."""
    params: list[Any] = [ids]
    where = visibility_sql(principal, params)
    return await db.fetch(
        f"SELECT {CONVERSATION_COLUMNS} FROM conversation c WHERE c.id = ANY($1::uuid[]) AND {where}", *params
    )


async def forks_pages(
    db: Executor,
    principal: Principal,
    source_ids: list[uuid.UUID],
    limit: int,
    after: tuple[Any, uuid.UUID] | None,
) -> list[asyncpg.Record]:
    """Up to `limit` readable forks of each source, newest first (by creation), in one statement for every source
    of a response."""
    params: list[Any] = [source_ids]
    where = visibility_sql(principal, params)
    where += older_than("c.created_at, c.id", after, params)
    params.append(limit)
    return await db.fetch(
        f"""SELECT * FROM (
                SELECT {CONVERSATION_COLUMNS}, row_number() OVER (
                    PARTITION BY c.forked_from_conversation_id ORDER BY c.created_at DESC, c.id DESC) AS n
                FROM conversation c
                WHERE c.forked_from_conversation_id = ANY($1::uuid[]) AND {where}) page
            WHERE n <= ${len(params)} ORDER BY n""",
        *params,
    )


async def fork_counts(
    db: Executor, principal: Principal, source_ids: list[uuid.UUID]
) -> list[asyncpg.Record]:
    """How many readable forks each source has (a row per source that has any), in one statement."""
    params: list[Any] = [source_ids]
    where = visibility_sql(principal, params)
    return await db.fetch(
        f"""SELECT c.forked_from_conversation_id AS source_id, count(*) AS count FROM conversation c
            WHERE c.forked_from_conversation_id = ANY($1::uuid[]) AND {where}
            GROUP BY c.forked_from_conversation_id""",
        *params,
    )
