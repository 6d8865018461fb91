"""The two statements of the read replica's staleness rule (db.replica): no table, no tenant."""

from __future__ import annotations

from threadline.db.database import Database


async def primary_position(primary: Database) -> str:
    """Where the primary's WAL ends now: every transaction committed before this call is at or below it."""
    return str(await primary.fetchval("SELECT pg_current_wal_lsn()::text"))


async def replayed_through(replica: Database, position: str) -> bool:
    """Whether the replica has replayed the WAL up to `position` (a server not in recovery is its own primary)."""
    return bool(
        await replica.fetchval(
            "SELECT CASE WHEN pg_is_in_recovery() THEN coalesce(pg_last_wal_replay_lsn() >= $1::text::pg_lsn, false)"
            " ELSE true END",
            position,
        )
    )
