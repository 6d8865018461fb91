"""All SQL of rate limits: profiles, assignments, and the token buckets shared by every server process."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import asyncpg

from threadline.db import Executor

PROFILE_COLUMNS = (
    "id, tenant_id, name, window_seconds, burst, requests_per_window, mutations_per_window, runs_per_window, "
    "subscriptions_per_window, is_default, created_at, updated_at"
)
# A profile's budget settings, in the order `service.built_in` gives the server's own values.
BUDGET_FIELDS = (
    "window_seconds",
    "burst",
    "requests_per_window",
    "mutations_per_window",
    "runs_per_window",
    "subscriptions_per_window",
)
# Budget columns, in the order `BuiltIn` values are bound ($3.. of `consume`).
BUDGETS = ("requests", "mutations", "runs", "subscriptions")


async def profiles(db: Executor, tenant_id: uuid.UUID) -> list[asyncpg.Record]:
    return await db.fetch(
        f"SELECT {PROFILE_COLUMNS} FROM rate_limit_profile WHERE tenant_id = $1 ORDER BY name, id", tenant_id
    )


async def profile(db: Executor, tenant_id: uuid.UUID, profile_id: uuid.UUID) -> asyncpg.Record | None:
    return await db.fetchrow(
        f"SELECT {PROFILE_COLUMNS} FROM rate_limit_profile WHERE tenant_id = $1 AND id = $2",
        tenant_id,
        profile_id,
    )


async def effective_profile(db: Executor, tenant_id: uuid.UUID, user_id: uuid.UUID) -> asyncpg.Record | None:
    """The user's assigned profile, else the tenant's default profile, else None (the built-in one applies)."""
    return await db.fetchrow(
        f"""SELECT {PROFILE_COLUMNS} FROM rate_limit_profile
            WHERE tenant_id = $1 AND id = COALESCE(
                (SELECT profile_id FROM rate_limit_assignment WHERE tenant_id = $1 AND user_id = $2),
                (SELECT id FROM rate_limit_profile WHERE tenant_id = $1 AND is_default))""",
        tenant_id,
        user_id,
    )


async def insert_profile(db: Executor, tenant_id: uuid.UUID, values: dict[str, object]) -> asyncpg.Record:
    columns = ["id", "tenant_id", *values]
    params = [uuid.uuid4(), tenant_id, *values.values()]
    placeholders = ", ".join(f"${i}" for i in range(1, len(params) + 1))
    row = await db.fetchrow(
        f"INSERT INTO rate_limit_profile ({', '.join(columns)}) VALUES ({placeholders}) RETURNING {PROFILE_COLUMNS}",
        *params,
    )
    assert row is not None
    return row


async def update_profile(
    db: Executor, tenant_id: uuid.UUID, profile_id: uuid.UUID, values: dict[str, object]
) -> asyncpg.Record | None:
    assignments = ", ".join(f"{column} = ${i}" for i, column in enumerate(values, start=3))
    return await db.fetchrow(
        f"""UPDATE rate_limit_profile SET {assignments}{", " if assignments else ""}updated_at = now()
            WHERE tenant_id = $1 AND id = $2 RETURNING {PROFILE_COLUMNS}""",
        tenant_id,
        profile_id,
        *values.values(),
    )


async def clear_default(db: Executor, tenant_id: uuid.UUID, keep: uuid.UUID | None = None) -> None:
    await db.execute(
        "UPDATE rate_limit_profile SET is_default = false, updated_at = now() "
        "WHERE tenant_id = $1 AND is_default AND id IS DISTINCT FROM $2",
        tenant_id,
        keep,
    )


async def delete_profile(db: Executor, tenant_id: uuid.UUID, profile_id: uuid.UUID) -> bool:
    status = await db.execute(
        "DELETE FROM rate_limit_profile WHERE tenant_id = $1 AND id = $2", tenant_id, profile_id
    )
    return status == "DELETE 1"


async def assign(
    db: Executor, tenant_id: uuid.UUID, user_id: uuid.UUID, profile_id: uuid.UUID | None
) -> None:
    if profile_id is None:
        await db.execute(
            "DELETE FROM rate_limit_assignment WHERE tenant_id = $1 AND user_id = $2", tenant_id, user_id
        )
        return
    await db.execute(
        """INSERT INTO rate_limit_assignment (user_id, tenant_id, profile_id) VALUES ($2, $1, $3)
           ON CONFLICT (user_id) DO UPDATE SET profile_id = EXCLUDED.profile_id, assigned_at = now()""",
        tenant_id,
        user_id,
        profile_id,
    )


async def assigned_profile_ids(
    db: Executor, tenant_id: uuid.UUID, user_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, uuid.UUID]:
    rows = await db.fetch(
        "SELECT user_id, profile_id FROM rate_limit_assignment WHERE tenant_id = $1 AND user_id = ANY($2::uuid[])",
        tenant_id,
        list(user_ids),
    )
    return {r["user_id"]: r["profile_id"] for r in rows}


# One statement per operation, whatever the number of budgets it draws on. The effective profile is read in
# the same statement, so a changed or reassigned profile applies to the very next request in every process.
# A bucket holds at most `per_window + burst` tokens (in thousandths) and refills `per_window` every
# `window_seconds`; a changed capacity moves the tokens by the difference at once (what was spent in this
# window still counts against the new budget). A draw that finds too few tokens takes none (`allowed` false).
# now() is the transaction's start: a draw whose transaction began before the last writer's never refills a
# negative time (nor moves updated_at back), or two concurrent first draws would cost more than they take.
_AVAILABLE = """LEAST(
        EXCLUDED.capacity::bigint * 1000,
        GREATEST(b.tokens_milli + (EXCLUDED.capacity - b.capacity)::bigint * 1000, 0)
        + floor(GREATEST(EXTRACT(EPOCH FROM now() - b.updated_at), 0)
                * 1000 * EXCLUDED.per_window / EXCLUDED.window_seconds)::bigint
    )"""
_CONSUME = f"""
WITH profile AS (
    SELECT window_seconds, burst, requests_per_window, mutations_per_window, runs_per_window,
           subscriptions_per_window, 0 AS priority
    FROM rate_limit_profile
    WHERE tenant_id = $1 AND id = COALESCE(
        (SELECT profile_id FROM rate_limit_assignment WHERE tenant_id = $1 AND user_id = $2),
        (SELECT id FROM rate_limit_profile WHERE tenant_id = $1 AND is_default))
    UNION ALL
    SELECT $5::int, $6::int, $7::int, $8::int, $9::int, $10::int, 1
    ORDER BY priority
    LIMIT 1
), limited AS (
    -- The server's own budgets (priority 1) apply as the operator set them. A tenant's profile is bounded by the
    -- operator's ceilings ($11..$14 per $15 seconds, in BUDGETS order), also one stored before they were
    -- lowered: no faster refill, no more tokens held (the rule of service.clamped).
    SELECT window_seconds, requests_per_window, mutations_per_window, runs_per_window, subscriptions_per_window,
           burst
    FROM profile WHERE priority = 1
    UNION ALL
    SELECT window_seconds, requests_per_window, mutations_per_window, runs_per_window, subscriptions_per_window,
           GREATEST(LEAST(burst, $11 - requests_per_window, $12 - mutations_per_window, $13 - runs_per_window,
                          $14 - subscriptions_per_window), 0)
    FROM (SELECT window_seconds, burst,
                 LEAST(requests_per_window, $11::bigint * window_seconds / $15, $11)::int AS requests_per_window,
                 LEAST(mutations_per_window, $12::bigint * window_seconds / $15, $12)::int AS mutations_per_window,
                 LEAST(runs_per_window, $13::bigint * window_seconds / $15, $13)::int AS runs_per_window,
                 LEAST(subscriptions_per_window, $14::bigint * window_seconds / $15, $14)::int
                     AS subscriptions_per_window
          FROM profile WHERE priority = 0) asked
), wanted AS (
    SELECT w.bucket, w.cost,
           CASE w.bucket WHEN 'requests' THEN p.requests_per_window WHEN 'mutations' THEN p.mutations_per_window
                         WHEN 'runs' THEN p.runs_per_window ELSE p.subscriptions_per_window END AS per_window,
           p.window_seconds, p.burst
    FROM unnest($3::text[], $4::int[]) AS w (bucket, cost), limited p
)
INSERT INTO rate_limit_bucket AS b (id, tenant_id, user_id, bucket, capacity, per_window, window_seconds,
                                    tokens_milli, last_cost, allowed, updated_at)
SELECT gen_random_uuid(), $1, $2, bucket, per_window + burst, per_window, window_seconds,
       (per_window + burst - CASE WHEN per_window + burst >= cost THEN cost ELSE 0 END)::bigint * 1000,
       cost, per_window + burst >= cost, now()
FROM wanted
ON CONFLICT (tenant_id, user_id, bucket) DO UPDATE SET
    tokens_milli = {_AVAILABLE}
        - CASE WHEN {_AVAILABLE} >= EXCLUDED.last_cost::bigint * 1000 THEN EXCLUDED.last_cost::bigint * 1000 ELSE 0 END,
    allowed = {_AVAILABLE} >= EXCLUDED.last_cost::bigint * 1000,
    last_cost = EXCLUDED.last_cost,
    capacity = EXCLUDED.capacity,
    per_window = EXCLUDED.per_window,
    window_seconds = EXCLUDED.window_seconds,
    updated_at = GREATEST(b.updated_at, now())
RETURNING bucket, capacity, per_window, window_seconds, tokens_milli, last_cost, allowed
"""


async def consume(
    db: Executor,
    tenant_id: uuid.UUID,
    user_id: uuid.UUID,
    costs: dict[str, int],
    built_in: tuple[int, int, int, int, int, int],
    ceilings: tuple[int, int, int, int],
    ceiling_window_seconds: int,
) -> list[asyncpg.Record]:
    """Takes `costs` tokens from each budget that has them; returns every bucket with its verdict (`allowed`).

    `built_in` is (window_seconds, burst, requests, mutations, runs, subscriptions) for tenants without a
    default profile; `ceilings` (in BUDGETS order, per `ceiling_window_seconds`) bound every profile.
    """
    return await db.fetch(
        _CONSUME,
        tenant_id,
        user_id,
        list(costs),
        list(costs.values()),
        *built_in,
        *ceilings,
        ceiling_window_seconds,
    )


async def give_back(db: Executor, tenant_id: uuid.UUID, user_id: uuid.UUID, bucket: str, tokens: int) -> None:
    """Returns `tokens` a process took ahead and did not spend (service's leases) to the bucket, up to what it
    holds at most. Added to the stored tokens, so a capacity changed since moves them like any other."""
    await db.execute(
        """UPDATE rate_limit_bucket SET tokens_milli = LEAST(tokens_milli + $4::bigint * 1000, capacity::bigint * 1000)
           WHERE tenant_id = $1 AND user_id = $2 AND bucket = $3""",
        tenant_id,
        user_id,
        bucket,
        tokens,
    )
