"""The asyncpg pool and the one transaction helper. All SQL of the repositories goes through here.

Repositories take an `Executor` (the pool or an open transaction) as their first argument, so the
same query runs inside a service's transaction or on its own. Every statement is counted, which is
how tests prove that tree reads cost a constant number of queries.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any, Protocol, runtime_checkable
from urllib.parse import parse_qs, urlsplit

import asyncpg
import orjson

from threadline.db import content, repository

# `application_name` of each kind of connection, so pg_stat_activity shows who holds what.
POOL = "threadline-pool"  # a server process's pool (requests, the hub's log reads, in-process run workers)
HUB = "threadline-hub"  # a server process's LISTEN connection for live events
WORKER = "threadline-worker"  # `threadline worker`'s pool, and every run worker's LISTEN connection
IMPORT = "threadline-import"  # `threadline import`
EXPORT = "threadline-export"  # `threadline export`
MIGRATE = "threadline-migrate"  # migrations and their advisory lock
CLI = "threadline-cli"  # other one-off commands (tenant-create)

# SQLSTATEs that mean the server cannot serve anyone right now, as opposed to a statement that failed:
# admin_shutdown, crash_shutdown, cannot_connect_now (starting or stopping), too_many_connections.
_UNAVAILABLE_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "53300"})
# asyncpg's InterfaceError texts for a connection lost under a statement, or a pool shut down mid-request.
_CLOSED = ("connection is closed", "pool is closing", "pool is closed")

_statements = 0
# The statements of one request: set by the GraphQL view, inherited by the tasks the request starts.
_request_statements: ContextVar[list[int] | None] = ContextVar("threadline_request_statements", default=None)


def sql_statement_count() -> int:
    """How many SQL statements this process has sent so far (all requests and background work)."""
    return _statements


def count_request_statements() -> list[int]:
    """Start counting the current request's statements; the returned cell holds the count."""
    cell = [0]
    _request_statements.set(cell)
    return cell


def _count() -> None:
    global _statements
    _statements += 1
    cell = _request_statements.get()
    if cell is not None:
        cell[0] += 1


class DatabaseUnreachable(ConnectionError):
    """No connection to PostgreSQL could be opened (it is down, restarting, or its socket is gone)."""


def database_unavailable(exc: BaseException) -> bool:
    """Whether `exc` (or what caused it) says the database cannot be reached right now: an outage or a
    restart, which clients should retry, rather than a failed statement."""
    seen: BaseException | None = exc
    for _ in range(5):  # the cause chain of a wrapped error; bounded in case of cycles
        if seen is None:
            return False
        if isinstance(seen, DatabaseUnreachable | asyncpg.PostgresConnectionError):
            return True
        if getattr(seen, "sqlstate", None) in _UNAVAILABLE_SQLSTATES:
            return True
        if isinstance(seen, asyncpg.InterfaceError) and any(text in str(seen) for text in _CLOSED):
            return True
        seen = seen.__cause__
    return False


POOLERS = ("none", "pgbouncer")


def database_pooler_from_env() -> str:
    """THREADLINE_DATABASE_POOLER (settings.py documents it), for connections opened without the settings."""
    value = os.environ.get("THREADLINE_DATABASE_POOLER", "").strip().lower() or "none"
    if value not in POOLERS:
        raise ValueError(f"THREADLINE_DATABASE_POOLER must be one of {', '.join(POOLERS)}; got {value!r}")
    return value


def connect_settings(application_name: str, dsn: str) -> dict[str, str]:
    """asyncpg's `server_settings` for a connection of this kind (the constants above) to `dsn`. An
    `application_name` the DSN sets itself wins: the operator chose it."""
    if "application_name" in parse_qs(urlsplit(dsn).query):
        return {}
    return {"application_name": application_name}


class Executor(Protocol):
    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]: ...
    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None: ...
    async def fetchval(self, sql: str, *args: Any) -> Any: ...
    async def execute(self, sql: str, *args: Any) -> str: ...
    async def executemany(self, sql: str, args: Sequence[Sequence[Any]]) -> None: ...


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda v: orjson.dumps(v).decode(),
        decoder=orjson.loads,
        schema="pg_catalog",
    )
    await conn.set_type_codec(
        "json",
        encoder=lambda v: orjson.dumps(v).decode(),
        decoder=orjson.loads,
        schema="pg_catalog",
    )
    await content.install_codecs(conn)  # encryption at rest: sealed text and JSON open as they are read
    # asyncpg knows no array type until it asks the catalog (its recursive type query, 3-6 ms of server time), once
    # per type and connection, on the first statement that binds or returns one: an import's four connections
    # asked 27 times (uuid[], varchar[], int4[], ...). The array types this code uses, learnt in one query.
    await conn.fetchrow(repository.ARRAY_TYPES)


async def _keep_session(conn: asyncpg.Connection) -> None:
    """The pool's reset on release: nothing beyond asyncpg's own (an open transaction is rolled back, listener
    callbacks are dropped). asyncpg's default sends `SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *;
    RESET ALL` after every statement: a round trip per pooled statement, for session state this process never
    leaves on a pooled connection. Pooled statements use transaction-scoped locks and settings only
    (`pg_advisory_xact_lock`, `SET LOCAL`, `set_config(..., true)`), no cursors, no LISTEN (the hub and the
    workers listen on connections of their own); tests/test_pool_reset.py checks the source keeps it so."""


@runtime_checkable
class WakeChannel(Protocol):
    """Where hubs hear that events committed, when it is not PostgreSQL's NOTIFY (streaming.redis_channel's
    RedisWake for THREADLINE_BROADCAST_URL=redis://...). `wake()` must not block: it is called right after a
    commit, and coalescing wake-ups is the channel's business."""

    def wake(self) -> None: ...


class _WakeAfterCommit:
    """A transaction's view of the process's wake channel: events.publish calls `wake()` after logging an event,
    and Database.transaction passes it on once, after the commit (never for a rollback)."""

    def __init__(self, channel: WakeChannel) -> None:
        self.channel = channel
        self.pending = False

    def wake(self) -> None:
        self.pending = True


def pooler_options(pooler: str) -> dict[str, Any]:
    """asyncpg's options for the pooler between us and PostgreSQL ("none" or "pgbouncer"). PgBouncer in transaction
    mode hands each transaction (and each statement outside one) to any server connection, so nothing may outlive
    one: no cache of named prepared statements (asyncpg then uses the unnamed one, parsed and run in one go)."""
    if pooler == "pgbouncer":
        return {"statement_cache_size": 0, "max_cached_statement_lifetime": 0}
    return {}


class Transaction:
    """An open transaction on one connection. Statements run one at a time (asyncpg forbids overlap).
    `wake` is set when the process announces events through a WakeChannel instead of NOTIFY."""

    def __init__(self, conn: asyncpg.Connection, wake: WakeChannel | None = None) -> None:
        self.conn = conn
        self.wake = _WakeAfterCommit(wake) if wake is not None else None

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        _count()
        before = content.misses()
        rows: list[asyncpg.Record] = await self.conn.fetch(sql, *args)
        return await content.repaired(rows, before)  # type: ignore[no-any-return]

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        _count()
        before = content.misses()
        return await content.repaired(await self.conn.fetchrow(sql, *args), before)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        _count()
        before = content.misses()
        return await content.repaired(await self.conn.fetchval(sql, *args), before)

    async def execute(self, sql: str, *args: Any) -> str:
        _count()
        status: str = await self.conn.execute(sql, *args)
        return status

    async def executemany(self, sql: str, args: Sequence[Sequence[Any]]) -> None:
        _count()
        await self.conn.executemany(sql, args)


class Database:
    """Owns the pool. Created and closed by the app's lifespan (or a CLI command)."""

    def __init__(self, pool: asyncpg.Pool, dsn: str, *, session_settings: str = "") -> None:
        self.pool = pool
        self.dsn = dsn
        # Through a transaction-mode pooler, the timeouts are not startup parameters but `SET LOCAL`s at the start
        # of every transaction (sent with its BEGIN's round trip).
        self._session_settings = session_settings
        # Set by the lifespan when hubs listen on Redis: then events are announced by `wake.wake()` (after the
        # statement here, after the commit in a transaction) instead of NOTIFY. None: NOTIFY.
        self.wake: WakeChannel | None = None

    @classmethod
    async def connect(
        cls,
        dsn: str,
        min_size: int = 2,
        max_size: int = 20,
        *,
        application_name: str = POOL,
        statement_timeout_seconds: float | None = None,
        idle_in_transaction_timeout_seconds: float | None = None,
        pooler: str | None = None,
    ) -> Database:
        """`pooler`: "pgbouncer" when `dsn` goes through PgBouncer in transaction mode; None takes
        THREADLINE_DATABASE_POOLER, so every command of a process configured for a pooler follows it."""
        if pooler is None:
            pooler = database_pooler_from_env()
        server_settings = connect_settings(application_name, dsn)
        hooks = content.installed()
        if hooks is not None:
            hooks.connected(dsn)
        # Bounds enforced by PostgreSQL itself (0 or None: none): a writer stuck in its transaction is ended
        # instead of holding back live delivery of its conversations (and its locks) indefinitely.
        bounds: dict[str, str] = {}
        if statement_timeout_seconds:
            bounds["statement_timeout"] = str(int(statement_timeout_seconds * 1000))
        if idle_in_transaction_timeout_seconds:
            bounds["idle_in_transaction_session_timeout"] = str(
                int(idle_in_transaction_timeout_seconds * 1000)
            )
        session_settings = ""
        if pooler == "pgbouncer":
            # PgBouncer refuses startup parameters it does not know, and a session setting would stay on whichever
            # server connection ran it: each transaction sets its own bounds instead.
            session_settings = "".join(f"SET LOCAL {name} = {value};" for name, value in bounds.items())
        else:
            server_settings.update(bounds)
        pool = await asyncpg.create_pool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            init=_init_connection,
            reset=_keep_session,
            command_timeout=60,
            server_settings=server_settings,
            **pooler_options(pooler),
        )
        assert pool is not None
        return cls(pool, dsn, session_settings=session_settings)

    async def close(self) -> None:
        await self.pool.close()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection. Failing to open one (the server is down or restarting) raises
        DatabaseUnreachable, so the API can tell an outage from a bug."""
        try:
            conn = await self.pool.acquire()
        except (OSError, TimeoutError) as exc:
            raise DatabaseUnreachable(f"cannot connect to the database: {exc}") from exc
        try:
            yield conn
        finally:
            await self.pool.release(conn)

    @asynccontextmanager
    async def transaction(self, *, isolation: str = "read_committed") -> AsyncIterator[Transaction]:
        """The one transaction helper: commit on success, roll back on any exception."""
        async with self.connection() as conn:
            tx = Transaction(conn, self.wake)
            async with conn.transaction(isolation=isolation):
                if self._session_settings:
                    await conn.execute(self._session_settings)
                yield tx
            if tx.wake is not None and tx.wake.pending:
                tx.wake.channel.wake()

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        _count()
        before = content.misses()
        async with self.connection() as conn:
            rows: list[asyncpg.Record] = await conn.fetch(sql, *args)
        return await content.repaired(rows, before)  # type: ignore[no-any-return]

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        _count()
        before = content.misses()
        async with self.connection() as conn:
            row = await conn.fetchrow(sql, *args)
        return await content.repaired(row, before)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        _count()
        before = content.misses()
        async with self.connection() as conn:
            value = await conn.fetchval(sql, *args)
        return await content.repaired(value, before)

    async def execute(self, sql: str, *args: Any) -> str:
        _count()
        async with self.connection() as conn:
            status: str = await conn.execute(sql, *args)
            return status

    async def executemany(self, sql: str, args: Sequence[Sequence[Any]]) -> None:
        _count()
        async with self.connection() as conn:
            await conn.executemany(sql, args)
