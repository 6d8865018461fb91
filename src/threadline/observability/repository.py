"""The SQL of the operator's probes (readiness). No tenant: they ask about the database itself."""

from __future__ import annotations

from threadline.db import Executor


async def ping(db: Executor) -> None:
    """One round trip to the database; raises whatever the driver raises if it cannot answer."""
    await db.fetchval("SELECT 1")
