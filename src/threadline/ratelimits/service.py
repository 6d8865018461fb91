"""Rate-limit rules: which budgets an operation draws on, the verdict, and admin changes to profiles.

Budgets are token buckets shared by every process through PostgreSQL (see repository.consume): a profile
gives each budget `perWindow` tokens per `windowSeconds`, and a bucket holds up to `perWindow + burst`.
Every operation draws 1 from `requests`; a mutation draws 1 per top-level field from `mutations`; each
`runCreate` draws 1 from `runs`; a subscription start draws 1 from `subscriptions`. A refused operation
still counts against the budgets that allowed it.
"""

from __future__ import annotations

import ipaddress
import math
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import NoReturn

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


# Client addresses with a window of their own in one process. Once that many hold a live window, a new address is
# counted with its /24 (IPv4) or /48 (IPv6) in a shared window, at most ANONYMOUS_PREFIXES_MAX of those, and past
# that in one overflow window every other newcomer shares. A live window is never evicted: a client rotating through
# many addresses only fills the table, and cannot reset anyone's count by pushing their window out.
ANONYMOUS_ADDRESSES_MAX = 10_000
ANONYMOUS_PREFIXES_MAX = 1_000
_OVERFLOW = "overflow"

_Windows = OrderedDict[str, tuple[float, int]]


def wider_prefix(address: str) -> str:
    """The /24 of an IPv4 address, the /48 of an IPv6 address or /64 (anonymous windows' keys); else itself."""
    try:
        network = ipaddress.ip_network(address, strict=False)
    except ValueError:
        return address
    if network.version == 6 and network.prefixlen == 128:
        mapped = ipaddress.IPv6Address(network.network_address).ipv4_mapped
        if mapped is not None:
            network = ipaddress.ip_network(mapped)
    return str(network.supernet(new_prefix=min(network.prefixlen, 24 if network.version == 4 else 48)))


class AnonymousWindows:
    """Operations of callers without credentials, per client address, in fixed windows of
    THREADLINE_RATE_LIMIT_WINDOW_SECONDS, in this process: they have no budget row (no principal), and a full
    introspection costs ~0.15-0.2 s of CPU, so twenty at once from anyone held both cores of a small server. In
    memory, not the database: a refusal must cost less than what it refuses. The client address is the peer's, or
    behind a trusted proxy the one it forwards (ratelimits.addresses, THREADLINE_TRUSTED_PROXIES).

    Memory is bounded (ANONYMOUS_ADDRESSES_MAX windows, ANONYMOUS_PREFIXES_MAX wider ones and the overflow), and
    only windows that are over are forgotten, never a live one. Each table is kept in the order its windows
    started (a window taken over from a prefix may be older than those before it), so the ones over are found at
    its front without a scan."""

    def __init__(self) -> None:
        self._windows: _Windows = OrderedDict()
        self._prefixes: _Windows = OrderedDict()
        self._overflow: _Windows = OrderedDict()

    def take(self, settings: Settings, address: str, now: float | None = None) -> None:
        """Counts one operation of `address`; RATE_LIMITED (budget `anonymous`) past THREADLINE_RATE_LIMIT_ANONYMOUS."""
        limit = settings.rate_limit_anonymous
        if limit <= 0:
            return
        now = time.monotonic() if now is None else now
        window = max(settings.rate_limit_window_seconds, 1)
        table, key = self._window_of(address, now, window)
        start, count = table.get(key, (now, 0))
        if now - start >= window:
            start, count = now, 0
        reset = max(1, math.ceil(start + window - now))
        if count >= limit:
            raise RateLimited(Budget("anonymous", limit, 0, reset), reset)
        table[key] = (start, count + 1)
        if count == 0:
            table.move_to_end(key)  # a window that starts now: the table stays in the order windows started

    def _window_of(self, address: str, now: float, window: int) -> tuple[_Windows, str]:
        """The table and key counting `address`: its own window; when the table holds only live windows, its wider
        prefix's (a new one starts from the count the prefix has); then the overflow."""
        if address in self._windows:
            return self._windows, address
        prefix = wider_prefix(address)
        if self._room(self._windows, ANONYMOUS_ADDRESSES_MAX, now, window):
            shared = self._prefixes.get(prefix)
            if shared is not None and now - shared[0] < window:
                # Counted with its prefix until now: its own window goes on from that count, not from zero.
                self._windows[address] = shared
            return self._windows, address
        if prefix in self._prefixes or self._room(self._prefixes, ANONYMOUS_PREFIXES_MAX, now, window):
            return self._prefixes, prefix
        return self._overflow, _OVERFLOW

    @staticmethod
    def _room(table: _Windows, size: int, now: float, window: int) -> bool:
        """Whether `table` can take one more window, after forgetting those that are over (at its front)."""
        while len(table) >= size and table:
            start, _ = next(iter(table.values()))
            if now - start < window:
                return False
            table.popitem(last=False)
        return len(table) < size


anonymous_windows = AnonymousWindows()


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


# Leases: a plain query draws one `requests` token, a statement per request. A user who sends queries to one
# process in quick succession gets tokens taken ahead in the same statement (at most `rate_limit_lease_max`, at
# most 1/LEASE_SHARE of what the bucket holds after the draw, so a bucket near empty is drawn token by token as
# before), which their next queries in this process spend without a round trip for up to LEASE_SECONDS. The
# budget stays one, shared through PostgreSQL: a token taken ahead is gone from the bucket for every process
# until it is spent or given back; an unspent lease is given back just before the user's next draw in this
# process (repo.give_back, its own statement). A profile change made in this process applies to the next request
# (its tenant's leases expire at once, and a draw in flight across the change keeps no tokens ahead); one made in
# another process applies here within LEASE_SECONDS.
LEASE_SECONDS = 1.0
LEASE_SHARE = 16
LEASES_MAX = 10_000  # users with a lease in one process; beyond it no new lease is taken (memory bound)
_PLAIN_QUERY = {"requests": 1}


@dataclass(slots=True)
class _Lease:
    left: int  # tokens taken ahead and not spent yet
    bucket: asyncpg.Record  # the `requests` bucket as the draw that took them left it
    expires: float  # monotonic time after which the next query draws again (and gives `left` back)

    def budget(self) -> Budget:
        """What the headers say: the bucket as if each query had drawn its own token (refills aside)."""
        row = self.bucket
        tokens = row["tokens_milli"] + self.left * 1000
        return Budget(
            name=row["bucket"],
            limit=row["capacity"],
            remaining=max(tokens // 1000, 0),
            reset_seconds=_seconds_until(
                tokens, row["capacity"] * 1000, row["per_window"], row["window_seconds"]
            ),
        )


_leases: dict[tuple[uuid.UUID, uuid.UUID], _Lease] = {}
# Profile changes seen per tenant in this process: a draw in flight across a change keeps no tokens ahead (they
# were taken under the old budget).
_generations: dict[uuid.UUID, int] = {}
_pruned = [0.0]  # when the full lease table was last scanned for users to forget


def expire_leases(tenant_id: uuid.UUID) -> None:
    """A profile of the tenant changed: its users' next queries in this process draw (and give back) at once."""
    _generations[tenant_id] = _generations.get(tenant_id, 0) + 1
    for (tenant, _), lease in _leases.items():
        if tenant == tenant_id:
            lease.expires = 0.0


async def _spend_query(db: Executor, settings: Settings, principal: Principal) -> Budget:
    """`spend` of one plain query, through the caller's lease in this process when they hold one."""
    key = (principal.tenant_id, principal.user_id)
    now = time.monotonic()
    generation = _generations.get(principal.tenant_id, 0)
    lease = _leases.get(key)
    if lease is not None and lease.left > 0 and now < lease.expires:
        lease.left -= 1
        return lease.budget()
    give_back = 0
    ahead = 0
    if lease is not None:  # a query within LEASE_SECONDS of the last draw (or an expired lease to give back)
        _leases.pop(key, None)
        give_back = lease.left
        if now < lease.expires + LEASE_SECONDS:
            ahead = min(
                settings.rate_limit_lease_max - 1, lease.bucket["tokens_milli"] // 1000 // LEASE_SHARE
            )
            ahead = max(ahead, 0)
    if give_back:
        await repo.give_back(db, principal.tenant_id, principal.user_id, "requests", give_back)
    rows = await _consume(db, settings, principal, {"requests": 1 + ahead})
    if ahead and not rows[0]["allowed"]:  # others drew meanwhile: this query alone, as without leases
        ahead = 0
        rows = await _consume(db, settings, principal, _PLAIN_QUERY)
    row = rows[0]
    if not row["allowed"]:
        _refused(row)
    if len(_leases) >= LEASES_MAX and now - _pruned[0] >= LEASE_SECONDS:  # a scan a second at most when full
        _pruned[0] = now
        _prune(now)
    changed = _generations.get(principal.tenant_id, 0) != generation  # a profile changed during the draw
    if len(_leases) < LEASES_MAX and not changed:
        current = _leases.get(key)  # a concurrent query of the same user took its own lease meanwhile
        stale = 0
        if current is not None and current.expires > now:
            ahead += current.left
        elif current is not None:  # expired (a profile change): its tokens go back
            stale = current.left
        _leases[key] = _Lease(ahead, row, now + LEASE_SECONDS)  # before any await: no other query replaces it
        if stale:
            await repo.give_back(db, principal.tenant_id, principal.user_id, "requests", stale)
    elif ahead:  # no room to keep it, or taken under a budget changed since: give it back now
        await repo.give_back(db, principal.tenant_id, principal.user_id, "requests", ahead)
        ahead = 0
    return _Lease(ahead, row, 0.0).budget()


def _prune(now: float) -> None:
    """Forgets the users whose last draw is past and who hold no token ahead (nothing to give back)."""
    for key in [
        key for key, lease in _leases.items() if not lease.left and lease.expires + LEASE_SECONDS < now
    ]:
        del _leases[key]


async def _consume(
    db: Executor, settings: Settings, principal: Principal, costs: dict[str, int]
) -> list[asyncpg.Record]:
    return await repo.consume(
        db,
        principal.tenant_id,
        principal.user_id,
        costs,
        built_in(settings),
        ceilings(settings),
        settings.rate_limit_window_seconds,
    )


def _refused(row: asyncpg.Record) -> NoReturn:
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


async def spend(db: Executor, settings: Settings, principal: Principal, costs: dict[str, int]) -> Budget:
    """Draws `costs` from the caller's budgets; returns the budget to report, or raises RATE_LIMITED."""
    if costs == _PLAIN_QUERY and settings.rate_limit_lease_max > 1:
        return await _spend_query(db, settings, principal)
    costs = {name: cost for name, cost in costs.items() if cost > 0}
    rows = await _consume(db, settings, principal, costs)
    refused = [r for r in rows if not r["allowed"]]
    if not refused:
        lease = _leases.get((principal.tenant_id, principal.user_id))
        budgets = [
            _Lease(lease.left, r, 0.0).budget()
            if lease is not None and r["bucket"] == "requests"
            else _budget(r)
            for r in rows
        ]  # the tokens this process holds ahead for the caller are still theirs to spend
        return min(budgets, key=lambda b: (b.remaining, b.name != "requests"))
    _refused(refused[0])


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
            row = await repo.insert_profile(tx, principal.tenant_id, values)
        except asyncpg.UniqueViolationError as exc:
            raise conflict(f"A rate-limit profile named {values.get('name')!r} exists") from exc
    expire_leases(principal.tenant_id)
    return row


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
    expire_leases(principal.tenant_id)
    return row


async def delete_profile(db: Database, principal: Principal, profile_id: uuid.UUID) -> bool:
    """Users assigned to it fall back to the tenant default."""
    _require_admin(principal)
    if not await repo.delete_profile(db, principal.tenant_id, profile_id):
        raise not_found("RateLimitProfile")
    expire_leases(principal.tenant_id)
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
        effective = await repo.effective_profile(tx, principal.tenant_id, user_id)
    expire_leases(principal.tenant_id)
    return effective


async def effective_profile(db: Executor, principal: Principal, user_id: uuid.UUID) -> asyncpg.Record | None:
    if user_id != principal.user_id:
        _require_admin(principal)
        if await users.user_by_id(db, principal.tenant_id, user_id) is None:
            raise not_found("User")
    return await repo.effective_profile(db, principal.tenant_id, user_id)
