"""Branch reads end to end over HTTP against a real server, vs a raw baseline (issue 16).

    .venv/bin/python bench/branches.py [--quick]

- `Message.siblings(first: 20)` with siblingIndex/siblingCount, asked of the middle reply of a question that has
  10,000 replies (regenerated answers): the page must not cost more as the parent grows. The raw baseline
  reads the page's 21 rows with plain asyncpg by (root_id, path), as the server does, in this process.
- `Thread.currentPath` over a 1,000-message chain (root -> leaf): the raw baseline reads the chain's rows by
  (root_id, path) in one statement.
Reported: median ms over HTTP, the baseline's, their ratio, and SQL statements per request.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from datetime import timedelta

import asyncpg
import httpx

from fixtures import Caller, Database, Server, create_tenant, graphql, median_ms, start_conversation
from threadline.ids import Kind, decode_id
from threadline.threads.paths import encode_rank

SIBLINGS = """query($m: ID!) { message(id: $m) { siblingIndex siblingCount
  siblings(first: 20) { edges { cursor node { id content siblingIndex } } pageInfo { hasNextPage } } } }"""
CURRENT_PATH = "query($r: ID!) { thread(rootId: $r) { currentPath { id content } } }"


def seed(dsn: str, caller: Caller, root_public_id: str, count: int, *, chain: bool) -> list[uuid.UUID]:
    """`count` replies under the root: all siblings (a star), or each under the previous one (a chain)."""
    root_id = decode_id(root_public_id, Kind.MESSAGE)

    async def work() -> list[uuid.UUID]:
        conn = await asyncpg.connect(dsn)
        try:
            root = await conn.fetchrow(
                "SELECT conversation_id, created_at FROM message WHERE id = $1", root_id
            )
            assert root is not None
            ids, records, parent, path = [], [], root_id, b""
            for i in range(count):
                message_id = uuid.uuid4()
                own = path + encode_rank(0) if chain else encode_rank(i)
                records.append(
                    (message_id, caller.tenant_id, root["conversation_id"], root_id, parent,
                     i + 1 if chain else 1, own, "ASSISTANT", f"answer {i} " + "x" * 180,
                     root["created_at"] + timedelta(milliseconds=i + 1), 1 if chain and i < count - 1 else 0)
                )  # fmt: skip
                ids.append(message_id)
                if chain:
                    parent, path = message_id, own
            await conn.copy_records_to_table(
                "message",
                records=records,
                columns=["id", "tenant_id", "conversation_id", "root_id", "parent_id", "depth", "path", "role",
                         "content", "created_at", "child_count"],
            )  # fmt: skip
            await conn.execute(
                "UPDATE message SET child_count = $2 WHERE id = $1", root_id, 1 if chain else count
            )
            await conn.execute("UPDATE thread SET reply_count = $2 WHERE id = $1", root_id, count)
            await conn.execute("ANALYZE message")
            return ids
        finally:
            await conn.close()

    return asyncio.run(work())


def timed(client: httpx.Client, query: str, variables: dict[str, str], runs: int) -> list[float]:
    out = []
    for i in range(runs + 2):
        began = time.perf_counter()
        graphql(client, query, variables)
        if i >= 2:
            out.append(time.perf_counter() - began)
    return out


def raw_times(dsn: str, sql: str, args: tuple[object, ...], runs: int) -> list[float]:
    async def work() -> list[float]:
        conn = await asyncpg.connect(dsn)
        try:
            out = []
            for i in range(runs + 2):
                began = time.perf_counter()
                rows = await conn.fetch(sql, *args)
                assert rows
                if i >= 2:
                    out.append(time.perf_counter() - began)
            return out
        finally:
            await conn.close()

    return asyncio.run(work())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer runs (a smoke test of the bench)")
    args = parser.parse_args()
    runs = 10 if args.quick else 50
    database = Database()
    dsn = database.start()
    server = Server(dsn)
    try:
        caller = create_tenant(dsn)
        with httpx.Client(base_url=server.url, headers=caller.headers, timeout=60) as client:
            print(f"{'read':<44} {'raw ms':>7} {'http ms':>8} {'ratio':>6} {'statements':>10}")
            for size in (100, 10_000):
                _, root = start_conversation(client)
                replies = seed(dsn, caller, root, size, chain=False)
                middle = replies[size // 2]
                asked = {"m": f"msg_{middle.hex}"}
                answer = graphql(client, SIBLINGS, asked)["message"]
                assert (answer["siblingIndex"], answer["siblingCount"]) == (size // 2, size)
                before = server.sql_statements()
                http = timed(client, SIBLINGS, asked, runs)
                statements = (server.sql_statements() - before) / (runs + 2)
                raw = raw_times(
                    dsn,
                    "SELECT id, content, path FROM message WHERE root_id = $1 AND path = ANY($2::bytea[]) ORDER BY path",
                    (decode_id(root, Kind.MESSAGE), [encode_rank(r) for r in range(21)]),
                    runs,
                )
                label = f"siblings(first: 20) of 1 of {size:,} replies"
                print(
                    f"{label:<44} {median_ms(raw):>7.2f} {median_ms(http):>8.2f}"
                    f" {median_ms(http) / median_ms(raw):>6.1f} {statements:>10.1f}"
                )
            _, root = start_conversation(client)
            seed(dsn, caller, root, 999, chain=True)
            path = graphql(client, CURRENT_PATH, {"r": root})["thread"]["currentPath"]
            assert len(path) == 1_000
            before = server.sql_statements()
            http = timed(client, CURRENT_PATH, {"r": root}, runs)
            statements = (server.sql_statements() - before) / (runs + 2)
            raw = raw_times(
                dsn,
                "SELECT id, content FROM message WHERE root_id = $1 ORDER BY path",
                (decode_id(root, Kind.MESSAGE),),
                runs,
            )
            label = "currentPath of a 1,000-message chain"
            print(
                f"{label:<44} {median_ms(raw):>7.2f} {median_ms(http):>8.2f}"
                f" {median_ms(http) / median_ms(raw):>6.1f} {statements:>10.1f}"
            )
    finally:
        server.stop()
        database.stop()


if __name__ == "__main__":
    main()
