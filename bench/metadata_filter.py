"""conversations(metadata:) over 100,000 conversations: the plan (the GIN index on metadata) and its time.

    .venv/bin/python bench/metadata_filter.py [--conversations 100000]

Seeds `--conversations` conversations of one owner (bench/fixtures.seed_conversations), gives nine in ten of
them metadata ({"project": "p<i % 1000>", "team": "t<i % 7>"}: 1 in 1,000 match a project), then runs the
statement `conversations(metadata: {key: "project", value: "p42"})` sends, as the tenant's admin and as a
member who owns them (the visibility filter differs), under EXPLAIN ANALYZE, and times the whole field through
the repository function (median of 20) against an unfiltered first page.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

import asyncpg

from fixtures import Database, create_tenant, seed_conversations
from threadline.auth.principal import Principal, Role
from threadline.conversations import repository as repo
from threadline.db import Database as Pool
from threadline.metadata import service as metadata_service


class Explaining:
    """An executor that answers `fetch` with the plan of the statement it was given."""

    def __init__(self, conn: Pool) -> None:
        self.conn = conn
        self.plan: list[str] = []

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        rows = await self.conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + sql, *args)
        self.plan = [r[0] for r in rows]
        return []


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--conversations", type=int, default=100_000)
    args = parser.parse_args()
    database = Database()
    dsn = database.start()
    try:
        caller = create_tenant(dsn)
        seed_conversations(dsn, caller.tenant_id, caller.user_id, args.conversations)
        asyncio.run(measure(dsn, caller.tenant_id, caller.user_id))
    finally:
        database.stop()


async def measure(dsn: str, tenant_id: Any, user_id: Any) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            """UPDATE conversation c SET metadata = jsonb_build_object('project', 'p' || (n % 1000), 'team', 't' || (n % 7))
               FROM (SELECT id, row_number() OVER (ORDER BY id) AS n FROM conversation) k
               WHERE k.id = c.id AND k.n % 10 <> 0"""
        )
        await conn.execute("VACUUM ANALYZE conversation")
        total = await conn.fetchval("SELECT count(*) FROM conversation")
        matching = await conn.fetchval(
            """SELECT count(*) FROM conversation WHERE metadata @> '{"project": "p42"}'"""
        )
        print(f"{total} conversations, {matching} with project p42")
        pool = await Pool.connect(dsn, 1, 1)
        cases = (
            ("project p42 (100 match)", {"project": "p42"}),
            ("a value none has", {"project": "none"}),
            ("team t3 (~12,900 match)", {"team": "t3"}),
            ("no filter", None),
        )
        try:
            for role in (Role.ADMIN, Role.MEMBER):
                principal = Principal(tenant_id, user_id, role, None)
                for label, pairs in cases:
                    metadata = await metadata_service.conversation_filter(pool, principal, pairs)
                    explaining = Explaining(pool)
                    await repo.list_conversations(
                        explaining,  # type: ignore[arg-type]
                        principal,
                        status="ACTIVE",
                        tags=None,
                        limit=21,
                        after=None,
                        metadata=metadata,
                    )
                    print(f"--- plan of the first page as {role.value}, {label}")
                    print("\n".join(line for line in explaining.plan if "Buffers" not in line))
                for label, pairs in cases:
                    metadata = await metadata_service.conversation_filter(pool, principal, pairs)
                    pages, counts = [], []
                    for _ in range(20):
                        start = time.perf_counter()
                        metadata = await metadata_service.conversation_filter(pool, principal, pairs)
                        await repo.list_conversations(
                            pool,
                            principal,
                            status="ACTIVE",
                            tags=None,
                            limit=21,
                            after=None,
                            metadata=metadata,
                        )
                        pages.append(time.perf_counter() - start)
                        start = time.perf_counter()
                        await repo.count_conversations(
                            pool, principal, status="ACTIVE", tags=None, metadata=metadata
                        )
                        counts.append(time.perf_counter() - start)
                    print(
                        f"{role.value}, {label}: first page (21 rows) median "
                        f"{statistics.median(pages) * 1000:.2f} ms, totalCount median "
                        f"{statistics.median(counts) * 1000:.2f} ms"
                    )
        finally:
            await pool.close()
    finally:
        await conn.close()


if __name__ == "__main__":
    main()
