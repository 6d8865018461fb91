"""Rate-limit rules: which budgets an operation draws on, the verdict, and admin changes to profiles.

Budgets are token buckets shared by every process through PostgreSQL (see repository.consume): a profile
gives each budget `perWindow` tokens per `windowSeconds`, and a bucket holds up to `perWindow + burst`.
Every operation draws 1 from `requests`; a mutation draws 1 per top-level field from `mutations`; each
`runCreate` draws 1 from `runs`; a subscription start draws 1 from `subscriptions`. A refused operation
still counts against the budgets that allowed it.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass

import asyncpg

from threadline.auth import repository as users
from threadline.auth.principal import Principal
from threadline.db import Database, Executor
from threadline.errors import ErrorCode, ThreadlineError, bad_input, conflict, forbidden, not_found
from threadline.ratelimits import repository as repo
from threadline.settings import Settings

NAME_MAX_CHARS = 100


@dataclass(frozen=True)
class Budget:
    """What the RateLimit-* headers say about one budget after an operation."""

    name: str
    limit: int
    remaining: int
    reset_seconds: int


class RateLimited(ThreadlineError):
    def __init__(self, budget: Budget, retry_after: int) -> None:
        super().__init__(
            ErrorCode.RATE_LIMITED,
            f"Rate limit of the `{budget.name}` budget reached ({budget.limit} at most); "
            f"retry after {retry_after} s",
            retryAfter=retry_after,
            budget=budget.name,
            limit=budget.limit,
        )
        self.budget = budget


def built_in(settings: Settings) -> tuple[int, int, int, int, int, int]:
    """The server's own budgets (THREADLINE_RATE_LIMIT_*), in `repo.BUDGET_FIELDS` order."""
    return (
        settings.rate_limit_window_seconds,
        settings.rate_limit_burst,
        settings.rate_limit_requests,
        settings.rate_limit_mutations,
        settings.rate_limit_runs,
        settings.rate_limit_subscriptions,
    )


# Per budget column: the setting that caps it (the operator's ceiling over every tenant's profiles).
CEILING_SETTINGS = {
    "requests_per_window": "rate_limit_ceiling_requests",
    "mutations_per_window": "rate_limit_ceiling_mutations",
    "runs_per_window": "rate_limit_ceiling_runs",
    "subscriptions_per_window": "rate_limit_ceiling_subscriptions",
}


def ceilings(settings: Settings) -> tuple[int, int, int, int]:
    """The operator's ceilings, in `repo.BUDGETS` order (requests, mutations, runs, subscriptions)."""
    return (
        settings.rate_limit_ceiling_requests,
        settings.rate_limit_ceiling_mutations,
        settings.rate_limit_ceiling_runs,
        settings.rate_limit_ceiling_subscriptions,
    )


def clamped(budgets: dict[str, int], settings: Settings) -> dict[str, int]:
    """`budgets` (a tenant profile's `repo.BUDGET_FIELDS`) as enforced under the ceilings: no budget refills faster
    than its ceiling per the server's window, nor holds more than its ceiling (`perWindow + burst`; one burst
    serves every budget, so it is the smallest room left). `repo.consume` applies the same rule in SQL, so a
    profile stored before a ceiling was lowered is clamped rather than refused."""
    out = dict(budgets)
    window = budgets["window_seconds"]
    room = [budgets["burst"]]
    for field, setting in CEILING_SETTINGS.items():
        ceiling = getattr(settings, setting)
        out[field] = min(budgets[field], ceiling * window // settings.rate_limit_window_seconds, ceiling)
        room.append(ceiling - out[field])
    out["burst"] = max(min(room), 0)
    return out


def _over_ceiling(budgets: dict[str, int], settings: Settings) -> None:
    """BAD_USER_INPUT naming the first budget a profile would lift above the operator's ceiling."""
    window = budgets["window_seconds"]
    for field, setting in CEILING_SETTINGS.items():
        ceiling = getattr(settings, setting)
        per_window = budgets[field]
        camel = _camel(field)
        env = "THREADLINE_" + setting.upper()
        if per_window * settings.rate_limit_window_seconds > ceiling * window:
            raise bad_input(
                f"`{camel}` of {per_window} per {window} s is above the server's ceiling of {ceiling} per "
                f"{settings.rate_limit_window_seconds} s ({env})",
                argument=camel,
                limitName="rateLimitCeiling",
                setting=env,
                limit=ceiling,
            )
        if per_window + budgets["burst"] > ceiling:
            raise bad_input(
                f"`{camel}` + `burst` ({per_window + budgets['burst']} tokens) is above the server's ceiling of "
                f"{ceiling} ({env})",
                argument="burst" if budgets["burst"] else camel,
                limitName="rateLimitCeiling",
                setting=env,
                limit=ceiling,
            )


def _budgets(values: dict[str, object]) -> dict[str, int]:
    return {k: int(values[k]) for k in repo.BUDGET_FIELDS}  # type: ignore[call-overload]


def _camel(field: str) -> str:
    return field.split("_")[0] + "".join(p.title() for p in field.split("_")[1:])


def _seconds_until(tokens_milli: int, wanted_milli: int, per_window: int, window_seconds: int) -> int:
    missing = wanted_milli - tokens_milli
    if missing <= 0:
        return 0
    if per_window <= 0:
        return window_seconds
    return max(1, math.ceil(missing * window_seconds / (per_window * 1000)))


def _budget(row: asyncpg.Record) -> Budget:
    return Budget(
        name=row["bucket"],
        limit=row["capacity"],
        remaining=max(row["tokens_milli"] // 1000, 0),
        reset_seconds=_seconds_until(
            row["tokens_milli"], row["capacity"] * 1000, row["per_window"], row["window_seconds"]
        ),
    )


async def spend(db: Executor, settings: Settings, principal: Principal, costs: dict[str, int]) -> Budget:
    """Draws `costs` from the caller's budgets; returns the budget to report, or raises RATE_LIMITED."""
    costs = {name: cost for name, cost in costs.items() if cost > 0}
    rows = await repo.consume(
        db,
        principal.tenant_id,
        principal.user_id,
        costs,
        built_in(settings),
        ceilings(settings),
        settings.rate_limit_window_seconds,
    )
    refused = [r for r in rows if not r["allowed"]]
    if not refused:
        return min((_budget(r) for r in rows), key=lambda b: (b.remaining, b.name != "requests"))
    row = refused[0]
    if row["capacity"] < row["last_cost"]:
        retry_after = row["window_seconds"]
    else:
        retry_after = _seconds_until(
            row["tokens_milli"], row["last_cost"] * 1000, row["per_window"], row["window_seconds"]
        )
    retry_after = max(retry_after, 1)
    raise RateLimited(
        Budget(row["bucket"], row["capacity"], row["tokens_milli"] // 1000, retry_after), retry_after
    )


async def spend_by_size(
    db: Executor, settings: Settings, principal: Principal, budget: str, cost: int
) -> None:
    """Draws `cost` more from one budget, for an operation priced by its input once read (an import, by its
    size); the extension already drew the operation's first unit. RATE_LIMITED, taking nothing, when spent."""
    if settings.rate_limit_enabled and cost > 0:
        await spend(db, settings, principal, {budget: cost})


def _require_admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise forbidden("Only tenant admins may manage rate-limit profiles")


def _checked(values: dict[str, object]) -> dict[str, object]:
    name = values.get("name")
    if name is not None:
        if not isinstance(name, str) or not name.strip() or len(name) > NAME_MAX_CHARS:
            raise bad_input(f"`name` must be 1 to {NAME_MAX_CHARS} characters", argument="name")
        values["name"] = name.strip()
    window = values.get("window_seconds")
    if window is not None and not 1 <= int(window) <= 86_400:  # type: ignore[call-overload]
        raise bad_input("`windowSeconds` must be between 1 and 86400", argument="windowSeconds")
    for key in repo.BUDGET_FIELDS[1:]:  # the window has its own range, above
        value = values.get(key)
        if value is not None and not 0 <= int(value) <= 1_000_000_000:  # type: ignore[call-overload]
            camel = _camel(key)
            raise bad_input(f"`{camel}` must be between 0 and 1000000000", argument=camel)
    return values


async def list_profiles(db: Executor, principal: Principal) -> list[asyncpg.Record]:
    _require_admin(principal)
    return await repo.profiles(db, principal.tenant_id)


async def readable_profile(db: Executor, principal: Principal, profile_id: uuid.UUID) -> asyncpg.Record:
    _require_admin(principal)
    row = await repo.profile(db, principal.tenant_id, profile_id)
    if row is None:
        raise not_found("RateLimitProfile")
    return row


async def create_profile(
    db: Database, settings: Settings, principal: Principal, values: dict[str, object]
) -> asyncpg.Record:
    _require_admin(principal)
    values = _checked({k: v for k, v in values.items() if v is not None})
    defaults: dict[str, object] = dict(zip(repo.BUDGET_FIELDS, built_in(settings), strict=True))
    _over_ceiling(_budgets({**defaults, **values}), settings)
    async with db.transaction() as tx:
        if values.get("is_default"):
            await repo.clear_default(tx, principal.tenant_id)
        try:
            return await repo.insert_profile(tx, principal.tenant_id, values)
        except asyncpg.UniqueViolationError as exc:
            raise conflict(f"A rate-limit profile named {values.get('name')!r} exists") from exc


async def update_profile(
    db: Database, settings: Settings, principal: Principal, profile_id: uuid.UUID, values: dict[str, object]
) -> asyncpg.Record:
    _require_admin(principal)
    values = _checked({k: v for k, v in values.items() if v is not None})
    async with db.transaction() as tx:
        if any(k in values for k in repo.BUDGET_FIELDS):
            # Checked as the profile will be; a rename alone is fine even over a since-lowered ceiling.
            current = await repo.profile(tx, principal.tenant_id, profile_id)
            if current is None:
                raise not_found("RateLimitProfile")
            _over_ceiling(_budgets({**dict(current), **values}), settings)
        if values.get("is_default"):
            await repo.clear_default(tx, principal.tenant_id, keep=profile_id)
        try:
            row = await repo.update_profile(tx, principal.tenant_id, profile_id, values)
        except asyncpg.UniqueViolationError as exc:
            raise conflict(f"A rate-limit profile named {values.get('name')!r} exists") from exc
        if row is None:
            raise not_found("RateLimitProfile")
        return row


async def delete_profile(db: Database, principal: Principal, profile_id: uuid.UUID) -> bool:
    """Users assigned to it fall back to the tenant default."""
    _require_admin(principal)
    if not await repo.delete_profile(db, principal.tenant_id, profile_id):
        raise not_found("RateLimitProfile")
    return True


async def assign_profile(
    db: Database, principal: Principal, user_id: uuid.UUID, profile_id: uuid.UUID | None
) -> asyncpg.Record | None:
    """Assigns `profile_id` to the user (None: back to the tenant default); returns the user's effective profile."""
    _require_admin(principal)
    async with db.transaction() as tx:
        if await users.user_by_id(tx, principal.tenant_id, user_id) is None:
            raise not_found("User")
        if profile_id is not None and await repo.profile(tx, principal.tenant_id, profile_id) is None:
            raise not_found("RateLimitProfile")
        await repo.assign(tx, principal.tenant_id, user_id, profile_id)
        return await repo.effective_profile(tx, principal.tenant_id, user_id)


async def effective_profile(db: Executor, principal: Principal, user_id: uuid.UUID) -> asyncpg.Record | None:
    if user_id != principal.user_id:
        _require_admin(principal)
        if await users.user_by_id(db, principal.tenant_id, user_id) is None:
            raise not_found("User")
    return await repo.effective_profile(db, principal.tenant_id, user_id)
