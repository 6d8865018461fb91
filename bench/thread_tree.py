"""threadTree end to end over HTTP against a real server, stock vs fast executor, vs a raw baseline.

    .venv/bin/python bench/thread_tree.py [--quick]

Random trees of 1,000 and 10,000 nodes (~200-byte contents); the query asks for
id parentId depth path role content createdAt on every node. The raw baseline fetches the same
rows with plain asyncpg and serialises the same response body with orjson, in this process.
Also: nested `replies` five levels deep over a 2,000-node tree (SQL statements per request and
latency).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid

import asyncpg
import httpx
import orjson

from fixtures import Caller, Database, Server, create_tenant, median_ms, seed_tree, start_conversation
from threadline.ids import Kind, decode_id, encode_id
from threadline.threads.paths import subtree_upper_bound

TREE_QUERY = """query($r: ID!) { threadTree(rootId: $r) {
  totalCount nodes { id parentId depth path role content createdAt } } }"""

NESTED_QUERY = """query($r: ID!) { threadTree(rootId: $r, maxDepth: 0) { root {
  id content replies { id content replies { id content replies { id content replies {
  id content replies { id content } } } } } } } }"""


def raw_tree_body(rows: list[asyncpg.Record]) -> bytes:
    """The response body threadTree gives, built straight from the rows."""
    nodes = []
    stack: list[str] = []
    for row in rows:
        node_id = encode_id(Kind.MESSAGE, row["id"])
        del stack[row["depth"] :]
        stack.append(node_id)
        parent = row["parent_id"]
        nodes.append(
            {
                "id": node_id,
                "parentId": encode_id(Kind.MESSAGE, parent) if parent else None,
                "depth": row["depth"],
                "path": list(stack),
                "role": row["role"],
                "content": row["content"],
                "createdAt": row["created_at"],
            }
        )
    return orjson.dumps({"data": {"threadTree": {"totalCount": len(nodes), "nodes": nodes}}})


class RawTree:
    """The raw baseline: one asyncpg connection fetching the rows, orjson serialising the same body."""

    def __init__(self, dsn: str, tenant_id: uuid.UUID, root_id: uuid.UUID) -> None:
        self.loop = asyncio.new_event_loop()
        self.conn = self.loop.run_until_complete(asyncpg.connect(dsn))
        self.args = (tenant_id, root_id, b"", subtree_upper_bound(b""))

    async def _body(self) -> bytes:
        rows = await self.conn.fetch(
            """SELECT id, parent_id, depth, role, content, created_at FROM message
               WHERE root_id = $2 AND path >= $3 AND path < $4 AND tenant_id = $1 ORDER BY path""",
            *self.args,
        )
        return raw_tree_body(rows)

    def sample(self) -> tuple[float, bytes]:
        start = time.perf_counter()
        body = self.loop.run_until_complete(self._body())
        return time.perf_counter() - start, body

    def close(self) -> None:
        self.loop.run_until_complete(self.conn.close())
        self.loop.close()


def http_sample(client: httpx.Client, query: str, root: str) -> tuple[float, bytes]:
    start = time.perf_counter()
    response = client.post("/graphql", json={"query": query, "variables": {"r": root}})
    body = response.content
    elapsed = time.perf_counter() - start
    if response.status_code != 200:
        raise RuntimeError(response.text[:500])
    return elapsed, body


def http_samples(
    server: Server, caller: Caller, query: str, root: str, runs: int, warmup: int = 2
) -> tuple[list[float], bytes]:
    """Latencies of `runs` requests after `warmup` unmeasured ones, and the last response body."""
    samples = []
    body = b""
    with httpx.Client(base_url=server.url, headers=caller.headers, timeout=120) as client:
        for i in range(runs + warmup):
            elapsed, body = http_sample(client, query, root)
            if i >= warmup:
                samples.append(elapsed)
    return samples, body


def same_json(a: bytes, b: bytes) -> bool:
    return bool(orjson.loads(a) == orjson.loads(b))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer runs (a smoke test of the bench)")
    args = parser.parse_args()
    runs = {1_000: 10 if args.quick else 40, 10_000: 3 if args.quick else 12}

    database = Database()
    dsn = database.start()
    servers = {"stock": Server(dsn, executor="stock"), "fast": Server(dsn, executor="fast")}
    try:
        caller = create_tenant(dsn)
        roots: dict[int, str] = {}
        with httpx.Client(base_url=servers["fast"].url, headers=caller.headers, timeout=60) as client:
            for size in (*runs, 2_000):
                _, root = start_conversation(client)
                seed_tree(dsn, caller, root, size)
                roots[size] = root

        print("threadTree, end to end over HTTP (median ms; ratio = HTTP / raw asyncpg+orjson baseline)")
        print(
            f"{'nodes':>7} {'raw':>8} {'stock':>8} {'ratio':>6} {'fast':>8} {'ratio':>6} {'speed-up':>8} {'MB':>5}"
        )
        for size, n in runs.items():
            # Rounds interleave raw, stock and fast, so all three see the same machine conditions.
            raw = RawTree(dsn, caller.tenant_id, decode_id(roots[size], Kind.MESSAGE))
            clients = {
                name: httpx.Client(base_url=server.url, headers=caller.headers, timeout=120)
                for name, server in servers.items()
            }
            samples: dict[str, list[float]] = {"raw": [], **{name: [] for name in servers}}
            bodies: dict[str, bytes] = {}
            try:
                for i in range(n + 2):
                    elapsed, bodies["raw"] = raw.sample()
                    if i >= 2:
                        samples["raw"].append(elapsed)
                    for name, client in clients.items():
                        elapsed, bodies[name] = http_sample(client, TREE_QUERY, roots[size])
                        if i >= 2:
                            samples[name].append(elapsed)
            finally:
                raw.close()
                for client in clients.values():
                    client.close()
            raw_body = bodies["raw"]
            results = {name: median_ms(values) for name, values in samples.items()}
            if bodies["stock"] != bodies["fast"]:
                raise SystemExit("stock and fast executors returned different bytes")
            if not same_json(bodies["fast"], raw_body):
                raise SystemExit("the raw baseline does not produce the same response")
            base = results["raw"]
            print(
                f"{size:>7} {base:>8.1f} {results['stock']:>8.1f} {results['stock'] / base:>6.2f}"
                f" {results['fast']:>8.1f} {results['fast'] / base:>6.2f}"
                f" {results['stock'] / results['fast']:>7.2f}x {len(bodies['fast']) / 1e6:>5.1f}"
            )

        print()
        print("nested replies five levels deep over a 2,000-node tree")
        for name, server in servers.items():
            statements = []
            for _ in range(5):
                before = server.sql_statements()
                http_samples(server, caller, NESTED_QUERY, roots[2_000], runs=0, warmup=1)
                statements.append(server.sql_statements() - before)
            latencies, body = http_samples(
                server, caller, NESTED_QUERY, roots[2_000], 3 if args.quick else 20
            )
            reached = body.count(b'"id"')
            print(
                f"  {name:>5}: {statistics.mode(statements)} SQL statements per request {statements},"
                f" median {median_ms(latencies):.1f} ms, {reached} messages in the response"
            )
    finally:
        for server in servers.values():
            server.stop()
        database.stop()


if __name__ == "__main__":
    main()
