"""SQL of branches: each user's current leaf per thread, and the siblings of messages. Tenant first."""

from __future__ import annotations

import uuid

import asyncpg

from threadline.db import Executor
from threadline.threads.repository import MESSAGE_COLUMNS, TREE_COLUMNS


async def current_leaves(
    db: Executor, tenant_id: uuid.UUID, user_id: uuid.UUID, root_ids: list[uuid.UUID]
) -> list[asyncpg.Record]:
    """(root_id, id, path, chosen) of each thread's current leaf for the user, in one statement: the leaf
    they are on if they have one, else the newest branch's leaf (the greatest path not deleted: the last
    reply at every level). `id` is null when every message of the thread is deleted."""
    return await db.fetch(
        """SELECT r.root_id, coalesce(c.id, f.id) AS id, coalesce(c.path, f.path) AS path,
                  c.id IS NOT NULL AS chosen
           FROM unnest($3::uuid[]) AS r(root_id)
           LEFT JOIN LATERAL (
               SELECT m.id, m.path FROM thread_current_leaf l JOIN message m ON m.id = l.message_id
               WHERE l.user_id = $2 AND l.root_id = r.root_id AND l.tenant_id = $1
           ) c ON true
           LEFT JOIN LATERAL (
               SELECT m.id, m.path FROM message m
               WHERE c.id IS NULL AND m.root_id = r.root_id AND m.tenant_id = $1 AND m.deleted_at IS NULL
               ORDER BY m.path DESC LIMIT 1
           ) f ON true""",
        tenant_id,
        user_id,
        root_ids,
    )


async def tree_rows_at(
    db: Executor, tenant_id: uuid.UUID, root_ids: list[uuid.UUID], paths: list[bytes]
) -> list[asyncpg.Record]:
    """`TREE_COLUMNS` rows of the messages at the given (root_id, path) pairs, by root then path (depth-first)."""
    return await db.fetch(
        f"""SELECT {TREE_COLUMNS} FROM unnest($2::uuid[], $3::bytea[]) AS k(root_id, path)
            JOIN message m ON m.root_id = k.root_id AND m.path = k.path
            WHERE m.tenant_id = $1 ORDER BY m.root_id, m.path""",
        tenant_id,
        root_ids,
        paths,
    )


async def message_rows_at(
    db: Executor, tenant_id: uuid.UUID, root_ids: list[uuid.UUID], paths: list[bytes]
) -> list[asyncpg.Record]:
    """`MESSAGE_COLUMNS` rows at the given (root_id, path) pairs, by root then path."""
    return await db.fetch(
        f"""SELECT {MESSAGE_COLUMNS} FROM unnest($2::uuid[], $3::bytea[]) AS k(root_id, path)
            JOIN message m ON m.root_id = k.root_id AND m.path = k.path
            WHERE m.tenant_id = $1 ORDER BY m.root_id, m.path""",
        tenant_id,
        root_ids,
        paths,
    )


async def sibling_info(
    db: Executor, tenant_id: uuid.UUID, message_ids: list[uuid.UUID]
) -> list[asyncpg.Record]:
    """(id, root_id, path, sibling_count) of each message: its parent's reply count (1 for a root)."""
    return await db.fetch(
        """SELECT m.id, m.root_id, m.path, coalesce(p.child_count, 1) AS sibling_count
           FROM message m LEFT JOIN message p ON p.id = m.parent_id AND p.tenant_id = m.tenant_id
           WHERE m.tenant_id = $1 AND m.id = ANY($2::uuid[])""",
        tenant_id,
        message_ids,
    )


async def set_current_leaf(
    db: Executor, tenant_id: uuid.UUID, user_id: uuid.UUID, root_id: uuid.UUID, message_id: uuid.UUID
) -> bool:
    """Put the user on `message_id` in the thread; False if they were on it already."""
    changed = await db.fetchval(
        """INSERT INTO thread_current_leaf AS l (id, tenant_id, user_id, root_id, message_id, updated_at)
           VALUES ($5, $1, $2, $3, $4, now())
           ON CONFLICT (user_id, root_id) DO UPDATE SET message_id = EXCLUDED.message_id, updated_at = now()
               WHERE l.message_id IS DISTINCT FROM EXCLUDED.message_id
           RETURNING true""",
        tenant_id,
        user_id,
        root_id,
        message_id,
        uuid.uuid4(),
    )
    return bool(changed)


async def move_leaves_off(
    db: Executor, tenant_id: uuid.UUID, message_id: uuid.UUID, parent_id: uuid.UUID | None
) -> list[asyncpg.Record]:
    """Everyone on `message_id` moves to `parent_id` (or back to the thread's default when it is a root):
    (user_id, root_id) of each row moved."""
    if parent_id is None:
        return await db.fetch(
            "DELETE FROM thread_current_leaf WHERE tenant_id = $1 AND message_id = $2 RETURNING user_id, root_id",
            tenant_id,
            message_id,
        )
    return await db.fetch(
        """UPDATE thread_current_leaf SET message_id = $3, updated_at = now()
           WHERE tenant_id = $1 AND message_id = $2 RETURNING user_id, root_id""",
        tenant_id,
        message_id,
        parent_id,
    )
