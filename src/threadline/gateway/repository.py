"""All SQL of the gateway: the conversation a session names, and the messages of its branch. Tenant first.

Each statement here is a round trip before the model is called, so each answers as much as it can: the
conversation with the caller's access and its latest thread in one, the branch's messages with their parts in
another (what the time to the first token is made of: bench/gateway.py).
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from threadline.auth.principal import Principal
from threadline.conversations.repository import CONVERSATION_COLUMNS, visibility_sql
from threadline.db import Executor
from threadline.threads.repository import TREE_COLUMNS


async def session_conversation(
    db: Executor, principal: Principal, conversation_id: uuid.UUID | None, session_id: str
) -> asyncpg.Record | None:
    """The conversation with id `conversation_id`, else the most recently active one with `sessionId` =
    `session_id` that is not deleted (clients choose session ids: several may share one), among those the
    caller may read: those they own first, then those they write in, then those they view, then those their
    role alone lets them read (a session is never answered from, nor stored in, a colleague's conversation that
    happens to share its id while the caller has one of their own); with the caller's role and the owner's team
    (as `conversation_with_access` gives them, for `access_level`) and `latest_root`, the root of its most
    recently active thread (null without threads)."""
    params: list[Any] = []
    visible = visibility_sql(principal, params)
    params.extend([principal.user_id, conversation_id, session_id])
    user, by_id, by_session = (f"${len(params) - i}" for i in (2, 1, 0))
    return await db.fetchrow(
        f"""SELECT {CONVERSATION_COLUMNS}, p.role AS viewer_role, ou.team AS owner_team,
                (SELECT t.id FROM thread t WHERE t.tenant_id = c.tenant_id AND t.conversation_id = c.id
                 ORDER BY t.last_activity_at DESC, t.id DESC LIMIT 1) AS latest_root
            FROM conversation c
            LEFT JOIN participant p ON p.conversation_id = c.id AND p.user_id = {user}
            LEFT JOIN app_user ou ON ou.id = c.owner_id
            WHERE {visible}
              AND (c.id = {by_id}::uuid OR (c.session_id = {by_session} AND c.status <> 'DELETED'))
            ORDER BY c.id = {by_id}::uuid DESC NULLS LAST,
                     CASE p.role WHEN 'OWNER' THEN 0 WHEN 'MEMBER' THEN 1 WHEN 'VIEWER' THEN 2 ELSE 3 END,
                     c.last_activity_at DESC, c.id DESC LIMIT 1""",
        *params,
    )


async def branch_rows(
    db: Executor, tenant_id: uuid.UUID, root_id: uuid.UUID, paths: list[bytes]
) -> list[asyncpg.Record]:
    """`TREE_COLUMNS` rows and `parts` of the thread's messages at `paths`, root first."""
    return await db.fetch(
        f"""SELECT {TREE_COLUMNS}, m.parts FROM unnest($3::bytea[]) AS k(path)
            JOIN message m ON m.root_id = $2 AND m.path = k.path
            WHERE m.tenant_id = $1 ORDER BY m.path""",
        tenant_id,
        root_id,
        paths,
    )
