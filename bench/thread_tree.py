"""threadTree end to end over HTTP against a real server, stock vs fast executor, vs a raw baseline.

    .venv/bin/python bench/thread_tree.py [--quick] [--profile FILE] [--no-stock] [--before REF]

Random trees of 1,000 and 10,000 nodes (~200-byte contents); the query asks for
id parentId depth path role content createdAt on every node. The raw baseline fetches the same
rows with plain asyncpg and serialises the same response body with orjson, in this process.
Also: nested `replies` five levels deep over a 2,000-node tree (SQL statements per request and
latency).

--profile FILE: py-spy samples the fast server during an extra round of 10,000-node requests (collapsed stacks
to FILE), then prints the share per phase and the functions with most samples of their own. --no-stock leaves
out the stock executor's server (a shorter run when only the fast path and the raw baseline matter).
--before REF: a server running the app as it was at git commit REF (its src/ from git) joins the interleaved
rounds, on the same PostgreSQL: before/after from one run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid
from collections import Counter
from pathlib import Path

import asyncpg
import httpx
import orjson
from page import extract_source, phases, py_spy

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


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (/proc/<pid>/stat, clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def profile(server: Server, caller: Caller, root: str, output: Path, seconds: int) -> None:
    """py-spy on the server while requests for the tree under `root` run back to back for `seconds`: the
    share per phase (bench/page.py's rules) and the functions with most samples of their own."""
    spy = py_spy(server.process.pid, output, seconds)
    time.sleep(1)
    cpu = cpu_seconds(server.process.pid)
    requests = 0
    with httpx.Client(base_url=server.url, headers=caller.headers, timeout=120) as client:
        deadline = time.monotonic() + seconds - 2
        while time.monotonic() < deadline:
            http_sample(client, TREE_QUERY, root)
            requests += 1
    cpu_ms = (cpu_seconds(server.process.pid) - cpu) / requests * 1000
    spy.wait()
    print(f"\nthreadTree of 10,000 under py-spy: {requests} requests, server CPU {cpu_ms:.1f} ms per request")
    phases(output, cpu_ms)
    own: Counter[str] = Counter()
    total = 0
    for line in output.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        own[stack.rsplit(";", 1)[-1]] += int(n)
        total += int(n)
    print("functions with most samples of their own:")
    for frame, samples in own.most_common(25):
        print(f"  {samples / total * 100:5.1f}%  {frame}")


def same_json(a: bytes, b: bytes) -> bool:
    return bool(orjson.loads(a) == orjson.loads(b))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer runs (a smoke test of the bench)")
    parser.add_argument("--profile", type=Path, help="py-spy collapsed stacks of an extra fast round to FILE")
    parser.add_argument("--no-stock", action="store_true", help="leave out the stock executor's server")
    parser.add_argument("--before", help="also measure the app as it was at this git commit (same run)")
    args = parser.parse_args()
    runs = {1_000: 10 if args.quick else 40, 10_000: 3 if args.quick else 12}

    database = Database()
    dsn = database.start()
    servers = {"fast": Server(dsn, executor="fast")}
    if not args.no_stock:
        servers = {"stock": Server(dsn, executor="stock"), **servers}
    if args.before:
        servers["before"] = Server(dsn, env={"PYTHONPATH": str(extract_source(args.before))})
    try:
        caller = create_tenant(dsn)
        roots: dict[int, str] = {}
        with httpx.Client(base_url=servers["fast"].url, headers=caller.headers, timeout=60) as client:
            for size in (*runs, 2_000):
                _, root = start_conversation(client)
                seed_tree(dsn, caller, root, size)
                roots[size] = root

        print("threadTree, end to end over HTTP (median ms; ratio = HTTP / raw asyncpg+orjson baseline;")
        print("fast CPU: the fast server's user + system CPU per request)")
        print(
            f"{'nodes':>7} {'raw':>8} {'stock':>8} {'ratio':>6} {'fast':>8} {'ratio':>6} {'speed-up':>8} {'MB':>5}"
            f" {'fast CPU':>9}"
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
            cpu_used = dict.fromkeys(servers, 0.0)
            try:
                for i in range(n + 2):
                    elapsed, bodies["raw"] = raw.sample()
                    if i >= 2:
                        samples["raw"].append(elapsed)
                    for name, client in clients.items():
                        cpu = cpu_seconds(servers[name].process.pid)
                        elapsed, bodies[name] = http_sample(client, TREE_QUERY, roots[size])
                        if i >= 2:
                            samples[name].append(elapsed)
                            cpu_used[name] += cpu_seconds(servers[name].process.pid) - cpu
            finally:
                raw.close()
                for client in clients.values():
                    client.close()
            raw_body = bodies["raw"]
            results = {name: median_ms(values) for name, values in samples.items()}
            if any(body != bodies["fast"] for name, body in bodies.items() if name != "raw"):
                raise SystemExit("the servers returned different bytes")
            if not same_json(bodies["fast"], raw_body):
                raise SystemExit("the raw baseline does not produce the same response")
            base = results["raw"]
            stock = results.get("stock", float("nan"))
            print(
                f"{size:>7} {base:>8.1f} {stock:>8.1f} {stock / base:>6.2f}"
                f" {results['fast']:>8.1f} {results['fast'] / base:>6.2f}"
                f" {stock / results['fast']:>7.2f}x {len(bodies['fast']) / 1e6:>5.1f}"
                f" {cpu_used['fast'] / n * 1000:>6.1f} ms"
            )
            if "before" in results:
                print(
                    f"{'':>7} before ({args.before}): {results['before']:.1f} ms, / raw"
                    f" {results['before'] / base:.2f}, server CPU {cpu_used['before'] / n * 1000:.1f} ms per request"
                )

        if args.profile:
            profile(servers["fast"], caller, roots[10_000], args.profile, 10 if args.quick else 30)

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
        print(f"\nload average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        for server in servers.values():
            server.stop()
        database.stop()


if __name__ == "__main__":
    main()
