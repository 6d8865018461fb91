"""Failover: kill -9 a server process under load; do subscribers that resume elsewhere miss or repeat anything?

    .venv/bin/python bench/failover.py [--subscribers 50] [--rate 50] [--before 4] [--after 5] [--repeat 1]

Three server processes A, B and C (bench/server.py: the real app under uvicorn) on one embedded PostgreSQL,
one tenant, one user (the tenant's admin, owner of every conversation), `--conversations` conversations with
one thread root each. The clients all run in this process (one asyncio loop).

- Subscribers: `--subscribers` graphql-transport-ws sockets, one subscription each, four in five
  `conversationEvents` (spread round robin over the conversations), one in five `viewerEvents`. Each first
  reads `streamCursor` and subscribes with `since` set to it (the documented way to start).
- Writers: `messageReply` at `--rate` per second (open loop: a request is started every 1/rate s whatever
  the earlier ones are doing), round robin over the thread roots, alternating between the writers'
  processes B and C. Every write has its own idempotency key (`clientMutationId`) and its key as content.
  A write that fails (connection refused or cut, HTTP 5xx, a GraphQL error) is retried with the same key on
  the other writers' process, until acknowledged (README "Retrying mutations safely").

A run: the writers write for `--before` seconds, then the victim process is killed with SIGKILL, the
writers go on for `--after` seconds through the processes still up (as a load balancer that took the dead
one out would send them), then stop; the run then waits for quiescence (every subscription has received
everything the log holds for it, or nothing arrived for 5 s). A subscriber whose socket closes reconnects
(on the next process still up, round robin) and subscribes again with `since` = the `cursor` of the last
event it received (the documented resume rule: "resubscribe with the cursor of the last event you
processed, on any server process"). A SLOW_CONSUMER `error` event is handled the same way, with its cursor.

Variants:
- `subscribers-killed`: the subscribers are on A (which takes no writes); A is killed. Every subscriber
  resumes on B or C.
- `writer-killed`: the subscribers are on B, which also takes half the writes; B is killed mid-write: a
  burst of `--burst` writes is sent to B at once, and once half of them are in flight B is killed within
  `--kill-after` ms (uniform jitter), so some writes die before their transaction, some mid-transaction,
  and some may die after their commit but before the answer. (Each process's connections carry
  `application_name=bench-failover-<name>`; the victim's open and writing transactions are read from
  pg_stat_activity just before the kill.) The retries go to C with the same key; a retry whose first
  attempt had committed is answered `Idempotent-Replayed: true` (counted as replayed).
  Subscribers resume on A or C.

Figures, per subscription, summed over all subscriptions of a run. The counted events are every event
type but `presence.update` and `typing.update` (live only, documented as not replayed) and the stream's
own `error` events:
- expected: the rows of `stream_event` (read from the database after quiescence) the subscription's
  scope holds, after the position of the cursor it started from: the tenant's events of its conversation
  (conversationEvents) or of any conversation of the user (viewerEvents), not addressed to someone else
  (`recipient_id` null or the user), of a counted type; the same predicate as the server's replay
  (events.log.replay, Subscriber.wants). These are mostly `thread.activity`, one per acknowledged reply.
- delivered: distinct events received (cursors decoded to log positions with the servers' key,
  streaming.cursors.load_codec), over the subscription's first and resumed sockets.
- lost: expected and never delivered. duplicated: received more than once (deliveries minus distinct).
  unexpected: delivered but not expected (not in the log, or out of the scope): must be 0 too.
- reconnect: per resumed socket, from the moment the client saw its socket close to the new socket's
  `connection_ack` (p50 / p99), and to the first counted event received on it ("resumed": includes waiting
  for the next write, 1/rate s apart per conversation-ish).
- writes: acknowledged writes (distinct keys) against the messages in the database whose content is a key
  of this run (total and distinct contents: a duplicate write would show as two rows with one key), and
  the retries, how many were answered as replays of a first attempt that had committed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fixtures import (  # noqa: E402
    UNTHROTTLED,
    Caller,
    Database,
    Server,
    create_tenant,
    percentile_ms,
    start_conversation,
)

FIELDS = "cursor type conversationId"
CONVERSATION_QUERY = (
    "subscription($c: ID!, $s: String) { conversationEvents(conversationId: $c, since: $s) { "
    + FIELDS
    + " } }"
)
VIEWER_QUERY = "subscription($s: String) { viewerEvents(since: $s) { " + FIELDS + " } }"
REPLY = (
    "mutation($p: ID!, $x: String!, $k: String) "
    "{ messageReply(parentId: $p, input: {content: $x}, clientMutationId: $k) { id } }"
)
NOT_COUNTED = ("presence.update", "typing.update", "principal.changed", "error")
NAMES = "ABC"


@dataclass
class Sub:
    index: int
    conversation: str | None  # None: viewerEvents
    server: int  # the process it is connected to (index into the run's servers)
    cursor: str  # `since` for the next (re)subscription: the start cursor, then the last event's
    start_cursor: str = ""
    received: list[str] = field(default_factory=list)  # cursors of counted events, in arrival order
    closed_at: float | None = None  # when its socket closed unexpectedly (monotonic), until resumed
    reconnect_ack: list[float] = field(default_factory=list)
    reconnect_first: list[float] = field(default_factory=list)
    acked_at: list[float] = field(default_factory=list)  # monotonic times of the resumed sockets' acks
    waiting_first: float | None = None
    reconnects: int = 0
    slow_consumer: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass
class Run:
    servers: list[Server]
    caller: Caller
    alive: set[int]
    stopping: bool = False
    writing: bool = True
    inflight: Counter[int] = field(default_factory=Counter)
    acked: dict[str, bool] = field(default_factory=dict)  # key -> answered as a replay
    retries: int = 0
    retried_keys: set[str] = field(default_factory=set)
    unacked: list[str] = field(default_factory=list)
    write_errors: Counter[str] = field(default_factory=Counter)
    http: list[httpx.AsyncClient] = field(default_factory=list)

    def ws_url(self, server: int) -> str:
        return self.servers[server].url.replace("http", "ws") + "/graphql"


async def follow(run: Run, sub: Sub) -> None:
    """One subscription, resubscribing with its last cursor on another live process when its socket ends."""
    attempt = 0
    while not run.stopping:
        try:
            async with websockets.connect(
                run.ws_url(sub.server),
                subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
                open_timeout=10,
                max_size=None,
                ping_interval=None,
            ) as ws:
                await ws.send(
                    orjson.dumps(
                        {
                            "type": "connection_init",
                            "payload": {"authorization": f"Bearer {run.caller.api_key}"},
                        }
                    ).decode()
                )
                ack = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
                if ack.get("type") != "connection_ack":
                    raise ConnectionError(f"no connection_ack: {ack}")
                if sub.closed_at is not None:
                    sub.reconnect_ack.append(time.monotonic() - sub.closed_at)
                    sub.acked_at.append(time.monotonic())
                    sub.waiting_first = sub.closed_at
                    sub.closed_at = None
                    sub.reconnects += 1
                query = CONVERSATION_QUERY if sub.conversation else VIEWER_QUERY
                variables = {"s": sub.cursor, **({"c": sub.conversation} if sub.conversation else {})}
                await ws.send(
                    orjson.dumps(
                        {"id": "1", "type": "subscribe", "payload": {"query": query, "variables": variables}}
                    ).decode()
                )
                attempt = 0
                async for raw in ws:
                    message = orjson.loads(raw)
                    kind = message.get("type")
                    if kind == "ping":
                        await ws.send(orjson.dumps({"type": "pong"}).decode())
                        continue
                    if kind != "next":
                        if kind in ("error", "complete"):
                            sub.errors.append(str(message)[:300])
                            break
                        continue
                    payload = message["payload"]
                    if payload.get("errors"):
                        sub.errors.append(str(payload["errors"])[:300])
                        break
                    event = next(iter(payload["data"].values()))
                    if event["type"] == "error":  # SLOW_CONSUMER: resume from the cursor it carries
                        sub.slow_consumer += 1
                        sub.cursor = event["cursor"]
                        break
                    sub.cursor = event["cursor"]
                    if event["type"] in NOT_COUNTED:
                        continue
                    sub.received.append(event["cursor"])
                    if sub.waiting_first is not None:
                        sub.reconnect_first.append(time.monotonic() - sub.waiting_first)
                        sub.waiting_first = None
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a dead or refusing process: resubscribe elsewhere
            if attempt == 0 and not isinstance(exc, websockets.ConnectionClosed | OSError):
                sub.errors.append(f"{type(exc).__name__}: {exc}"[:300])
        if run.stopping:
            return
        if sub.closed_at is None:
            sub.closed_at = time.monotonic()
        attempt += 1
        if sub.server not in run.alive or attempt > 1:
            survivors = sorted(run.alive)
            sub.server = survivors[(sub.index + attempt) % len(survivors)]
        await asyncio.sleep(min(0.02 * attempt, 0.5))


async def write(
    run: Run, writers: list[int], n: int, root: str, key: str, preferred: int | None = None
) -> None:
    preferred = writers[n % len(writers)] if preferred is None else preferred
    attempt, last = 0, -1
    while True:
        candidates = [w for w in writers if w in run.alive] or writers
        server = (
            preferred
            if attempt == 0 and preferred in candidates
            else candidates[(n + attempt) % len(candidates)]
        )
        if attempt and server == last and len(candidates) > 1:
            server = next(w for w in candidates if w != last)
        last = server
        run.inflight[server] += 1
        error = ""
        try:
            response = await run.http[server].post(
                "/graphql", json={"query": REPLY, "variables": {"p": root, "x": key, "k": key}}
            )
            body = (
                response.json()
                if response.headers.get("content-type", "").startswith("application/json")
                else {}
            )
            if response.status_code == 200 and not body.get("errors") and body.get("data"):
                run.acked[key] = response.headers.get("idempotent-replayed") == "true"
                return
            codes = [e.get("extensions", {}).get("code") for e in body.get("errors", [])] if body else []
            error = f"HTTP {response.status_code} {codes}"
        except (httpx.TransportError, ValueError) as exc:
            error = type(exc).__name__
        finally:
            run.inflight[server] -= 1
        run.write_errors[error] += 1
        attempt += 1
        run.retries += 1
        run.retried_keys.add(key)
        if attempt > 40:
            run.unacked.append(key)
            return
        await asyncio.sleep(0.05)


async def writers_loop(run: Run, writers: list[int], roots: list[str], rate: float, tag: str) -> None:
    tasks = []
    start, n = time.monotonic(), 0
    while run.writing:
        delay = start + n / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(write(run, writers, n, roots[n % len(roots)], f"{tag}-w{n}")))
        n += 1
    await asyncio.gather(*tasks)


async def open_transactions(dsn: str, server: str) -> tuple[int, int]:
    """The victim's backends in a transaction, and those of them that have written (hold a transaction id)."""
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            """SELECT count(*) FILTER (WHERE xact_start IS NOT NULL) AS open,
                      count(*) FILTER (WHERE backend_xid IS NOT NULL) AS writing
               FROM pg_stat_activity WHERE application_name = $1""",
            server,
        )
    finally:
        await conn.close()
    assert row is not None
    return int(row["open"]), int(row["writing"])


def machine_state() -> str:
    load = Path("/proc/loadavg").read_text().split()[:3]
    mem = next(
        line for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemAvailable")
    )
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent
    ).stdout.strip()
    return f"{os.cpu_count()} cores, load average {' '.join(load)}, {int(mem.split()[1]) // 1024} MB available, commit {commit}"


async def scenario(
    args: argparse.Namespace, variant: str, dsn: str, servers: list[Server], caller: Caller
) -> dict[str, Any]:
    victim = 0 if variant == "subscribers-killed" else 1
    writers = [1, 2]
    run = Run(servers, caller, alive={0, 1, 2})
    limits = httpx.Limits(max_connections=128, max_keepalive_connections=128)
    run.http = [
        httpx.AsyncClient(base_url=s.url, headers=caller.headers, timeout=30, limits=limits) for s in servers
    ]
    try:
        return await _scenario(args, variant, dsn, run, victim, writers)
    finally:
        for client in run.http:
            await client.aclose()


async def _scenario(
    args: argparse.Namespace, variant: str, dsn: str, run: Run, victim: int, writers: list[int]
) -> dict[str, Any]:
    servers, caller = run.servers, run.caller
    tag = f"{variant}-{uuid.uuid4().hex[:6]}"
    with httpx.Client(base_url=servers[1].url, headers=caller.headers, timeout=30) as client:
        made = [start_conversation(client) for _ in range(args.conversations)]
        conversations = [c for c, _ in made]
        roots = [r for _, r in made]
        start_cursor = client.post("/graphql", json={"query": "{ streamCursor }"}).json()["data"][
            "streamCursor"
        ]
    subs = [
        Sub(
            i,
            None if i % 5 == 4 else conversations[i % len(conversations)],
            victim,
            start_cursor,
            start_cursor,
        )
        for i in range(args.subscribers)
    ]
    tasks = [asyncio.create_task(follow(run, s)) for s in subs]
    await asyncio.sleep(2.0 + args.subscribers / 50)  # every subscription started (and replayed to now)
    writing = asyncio.create_task(writers_loop(run, writers, roots, args.rate, tag))
    await asyncio.sleep(args.before)
    burst: list[asyncio.Task[None]] = []
    open_at_kill = (0, 0)
    if victim in writers:
        # A burst of writes to the victim, killed `--kill-after` ms (jittered) after half of them are in
        # flight: some not yet begun, some mid-transaction, some committed with the answer not yet sent.
        burst = [
            asyncio.create_task(
                write(run, writers, i, roots[i % len(roots)], f"{tag}-b{i}", preferred=victim)
            )
            for i in range(args.burst)
        ]
        waited = time.monotonic()
        while run.inflight[victim] < max(1, args.burst // 2) and time.monotonic() - waited < 1.0:
            await asyncio.sleep(0.001)
        await asyncio.sleep(random.uniform(0, args.kill_after / 1000))
        open_at_kill = await open_transactions(dsn, f"bench-failover-{NAMES[victim]}")
    in_flight_at_kill = run.inflight[victim]
    servers[victim].process.kill()  # SIGKILL
    run.alive.discard(victim)
    killed_at = time.monotonic()
    servers[victim].process.wait()
    await asyncio.sleep(args.after)
    run.writing = False
    await writing
    await asyncio.gather(*burst)
    writes_done = time.monotonic()

    # Quiescence: the log's events for each scope all received, or nothing new for 5 s.
    expected = await expected_events(dsn, caller, subs, conversations)
    position = await decoder(dsn, caller)
    last_total, last_change = -1, time.monotonic()
    while time.monotonic() - last_change < 5.0:
        total = sum(len(s.received) for s in subs)
        if total != last_total:
            last_total, last_change = total, time.monotonic()
        if all(expected[s.index] <= {position(c) for c in s.received} for s in subs):
            break
        await asyncio.sleep(0.25)
    quiet = time.monotonic() - writes_done
    expected = await expected_events(
        dsn, caller, subs, conversations
    )  # once more: nothing may have been late
    types = await event_types(dsn, caller, position(start_cursor))
    run.stopping = True
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)

    totals = Counter[str]()
    for s in subs:
        delivered = [position(c) for c in s.received]
        distinct = set(delivered)
        totals["expected"] += len(expected[s.index])
        totals["delivered"] += len(distinct & expected[s.index])
        totals["lost"] += len(expected[s.index] - distinct)
        totals["duplicated"] += len(delivered) - len(distinct)
        totals["unexpected"] += len(distinct - expected[s.index])
        totals["resubscribed"] += s.reconnects > 0
        totals["slow_consumer"] += s.slow_consumer
    ack = [x for s in subs for x in s.reconnect_ack]
    first = [x for s in subs for x in s.reconnect_first]
    from_kill = [x - killed_at for s in subs for x in s.acked_at[:1]]
    errors = Counter(e for s in subs for e in s.errors)
    rows, distinct_rows = await stored_writes(dsn, caller, tag)
    return {
        "variant": variant,
        "victim": NAMES[victim],
        **totals,
        "subscriptions": len(subs),
        "reconnect_ack": (percentile_ms(ack, 0.5), percentile_ms(ack, 0.99)) if ack else None,
        "reconnect_first": (percentile_ms(first, 0.5), percentile_ms(first, 0.99)) if first else None,
        "kill_to_ack": (percentile_ms(from_kill, 0.5), percentile_ms(from_kill, 0.99)) if from_kill else None,
        "types": dict(types),
        "in_flight_at_kill": in_flight_at_kill,
        "open_transactions_at_kill": open_at_kill,
        "acked": len(run.acked),
        "replayed": sum(run.acked.values()),
        "retried_writes": len(run.retried_keys),
        "retries": run.retries,
        "unacked": len(run.unacked),
        "write_errors": dict(run.write_errors),
        "rows": rows,
        "distinct_rows": distinct_rows,
        "quiescence_s": quiet,
        "stream_errors": dict(errors.most_common(3)),
        "kill_to_end_s": writes_done - killed_at,
    }


async def expected_events(
    dsn: str, caller: Caller, subs: list[Sub], conversations: list[str]
) -> dict[int, set[int]]:
    """Per subscription (by index): the log positions its scope holds after its start cursor (see the docstring)."""
    from threadline.ids import Kind, decode_id

    position = await decoder(dsn, caller)
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            """SELECT id, conversation_id FROM stream_event
               WHERE tenant_id = $1 AND id > $2 AND conversation_id IS NOT NULL
                 AND (recipient_id IS NULL OR recipient_id = $3) AND type <> ALL($4::text[])""",
            caller.tenant_id,
            min(position(s.start_cursor) for s in subs),
            caller.user_id,
            list(NOT_COUNTED),
        )
        mine = {
            r["conversation_id"]
            for r in await conn.fetch(
                "SELECT conversation_id FROM participant WHERE tenant_id = $1 AND user_id = $2",
                caller.tenant_id,
                caller.user_id,
            )
        }
    finally:
        await conn.close()
    ids = {c: decode_id(c, Kind.CONVERSATION) for c in conversations}
    result: dict[int, set[int]] = {}
    for s in subs:
        after = position(s.start_cursor)
        scope = {ids[s.conversation]} if s.conversation else mine
        result[s.index] = {r["id"] for r in rows if r["id"] > after and r["conversation_id"] in scope}
    return result


async def event_types(dsn: str, caller: Caller, after: int) -> Counter[str]:
    """The run's logged events by type (for the report: what 'expected' is made of)."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT type, count(*) AS n FROM stream_event WHERE tenant_id = $1 AND id > $2 GROUP BY type",
            caller.tenant_id,
            after,
        )
    finally:
        await conn.close()
    return Counter({r["type"]: int(r["n"]) for r in rows})


_codecs: dict[str, Any] = {}


async def decoder(dsn: str, caller: Caller) -> Any:
    """Cursors are opaque per tenant: decoded to log positions with the key every server process uses."""
    from threadline.settings import Settings
    from threadline.streaming.cursors import load_codec

    if dsn not in _codecs:
        conn = await asyncpg.connect(dsn)
        try:
            _codecs[dsn] = await load_codec(conn, Settings.from_env())
        finally:
            await conn.close()
    codec = _codecs[dsn]
    return lambda cursor: int(codec.decode(caller.tenant_id, cursor))


async def stored_writes(dsn: str, caller: Caller, tag: str) -> tuple[int, int]:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            "SELECT count(*) AS n, count(DISTINCT content) AS d FROM message WHERE tenant_id = $1 AND content LIKE $2",
            caller.tenant_id,
            f"{tag}-%",
        )
    finally:
        await conn.close()
    assert row is not None
    return int(row["n"]), int(row["d"])


def one_run(args: argparse.Namespace, variant: str) -> dict[str, Any]:
    database = Database()
    dsn = database.start()
    servers: list[Server] = []
    try:
        # Each process's connections carry its name (pg_stat_activity shows the victim's open transactions).
        servers = [
            Server(
                f"{dsn}{'&' if '?' in dsn else '?'}application_name=bench-failover-{name}", env=UNTHROTTLED
            )
            for name in NAMES
        ]
        caller = create_tenant(dsn)
        return asyncio.run(scenario(args, variant, dsn, servers, caller))
    finally:
        for server in servers:
            server.stop()
        database.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=50)
    parser.add_argument("--conversations", type=int, default=5)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--before", type=float, default=4.0, help="seconds of writes before the kill")
    parser.add_argument("--after", type=float, default=5.0, help="seconds of writes after the kill")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument(
        "--burst", type=int, default=20, help="writer-killed: writes sent to B at once just before the kill"
    )
    parser.add_argument(
        "--kill-after",
        type=float,
        default=30.0,
        help="writer-killed: kill within this many ms (uniform) of the burst being half in flight",
    )
    parser.add_argument("--variant", choices=("subscribers-killed", "writer-killed", "both"), default="both")
    args = parser.parse_args()
    variants = ["subscribers-killed", "writer-killed"] if args.variant == "both" else [args.variant]
    print(f"machine: {machine_state()}", flush=True)
    print(
        f"{args.subscribers} subscriptions ({args.subscribers - args.subscribers // 5} conversationEvents over "
        f"{args.conversations} conversations, {args.subscribers // 5} viewerEvents), messageReply at {args.rate:g}/s "
        f"through B and C, {args.before:g} s before and {args.after:g} s after the kill -9",
        flush=True,
    )
    results = []
    for _ in range(args.repeat):
        for variant in variants:
            result = one_run(args, variant)
            results.append(result)
            print(result, flush=True)
    print()
    print(
        "| variant (killed) | events expected | delivered | lost | duplicated | unexpected | resubscribed | "
        "kill -9 to ack p50 / p99 ms | close to ack p50 / p99 ms | close to first event p50 / p99 ms | "
        "writes acked | messages stored (distinct) | writes retried (replayed) | in flight at kill "
        "(victim's transactions open / writing) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")

    def pair(value: tuple[float, float] | None) -> str:
        return f"{value[0]:.0f} / {value[1]:.0f}" if value else "-"

    for r in results:
        print(
            f"| {r['variant']} ({r['victim']}) | {r['expected']} | {r['delivered']} | {r['lost']} | {r['duplicated']} | "
            f"{r['unexpected']} | {r['resubscribed']}/{r['subscriptions']} | {pair(r['kill_to_ack'])} | "
            f"{pair(r['reconnect_ack'])} | {pair(r['reconnect_first'])} | {r['acked']} | "
            f"{r['rows']} ({r['distinct_rows']}) | {r['retried_writes']} ({r['replayed']}) | {r['in_flight_at_kill']} "
            f"({r['open_transactions_at_kill'][0]} / {r['open_transactions_at_kill'][1]}) |"
        )


if __name__ == "__main__":
    main()
