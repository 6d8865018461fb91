"""Background work gives way. Every statement of the enrichment worker runs in a transaction with a short lock
timeout, so a writer, a migration or a TRUNCATE holding a lock the worker needs is never held up by it, and no
deadlock with them can form (the worker's statement fails first, long before PostgreSQL's deadlock check); the
job is then tried again shortly."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from threadline.db import Database
from threadline.db.database import Transaction

LOCK_TIMEOUT = "100ms"
# What a statement that gave way raises.
YIELDED = (asyncpg.exceptions.LockNotAvailableError, asyncpg.exceptions.DeadlockDetectedError)


class Yielding:
    """The Executor of the enrichment worker: each statement alone, or several in `transaction()`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        async with self.db.transaction() as tx:
            await tx.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
            yield tx

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        async with self.transaction() as tx:
            return await tx.fetch(sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        async with self.transaction() as tx:
            return await tx.fetchrow(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        async with self.transaction() as tx:
            return await tx.fetchval(sql, *args)

    async def execute(self, sql: str, *args: Any) -> str:
        async with self.transaction() as tx:
            return await tx.execute(sql, *args)

    async def executemany(self, sql: str, args: Sequence[Sequence[Any]]) -> None:
        async with self.transaction() as tx:
            await tx.executemany(sql, args)
