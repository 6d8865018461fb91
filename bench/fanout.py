"""Fan-out: N WebSocket subscribers on one conversation while events are published at a fixed rate.

    .venv/bin/python bench/fanout.py [--subscribers 1000] [--rate 100] [--seconds 10] [--client-procs 2]

The server (bench/server.py: the real app under uvicorn) runs in its own process; the subscribers run
in `--client-procs` other processes and the publisher in this one. Latency is commit-to-receipt:
receipt time minus the event's `occurredAt` (one clock: this machine's). The baseline is a plain
`websockets` server in its own process broadcasting pre-serialised frames at the same rate to the
same number of clients, measured by the same client code.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fixtures import (  # noqa: E402
    METRICS_HEADERS,
    UNTHROTTLED,
    Database,
    Server,
    create_tenant,
    free_port,
    percentile_ms,
    start_conversation,
)

MEASURED = 50  # subscribers that parse every frame and time it; the others read and discard bytes
QUERY = """subscription($c: ID!) { conversationEvents(conversationId: $c) {
  cursor type occurredAt ... on ThreadActivityEvent { replyCount changedMessage { id content } }
  ... on MessageDeltaEvent { messageId index delta } } }"""
REPLY = "mutation($p: ID!, $x: String!) { messageReply(parentId: $p, input: {content: $x}) { id } }"
ASSISTANT = (
    'mutation($p: ID!) { messageReply(parentId: $p, input: {content: "...", role: ASSISTANT}) { id } }'
)
APPEND = "mutation($m: ID!, $x: String!) { messageAppend(id: $m, delta: $x) { id } }"
STREAMS = 10  # assistant messages the `append` source streams into, round robin
TIMED = ("thread.activity", "message.delta")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _occurred(event: dict[str, Any]) -> float:
    value = event["occurredAt"]
    return float(value) if isinstance(value, (int, float)) else datetime.fromisoformat(value).timestamp()


class _SinkProtocol(asyncio.Protocol):
    """Reads and discards: completes the handshake, subscribes, then only counts event frames, in the
    transport's callback (no task, no frame parsing): full load on the server, little on this CPU."""

    def __init__(
        self, url: str, graphql: bool, key: str, cid: str, opened: asyncio.Future[None], frames: list[int]
    ) -> None:
        from websockets.client import ClientProtocol
        from websockets.uri import parse_uri

        self.ws = ClientProtocol(
            parse_uri(url), subprotocols=["graphql-transport-ws"] if graphql else None, max_size=None
        )
        self.graphql, self.key, self.cid = graphql, key, cid
        self.opened, self.frames = opened, frames
        self.handshaken = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.ws.send_request(self.ws.connect())
        self._flush()

    def _flush(self) -> None:
        assert self.transport is not None
        for chunk in self.ws.data_to_send():
            self.transport.write(chunk)

    def data_received(self, data: bytes) -> None:
        if self.handshaken:
            self.frames[0] += data.count(
                b'"next"'
            )  # one per event frame (a marker split across reads is lost: rare)
            return
        self.ws.receive_data(data)
        if not self.ws.events_received():
            return
        self.handshaken = True
        if self.graphql:
            for message in (
                {"type": "connection_init", "payload": {"authorization": f"Bearer {self.key}"}},
                {"id": "1", "type": "subscribe", "payload": {"query": QUERY, "variables": {"c": self.cid}}},
            ):
                self.ws.send_text(orjson.dumps(message))
            self._flush()
        if not self.opened.done():
            self.opened.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionError("closed"))


async def _sink(
    url: str,
    graphql: bool,
    key: str,
    cid: str,
    connected: list[int],
    all_ready: asyncio.Event,
    count: int,
    frames: list[int],
) -> None:
    from urllib.parse import urlparse

    parsed = urlparse(url)
    loop = asyncio.get_running_loop()
    opened: asyncio.Future[None] = loop.create_future()
    transport, _ = await loop.create_connection(
        lambda: _SinkProtocol(url, graphql, key, cid, opened, frames), parsed.hostname, parsed.port
    )
    try:
        await opened
        connected[0] += 1
        if connected[0] == count:
            all_ready.set()
        await asyncio.Event().wait()  # until cancelled
    finally:
        transport.close()


async def _clients(url: str, graphql: bool, key: str, cid: str, count: int, measured: int, conn: Any) -> None:
    latencies: list[tuple[str, float, float]] = []  # (cursor, received, occurredAt) of timed events
    window = [0.0, float("inf")]
    connected = [0]
    frames = [0]  # event frames received by every client of this process, until they stop
    all_ready = asyncio.Event()

    async def one() -> None:
        kwargs: dict[str, Any] = {"max_size": None, "open_timeout": 120}
        if graphql:
            kwargs["subprotocols"] = ["graphql-transport-ws"]
        async with websockets.connect(url, **kwargs) as ws:
            if graphql:
                await ws.send(
                    orjson.dumps(
                        {"type": "connection_init", "payload": {"authorization": f"Bearer {key}"}}
                    ).decode()
                )
                assert orjson.loads(await ws.recv())["type"] == "connection_ack"
                await ws.send(
                    orjson.dumps(
                        {"id": "1", "type": "subscribe", "payload": {"query": QUERY, "variables": {"c": cid}}}
                    ).decode()
                )
            connected[0] += 1
            if connected[0] == count:
                all_ready.set()
            async for raw in ws:
                now = time.time()
                message = orjson.loads(raw)
                if message.get("type") != "next":
                    continue
                frames[0] += 1
                event = message["payload"]["data"]["conversationEvents"]
                if event["type"] in TIMED:
                    occurred = _occurred(event)
                    if window[0] <= occurred <= window[1]:
                        latencies.append((event["cursor"], now, occurred))

    tasks = []
    for i in range(count):
        if i < measured:
            tasks.append(asyncio.create_task(one()))
        else:
            tasks.append(
                asyncio.create_task(_sink(url, graphql, key, cid, connected, all_ready, count, frames))
            )
        if i % 50 == 49:
            await asyncio.sleep(0.02)
    await all_ready.wait()
    conn.send("ready")
    window[0], window[1] = await asyncio.to_thread(conn.recv)  # the measured window (epoch seconds)
    await asyncio.sleep(max(0.0, window[1] - time.time()) + 2.0)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    conn.send((latencies, frames[0]))


def _client_process(
    url: str, graphql: bool, key: str, cid: str, count: int, measured: int, conn: Any
) -> None:
    import uvloop  # the clients share the machine with the server: the cheaper their loop, the fairer the run

    uvloop.run(_clients(url, graphql, key, cid, count, measured, conn))


def _start_clients(
    url: str, graphql: bool, key: str, cid: str, total: int, procs: int, measured: int = 50
) -> list[tuple[Any, Any]]:
    ctx = mp.get_context("spawn")
    started = []
    for i in range(procs):
        count = total // procs + (1 if i < total % procs else 0)
        parent, child = ctx.Pipe()
        share = measured // procs
        proc = ctx.Process(
            target=_client_process, args=(url, graphql, key, cid, count, share, child), daemon=True
        )
        proc.start()
        started.append((proc, parent))
    for _, parent in started:
        assert parent.recv() == "ready"
    return started


def _finish(
    clients: list[tuple[Any, Any]], window: tuple[float, float], position: Callable[[str], int] = int
) -> tuple[list[tuple[int, float, float]], int]:
    """The measuring clients' receipts (each event's log position, from its cursor by `position`), and the
    event frames every client received before stopping (2 s after the window)."""
    for _, parent in clients:
        parent.send(window)
    receipts: list[tuple[int, float, float]] = []
    frames = 0
    for proc, parent in clients:
        got, count = parent.recv()
        receipts.extend((position(cursor), received, occurred) for cursor, received, occurred in got)
        frames += count
        proc.join(timeout=30)
    return receipts, frames


def _positions(dsn: str, tenant_id: Any) -> Callable[[str], int]:
    """Threadline's cursors are opaque per tenant: their log positions, decoded with the key every server
    process of `dsn` uses (THREADLINE_CURSOR_SECRET, or the stored secret)."""
    import asyncpg

    from threadline.settings import Settings
    from threadline.streaming.cursors import load_codec

    async def load() -> Any:
        conn = await asyncpg.connect(dsn)
        try:
            return await load_codec(conn, Settings.from_env())
        finally:
            await conn.close()

    codec = asyncio.run(load())
    return lambda cursor: int(codec.decode(tenant_id, cursor))


def _commit_times(dsn: str, receipts: list[tuple[int, float, float]]) -> dict[int, float]:
    """When each received event's transaction committed (track_commit_timestamp is on in the bench database)."""
    import asyncpg

    async def fetch() -> dict[int, float]:
        conn = await asyncpg.connect(dsn)
        try:
            rows = await conn.fetch(
                "SELECT id, extract(epoch FROM pg_xact_commit_timestamp(xmin))::float8 AS at FROM stream_event"
                " WHERE id = ANY($1::bigint[])",
                sorted({cursor for cursor, _, _ in receipts}),
            )
        finally:
            await conn.close()
        return {r["id"]: r["at"] for r in rows if r["at"] is not None}

    return asyncio.run(fetch())


def _stages(
    receipts: list[tuple[int, float, float]], committed: dict[int, float], timeline: dict[str, list[float]]
) -> dict[str, str]:
    """Where the time from commit to receipt goes (p50 / p99 ms of each stage, over the timed events)."""
    stages: dict[str, list[float]] = {
        "commit->notify": [],
        "notify->routed": [],
        "routed->flushed": [],
        "flushed->received": [],
    }
    for cursor, received, _ in receipts:
        seen, routed, flushed = timeline.get(str(cursor), (0.0, 0.0, 0.0))
        commit = committed.get(cursor)
        if not (seen and routed and flushed and commit):
            continue
        stages["commit->notify"].append(seen - commit)
        stages["notify->routed"].append(routed - seen)
        stages["routed->flushed"].append(flushed - routed)
        stages["flushed->received"].append(received - flushed)
    return {
        k: f"{percentile_ms(v, 0.5):.1f} / {percentile_ms(v, 0.99):.1f}" if v else "n/a"
        for k, v in stages.items()
    }


def _report(
    events: int,
    subscribers: int,
    seconds: float,
    receipts: list[tuple[int, float, float]],
    cpu: float,
    frames: int,
    committed: dict[int, float] | None = None,
) -> dict[str, Any]:
    """Latency from commit to receipt (the issue's figure: commit times from PostgreSQL, or for the baseline
    the moment it sent the frame) and, for Threadline, also from the event's transaction start."""
    from_start = [received - occurred for _, received, occurred in receipts]
    if committed is None:
        from_commit = from_start
    else:
        missing = sum(1 for cursor, _, _ in receipts if cursor not in committed)
        assert not missing, f"{missing} receipts without a commit time"
        from_commit = [received - committed[cursor] for cursor, received, _ in receipts]
    nan = float("nan")
    return {
        "events": events,
        "expected": events * MEASURED,
        "delivered": len(receipts),
        "deliveries_per_s": events * subscribers / seconds,
        "frames_received": frames,
        "frames_expected": events * subscribers,
        "p50_ms": percentile_ms(from_commit, 0.5) if receipts else nan,
        "p99_ms": percentile_ms(from_commit, 0.99) if receipts else nan,
        "start_p50_ms": percentile_ms(from_start, 0.5) if receipts else nan,
        "start_p99_ms": percentile_ms(from_start, 0.99) if receipts else nan,
        "server_cpu": cpu,
    }


def _other_cpu(clients: list[tuple[Any, Any]]) -> dict[str, float]:
    """CPU seconds of the subscriber processes and of every PostgreSQL process (the machine is shared)."""
    postgres = 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "postgres":
                    postgres += cpu_seconds(int(entry.name))
            except OSError:
                pass
    return {
        "clients": sum(cpu_seconds(proc.pid) for proc, _ in clients),
        "postgres": postgres,
        "publisher": time.process_time(),
    }


def _await_subscriptions(url: str, expected: int, timeout: float = 60.0) -> None:
    """Every subscription is live on the server (its /metrics gauge), or the run is void."""
    deadline = time.monotonic() + timeout
    active = 0
    while time.monotonic() < deadline:
        text = httpx.get(f"{url}/metrics", headers=METRICS_HEADERS, timeout=10).text
        line = next((x for x in text.splitlines() if x.startswith("threadline_subscriptions_active ")), "")
        active = int(float(line.split()[-1])) if line else 0
        if active >= expected:
            return
        time.sleep(0.2)
    raise RuntimeError(f"only {active} of {expected} subscriptions became active")


def run_threadline(
    subscribers: int, rate: float, seconds: float, procs: int, source: str
) -> dict[str, float]:
    database = Database(commit_timestamps=True)
    dsn = database.start()
    # One user holds every subscription and publishes every event: the default budgets (600 subscription
    # starts and 1,200 mutations a minute per user) would refuse most of them.
    server = Server(dsn, env=UNTHROTTLED)
    try:
        caller = create_tenant(dsn)
        with httpx.Client(base_url=server.url, headers=caller.headers, timeout=60) as client:
            cid, root = start_conversation(client)
            streams = [
                client.post("/graphql", json={"query": ASSISTANT, "variables": {"p": root}}).json()["data"][
                    "messageReply"
                ]["id"]
                for _ in range(STREAMS)
            ]
        clients = _start_clients(
            f"ws://127.0.0.1:{server.port}/graphql", True, caller.api_key, cid, subscribers, procs
        )
        _await_subscriptions(server.url, subscribers)

        failures: list[str] = []

        async def publish() -> int:
            limit = asyncio.Semaphore(16)
            async with httpx.AsyncClient(base_url=server.url, headers=caller.headers, timeout=60) as http:

                async def one(i: int) -> None:
                    async with limit:
                        if source == "reply":
                            body = {"query": REPLY, "variables": {"p": root, "x": f"event {i}"}}
                        else:
                            body = {
                                "query": APPEND,
                                "variables": {"m": streams[i % STREAMS], "x": f" token{i}"},
                            }
                        response = await http.post("/graphql", json=body)
                        if response.status_code != 200 or "errors" in response.json():
                            failures.append(response.text[:200])

                start, tasks, sent = time.monotonic(), [], 0
                while time.monotonic() - start < seconds:
                    delay = start + sent / rate - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    tasks.append(asyncio.create_task(one(sent)))
                    sent += 1
                await asyncio.gather(*tasks)
                return sent

        others0 = _other_cpu(clients)
        cpu0, t0, w0 = cpu_seconds(server.process.pid), time.monotonic(), time.time()
        sent = asyncio.run(publish())
        w1 = time.time()
        if failures:
            raise RuntimeError(f"{len(failures)} publishing requests failed, e.g. {failures[0]}")
        time.sleep(2.0)
        elapsed = time.monotonic() - t0
        cpu = (cpu_seconds(server.process.pid) - cpu0) / elapsed
        hub = httpx.get(f"{server.url}/_bench/hub-latency", timeout=30).json()
        hub["machine"] = {k: round((v - others0[k]) / elapsed, 2) for k, v in _other_cpu(clients).items()}
        metrics = httpx.get(f"{server.url}/metrics", headers=METRICS_HEADERS, timeout=30).text
        hub["paths"] = {
            path: int(float(line.split()[-1]))
            for path in ("direct", "queued")
            for line in metrics.splitlines()
            if line.startswith(f'threadline_stream_deliveries_total{{path="{path}"}}')
        }
        timeline = httpx.get(f"{server.url}/_bench/hub-timeline", timeout=30).json()
        receipts, frames = _finish(clients, (w0 - 1, w1 + 1), _positions(dsn, caller.tenant_id))
        committed = _commit_times(dsn, receipts)
        hub["stages"] = _stages(receipts, committed, timeline)
        return {**_report(sent, subscribers, seconds, receipts, cpu, frames, committed), "hub": hub}
    finally:
        server.stop()
        database.stop()


BASELINE_SERVER = r"""
import asyncio, json, sys, time, websockets
clients = set()
async def handler(ws):
    clients.add(ws)
    try:
        await ws.wait_closed()
    finally:
        clients.discard(ws)
async def main(port, rate):
    async with websockets.serve(handler, "127.0.0.1", port, max_size=None):
        print("ready", flush=True)
        seconds = float(await asyncio.to_thread(sys.stdin.readline))
        start = time.monotonic(); sent = 0
        while time.monotonic() - start < seconds:
            delay = start + sent / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            frame = json.dumps({"id": "1", "type": "next", "payload": {"data": {"conversationEvents": {
                "cursor": str(sent), "type": "thread.activity", "occurredAt": time.time(), "replyCount": sent,
                "changedMessage": {"id": "msg_x", "content": f"event {sent}"}}}}})
            websockets.broadcast(clients, frame)
            sent += 1
        print(sent, flush=True)
        await asyncio.sleep(3600)
asyncio.run(main(int(sys.argv[1]), float(sys.argv[2])))
"""


def run_baseline(subscribers: int, rate: float, seconds: float, procs: int) -> dict[str, float]:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-c", BASELINE_SERVER, str(port), str(rate)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None and server.stdin is not None
    try:
        assert server.stdout.readline().strip() == "ready"
        clients = _start_clients(f"ws://127.0.0.1:{port}", False, "", "", subscribers, procs)
        time.sleep(1.0)
        cpu0, t0, w0 = cpu_seconds(server.pid), time.monotonic(), time.time()
        server.stdin.write(f"{seconds}\n")
        server.stdin.flush()
        sent = int(server.stdout.readline())
        w1 = time.time()
        time.sleep(2.0)
        cpu = (cpu_seconds(server.pid) - cpu0) / (time.monotonic() - t0)
        receipts, frames = _finish(clients, (w0 - 1, w1 + 1))
        return _report(sent, subscribers, seconds, receipts, cpu, frames)
    finally:
        server.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--client-procs", type=int, default=2)
    parser.add_argument(
        "--source",
        choices=("append", "reply"),
        default="append",
        help="what publishes: messageAppend round robin over 10 assistant messages (message.delta, streamed output) "
        "or messageReply to one thread root (thread.activity; every write contends on the thread's rows)",
    )
    parser.add_argument(
        "--skip-baseline", action="store_true", help="only the Threadline run (e.g. for profiling)"
    )
    args = parser.parse_args()
    nan = float("nan")
    baseline = (
        {
            "delivered": 0,
            "expected": 0,
            "deliveries_per_s": 0,
            "p50_ms": nan,
            "p99_ms": nan,
            "server_cpu": 0,
            "frames_received": 0,
            "frames_expected": 0,
        }
        if args.skip_baseline
        else run_baseline(args.subscribers, args.rate, args.seconds, args.client_procs)
    )
    threadline = run_threadline(args.subscribers, args.rate, args.seconds, args.client_procs, args.source)
    print(
        f"fan-out: {args.subscribers} subscribers, {args.rate:g} events/s for {args.seconds:g}s, "
        f"{args.client_procs} client processes, events from {args.source}"
    )
    print(
        f"(latency from commit to receipt at the {MEASURED} measuring clients, commit times from PostgreSQL's "
        "track_commit_timestamp; the other subscribers read and discard their frames)"
    )
    print(f"{'':12} {'timed/expected':>17} {'frames/s':>9} {'p50 ms':>8} {'p99 ms':>9} {'server CPU':>10}")
    for name, r in (("baseline", baseline), ("threadline", threadline)):
        print(
            f"{name:12} {int(r['delivered']):>8}/{int(r['expected']):<8} {r['deliveries_per_s']:>8.0f} "
            f"{r['p50_ms']:>8.1f} {r['p99_ms']:>9.1f} {r['server_cpu'] * 100:>9.0f}%   "
            f"all clients received {int(r['frames_received'])}/{int(r['frames_expected'])} frames in time"
        )
    hub = threadline["hub"]
    notified = hub.get("notified", {})
    print(
        f"threadline hub: event transaction start -> NOTIFY received: p50 {notified.get('p50_ms')} ms, "
        f"p99 {notified.get('p99_ms')} ms; -> routed to subscriber queues: p50 {hub.get('p50_ms')} ms, "
        f"p99 {hub.get('p99_ms')} ms, max {hub.get('max_ms')} ms over {hub.get('events')} events"
    )
    route = hub.get("route", {})
    print(
        f"threadline hub: routing one event (the loop is held meanwhile): p50 {route.get('p50_ms')} ms, p99 {route.get('p99_ms')} ms, max {route.get('max_ms')} ms"
    )
    print(f"threadline stages, commit to receipt (p50 / p99 ms): {hub.get('stages')}")
    print(f"threadline run, other processes' CPU (cores): {hub.get('machine')}")
    print(
        f"threadline deliveries: {hub.get('paths')} (direct: one shared frame written to the socket; queued: the per-operation path)"
    )
    print(
        f"threadline from the event's transaction start (occurredAt) instead of its commit: "
        f"p50 {threadline['start_p50_ms']:.1f} ms, p99 {threadline['start_p99_ms']:.1f} ms"
    )
    print(f"ratio p99 threadline/baseline: {threadline['p99_ms'] / max(baseline['p99_ms'], 0.001):.1f}x")


if __name__ == "__main__":
    main()
