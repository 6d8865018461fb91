"""All SQL of share links. Tenant first in every signature, except the two reads an anonymous reader makes
before any tenant is known: the link by its token's hash, and the readers' rate windows."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg

from threadline.db import Executor
from threadline.threads.paths import subtree_upper_bound

LINK_COLUMNS = """s.id, s.tenant_id, s.conversation_id, s.message_id, s.created_by, s.live, s.snapshot_seq,
    s.created_at, s.expires_at, s.revoked_at, s.view_count, s.last_viewed_at"""

SHARED_MESSAGE_COLUMNS = """m.id, m.parent_id, m.depth, m.seq, m.role, m.content, m.model, m.created_at,
    m.edited_at, m.deleted_at"""


async def last_seq(db: Executor, tenant_id: uuid.UUID, conversation_id: uuid.UUID) -> int:
    """The highest message sequence number of the conversation (0 when it has none)."""
    value = await db.fetchval(
        "SELECT coalesce(max(seq), 0) FROM message WHERE tenant_id = $1 AND conversation_id = $2",
        tenant_id,
        conversation_id,
    )
    return int(value or 0)


async def insert_link(
    db: Executor,
    tenant_id: uuid.UUID,
    *,
    conversation_id: uuid.UUID,
    message_id: uuid.UUID | None,
    created_by: uuid.UUID,
    token_hash: bytes,
    live: bool,
    snapshot_seq: int,
    expires_at: datetime | None,
) -> asyncpg.Record:
    row = await db.fetchrow(
        f"""INSERT INTO share_link AS s (id, tenant_id, conversation_id, message_id, created_by, token_hash, live,
                snapshot_seq, expires_at)
            VALUES ($2, $1, $3, $4, $5, $6, $7, $8, $9) RETURNING {LINK_COLUMNS}""",
        tenant_id,
        uuid.uuid4(),
        conversation_id,
        message_id,
        created_by,
        token_hash,
        live,
        snapshot_seq,
        expires_at,
    )
    assert row is not None
    return row


async def link(db: Executor, tenant_id: uuid.UUID, link_id: uuid.UUID) -> asyncpg.Record | None:
    return await db.fetchrow(
        f"SELECT {LINK_COLUMNS} FROM share_link s WHERE s.tenant_id = $1 AND s.id = $2", tenant_id, link_id
    )


async def links_of(
    db: Executor,
    tenant_id: uuid.UUID,
    user_id: uuid.UUID,
    conversation_id: uuid.UUID | None,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[asyncpg.Record]:
    """The links `user_id` made (of one conversation, if given), newest first, `limit` of them after `after`."""
    params: list[Any] = [tenant_id, user_id]
    where = "s.tenant_id = $1 AND s.created_by = $2"
    if conversation_id is not None:
        params.append(conversation_id)
        where += f" AND s.conversation_id = ${len(params)}"
    if after is not None:
        params.extend(after)
        where += f" AND (s.created_at, s.id) < (${len(params) - 1}, ${len(params)})"
    params.append(limit)
    return await db.fetch(
        f"SELECT {LINK_COLUMNS} FROM share_link s WHERE {where} ORDER BY s.created_at DESC, s.id DESC "
        f"LIMIT ${len(params)}",
        *params,
    )


async def count_links_of(
    db: Executor, tenant_id: uuid.UUID, user_id: uuid.UUID, conversation_id: uuid.UUID | None
) -> int:
    value = await db.fetchval(
        """SELECT count(*) FROM share_link WHERE tenant_id = $1 AND created_by = $2
           AND ($3::uuid IS NULL OR conversation_id = $3)""",
        tenant_id,
        user_id,
        conversation_id,
    )
    return int(value or 0)


async def revoke(db: Executor, tenant_id: uuid.UUID, link_id: uuid.UUID) -> asyncpg.Record | None:
    return await db.fetchrow(
        f"""UPDATE share_link s SET revoked_at = coalesce(s.revoked_at, now())
            WHERE s.tenant_id = $1 AND s.id = $2 RETURNING {LINK_COLUMNS}""",
        tenant_id,
        link_id,
    )


async def link_by_token_hash(db: Executor, token_hash: bytes) -> asyncpg.Record | None:
    """The link a token names, with what a reader needs to decide and render (one indexed statement, whatever
    the token): its conversation's title and status, the shared message's root and path, and what decides
    whether its maker may still read the conversation (their role and team, their participant role, the
    owner's team). No tenant is known yet: the hash of a 256-bit random token is the only key."""
    return await db.fetchrow(
        f"""SELECT {LINK_COLUMNS}, s.token_hash, c.title, c.status, m.root_id AS message_root_id,
                   m.path AS message_path, now() AS read_at,
                   mu.role AS maker_role, mu.team AS maker_team, mp.role AS maker_participant_role,
                   ou.team AS owner_team
            FROM share_link s
            JOIN conversation c ON c.id = s.conversation_id AND c.tenant_id = s.tenant_id
            LEFT JOIN message m ON m.id = s.message_id AND m.tenant_id = s.tenant_id
            LEFT JOIN app_user mu ON mu.id = s.created_by AND mu.tenant_id = s.tenant_id
            LEFT JOIN participant mp ON mp.conversation_id = s.conversation_id AND mp.user_id = s.created_by
            LEFT JOIN app_user ou ON ou.id = c.owner_id
            WHERE s.token_hash = $1""",
        token_hash,
    )


async def count_view(db: Executor, tenant_id: uuid.UUID, link_id: uuid.UUID) -> None:
    await db.execute(
        "UPDATE share_link SET view_count = view_count + 1, last_viewed_at = now() WHERE tenant_id = $1 AND id = $2",
        tenant_id,
        link_id,
    )


Branch = tuple[uuid.UUID, list[bytes], bytes | None]


def _share_scope(
    params: list[Any], conversation_id: uuid.UUID, snapshot_seq: int | None, branch: Branch | None
) -> str:
    """The WHERE fragment of a share's messages (parameters appended to `params`).

    `branch` is (root id, the paths of the shared message and its ancestors, the shared message's path when its
    later replies are shown too (live) else None); without it the whole conversation. `snapshot_seq` hides
    what was written after sharing (None: live)."""
    if branch is None:
        params.append(conversation_id)
        scope = f"m.conversation_id = ${len(params)}"
    else:
        root_id, paths, below = branch
        params.extend((root_id, paths))
        scope = f"m.root_id = ${len(params) - 1} AND (m.path = ANY(${len(params)}::bytea[])"
        if below is not None:
            params.extend((below, subtree_upper_bound(below)))
            scope += f" OR (m.path > ${len(params) - 1} AND m.path < ${len(params)})"
        scope += ")"
    if snapshot_seq is not None:
        params.append(snapshot_seq)
        scope += f" AND m.seq <= ${len(params)}"
    return scope


async def shared_messages(
    db: Executor,
    tenant_id: uuid.UUID,
    *,
    conversation_id: uuid.UUID,
    snapshot_seq: int | None,
    branch: Branch | None,
    after_seq: int,
    limit: int,
) -> list[asyncpg.Record]:
    """Messages of a share in sequence order, `limit` of them after `after_seq`."""
    params: list[Any] = [tenant_id, after_seq, limit]
    scope = _share_scope(params, conversation_id, snapshot_seq, branch)
    return await db.fetch(
        f"""SELECT {SHARED_MESSAGE_COLUMNS} FROM message m
            WHERE m.tenant_id = $1 AND {scope} AND m.seq > $2 ORDER BY m.seq LIMIT $3""",
        *params,
    )


async def count_shared_messages(
    db: Executor,
    tenant_id: uuid.UUID,
    *,
    conversation_id: uuid.UUID,
    snapshot_seq: int | None,
    branch: Branch | None,
) -> int:
    params: list[Any] = [tenant_id]
    scope = _share_scope(params, conversation_id, snapshot_seq, branch)
    value = await db.fetchval(f"SELECT count(*) FROM message m WHERE m.tenant_id = $1 AND {scope}", *params)
    return int(value or 0)


async def hit_windows(db: Executor, keys: list[str], window_start: datetime) -> list[int]:
    """Counts one read against each key's current window (a new window starts at `window_start`); returns
    each key's reads in it, this one included. Shared by every server process."""
    rows = await db.fetch(
        """INSERT INTO share_rate_window AS w (key, window_start, hits)
           SELECT k, $2, 1 FROM unnest($1::text[]) AS k
           ON CONFLICT (key) DO UPDATE SET
               hits = CASE WHEN w.window_start = EXCLUDED.window_start THEN w.hits + 1 ELSE 1 END,
               window_start = EXCLUDED.window_start
           RETURNING key, hits""",
        keys,
        window_start,
    )
    hits = {r["key"]: r["hits"] for r in rows}
    return [int(hits[k]) for k in keys]


async def drop_windows_before(db: Executor, before: datetime) -> None:
    await db.execute("DELETE FROM share_rate_window WHERE window_start < $1", before)
