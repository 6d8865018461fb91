"""SQL of the streaming package: its own table (the secret stream cursors are keyed by: one row, no tenant) and
the two statements the LISTEN backend (streaming.listener) runs on its dedicated connection (no table).

The rest of the package's reads go through their domains' repositories: the event log through events.log /
events.repository, participants through conversations.repository, thread roots through threads.repository."""

from __future__ import annotations

import asyncpg

from threadline.db import Executor

CURSOR_KEY_ID = "current"


async def cursor_key(db: Executor) -> asyncpg.Record | None:
    """The stored secret and `numeric_through`, or None if the row is gone."""
    return await db.fetchrow(
        "SELECT secret, numeric_through FROM stream_cursor_key WHERE id = $1", CURSOR_KEY_ID
    )


async def create_cursor_key(db: Executor, secret: str) -> None:
    """Writes a secret if none is stored; a concurrent process's write wins (read the row back after this).
    `numeric_through` 0: where opaque cursors began is unknown now, so only the numeric cursor "0" (replay
    everything) stays accepted."""
    await db.execute(
        """INSERT INTO stream_cursor_key (id, secret, numeric_through) VALUES ($1, $2, 0)
           ON CONFLICT (id) DO NOTHING""",
        CURSOR_KEY_ID,
        secret,
    )


async def notify(conn: asyncpg.Connection, channel: str, message: str) -> None:
    """NOTIFY `message` on `channel` outside any writer's transaction (broadcaster's `publish`; Threadline's
    own events are announced by events.publish inside the writer's transaction)."""
    await conn.execute("SELECT pg_notify($1, $2)", channel, message)


async def ping(conn: asyncpg.Connection) -> None:
    """A round trip on the LISTEN connection: it raises or hangs if the connection is gone."""
    await conn.fetchval("SELECT 1")
