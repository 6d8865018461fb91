"""All SQL of folders and folder placements (pins and bookmarks: `mark_repository`), and the per-user lock
of both. Tenant first in every signature; every row is one user's, so the user comes second."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from threadline.auth.principal import Principal
from threadline.conversations.repository import visibility_sql
from threadline.db import Executor

FOLDER_COLUMNS = (
    "f.id, f.tenant_id, f.user_id, f.parent_id, f.name, f.position, f.depth, f.created_at, f.updated_at"
)


async def lock_user(tx: Executor, tenant_id: uuid.UUID, user_id: uuid.UUID) -> None:
    """Serialise one user's folder and pin writes until the transaction ends: positions are read, shifted
    and written back, and two concurrent moves must not both renumber from the same snapshot."""
    await tx.fetchval(
        "SELECT pg_advisory_xact_lock(hashtextextended('threadline.organise:' || $1::uuid::text || ':' || $2::uuid::text, 0))",
        tenant_id,
        user_id,
    )


# -- folders -----------------------------------------------------------------------------------------


async def folders_of(db: Executor, tenant_id: uuid.UUID, user_id: uuid.UUID) -> list[asyncpg.Record]:
    """Every folder of the user (bounded by THREADLINE_FOLDERS_MAX), parents before children, siblings in order."""
    return await db.fetch(
        f"""SELECT {FOLDER_COLUMNS} FROM folder f WHERE f.tenant_id = $1 AND f.user_id = $2
            ORDER BY f.depth, f.parent_id NULLS FIRST, f.position, f.id""",
        tenant_id,
        user_id,
    )


async def folders_by_id(
    db: Executor, tenant_id: uuid.UUID, user_id: uuid.UUID, ids: list[uuid.UUID]
) -> list[asyncpg.Record]:
    return await db.fetch(
        f"SELECT {FOLDER_COLUMNS} FROM folder f WHERE f.tenant_id = $1 AND f.user_id = $2 AND f.id = ANY($3::uuid[])",
        tenant_id,
        user_id,
        ids,
    )


async def insert_folder(
    tx: Executor,
    tenant_id: uuid.UUID,
    user_id: uuid.UUID,
    *,
    parent_id: uuid.UUID | None,
    name: str,
    position: int,
    depth: int,
) -> asyncpg.Record:
    row = await tx.fetchrow(
        f"""INSERT INTO folder AS f (id, tenant_id, user_id, parent_id, name, position, depth)
            VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {FOLDER_COLUMNS}""",
        uuid.uuid4(),
        tenant_id,
        user_id,
        parent_id,
        name,
        position,
        depth,
    )
    assert row is not None
    return row


async def place_folders(
    tx: Executor,
    tenant_id: uuid.UUID,
    user_id: uuid.UUID,
    places: list[tuple[uuid.UUID, uuid.UUID | None, int, int]],
) -> None:
    """Set (parent, position, depth) of many folders in one statement; unchanged rows are left alone."""
    if not places:
        return
    payload = [
        {"id": str(i), "parent_id": str(p) if p else None, "position": pos, "depth": d}
        for i, p, pos, d in places
    ]
    await tx.execute(
        """UPDATE folder AS f SET parent_id = v.parent_id, position = v.position, depth = v.depth,
               updated_at = now()
           FROM jsonb_to_recordset($3::jsonb) AS v(id uuid, parent_id uuid, position int, depth int)
           WHERE f.tenant_id = $1 AND f.user_id = $2 AND f.id = v.id
             AND (f.parent_id IS DISTINCT FROM v.parent_id OR f.position <> v.position OR f.depth <> v.depth)""",
        tenant_id,
        user_id,
        payload,
    )


async def rename_folder(
    tx: Executor, tenant_id: uuid.UUID, user_id: uuid.UUID, folder_id: uuid.UUID, name: str
) -> asyncpg.Record | None:
    return await tx.fetchrow(
        f"""UPDATE folder AS f SET name = $4, updated_at = now()
            WHERE f.tenant_id = $1 AND f.user_id = $2 AND f.id = $3 RETURNING {FOLDER_COLUMNS}""",
        tenant_id,
        user_id,
        folder_id,
        name,
    )


async def delete_folders(tx: Executor, tenant_id: uuid.UUID, user_id: uuid.UUID, ids: list[uuid.UUID]) -> int:
    """Delete folders (their placements go with them: those conversations are back at the root); how many
    placements were removed."""
    placed = await tx.fetchval(
        "SELECT count(*) FROM conversation_folder WHERE tenant_id = $1 AND user_id = $2 AND folder_id = ANY($3::uuid[])",
        tenant_id,
        user_id,
        ids,
    )
    await tx.execute(
        "DELETE FROM folder WHERE tenant_id = $1 AND user_id = $2 AND id = ANY($3::uuid[])",
        tenant_id,
        user_id,
        ids,
    )
    return int(placed)


async def place_conversation(
    tx: Executor, tenant_id: uuid.UUID, user_id: uuid.UUID, conversation_id: uuid.UUID, folder_id: uuid.UUID
) -> None:
    """Put a conversation in a folder of the user, taking it out of any other (one folder per user)."""
    await tx.execute(
        """INSERT INTO conversation_folder (id, tenant_id, user_id, conversation_id, folder_id)
           VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (user_id, conversation_id) DO UPDATE SET folder_id = EXCLUDED.folder_id, placed_at = now()""",
        uuid.uuid4(),
        tenant_id,
        user_id,
        conversation_id,
        folder_id,
    )


async def unplace_conversation(
    tx: Executor, tenant_id: uuid.UUID, user_id: uuid.UUID, conversation_id: uuid.UUID
) -> None:
    await tx.execute(
        "DELETE FROM conversation_folder WHERE tenant_id = $1 AND user_id = $2 AND conversation_id = $3",
        tenant_id,
        user_id,
        conversation_id,
    )


async def folder_conversation_counts(
    db: Executor, principal: Principal, folder_ids: list[uuid.UUID]
) -> list[asyncpg.Record]:
    """Per folder, how many conversations the user may still read sit in it (one grouped statement)."""
    params: list[Any] = []
    where = visibility_sql(principal, params)
    params.extend([principal.user_id, folder_ids])
    return await db.fetch(
        f"""SELECT cf.folder_id, count(*) AS count FROM conversation_folder cf
            JOIN conversation c ON c.id = cf.conversation_id
            WHERE {where} AND cf.user_id = ${len(params) - 1} AND cf.folder_id = ANY(${len(params)}::uuid[])
            GROUP BY cf.folder_id""",
        *params,
    )


async def folders_of_conversations(
    db: Executor, tenant_id: uuid.UUID, user_id: uuid.UUID, conversation_ids: list[uuid.UUID]
) -> list[asyncpg.Record]:
    """The user's folder of each of these conversations that has one."""
    return await db.fetch(
        f"""SELECT cf.conversation_id, {FOLDER_COLUMNS} FROM conversation_folder cf
            JOIN folder f ON f.id = cf.folder_id
            WHERE cf.tenant_id = $1 AND cf.user_id = $2 AND cf.conversation_id = ANY($3::uuid[])""",
        tenant_id,
        user_id,
        conversation_ids,
    )


# -- export and import -------------------------------------------------------------------------------


async def placements_of(db: Executor, tenant_id: uuid.UUID, user_id: uuid.UUID) -> list[asyncpg.Record]:
    """Every (conversation, folder) placement of the user (user exports)."""
    return await db.fetch(
        """SELECT conversation_id, folder_id FROM conversation_folder WHERE tenant_id = $1 AND user_id = $2
           ORDER BY placed_at, conversation_id""",
        tenant_id,
        user_id,
    )


async def imported_message_ids(
    db: Executor, tenant_id: uuid.UUID, conversation_id: uuid.UUID
) -> dict[str, uuid.UUID]:
    """A conversation's imported messages by their id in the file (`import_key`), to restore bookmarks."""
    rows = await db.fetch(
        """SELECT import_key, id FROM message WHERE tenant_id = $1 AND conversation_id = $2
           AND import_key IS NOT NULL""",
        tenant_id,
        conversation_id,
    )
    return {r["import_key"]: r["id"] for r in rows}
