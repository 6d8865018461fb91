"""The asyncpg pool and the one transaction helper. All SQL of the repositories goes through here.

Repositories take an `Executor` (the pool or an open transaction) as their first argument, so the
same query runs inside a service's transaction or on its own. Every statement is counted, which is
how tests prove that tree reads cost a constant number of queries.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any, Protocol

import asyncpg
import orjson

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


class Transaction:
    """An open transaction on one connection. Statements run one at a time (asyncpg forbids overlap)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self._after_commit: list[Any] = []

    def after_commit(self, callback: Any) -> None:
        """Run `callback()` once the transaction has committed (never if it rolls back)."""
        self._after_commit.append(callback)

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        _count()
        return await self.conn.fetch(sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        _count()
        return await self.conn.fetchrow(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        _count()
        return await self.conn.fetchval(sql, *args)

    async def execute(self, sql: str, *args: Any) -> str:
        _count()
        return await self.conn.execute(sql, *args)

    async def executemany(self, sql: str, args: Sequence[Sequence[Any]]) -> None:
        _count()
        await self.conn.executemany(sql, args)


class Database:
    """Owns the pool. Created and closed by the app's lifespan (or a CLI command)."""

    def __init__(self, pool: asyncpg.Pool, dsn: str) -> None:
        self.pool = pool
        self.dsn = dsn

    @classmethod
    async def connect(cls, dsn: str, min_size: int = 2, max_size: int = 20) -> Database:
        pool = await asyncpg.create_pool(
            dsn, min_size=min_size, max_size=max_size, init=_init_connection, command_timeout=60
        )
        assert pool is not None
        return cls(pool, dsn)

    async def close(self) -> None:
        await self.pool.close()

    @asynccontextmanager
    async def transaction(self, *, isolation: str = "read_committed") -> AsyncIterator[Transaction]:
        """The one transaction helper: commit on success, roll back on any exception."""
        async with self.pool.acquire() as conn:
            tx = Transaction(conn)
            async with conn.transaction(isolation=isolation):
                yield tx
        for callback in tx._after_commit:
            callback()

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        _count()
        return await self.pool.fetch(sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        _count()
        return await self.pool.fetchrow(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        _count()
        return await self.pool.fetchval(sql, *args)

    async def execute(self, sql: str, *args: Any) -> str:
        _count()
        return await self.pool.execute(sql, *args)

    async def executemany(self, sql: str, args: Sequence[Sequence[Any]]) -> None:
        _count()
        await self.pool.executemany(sql, args)
