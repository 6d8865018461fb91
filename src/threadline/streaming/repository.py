"""SQL of the streaming package's own table: the secret stream cursors are keyed by (one row, no tenant)."""

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
