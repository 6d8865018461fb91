"""All SQL of runs, run steps and streamed output. Tenant first in every signature, except the statements
that span every tenant's runs by design: the worker's scans (`claim_next`, `stale_run_ids`) and the
operator's metric (`count_by_status`)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg

from threadline.db import Executor
from threadline.db.repository import older_than
from threadline.runs.transitions import ACTIVE, EXECUTING, STAMP, RunStatus, StepStatus
from threadline.tiers import service as tiers

RUN_COLUMNS = """r.id, r.tenant_id, r.conversation_id, r.message_id, r.root_id, r.output_message_id, r.created_by,
    r.queue, r.status, r.provider, r.model, r.instructions, r.max_history_messages, r.prompt_tokens,
    r.completion_tokens, r.last_error_code, r.last_error_message, r.attempt, r.worker_id, r.heartbeat_at,
    r.created_at, r.updated_at, r.started_at, r.completed_at, r.cancelled_at, r.failed_at, r.expired_at,
    r.tools, r.tool_choice, r.required_action, r.requires_action_at,
    extract(epoch FROM now() - r.heartbeat_at)::float8 AS heartbeat_age"""

STEP_COLUMNS = """s.id, s.tenant_id, s.run_id, s.attempt, s.type, s.status, s.details, s.created_at, s.completed_at,
    s.cancelled_at, s.failed_at, s.expired_at"""

_ACTIVE = [s.value for s in ACTIVE]
_EXECUTING = [s.value for s in EXECUTING]

# Wakes workers: "queued:<queue>" after a run is queued, "cancel:<run hex>" after a cancel request.
CHANNEL = "threadline_runs"


async def notify_workers(db: Executor, payload: str) -> None:
    """Delivered on commit, like every NOTIFY."""
    await db.execute("SELECT pg_notify($1, $2)", CHANNEL, payload)


async def limit_idle_in_transaction(db: Executor, seconds: float) -> None:
    """For the rest of the open transaction, PostgreSQL ends it if it sits idle for `seconds` (at least one)."""
    # SET takes no bind parameters; the value is an int built here, never input.
    await db.execute(f"SET LOCAL idle_in_transaction_session_timeout = {max(1000, int(seconds * 1000))}")


async def count_by_status(db: Executor, statuses: Sequence[str]) -> dict[str, int]:
    """How many runs of all tenants are in each of `statuses` (absent: none)."""
    rows = await db.fetch(
        "SELECT status, count(*) AS n FROM run WHERE status = ANY($1::text[]) GROUP BY status", list(statuses)
    )
    return {r["status"]: r["n"] for r in rows}


# runs -------------------------------------------------------------------------------------------


async def insert_run(
    db: Executor,
    tenant_id: uuid.UUID,
    *,
    conversation_id: uuid.UUID,
    message_id: uuid.UUID,
    root_id: uuid.UUID,
    created_by: uuid.UUID,
    queue: str,
    provider: str,
    model: str,
    instructions: str | None,
    max_history_messages: int | None,
    tools: list[dict[str, Any]] | None = None,
    tool_choice: Any = None,
) -> asyncpg.Record:
    """Raises asyncpg.UniqueViolationError if the message already has an active run."""
    row = await db.fetchrow(
        f"""INSERT INTO run AS r (id, tenant_id, conversation_id, message_id, root_id, created_by, queue, status,
                provider, model, instructions, max_history_messages, tools, tool_choice)
            VALUES ($1, $2, $3, $4, $5, $6, $7, 'QUEUED', $8, $9, $10, $11, $12, $13)
            RETURNING {RUN_COLUMNS}""",
        uuid.uuid4(),
        tenant_id,
        conversation_id,
        message_id,
        root_id,
        created_by,
        queue,
        provider,
        model,
        instructions,
        max_history_messages,
        tools,
        tool_choice,
    )
    assert row is not None
    return row


async def set_required_action(
    db: Executor, tenant_id: uuid.UUID, run_id: uuid.UUID, required: dict[str, Any] | None
) -> asyncpg.Record:
    """The tool calls the run now waits for (and since now), or None once they are answered."""
    row = await db.fetchrow(
        f"""UPDATE run r SET required_action = $3,
                requires_action_at = CASE WHEN $3::jsonb IS NULL THEN NULL ELSE now() END
            WHERE r.tenant_id = $1 AND r.id = $2 RETURNING {RUN_COLUMNS}""",
        tenant_id,
        run_id,
        required,
    )
    assert row is not None
    return row


async def continue_with(db: Executor, tenant_id: uuid.UUID, run_id: uuid.UUID, message_id: uuid.UUID) -> None:
    """The next round of a run answers `message_id` (the last tool result) with a new output message."""
    await db.execute(
        "UPDATE run SET message_id = $3, output_message_id = NULL WHERE tenant_id = $1 AND id = $2",
        tenant_id,
        run_id,
        message_id,
    )


async def waiting_run_ids(db: Executor, older_than_seconds: float, limit: int) -> list[asyncpg.Record]:
    """(tenant_id, id) of runs waiting for tool outputs longer than that (every tenant)."""
    return await db.fetch(
        """SELECT tenant_id, id FROM run WHERE status = 'REQUIRES_ACTION'
           AND requires_action_at < now() - make_interval(secs => $1) ORDER BY requires_action_at LIMIT $2""",
        older_than_seconds,
        limit,
    )


async def lock_if_waiting(
    db: Executor, tenant_id: uuid.UUID, run_id: uuid.UUID, older_than_seconds: float
) -> asyncpg.Record | None:
    """The run, locked, if it still waits for tool outputs past the limit (skipped if another has it)."""
    return await db.fetchrow(
        f"""SELECT {RUN_COLUMNS} FROM run r WHERE r.tenant_id = $1 AND r.id = $2 AND r.status = 'REQUIRES_ACTION'
            AND r.requires_action_at < now() - make_interval(secs => $3) FOR UPDATE SKIP LOCKED""",
        tenant_id,
        run_id,
        older_than_seconds,
    )


async def lock_user_runs(db: Executor, tenant_id: uuid.UUID, user_id: uuid.UUID) -> None:
    """Serialise one user's run creations until the transaction ends, so the active-run cap holds."""
    await db.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"runs:{tenant_id}:{user_id}")


def user_active(tenant: str, user: str, ended: str | None = None) -> str:
    """SQL for what THREADLINE_RUN_MAX_ACTIVE_PER_USER bounds of the user given by the placeholders `tenant` and
    `user`, across every process: their active runs plus their gateway (/v1) calls in progress (a call counts once,
    whatever its `n`: only its first `gateway_call` row names its user). Read it after `lock_user_runs`, which a
    gateway call taking its place takes too (gateway.repository.take_call_place). `ended` as for `tenant_executing`."""
    statuses = ", ".join(f"'{status}'" for status in _ACTIVE)
    return f"""((SELECT count(*) FROM run u WHERE u.tenant_id = {tenant} AND u.created_by = {user}
                 AND u.status IN ({statuses}))
             + (SELECT count(*) FROM gateway_call g WHERE g.tenant_id = {tenant} AND g.user_id = {user}
                AND g.expires_at > now(){_not_ended(ended)}))"""


async def count_active_for_user(db: Executor, tenant_id: uuid.UUID, user_id: uuid.UUID) -> int:
    """The user's active runs and /v1 calls in progress (`user_active`)."""
    return int(await db.fetchval(f"SELECT {user_active('$1', '$2')}", tenant_id, user_id))


async def run(
    db: Executor, tenant_id: uuid.UUID, run_id: uuid.UUID, *, lock: bool = False
) -> asyncpg.Record | None:
    """The run; one in a cold conversation (tiers/) brings the conversation back first."""
    sql = f"SELECT {RUN_COLUMNS} FROM run r WHERE r.tenant_id = $1 AND r.id = $2" + (
        " FOR UPDATE" if lock else ""
    )
    row = await db.fetchrow(sql, tenant_id, run_id)
    if row is None and await tiers.restore_holding_run(db, tenant_id, run_id):
        row = await db.fetchrow(sql, tenant_id, run_id)
    return row


async def active_run_writing(
    db: Executor, tenant_id: uuid.UUID, message_id: uuid.UUID
) -> asyncpg.Record | None:
    """The active run whose output is `message_id`, if any."""
    return await db.fetchrow(
        f"""SELECT {RUN_COLUMNS} FROM run r WHERE r.tenant_id = $1 AND r.output_message_id = $2
            AND r.status = ANY($3::varchar[])""",
        tenant_id,
        message_id,
        _ACTIVE,
    )


async def runs_page(
    db: Executor,
    tenant_id: uuid.UUID,
    conversation_id: uuid.UUID,
    *,
    status: str | None,
    limit: int,
    after: tuple[Any, uuid.UUID] | None,
) -> list[asyncpg.Record]:
    """A conversation's runs, newest first."""
    params: list[Any] = [tenant_id, conversation_id]
    where = "r.tenant_id = $1 AND r.conversation_id = $2"
    if status is not None:
        params.append(status)
        where += f" AND r.status = ${len(params)}"
    where += older_than("r.created_at, r.id", after, params)
    params.append(limit)
    return await db.fetch(
        f"SELECT {RUN_COLUMNS} FROM run r WHERE {where} ORDER BY r.created_at DESC, r.id DESC LIMIT ${len(params)}",
        *params,
    )


async def count_runs(
    db: Executor, tenant_id: uuid.UUID, conversation_id: uuid.UUID, status: str | None
) -> int:
    if status is None:
        value = await db.fetchval(
            "SELECT count(*) FROM run WHERE tenant_id = $1 AND conversation_id = $2",
            tenant_id,
            conversation_id,
        )
    else:
        value = await db.fetchval(
            "SELECT count(*) FROM run WHERE tenant_id = $1 AND conversation_id = $2 AND status = $3",
            tenant_id,
            conversation_id,
            status,
        )
    return int(value)


async def set_status(
    db: Executor,
    tenant_id: uuid.UUID,
    run_id: uuid.UUID,
    *,
    current: RunStatus,
    attempt: int,
    target: RunStatus,
    error: tuple[str, str] | None = None,
    usage: tuple[int, int] | None = None,
) -> asyncpg.Record | None:
    """Move a run from `current` (in attempt `attempt`) to `target`; None if it is no longer there."""
    params: list[Any] = [tenant_id, run_id, current.value, attempt, target.value]
    sets = ["status = $5", "updated_at = now()"]
    stamp = STAMP.get(target)
    if stamp is not None and target is not RunStatus.IN_PROGRESS:
        sets.append(f"{stamp} = now()")
    if target not in EXECUTING:
        sets.append("worker_id = NULL")
    if error is not None:
        params.extend(error)
        sets.append(f"last_error_code = ${len(params) - 1}, last_error_message = ${len(params)}")
    if usage is not None:
        params.extend(usage)
        sets.append(f"prompt_tokens = ${len(params) - 1}, completion_tokens = ${len(params)}")
    return await db.fetchrow(
        f"""UPDATE run r SET {", ".join(sets)}
            WHERE r.tenant_id = $1 AND r.id = $2 AND r.status = $3 AND r.attempt = $4
            RETURNING {RUN_COLUMNS}""",
        *params,
    )


# Tenants a claim may find full (a concurrent claim took their last place) before it gives up until the next wake.
CLAIM_ATTEMPTS = 8
# Tenants a claim considers (the best placed), and queued runs of each (its oldest) it may try to lock.
CLAIM_CANDIDATES = 16

# The run a claim prefers: of the tenants with queued runs in the queue, not full, the one with the fewest runs
# executing (IN_PROGRESS, CANCELLING: literal, so the partial index `run_executing` serves), its oldest queued run
# first. The tenants are found by a skip scan of `run_claim_tenant` (one index probe a tenant, however long its
# backlog) and each one's oldest run by one more; then the oldest CLAIM_CANDIDATES runs of the CLAIM_CANDIDATES best
# placed tenants are the candidates (read by primary key), and the first no other claim holds is locked (claims
# racing for one tenant take its next runs, as the FIFO claim did). The statement's cost follows the number of tenants waiting, not of queued
# runs: sorting every queued run on each claim cost 274 ms with 200,000 queued.
_CLAIM_CANDIDATE = f"""
    WITH RECURSIVE tenants AS (
        (SELECT r.tenant_id FROM run r WHERE r.queue = $1 AND r.status = 'QUEUED' ORDER BY r.tenant_id LIMIT 1)
        UNION ALL
        SELECT (SELECT r.tenant_id FROM run r
                WHERE r.queue = $1 AND r.status = 'QUEUED' AND r.tenant_id > t.tenant_id
                ORDER BY r.tenant_id LIMIT 1)
        FROM tenants t WHERE t.tenant_id IS NOT NULL
    ),
    executing AS (
        SELECT w.tenant_id, count(*) AS n FROM (
            SELECT tenant_id FROM run WHERE status IN ('IN_PROGRESS', 'CANCELLING')
            UNION ALL
            SELECT tenant_id FROM gateway_call WHERE expires_at > now()
        ) w GROUP BY w.tenant_id
    ),
    placed AS (
        SELECT t.tenant_id, coalesce(e.n, 0) AS n, o.created_at, o.id
        FROM tenants t
        LEFT JOIN executing e ON e.tenant_id = t.tenant_id
        CROSS JOIN LATERAL (
            SELECT r.created_at, r.id FROM run r
            WHERE r.queue = $1 AND r.status = 'QUEUED' AND r.tenant_id = t.tenant_id
            ORDER BY r.created_at, r.id LIMIT 1
        ) o
        WHERE t.tenant_id IS NOT NULL AND t.tenant_id <> ALL($4::uuid[])
          AND ($3::int IS NULL OR coalesce(e.n, 0) < $3)
          AND NOT ($2 AND EXISTS (SELECT 1 FROM data_key k WHERE k.tenant_id = t.tenant_id))
        ORDER BY 2, 3, 4
        LIMIT {CLAIM_CANDIDATES}
    ),
    candidates AS MATERIALIZED (
        SELECT p.tenant_id, p.n, c.created_at, c.id
        FROM placed p CROSS JOIN LATERAL (
            SELECT r.created_at, r.id FROM run r
            WHERE r.queue = $1 AND r.status = 'QUEUED' AND r.tenant_id = p.tenant_id
            ORDER BY r.created_at, r.id LIMIT {CLAIM_CANDIDATES}
        ) c
    )
    SELECT r.id, r.tenant_id FROM candidates c JOIN run r ON r.tenant_id = c.tenant_id AND r.id = c.id
    WHERE r.id = ANY(ARRAY(SELECT id FROM candidates)) AND r.status = 'QUEUED'
    ORDER BY c.n, c.created_at, c.id
    LIMIT 1 FOR UPDATE OF r SKIP LOCKED"""


def tenant_executing(tenant: str, ended: str | None = None) -> str:
    """SQL for the model work the tenant given by the placeholder `tenant` has executing across every process, what
    THREADLINE_RUN_MAX_EXECUTING_PER_TENANT bounds: its runs IN_PROGRESS or CANCELLING plus its gateway calls in
    progress (a `gateway_call` whose lease has not run out; gateway.repository). Queued runs and runs waiting for
    tool outputs hold no model and do not count. Read it after `lock_tenant_executing`, in a statement of its own.
    `ended`: the placeholder of an array of calls that ended and are being given back (not counted)."""
    return f"""((SELECT count(*) FROM run e WHERE e.tenant_id = {tenant} AND e.status IN ('IN_PROGRESS', 'CANCELLING'))
             + (SELECT count(*) FROM gateway_call g WHERE g.tenant_id = {tenant} AND g.expires_at > now(){_not_ended(ended)}))"""


def _not_ended(ended: str | None) -> str:
    return "" if ended is None else f" AND g.id <> ALL({ended})"


async def lock_tenant_executing(db: Executor, tenant_id: uuid.UUID) -> None:
    """The tenant's lock on its executing count until the transaction ends: a worker claiming one of its runs and a
    gateway call taking a place queue on it, so each counts the other's place (in its next statement)."""
    await db.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"run-claims:{tenant_id}")


async def claim_next(
    db: Executor, queue: str, worker_id: str, keyless: bool = False, max_per_tenant: int | None = None
) -> asyncpg.Record | None:
    """A queued run of `queue`, now IN_PROGRESS for `worker_id` in a new attempt (every tenant), or None. Call it
    inside a transaction: the claim's locks last until the transaction ends.

    Fair claiming: the run is the oldest queued one of the tenants with the fewest runs executing (IN_PROGRESS,
    CANCELLING), so one tenant's backlog does not starve the others; with `max_per_tenant` no tenant has more than
    that many executing at once across every worker. The candidate is picked from a snapshot that a concurrent
    claim may have made stale, so the tenant's advisory lock is taken and its executing runs counted again in a
    statement of its own (a new snapshot, in READ COMMITTED) before the run is taken: two workers claiming for one
    tenant at once queue on the lock and the second sees the first's claim. A tenant found full is rolled back to
    the savepoint (its lock and the candidate's row lock go, so a claim never holds two tenants' locks and cannot
    deadlock with another) and left out of the next try. Runs leave the count by their status: a run that ends, is
    expired, requeued or cancelled (by recovery too) frees its place at once. A tenant's gateway calls in progress
    count as executing runs (`tenant_executing`): a run waits in the queue while they hold the tenant's places.

    A `keyless` worker (no master key in its process) takes no run of a tenant with data keys: it would send the
    sealed history as it is stored to the model, and store its answer plain."""
    full: list[uuid.UUID] = []
    if max_per_tenant is not None:
        await db.execute("SAVEPOINT run_claim")
    for _ in range(CLAIM_ATTEMPTS):
        candidate = await db.fetchrow(_CLAIM_CANDIDATE, queue, keyless, max_per_tenant, full)
        if candidate is None:
            return None
        if max_per_tenant is not None:
            await lock_tenant_executing(db, candidate["tenant_id"])
        claimed = await db.fetchrow(
            f"""UPDATE run r SET status = 'IN_PROGRESS', attempt = r.attempt + 1, worker_id = $3,
                    heartbeat_at = now(), started_at = coalesce(r.started_at, now()), updated_at = now(),
                    prompt_tokens = 0, completion_tokens = 0
                WHERE r.tenant_id = $1 AND r.id = $2 AND r.status = 'QUEUED'
                  AND ($4::int IS NULL OR {tenant_executing("$1")} < $4)
                RETURNING {RUN_COLUMNS}""",
            candidate["tenant_id"],
            candidate["id"],
            worker_id,
            max_per_tenant,
        )
        if claimed is not None or max_per_tenant is None:
            return claimed
        await db.execute("ROLLBACK TO SAVEPOINT run_claim")
        full.append(candidate["tenant_id"])
    return None


async def heartbeat(
    db: Executor, worker_id: str, runs: Sequence[tuple[uuid.UUID, uuid.UUID, int]]
) -> list[asyncpg.Record]:
    """Refresh the heartbeat of a worker's runs, given as (tenant, run, attempt); returns (id, status) of
    those it still owns. A run missing from the result was expired, requeued or forcibly cancelled."""
    return await db.fetch(
        """UPDATE run r SET heartbeat_at = now()
           FROM unnest($1::uuid[], $2::uuid[], $3::int[]) AS k(tenant_id, id, attempt)
           WHERE r.tenant_id = k.tenant_id AND r.id = k.id AND r.attempt = k.attempt AND r.worker_id = $4
             AND r.status = ANY($5::varchar[])
           RETURNING r.id, r.status""",
        [t for t, _, _ in runs],
        [r for _, r, _ in runs],
        [a for _, _, a in runs],
        worker_id,
        _EXECUTING,
    )


async def progress(
    db: Executor,
    tenant_id: uuid.UUID,
    run_id: uuid.UUID,
    attempt: int,
    prompt_tokens: int,
    completion_tokens: int,
) -> str | None:
    """Heartbeat plus usage so far, row-locked for the rest of the transaction; the run's status, or None
    if this attempt no longer owns the run."""
    value = await db.fetchval(
        """UPDATE run SET heartbeat_at = now(), prompt_tokens = $4, completion_tokens = $5
           WHERE tenant_id = $1 AND id = $2 AND attempt = $3 AND status = ANY($6::varchar[])
           RETURNING status""",
        tenant_id,
        run_id,
        attempt,
        prompt_tokens,
        completion_tokens,
        _EXECUTING,
    )
    return str(value) if value is not None else None


async def set_output(db: Executor, tenant_id: uuid.UUID, run_id: uuid.UUID, message_id: uuid.UUID) -> None:
    await db.execute(
        "UPDATE run SET output_message_id = $3 WHERE tenant_id = $1 AND id = $2",
        tenant_id,
        run_id,
        message_id,
    )


async def drop_lapsed_call_places(db: Executor, limit: int) -> int:
    """Deletes up to `limit` gateway calls' leases that ran out (their process died: a live one renews its own, and
    gives each back when its call ends); how many. They no longer count (`tenant_executing`), and the tenant's next
    call deletes its own, but a tenant that made none kept them for good. Rows another transaction holds are
    skipped (a call taking a place deletes its tenant's too), so this never waits on one nor deadlocks with it."""
    deleted = await db.fetchval(
        """WITH gone AS (
               DELETE FROM gateway_call WHERE id IN (
                   SELECT id FROM gateway_call WHERE expires_at <= now() LIMIT $1 FOR UPDATE SKIP LOCKED)
               RETURNING 1)
           SELECT count(*) FROM gone""",
        limit,
    )
    return int(deleted or 0)


async def stale_run_ids(db: Executor, stale_seconds: float, limit: int) -> list[asyncpg.Record]:
    """(tenant_id, id) of executing runs whose worker has not heartbeaten for `stale_seconds` (every tenant)."""
    return await db.fetch(
        """SELECT tenant_id, id FROM run WHERE status = ANY($1::varchar[])
           AND heartbeat_at < now() - make_interval(secs => $2) ORDER BY heartbeat_at LIMIT $3""",
        _EXECUTING,
        stale_seconds,
        limit,
    )


async def lock_if_stale(
    db: Executor, tenant_id: uuid.UUID, run_id: uuid.UUID, stale_seconds: float
) -> asyncpg.Record | None:
    """The run, locked, if it is still executing without a heartbeat (skipped if another instance has it)."""
    return await db.fetchrow(
        f"""SELECT {RUN_COLUMNS} FROM run r WHERE r.tenant_id = $1 AND r.id = $2
            AND r.status = ANY($3::varchar[]) AND r.heartbeat_at < now() - make_interval(secs => $4)
            FOR UPDATE SKIP LOCKED""",
        tenant_id,
        run_id,
        _EXECUTING,
        stale_seconds,
    )


# steps ------------------------------------------------------------------------------------------


async def insert_step(
    db: Executor, tenant_id: uuid.UUID, run_id: uuid.UUID, attempt: int, type: str, details: dict[str, Any]
) -> None:
    await db.execute(
        """INSERT INTO run_step (id, tenant_id, run_id, attempt, type, status, details)
           VALUES ($1, $2, $3, $4, $5, 'IN_PROGRESS', $6)""",
        uuid.uuid4(),
        tenant_id,
        run_id,
        attempt,
        type,
        details,
    )


async def end_open_steps(db: Executor, tenant_id: uuid.UUID, run_id: uuid.UUID, status: StepStatus) -> None:
    stamp = {
        StepStatus.COMPLETED: "completed_at",
        StepStatus.CANCELLED: "cancelled_at",
        StepStatus.FAILED: "failed_at",
        StepStatus.EXPIRED: "expired_at",
    }[status]
    await db.execute(
        f"""UPDATE run_step SET status = $3, {stamp} = now()
            WHERE tenant_id = $1 AND run_id = $2 AND status = 'IN_PROGRESS'""",
        tenant_id,
        run_id,
        status.value,
    )


async def last_run_usage(db: Executor, tenant_id: uuid.UUID, run_id: uuid.UUID) -> Any:
    """`runUsage` of the run's newest answered TOOL_CALLS step (runs.tools), or None: one row, found walking back
    from the newest step (past at most the current round's and its lost attempts'), however many rounds it had."""
    return await db.fetchval(
        """SELECT s.details -> 'runUsage' FROM run_step s
           WHERE s.tenant_id = $1 AND s.run_id = $2 AND s.type = 'TOOL_CALLS' AND s.status = 'COMPLETED'
           ORDER BY s.created_at DESC, s.id DESC LIMIT 1""",
        tenant_id,
        run_id,
    )


async def step_pages(
    db: Executor,
    tenant_id: uuid.UUID,
    run_ids: list[uuid.UUID],
    limit: int,
    after: tuple[Any, uuid.UUID] | None,
) -> list[asyncpg.Record]:
    """The first `limit` steps of each run, oldest first (after `after`, a step's (created_at, id), if given): one
    index range of `limit` rows a run, however many steps it has."""
    params: list[Any] = [tenant_id, run_ids, limit]
    keyset = ""
    if after is not None:
        params.extend(after)
        keyset = " AND (s.created_at, s.id) > ($4, $5)"
    return await db.fetch(
        f"""SELECT {STEP_COLUMNS} FROM unnest($2::uuid[]) AS k(run_id)
            CROSS JOIN LATERAL (
                SELECT * FROM run_step s WHERE s.tenant_id = $1 AND s.run_id = k.run_id{keyset}
                ORDER BY s.created_at, s.id LIMIT $3
            ) s
            ORDER BY s.created_at, s.id""",
        *params,
    )


async def step_counts(
    db: Executor, tenant_id: uuid.UUID, run_ids: list[uuid.UUID], at_most: int | None = None
) -> list[asyncpg.Record]:
    """(run_id, n): how many steps each run has, or `at_most` if it has more (reads no more than that many)."""
    if at_most is None:
        return await db.fetch(
            """SELECT run_id, count(*) AS n FROM run_step WHERE tenant_id = $1 AND run_id = ANY($2::uuid[])
               GROUP BY run_id""",
            tenant_id,
            run_ids,
        )
    return await db.fetch(
        """SELECT k.run_id, (SELECT count(*) FROM (SELECT 1 FROM run_step s
                                WHERE s.tenant_id = $1 AND s.run_id = k.run_id LIMIT $3) bounded) AS n
           FROM unnest($2::uuid[]) AS k(run_id)""",
        tenant_id,
        run_ids,
        at_most,
    )


async def step(db: Executor, tenant_id: uuid.UUID, step_id: uuid.UUID) -> asyncpg.Record | None:
    return await db.fetchrow(
        f"SELECT {STEP_COLUMNS} FROM run_step s WHERE s.tenant_id = $1 AND s.id = $2", tenant_id, step_id
    )


async def redact_instructions(db: Executor, tenant_id: uuid.UUID, user_id: uuid.UUID) -> int:
    """Erasure (porting.erasure, `redactMessages`): the instructions of the runs `user_id` created are their words
    too, and go with their messages' content (the runs stay, attributed to the placeholder). How many."""
    result = await db.execute(
        "UPDATE run SET instructions = NULL, updated_at = now() "
        "WHERE tenant_id = $1 AND created_by = $2 AND instructions IS NOT NULL",
        tenant_id,
        user_id,
    )
    return int(result.split()[-1])
