"""Compiled execution against graphql-core's stock executor: server CPU per request, in the same run.

    .venv/bin/python bench/compiled.py [--quick]

Two servers (bench/server.py, `--executor stock` and `--executor fast`, the compiled one) on one embedded
PostgreSQL answer, in interleaved rounds:

- the page of 50 conversations of a MEMBER in 10,000 (owner { id email }, participants { role user { id } },
  cursors, pageInfo: bench/foundation.py's query);
- threadTree of 10,000 messages (id parentId depth path role content createdAt: bench/thread_tree.py's).

Server CPU is the server process's user + system time (/proc/<pid>/stat) over the measured requests,
divided by their number; latency is the client's. Both servers must send the same bytes. The raw baselines
(asyncpg + orjson in this process, bench/foundation.py and bench/thread_tree.py) give the ratios' floor.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

import asyncpg
import httpx
from foundation import CONVERSATIONS, create_member, raw_page
from thread_tree import TREE_QUERY, RawTree

from fixtures import (
    UNTHROTTLED,
    Caller,
    Database,
    Server,
    create_tenant,
    median_ms,
    percentile_ms,
    seed_conversations,
    seed_tree,
    start_conversation,
)
from threadline.ids import Kind, decode_id

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process has used (children not counted)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime (fields 14 and 15 of proc(5))


class Measured:
    """One server's requests: client latencies and the server's CPU over them."""

    def __init__(self, server: Server, headers: dict[str, str]) -> None:
        self.server = server
        self.client = httpx.Client(base_url=server.url, headers=headers, timeout=120)
        self.latencies: list[float] = []
        self.cpu = 0.0
        self.body = b""

    def run(self, payload: dict[str, object], requests: int, measure: bool = True) -> None:
        pid = self.server.process.pid
        before = cpu_seconds(pid)
        for _ in range(requests):
            start = time.perf_counter()
            response = self.client.post("/graphql", json=payload)
            elapsed = time.perf_counter() - start
            if response.status_code != 200 or b'"errors"' in response.content:
                raise SystemExit(f"unexpected response: {response.text[:300]}")
            self.body = response.content
            if measure:
                self.latencies.append(elapsed)
        if measure:
            self.cpu += cpu_seconds(pid) - before

    def cpu_ms(self) -> float:
        return 1000 * self.cpu / len(self.latencies)

    def close(self) -> None:
        self.client.close()


def compare(
    title: str,
    servers: dict[str, Server],
    headers: dict[str, str],
    payload: dict[str, object],
    rounds: int,
    per_round: int,
    raw: list[float],
) -> None:
    measured = {name: Measured(server, headers) for name, server in servers.items()}
    try:
        for m in measured.values():
            m.run(payload, max(3, per_round // 4), measure=False)  # warm-up: plans compiled, pools filled
        for _ in range(rounds):
            for m in measured.values():
                m.run(payload, per_round)
        stock, fast = measured["stock"], measured["fast"]
        if stock.body != fast.body:
            raise SystemExit(f"{title}: the stock and compiled executors sent different bytes")
        raw_ms = median_ms(raw)
        print(title)
        print(f"{'executor':>9} {'CPU ms/req':>10} {'p50 ms':>8} {'p99 ms':>8} {'p50/raw':>8}")
        for name, m in measured.items():
            p50 = median_ms(m.latencies)
            print(
                f"{name:>9} {m.cpu_ms():>10.2f} {p50:>8.1f} {percentile_ms(m.latencies, 0.99):>8.1f}"
                f" {p50 / raw_ms:>8.2f}"
            )
        print(
            f"{'raw':>9} {'':>10} {raw_ms:>8.1f}  (asyncpg + orjson in the client process)\n"
            f"stock / compiled: server CPU per request {stock.cpu_ms() / fast.cpu_ms():.2f}x,"
            f" p50 latency {median_ms(stock.latencies) / median_ms(fast.latencies):.2f}x,"
            f" {len(fast.latencies)} requests each, {len(fast.body) / 1e3:.0f} kB per response\n"
        )
    finally:
        for m in measured.values():
            m.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer requests (a smoke test of the bench)")
    args = parser.parse_args()
    database = Database()
    dsn = database.start()
    servers = {
        "stock": Server(dsn, executor="stock", env=UNTHROTTLED),
        "fast": Server(dsn, executor="fast", env=UNTHROTTLED),
    }
    try:
        admin = create_tenant(dsn)
        with httpx.Client(base_url=servers["fast"].url, headers=admin.headers, timeout=60) as client:
            member_id, member_key = create_member(client)
            _, root = start_conversation(client)
        member = Caller(admin.tenant_id, decode_id(member_id, Kind.USER), member_key)
        seed_conversations(dsn, member.tenant_id, member.user_id, 10_000)
        seed_tree(dsn, admin, root, 10_000)

        loop = asyncio.new_event_loop()
        conn = loop.run_until_complete(asyncpg.connect(dsn))
        raw_page_seconds = [
            loop.run_until_complete(raw_page(conn, member.tenant_id, member.user_id, 50)) for _ in range(50)
        ]
        loop.run_until_complete(conn.close())
        loop.close()
        compare(
            "conversations(first: 50) of a MEMBER in 10,000, owner { id email } participants { role user { id } }",
            servers,
            member.headers,
            {"query": CONVERSATIONS, "variables": {"n": 50}},
            rounds=4 if args.quick else 10,
            per_round=20 if args.quick else 50,
            raw=raw_page_seconds[5:],
        )

        tree = RawTree(dsn, admin.tenant_id, decode_id(root, Kind.MESSAGE))
        raw_tree_seconds = [tree.sample()[0] for _ in range(12)]
        tree.close()
        compare(
            "threadTree of 10,000 messages (id parentId depth path role content createdAt)",
            servers,
            admin.headers,
            {"query": TREE_QUERY, "variables": {"r": root}},
            rounds=3 if args.quick else 5,
            per_round=2 if args.quick else 4,
            raw=raw_tree_seconds[2:],
        )
    finally:
        for server in servers.values():
            server.stop()
        database.stop()


if __name__ == "__main__":
    main()
