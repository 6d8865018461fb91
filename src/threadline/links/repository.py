"""All SQL of links between conversations. Tenant first in every signature; lists show only links whose
other end the caller may read (`visibility_sql`)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg

from threadline.auth.principal import Principal
from threadline.conversations.repository import CONVERSATION_COLUMNS, visibility_sql
from threadline.db import Executor

LINK_COLUMNS = "l.id, l.tenant_id, l.from_id, l.to_id, l.kind, l.created_by, l.created_at"
# A link with the conversation at its other end: the link's own columns renamed so the conversation's keep
# their names (`Conversation.from_row` reads the row as is).
LINK_AND_OTHER = f"""l.id AS link_id, l.from_id, l.to_id, l.kind AS link_kind, l.created_by AS link_created_by,
    l.created_at AS linked_at, {CONVERSATION_COLUMNS}"""


async def insert_link(
    tx: Executor,
    tenant_id: uuid.UUID,
    from_id: uuid.UUID,
    to_id: uuid.UUID,
    kind: str,
    created_by: uuid.UUID,
) -> asyncpg.Record:
    """The link, new or (same ends and kind) the existing one: linking twice is not an error."""
    row = await tx.fetchrow(
        f"""INSERT INTO conversation_link AS l (id, tenant_id, from_id, to_id, kind, created_by)
            VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (from_id, to_id, kind) DO NOTHING
            RETURNING {LINK_COLUMNS}""",
        uuid.uuid4(),
        tenant_id,
        from_id,
        to_id,
        kind,
        created_by,
    )
    if row is None:
        row = await tx.fetchrow(
            f"""SELECT {LINK_COLUMNS} FROM conversation_link l
                WHERE l.tenant_id = $1 AND l.from_id = $2 AND l.to_id = $3 AND l.kind = $4""",
            tenant_id,
            from_id,
            to_id,
            kind,
        )
    assert row is not None
    return row


async def count_links_from(tx: Executor, tenant_id: uuid.UUID, from_id: uuid.UUID) -> int:
    return int(
        await tx.fetchval(
            "SELECT count(*) FROM conversation_link WHERE tenant_id = $1 AND from_id = $2", tenant_id, from_id
        )
    )


async def link_by_id(db: Executor, tenant_id: uuid.UUID, link_id: uuid.UUID) -> asyncpg.Record | None:
    return await db.fetchrow(
        f"SELECT {LINK_COLUMNS} FROM conversation_link l WHERE l.tenant_id = $1 AND l.id = $2",
        tenant_id,
        link_id,
    )


async def delete_link(tx: Executor, tenant_id: uuid.UUID, link_id: uuid.UUID) -> None:
    await tx.execute("DELETE FROM conversation_link WHERE tenant_id = $1 AND id = $2", tenant_id, link_id)


def _ends(backwards: bool) -> tuple[str, str]:
    """(the column of the conversations asked about, the column of the other end)."""
    return ("to_id", "from_id") if backwards else ("from_id", "to_id")


async def links_page(
    db: Executor,
    principal: Principal,
    anchors: list[uuid.UUID],
    *,
    backwards: bool,
    limit: int,
    after: tuple[datetime, uuid.UUID] | None,
) -> list[asyncpg.Record]:
    """Up to `limit` links of each anchor conversation (from it, or with `backwards` to it) whose other end the
    caller may read, oldest first, in one statement; each row carries the other end's conversation columns."""
    anchor, other = _ends(backwards)
    params: list[Any] = []
    where = visibility_sql(principal, params)
    params.append(anchors)
    where += f" AND l.tenant_id = c.tenant_id AND l.{anchor} = ANY(${len(params)}::uuid[])"
    if after is not None:
        params.extend(after)
        where += f" AND (l.created_at, l.id) > (${len(params) - 1}, ${len(params)})"
    params.append(limit)
    return await db.fetch(
        f"""SELECT * FROM (
                SELECT {LINK_AND_OTHER},
                    row_number() OVER (PARTITION BY l.{anchor} ORDER BY l.created_at, l.id) AS n
                FROM conversation_link l JOIN conversation c ON c.id = l.{other}
                WHERE {where}) page
            WHERE n <= ${len(params)} ORDER BY n""",
        *params,
    )


async def link_counts(
    db: Executor, principal: Principal, anchors: list[uuid.UUID], *, backwards: bool
) -> list[asyncpg.Record]:
    anchor, other = _ends(backwards)
    params: list[Any] = []
    where = visibility_sql(principal, params)
    params.append(anchors)
    return await db.fetch(
        f"""SELECT l.{anchor} AS anchor, count(*) AS count FROM conversation_link l
            JOIN conversation c ON c.id = l.{other}
            WHERE {where} AND l.{anchor} = ANY(${len(params)}::uuid[]) GROUP BY l.{anchor}""",
        *params,
    )


async def all_links_of(
    db: Executor, tenant_id: uuid.UUID, conversation_id: uuid.UUID
) -> list[asyncpg.Record]:
    """Every link from or to a conversation with the other end's title and owner (exports filter them by
    the exporter's access)."""
    return await db.fetch(
        f"""SELECT {LINK_AND_OTHER}, ou.team AS owner_team FROM conversation_link l
            JOIN conversation c ON c.id = CASE WHEN l.from_id = $2 THEN l.to_id ELSE l.from_id END
            LEFT JOIN app_user ou ON ou.id = c.owner_id
            WHERE l.tenant_id = $1 AND (l.from_id = $2 OR l.to_id = $2) ORDER BY l.created_at, l.id""",
        tenant_id,
        conversation_id,
    )
