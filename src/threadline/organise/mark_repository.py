"""All SQL of pins and bookmarks. Tenant first in every signature; every row is one user's, so the user
comes second. (Writes of pins take `repository.lock_user` first, as folders do.)"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg

from threadline.auth.principal import Principal
from threadline.conversations.repository import visibility_sql
from threadline.db import Executor
from threadline.db.repository import older_than

BOOKMARK_COLUMNS = (
    "b.id, b.tenant_id, b.user_id, b.message_id, b.conversation_id, b.note, b.created_at, b.updated_at"
)


async def pins_of(db: Executor, tenant_id: uuid.UUID, user_id: uuid.UUID) -> list[asyncpg.Record]:
    """The user's pins in order (bounded by THREADLINE_PINS_MAX)."""
    return await db.fetch(
        """SELECT conversation_id, position, pinned_at FROM conversation_pin
           WHERE tenant_id = $1 AND user_id = $2 ORDER BY position, pinned_at""",
        tenant_id,
        user_id,
    )


async def drop_unreadable_pins(tx: Executor, principal: Principal) -> None:
    """The user's pins on conversations they may no longer read (removed from them, moved to another team):
    they could neither see nor unpin them, yet each held one of their THREADLINE_PINS_MAX places."""
    params: list[Any] = []
    where = visibility_sql(principal, params)
    params.append(principal.user_id)
    await tx.execute(
        f"""DELETE FROM conversation_pin p WHERE p.tenant_id = $1 AND p.user_id = ${len(params)}
            AND NOT EXISTS (SELECT 1 FROM conversation c WHERE c.id = p.conversation_id AND {where})""",
        *params,
    )


async def insert_pin(
    tx: Executor, tenant_id: uuid.UUID, user_id: uuid.UUID, conversation_id: uuid.UUID, position: int
) -> None:
    await tx.execute(
        """INSERT INTO conversation_pin (id, tenant_id, user_id, conversation_id, position)
           VALUES ($1, $2, $3, $4, $5)""",
        uuid.uuid4(),
        tenant_id,
        user_id,
        conversation_id,
        position,
    )


async def delete_pin(
    tx: Executor, tenant_id: uuid.UUID, user_id: uuid.UUID, conversation_id: uuid.UUID
) -> None:
    await tx.execute(
        "DELETE FROM conversation_pin WHERE tenant_id = $1 AND user_id = $2 AND conversation_id = $3",
        tenant_id,
        user_id,
        conversation_id,
    )


async def set_pin_positions(
    tx: Executor, tenant_id: uuid.UUID, user_id: uuid.UUID, order: list[uuid.UUID]
) -> None:
    """Number the user's pins 0..n-1 in `order`, in one statement."""
    await tx.execute(
        """UPDATE conversation_pin AS p SET position = v.ord - 1
           FROM unnest($3::uuid[]) WITH ORDINALITY AS v(conversation_id, ord)
           WHERE p.tenant_id = $1 AND p.user_id = $2 AND p.conversation_id = v.conversation_id
             AND p.position <> v.ord - 1""",
        tenant_id,
        user_id,
        order,
    )


async def pin_positions(
    db: Executor, tenant_id: uuid.UUID, user_id: uuid.UUID, conversation_ids: list[uuid.UUID]
) -> list[asyncpg.Record]:
    return await db.fetch(
        """SELECT conversation_id, position FROM conversation_pin
           WHERE tenant_id = $1 AND user_id = $2 AND conversation_id = ANY($3::uuid[])""",
        tenant_id,
        user_id,
        conversation_ids,
    )


async def upsert_bookmark(
    tx: Executor,
    tenant_id: uuid.UUID,
    user_id: uuid.UUID,
    message_id: uuid.UUID,
    conversation_id: uuid.UUID,
    note: str | None,
) -> asyncpg.Record:
    row = await tx.fetchrow(
        f"""INSERT INTO message_bookmark AS b (id, tenant_id, user_id, message_id, conversation_id, note)
            VALUES ($1, $2, $3, $4, $5, $6)
            ON CONFLICT (user_id, message_id) DO UPDATE SET note = EXCLUDED.note, updated_at = now()
            RETURNING {BOOKMARK_COLUMNS}""",
        uuid.uuid4(),
        tenant_id,
        user_id,
        message_id,
        conversation_id,
        note,
    )
    assert row is not None
    return row


async def bookmark_exists(
    db: Executor, tenant_id: uuid.UUID, user_id: uuid.UUID, message_id: uuid.UUID
) -> bool:
    return bool(
        await db.fetchval(
            "SELECT EXISTS (SELECT 1 FROM message_bookmark WHERE tenant_id = $1 AND user_id = $2 AND message_id = $3)",
            tenant_id,
            user_id,
            message_id,
        )
    )


async def delete_bookmark(
    tx: Executor, tenant_id: uuid.UUID, user_id: uuid.UUID, message_id: uuid.UUID
) -> bool:
    status = await tx.execute(
        "DELETE FROM message_bookmark WHERE tenant_id = $1 AND user_id = $2 AND message_id = $3",
        tenant_id,
        user_id,
        message_id,
    )
    return status.split()[-1] != "0"


def _bookmark_filters(principal: Principal, conversation_id: uuid.UUID | None, params: list[Any]) -> str:
    # Only bookmarks in conversations the user may still read: one removed from a conversation keeps the
    # row (it is theirs) but no longer sees it or its message.
    where = visibility_sql(principal, params)
    params.append(principal.user_id)
    where += f" AND b.user_id = ${len(params)}"
    if conversation_id is not None:
        params.append(conversation_id)
        where += f" AND b.conversation_id = ${len(params)}"
    return where


async def list_bookmarks(
    db: Executor,
    principal: Principal,
    *,
    conversation_id: uuid.UUID | None,
    limit: int,
    after: tuple[datetime, uuid.UUID] | None,
) -> list[asyncpg.Record]:
    """The user's bookmarks, newest first."""
    params: list[Any] = []
    where = _bookmark_filters(principal, conversation_id, params)
    where += older_than("b.created_at, b.id", after, params)
    params.append(limit)
    return await db.fetch(
        f"""SELECT {BOOKMARK_COLUMNS} FROM message_bookmark b JOIN conversation c ON c.id = b.conversation_id
            WHERE {where} ORDER BY b.created_at DESC, b.id DESC LIMIT ${len(params)}""",
        *params,
    )


async def count_visible_bookmarks(
    db: Executor, principal: Principal, conversation_id: uuid.UUID | None
) -> int:
    params: list[Any] = []
    where = _bookmark_filters(principal, conversation_id, params)
    return int(
        await db.fetchval(
            f"SELECT count(*) FROM message_bookmark b JOIN conversation c ON c.id = b.conversation_id WHERE {where}",
            *params,
        )
    )


async def bookmarks_in(
    db: Executor, tenant_id: uuid.UUID, user_id: uuid.UUID, conversation_id: uuid.UUID
) -> list[asyncpg.Record]:
    """The user's bookmarks in one conversation, oldest first (for exports)."""
    return await db.fetch(
        f"""SELECT {BOOKMARK_COLUMNS} FROM message_bookmark b
            WHERE b.tenant_id = $1 AND b.user_id = $2 AND b.conversation_id = $3 ORDER BY b.created_at, b.id""",
        tenant_id,
        user_id,
        conversation_id,
    )


async def all_bookmarks_of(db: Executor, tenant_id: uuid.UUID, user_id: uuid.UUID) -> list[asyncpg.Record]:
    """Every bookmark of the user, oldest first (user exports; bounded by THREADLINE_BOOKMARKS_MAX)."""
    return await db.fetch(
        f"""SELECT {BOOKMARK_COLUMNS} FROM message_bookmark b WHERE b.tenant_id = $1 AND b.user_id = $2
            ORDER BY b.created_at, b.id""",
        tenant_id,
        user_id,
    )
