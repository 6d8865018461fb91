"""All SQL of the gateway: the conversation a session names, the messages of its branch, and the leases of the calls in
progress that count toward THREADLINE_RUN_MAX_EXECUTING_PER_TENANT (`gateway_call`). Tenant first.

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
from threadline.runs.repository import (
    CHANNEL,
    lock_tenant_executing,
    lock_user_runs,
    tenant_executing,
    user_active,
)
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


# calls in progress (gateway.admission) ---------------------------------------------------------------


async def take_call_place(
    db: Executor,
    principal: Principal,
    call_ids: list[uuid.UUID],
    cap: int | None,
    user_cap: int | None,
    lease_seconds: float,
    ended: list[uuid.UUID],
) -> tuple[str, int] | None:
    """Inside a transaction: one place among the caller's tenant's model work executing for each of `call_ids` (the
    choices of one call, each a `gateway_call` leased for `lease_seconds`, the first naming its user), all or none:
    unless the caller's active runs and calls in progress (`runs.repository.user_active`) are already `user_cap`
    ("user", how many), or the tenant's executing runs and calls (`runs.repository.tenant_executing`) and these would
    be more than `cap` ("tenant", how many); None when taken. A cap of None is not checked. Takes the user's lock on
    their count (runCreate takes it too), then the tenant's (a worker claiming its runs takes it too), and drops the
    tenant's leases that ran out (calls of a process that died). `ended`: calls of this process that ended, whose
    places are being given back (not counted: a caller's next call, once the last was answered, is not refused
    for the moment its give-back takes)."""
    tenant = principal.tenant_id
    if user_cap is not None:
        await lock_user_runs(db, tenant, principal.user_id)
    if cap is not None:
        await lock_tenant_executing(db, tenant)
    row = await db.fetchrow(
        f"""WITH gone AS (DELETE FROM gateway_call WHERE tenant_id = $1 AND expires_at <= now()),
                 held AS (SELECT CASE WHEN $4::int IS NULL THEN 0 ELSE {tenant_executing("$1", "$7::uuid[]")} END AS n),
                 mine AS (SELECT CASE WHEN $5::int IS NULL THEN 0 ELSE {user_active("$1", "$2", "$7::uuid[]")} END AS n),
                 taken AS (INSERT INTO gateway_call (id, tenant_id, user_id, expires_at)
                           SELECT k.id, $1, CASE WHEN k.i = 1 THEN $2::uuid END, now() + make_interval(secs => $6)
                           FROM held, mine, unnest($3::uuid[]) WITH ORDINALITY AS k(id, i)
                           WHERE ($4::int IS NULL OR held.n + cardinality($3::uuid[]) <= $4)
                             AND ($5::int IS NULL OR mine.n < $5)
                           RETURNING id)
            SELECT held.n AS tenant_n, mine.n AS user_n, (SELECT count(*) FROM taken) AS taken FROM held, mine""",
        tenant,
        principal.user_id,
        call_ids,
        cap,
        user_cap,
        lease_seconds,
        ended,
    )
    assert row is not None
    if row["taken"]:
        return None
    if user_cap is not None and row["user_n"] >= user_cap:
        return "user", int(row["user_n"])
    return "tenant", int(row["tenant_n"])


async def renew_call_places(
    db: Executor, calls: list[tuple[uuid.UUID, uuid.UUID]], lease_seconds: float
) -> None:
    """The leases of the calls (tenant, call) this process serves run `lease_seconds` from now (every tenant: one
    statement per process and heartbeat, whatever the number of calls)."""
    await db.execute(
        """UPDATE gateway_call g SET expires_at = now() + make_interval(secs => $3)
           FROM unnest($1::uuid[], $2::uuid[]) AS k(tenant_id, id)
           WHERE g.tenant_id = k.tenant_id AND g.id = k.id""",
        [t for t, _ in calls],
        [c for _, c in calls],
        lease_seconds,
    )


async def give_call_place(db: Executor, tenant_id: uuid.UUID, call_ids: list[uuid.UUID], queue: str) -> None:
    """The call's places back; a worker of `queue` is woken (once) when the tenant has a run queued there, waiting
    for one."""
    await db.execute(
        """WITH gone AS (DELETE FROM gateway_call WHERE tenant_id = $1 AND id = ANY($2::uuid[]) RETURNING tenant_id)
           SELECT pg_notify($4::text, 'queued:' || $3::text)
           WHERE EXISTS (SELECT 1 FROM gone)
             AND EXISTS (SELECT 1 FROM run r WHERE r.queue = $3::text AND r.tenant_id = $1 AND r.status = 'QUEUED')""",
        tenant_id,
        call_ids,
        queue,
        CHANNEL,
    )
