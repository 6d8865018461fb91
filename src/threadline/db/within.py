"""A Database whose statements and transactions all run inside one transaction that is already open.

Used to make a service's write and a record about it (an idempotency key) commit or roll back together,
without teaching every service a second way to take a transaction: the service calls `db.transaction()`
as always and gets the open one. Not a savepoint by default: an error inside aborts the whole outer transaction,
which is what the outer caller wants. With `savepoints`, each `transaction()` is a savepoint of the open one (for a
caller that rolls back a failed part and goes on, and decides at the end whether the whole commits: an
all-or-nothing import).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from threadline.db.database import Database, Transaction


class WithinTransaction(Database):
    def __init__(self, db: Database, tx: Transaction, *, savepoints: bool = False) -> None:
        super().__init__(db.pool, db.dsn)
        self.tx = tx
        self.savepoints = savepoints

    async def close(self) -> None:
        """The pool belongs to the Database this one wraps."""

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        yield self.tx.conn

    @asynccontextmanager
    async def transaction(self, *, isolation: str = "read_committed") -> AsyncIterator[Transaction]:
        if isolation != "read_committed":
            # The open transaction's isolation cannot change; a caller that needs another must not be wrapped.
            raise RuntimeError(f"cannot run a {isolation} transaction inside an open read committed one")
        if not self.savepoints:
            yield self.tx
            return
        async with self.tx.conn.transaction():  # asyncpg: a transaction inside one is a SAVEPOINT
            yield self.tx

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        return await self.tx.fetch(sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        return await self.tx.fetchrow(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self.tx.fetchval(sql, *args)

    async def execute(self, sql: str, *args: Any) -> str:
        return await self.tx.execute(sql, *args)

    async def executemany(self, sql: str, args: Sequence[Sequence[Any]]) -> None:
        await self.tx.executemany(sql, args)
