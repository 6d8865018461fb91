"""An optional read replica for search (THREADLINE_READ_DATABASE_URL), under one staleness rule: a read goes to
the replica only once it has replayed everything the primary had committed when the read began, so a search
sees every write committed before it, in any process (read-your-writes across a load balancer), and never an
older state than the primary would show. The replica gets `read_replica_max_wait_seconds` to catch up; a replica
further behind, or unreachable, is skipped and the read goes to the primary. The price: one trivial statement on
each side per read (the primary's WAL position, the replica's replay position).
"""

from __future__ import annotations

import asyncio
import logging

from threadline.db import replica_repository as repo
from threadline.db.database import Database, database_unavailable

log = logging.getLogger(__name__)

POLL_SECONDS = 0.005


class ReadReplica:
    def __init__(self, primary: Database, replica: Database, max_wait_seconds: float) -> None:
        self.primary = primary
        self.replica = replica
        self.max_wait_seconds = max_wait_seconds
        self.replica_reads = 0  # reads sent to the replica, and to the primary instead (tests, metrics)
        self.primary_reads = 0

    async def database(self) -> Database:
        """The database a read-only request should use now (the replica when it is fresh enough)."""
        try:
            position = await repo.primary_position(self.primary)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.max_wait_seconds
            while not await repo.replayed_through(self.replica, position):
                if loop.time() >= deadline:
                    self.primary_reads += 1
                    return self.primary
                await asyncio.sleep(POLL_SECONDS)
        except Exception as exc:
            if not database_unavailable(exc):
                raise
            log.warning("read replica unavailable (%s); reading from the primary", exc)
            self.primary_reads += 1
            return self.primary
        self.replica_reads += 1
        return self.replica

    async def close(self) -> None:
        await self.replica.close()
