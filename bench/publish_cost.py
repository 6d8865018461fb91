"""Publish cost: messageReply throughput with and without WebSocket subscribers on the conversation.

    .venv/bin/python bench/publish_cost.py [--subscribers 1000] [--users 1] [--seconds 10] [--writers 8]
        [--rounds 1] [--client-procs 2] [--select-author] [--profile FILE]

The writer is the tenant's admin; the subscribers are `--users` other members of the conversation (sockets spread
round robin over them), so each reply publishes `thread.activity` (to every subscription) and an `unread.update`
addressed to each member but the writer (to that member's sockets only): with `--users 1` every socket gets both,
with `--users 100` each socket gets the activity and its own user's unread.update, and each reply publishes 101
events. A round is the same server and conversation with nobody subscribed (the baseline) and then with the
subscribers connected (graphql-transport-ws, one conversationEvents each, counting frames in a transport
callback as bench/fanout.py's idle clients do); rounds alternate which goes first, and the ratio is the summed
replies with / without over all rounds. The frames received are checked against the events published (each
socket: one thread.activity and one unread.update per reply). `--profile FILE` records the server with py-spy
during the first round's subscribed writes (a flame graph SVG, or `--profile-format speedscope|raw`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
if (
    "--select-author" in sys.argv
):  # read by fanout at import (its QUERY), and by the client processes it starts
    os.environ["THREADLINE_BENCH_SELECT_AUTHOR"] = "1"
from fanout import (  # noqa: E402
    ACCEPT,
    INVITE,
    KEY_CREATE,
    REPLY,
    USER_CREATE,
    _active_subscriptions,
    _graphql_ok,
    _IdleClients,
)

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


def _members(url: str, headers: dict[str, str], cid: str, users: int) -> list[str]:
    """`users` new members of the tenant who joined the conversation: their API keys."""
    keys = []
    with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
        for n in range(users):
            email = f"member-{n}-{time.time_ns()}@example.com"
            user = _graphql_ok(client, USER_CREATE, {"i": {"email": email, "role": "MEMBER"}})["userCreate"][
                "id"
            ]
            key = _graphql_ok(client, KEY_CREATE, {"u": user})["apiKeyCreate"]["secret"]
            invite = _graphql_ok(client, INVITE, {"c": cid, "u": user})["participantInvite"]["id"]
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as member:
                _graphql_ok(member, ACCEPT, {"i": invite})
            keys.append(key)
    return keys


def _subscribed(server: Server, keys: list[str], cid: str, subscribers: int, procs: int) -> _IdleClients:
    clients = _IdleClients(f"ws://127.0.0.1:{server.port}/graphql", True, keys, [cid], subscribers, procs)
    deadline = time.monotonic() + max(60.0, subscribers / 20)
    while (active := _active_subscriptions(server.url)) < subscribers:
        if time.monotonic() > deadline or clients.counts()[1]:
            clients.stop()
            raise RuntimeError(f"only {active} of {subscribers} subscriptions became active")
        time.sleep(0.2)
    return clients


def _settle(clients: _IdleClients, timeout: float = 30.0) -> int:
    """The frames every socket received, once two counts a second apart agree (the writes' frames are in)."""
    deadline = time.monotonic() + timeout
    count = clients.counts()[0]
    while time.monotonic() < deadline:
        time.sleep(1.0)
        again = clients.counts()[0]
        if again == count:
            break
        count = again
    return count


def _profile(pid: int, seconds: float, out: str, fmt: str) -> subprocess.Popen[bytes]:
    py_spy = str(Path(sys.executable).with_name("py-spy"))
    args = [py_spy, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))), "--rate", "200"]
    args += ["--format", fmt, "--output", out, "--nonblocking"]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument(
        "--users", type=int, default=1, help="members the subscribers belong to (round robin)"
    )
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--client-procs", type=int, default=2)
    parser.add_argument(
        "--select-author",
        action="store_true",
        help="the subscription also selects changedMessage.author (a field with a resolver: the users loader)",
    )
    parser.add_argument("--profile", default="", help="py-spy output of the first round's subscribed writes")
    parser.add_argument("--profile-format", default="flamegraph", choices=("flamegraph", "speedscope", "raw"))
    args = parser.parse_args()
    load = os.getloadavg()[0]
    database = Database()
    dsn = database.start()
    # The write load is the point here: the default mutation budget (1,200 a minute per user) would throttle it.
    server = Server(dsn, env={**UNTHROTTLED, "THREADLINE_WS_INIT_TIMEOUT_SECONDS": "120"})
    alone: list[tuple[int, list[float]]] = []
    watched: list[tuple[int, list[float]]] = []
    checks: list[tuple[int, int]] = []  # (frames received, frames expected) per round
    try:
        caller = create_tenant(dsn)
        with httpx.Client(base_url=server.url, headers=caller.headers, timeout=60) as client:
            cid, root = start_conversation(client)
        keys = _members(server.url, caller.headers, cid, args.users)
        asyncio.run(_write(server.url, caller.headers, root, 1.0, args.writers))  # warm-up

        def without() -> None:
            alone.append(asyncio.run(_write(server.url, caller.headers, root, args.seconds, args.writers)))

        def with_subscribers(r: int) -> None:
            clients = _subscribed(server, keys, cid, args.subscribers, args.client_procs)
            try:
                before = clients.counts()[0]
                spy = None
                if args.profile and r == 0:
                    spy = _profile(server.process.pid, args.seconds, args.profile, args.profile_format)
                watched.append(
                    asyncio.run(_write(server.url, caller.headers, root, args.seconds, args.writers))
                )
                if spy is not None:
                    spy.wait(timeout=args.seconds + 60)
                received = _settle(clients) - before
                # Each socket: the reply's thread.activity and its user's unread.update.
                checks.append((received, 2 * watched[-1][0] * args.subscribers))
            finally:
                clients.stop()
                deadline = time.monotonic() + 60
                while _active_subscriptions(server.url) and time.monotonic() < deadline:
                    time.sleep(0.2)  # every subscription ended before the next run without them

        for r in range(args.rounds):
            if r % 2 == 0:
                without()
                with_subscribers(r)
            else:
                with_subscribers(r)
                without()
    finally:
        server.stop()
        database.stop()
    print(
        f"publish cost: messageReply, {args.writers} concurrent writers, {args.seconds:g} s per run, "
        f"{args.rounds} round(s); {args.subscribers} subscribers over {args.users} member(s) (not the writer), "
        f"{args.client_procs} client processes; load average at start {load:.1f}, at end {os.getloadavg()[0]:.1f}"
    )
    print(f"{'':28} {'replies/s':>10} {'p50 ms':>8} {'p99 ms':>8}   per round")
    for name, runs in (("no subscribers (baseline)", alone), (f"{args.subscribers} subscribers", watched)):
        count = sum(c for c, _ in runs)
        lat = [x for _, ls in runs for x in ls]
        rounds = " ".join(f"{c / args.seconds:.1f}" for c, _ in runs)
        print(
            f"{name:28} {count / args.seconds / len(runs):>10.1f} {percentile_ms(lat, 0.5):>8.1f} "
            f"{percentile_ms(lat, 0.99):>8.1f}   {rounds}"
        )
    ratios = " ".join(f"{w[0] / max(a[0], 1):.2f}" for a, w in zip(alone, watched, strict=True))
    total = sum(c for c, _ in watched) / max(sum(c for c, _ in alone), 1)
    print(f"ratio with/without subscribers: {total:.2f} (rounds: {ratios})")
    got, expected = sum(g for g, _ in checks), sum(e for _, e in checks)
    print(f"event frames received / expected: {got} / {expected}" + ("" if got == expected else "  MISMATCH"))


if __name__ == "__main__":
    main()
