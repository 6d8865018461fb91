"""Publish cost: messageReply throughput with and without WebSocket subscribers on the conversation.

    .venv/bin/python bench/publish_cost.py [--subscribers 1000] [--seconds 10] [--writers 8]

Each reply publishes its events (thread.activity, unread.update) inside its transaction. The baseline
is the same server with nobody subscribed; the second run adds the subscribers (they read and discard,
as in bench/fanout.py), so the difference is what live delivery costs the writers.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fanout import REPLY, _await_subscriptions, _finish, _start_clients  # noqa: E402

from fixtures import UNTHROTTLED, Database, Server, create_tenant, percentile_ms, start_conversation  # noqa: E402


async def _write(
    url: str, headers: dict[str, str], root: str, seconds: float, writers: int
) -> tuple[int, list[float]]:
    latencies: list[float] = []
    done = 0
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as http:
        stop = time.monotonic() + seconds

        async def writer(w: int) -> None:
            nonlocal done
            i = 0
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                response = await http.post(
                    "/graphql", json={"query": REPLY, "variables": {"p": root, "x": f"{w}-{i}"}}
                )
                assert "errors" not in response.json(), response.text
                latencies.append(time.perf_counter() - t0)
                done += 1
                i += 1

        await asyncio.gather(*(writer(w) for w in range(writers)))
    return done, latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--writers", type=int, default=8)
    args = parser.parse_args()
    database = Database()
    dsn = database.start()
    # The write load is the point here: the default mutation budget (1,200 a minute per user) would throttle it.
    server = Server(dsn, env=UNTHROTTLED)
    try:
        caller = create_tenant(dsn)
        with httpx.Client(base_url=server.url, headers=caller.headers, timeout=60) as client:
            cid, root = start_conversation(client)
        alone, lat_alone = asyncio.run(_write(server.url, caller.headers, root, args.seconds, args.writers))
        clients = _start_clients(
            f"ws://127.0.0.1:{server.port}/graphql",
            True,
            caller.api_key,
            cid,
            args.subscribers,
            2,
            measured=0,
        )
        _await_subscriptions(server.url, args.subscribers)
        w0 = time.time()
        watched, lat_watched = asyncio.run(
            _write(server.url, caller.headers, root, args.seconds, args.writers)
        )
        _, received = _finish(clients, (w0, time.time()), lambda cursor: 0)  # only the frame count is used
    finally:
        server.stop()
        database.stop()
    print(f"publish cost: messageReply, {args.writers} concurrent writers, {args.seconds:g}s each")
    print(f"{'':28} {'replies/s':>10} {'p50 ms':>8} {'p99 ms':>8}")
    for name, count, lat in (
        ("no subscribers (baseline)", alone, lat_alone),
        (f"{args.subscribers} subscribers", watched, lat_watched),
    ):
        print(
            f"{name:28} {count / args.seconds:>10.1f} {percentile_ms(lat, 0.5):>8.1f} {percentile_ms(lat, 0.99):>8.1f}"
        )
    print(f"ratio with/without subscribers: {watched / max(alone, 1):.2f}")
    print(f"event frames the subscribers received by 2 s after the writes: {received}")


if __name__ == "__main__":
    main()
