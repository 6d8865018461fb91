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
from collections import Counter
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
# `--select-author` (here and in publish_cost.py): the subscription also selects each changed message's author, a
# field with a resolver (the users loader), shared by every subscriber (streaming.fanout.SHARED_RESOLVERS). Set
# through the environment: the client processes import this module afresh.
SELECT_AUTHOR = "THREADLINE_BENCH_SELECT_AUTHOR"
if os.environ.get(SELECT_AUTHOR) == "1":
    QUERY = QUERY.replace(
        "changedMessage { id content }", "changedMessage { id content author { id displayName } }"
    )
REPLY = "mutation($p: ID!, $x: String!) { messageReply(parentId: $p, input: {content: $x}) { id } }"
ASSISTANT = (
    'mutation($p: ID!) { messageReply(parentId: $p, input: {content: "...", role: ASSISTANT}) { id } }'
)
APPEND = "mutation($m: ID!, $x: String!) { messageAppend(id: $m, delta: $x) { id } }"
STREAMS = 10  # assistant messages the `append` source streams into, round robin
TIMED = ("thread.activity", "message.delta")
PING = b"\x89\x04"  # a server's keep-alive ping frame header (unmasked, 4-byte payload)


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
        self.lost = False
        self.lost_why = (
            ""  # how it was lost: the server's close frame (code, reason), or the transport's error
        )
        self._ping = b""  # the start of a keep-alive ping whose 6 bytes a read split (completed by the next)
        self.transport: asyncio.Transport | None = None
        self.arrived: Callable[[], None] | None = None  # called after each read once subscribed (idle mode)

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
            if self._ping or PING in data or data.endswith(PING[:1]):
                self._pong(
                    data
                )  # keep-alive: answer it, or the server drops an idle socket after ping_timeout
            if b"\x88" in data:
                self._close_frame(data)
            if self.arrived is not None:
                self.arrived()
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

    def _pong(self, data: bytes) -> None:
        """Answers the server's keep-alive pings (uvicorn's and websockets': a 4-byte payload) without parsing
        the stream: an unmasked ping header `89 04` cannot occur inside these JSON text frames or their headers."""
        assert self.transport is not None
        start = 0
        if self._ping:  # a ping split across reads (a malformed pong would make the server close the socket)
            need = 6 - len(self._ping)
            whole = self._ping + data[:need]
            if len(whole) < 6:
                self._ping = whole
                return
            self._ping = b""
            if whole[:2] == PING:
                self.transport.write(b"\x8a\x84\x00\x00\x00\x00" + whole[2:6])
                start = need
        at = data.find(PING, start)
        while at >= 0:
            if len(data) - at < 6:
                self._ping = data[at:]
                return
            self.transport.write(b"\x8a\x84\x00\x00\x00\x00" + data[at + 2 : at + 6])  # a masked pong, mask 0
            at = data.find(PING, at + 6)
        if data.endswith(PING[:1]):
            self._ping = PING[:1]  # maybe a ping's first byte (checked against the next read)

    def _close_frame(self, data: bytes) -> None:
        """A close frame from the server ends the data it sends (88, length, code, reason): kept for the report."""
        at = data.rfind(b"\x88")
        while at >= 0:
            if at + 2 <= len(data) and data[at + 1] < 126 and at + 2 + data[at + 1] == len(data):
                body = data[at + 2 :]
                code = int.from_bytes(body[:2], "big") if len(body) >= 2 else 1005
                self.lost_why = f"close {code} {body[2:].decode(errors='replace')}".strip()
                return
            at = data.rfind(b"\x88", 0, at)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if not self.lost_why:
            self.lost_why = f"no close frame: {type(exc).__name__ if exc else 'EOF'}"
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


def _active_subscriptions(url: str) -> int:
    """The live subscriptions the server holds (its /metrics gauge)."""
    text = httpx.get(f"{url}/metrics", headers=METRICS_HEADERS, timeout=10).text
    line = next((x for x in text.splitlines() if x.startswith("threadline_subscriptions_active ")), "")
    return int(float(line.split()[-1])) if line else 0


def _await_subscriptions(url: str, expected: int, timeout: float = 60.0) -> None:
    """Every subscription is live on the server (its /metrics gauge), or the run is void."""
    deadline = time.monotonic() + timeout
    active = 0
    while time.monotonic() < deadline:
        active = _active_subscriptions(url)
        if active >= expected:
            return
        time.sleep(0.2)
    raise RuntimeError(f"only {active} of {expected} subscriptions became active")


def run_threadline(
    subscribers: int,
    rate: float,
    seconds: float,
    procs: int,
    source: str,
    env: dict[str, str] | None = None,
    publisher_env: dict[str, str] | None = None,
) -> dict[str, float]:
    """`env`: the subscribers' server's extra environment; `publisher_env`: publish through a second server
    process with it (bench/engines.py: two processes on Redis or on NOTIFY) instead of the subscribers' own."""
    database = Database(commit_timestamps=True)
    dsn = database.start()
    # One user holds every subscription and publishes every event: the default budgets (600 subscription
    # starts and 1,200 mutations a minute per user) would refuse most of them.
    server = Server(dsn, env={**UNTHROTTLED, **(env or {})})
    publisher = server if publisher_env is None else Server(dsn, env={**UNTHROTTLED, **publisher_env})
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
            async with httpx.AsyncClient(base_url=publisher.url, headers=caller.headers, timeout=60) as http:

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
        if publisher is not server:
            publisher.stop()
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


# Idle sockets (issue 15 item 1) ----------------------------------------------------------------------------
# `--idle`: N graphql-transport-ws sockets, each with one conversationEvents subscription, sit idle; the bench
# reads the server's memory growth per socket, then sends single mutations and times each from the moment the
# request is sent to the moment the last socket has the event's last frame. Baseline: a bare `websockets`
# server (on uvloop, as uvicorn runs) holding the same number of sockets and broadcasting one frame.

USER_CREATE = "mutation($i: UserCreateInput!) { userCreate(input: $i) { id } }"
KEY_CREATE = 'mutation($u: ID!) { apiKeyCreate(userId: $u, name: "bench") { secret } }'
INVITE = "mutation($c: ID!, $u: ID!) { participantInvite(conversationId: $c, userId: $u) { id } }"
ACCEPT = "mutation($i: ID!) { inviteAccept(id: $i) { id } }"
THREAD = "mutation($c: ID!, $x: String!) { threadStart(conversationId: $c, input: {content: $x}) { id } }"
# What one round sends, and what its subscribers receive (author: the writer's sockets; reader: the other user's).
IDLE_SOURCES = {
    "append": "messageAppend: message.delta to all (one frame for everyone)",
    "reply": "messageReply: thread.activity to all, unread.update addressed to the reader's sockets",
    "thread": "threadStart: thread.new (author and reader renderings), unread.update to the reader's sockets",
}


class _Watch:
    """Frames counted by every sink of a client process, and the moment they reach a target."""

    def __init__(self) -> None:
        self.frames = [0]
        self.target = 0
        self.done: asyncio.Future[float] | None = None

    def arrived(self) -> None:
        if self.done is not None and not self.done.done() and self.frames[0] >= self.target:
            self.done.set_result(time.time())


async def _idle_clients(
    url: str, graphql: bool, keys: list[str], cids: list[str], first: int, count: int, conn: Any
) -> None:
    loop = asyncio.get_running_loop()
    watch = _Watch()
    sinks: list[_SinkProtocol] = []
    transports: list[asyncio.BaseTransport] = []
    host, port = url.split("//", 1)[1].split("/", 1)[0].split(":")

    async def one(i: int) -> None:
        opened: asyncio.Future[None] = loop.create_future()
        n = first + i
        key, cid = keys[n % len(keys)], cids[(n // len(keys)) % len(cids)]
        transport, sink = await loop.create_connection(
            lambda: _SinkProtocol(url, graphql, key, cid, opened, watch.frames), host, int(port)
        )
        sink.arrived = watch.arrived
        sinks.append(sink)
        transports.append(transport)
        await opened

    for start in range(0, count, 100):
        await asyncio.gather(*(one(i) for i in range(start, min(count, start + 100))))
    conn.send(("ready", count))
    while True:
        command, argument = await asyncio.to_thread(conn.recv)
        if command == "count":
            why = Counter(s.lost_why for s in sinks if s.lost)
            conn.send((watch.frames[0], sum(why.values()), dict(why)))
        elif command == "arm":
            watch.target = watch.frames[0] + int(argument)  # this process's frames of the round
            watch.done = loop.create_future()
            before = watch.frames[0]
            conn.send("armed")
            try:
                at: float | None = await asyncio.wait_for(watch.done, timeout=20)
            except TimeoutError:
                at = None
            conn.send((at, watch.frames[0] - before))
        elif command == "stop":
            for transport in transports:
                transport.close()
            await asyncio.sleep(0.5)
            conn.send("stopped")
            return


def _idle_client_process(
    url: str, graphql: bool, keys: list[str], cids: list[str], first: int, count: int, conn: Any
) -> None:
    import resource

    import uvloop

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, count + 1024)), hard))
    uvloop.run(_idle_clients(url, graphql, keys, cids, first, count, conn))


class _IdleClients:
    def __init__(
        self, url: str, graphql: bool, keys: list[str], cids: list[str], total: int, procs: int
    ) -> None:
        ctx = mp.get_context("spawn")
        self.procs: list[tuple[Any, Any]] = []
        self.lost_why: Counter[str] = Counter()  # how the lost sockets were lost (at the last count)
        first = 0
        for i in range(procs):
            count = total // procs + (1 if i < total % procs else 0)
            parent, child = ctx.Pipe()
            proc = ctx.Process(
                target=_idle_client_process, args=(url, graphql, keys, cids, first, count, child), daemon=True
            )
            proc.start()
            self.procs.append((proc, parent))
            first += count
        for _, parent in self.procs:
            assert parent.recv()[0] == "ready"

    def per_process(self) -> list[tuple[int, int]]:
        """(frames received, sockets lost) of each client process."""
        for _, parent in self.procs:
            parent.send(("count", None))
        got = [parent.recv() for _, parent in self.procs]
        self.lost_why = Counter[str]()
        for _, _, why in got:
            self.lost_why.update(why)
        return [(frames, lost) for frames, lost, _ in got]

    def counts(self) -> tuple[int, int]:
        got = self.per_process()
        return sum(f for f, _ in got), sum(lost for _, lost in got)

    def arm(self, expected: list[int]) -> None:
        """Each process waits for its `expected` frames of the next round."""
        for (_, parent), frames in zip(self.procs, expected, strict=True):
            parent.send(("arm", frames))
        for _, parent in self.procs:
            assert parent.recv() == "armed"

    def finished(self) -> tuple[float | None, int]:
        """When the last process saw its last frame (None: some never did), and the frames received."""
        got = [parent.recv() for _, parent in self.procs]
        times = [t for t, _ in got]
        return (None if None in times else max(t for t in times if t is not None)), sum(n for _, n in got)

    def stop(self) -> None:
        for _, parent in self.procs:
            parent.send(("stop", None))
        for proc, parent in self.procs:
            parent.recv()
            proc.join(timeout=10)


def _await_active(url: str, expected: int, timeout: float) -> None:
    _await_subscriptions(url, expected, timeout)


def _graphql_ok(client: httpx.Client, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    body = client.post("/graphql", json={"query": query, "variables": variables}).json()
    if body.get("errors"):
        raise RuntimeError(f"GraphQL errors: {body['errors']}")
    return body["data"]  # type: ignore[no-any-return]


def _idle_world(
    url: str, caller: Any, conversations: int
) -> tuple[list[str], list[str], list[str], list[str], list[str]]:
    """The writer (the tenant's admin) and a reader (a member), `conversations` conversations both take part in,
    each with a thread root and an assistant message: (keys, conversations, roots, assistant messages, writer)."""
    with httpx.Client(base_url=url, headers=caller.headers, timeout=60) as client:
        reader = _graphql_ok(
            client, USER_CREATE, {"i": {"email": f"reader-{time.time_ns()}@example.com", "role": "MEMBER"}}
        )["userCreate"]["id"]
        reader_key = _graphql_ok(client, KEY_CREATE, {"u": reader})["apiKeyCreate"]["secret"]
        cids, roots, streams = [], [], []
        for _ in range(conversations):
            cid, root = start_conversation(client)
            invite = _graphql_ok(client, INVITE, {"c": cid, "u": reader})["participantInvite"]["id"]
            with httpx.Client(
                base_url=url, headers={"Authorization": f"Bearer {reader_key}"}, timeout=60
            ) as other:
                _graphql_ok(other, ACCEPT, {"i": invite})
            cids.append(cid)
            roots.append(root)
            streams.append(_graphql_ok(client, ASSISTANT, {"p": root})["messageReply"]["id"])
    return [caller.api_key, reader_key], cids, roots, streams, [caller.api_key]


def _idle_mutations(
    source: str, round_: int, cids: list[str], roots: list[str], streams: list[str]
) -> list[dict[str, Any]]:
    bodies = []
    for cid, root, stream in zip(cids, roots, streams, strict=True):
        if source == "append":
            bodies.append({"query": APPEND, "variables": {"m": stream, "x": f" token{round_}"}})
        elif source == "reply":
            bodies.append({"query": REPLY, "variables": {"p": root, "x": f"reply {round_}"}})
        else:
            bodies.append({"query": THREAD, "variables": {"c": cid, "x": f"thread {round_}"}})
    return bodies


def _send_all(url: str, headers: dict[str, str], bodies: list[dict[str, Any]]) -> float:
    """Sends the round's mutations (concurrently when there are several); returns when the first was sent."""

    async def run() -> float:
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as http:
            limit = asyncio.Semaphore(16)

            async def one(body: dict[str, Any]) -> None:
                async with limit:
                    response = await http.post("/graphql", json=body)
                    if response.status_code != 200 or "errors" in response.json():
                        raise RuntimeError(response.text[:300])

            await http.get("/readyz")  # the connection is open before the clock starts
            sent = time.time()
            await asyncio.gather(*(one(b) for b in bodies))
            return sent

    return asyncio.run(run())


def _rounds(
    clients: _IdleClients, trigger: Callable[[int], float], expected: list[int], rounds: int
) -> dict[str, Any]:
    latencies: list[float] = []
    missing = 0
    for r in range(rounds):
        clients.arm(expected)
        sent = trigger(r)
        last, got = clients.finished()
        if last is None:
            missing += sum(expected) - got
        else:
            latencies.append(last - sent)
        time.sleep(0.3)
    nan = float("nan")
    return {
        "rounds": rounds,
        "timed_out": rounds - len(latencies),
        "missing_frames": missing,
        "p50_ms": percentile_ms(latencies, 0.5) if latencies else nan,
        "p99_ms": percentile_ms(latencies, 0.99) if latencies else nan,
        "max_ms": max(latencies) * 1000 if latencies else nan,
    }


def _frames_of_round(clients: _IdleClients, trigger: Callable[[], float]) -> list[int]:
    """The frames one round brings each client process (found by sending one and waiting for quiet)."""
    before = clients.per_process()
    trigger()
    time.sleep(2.0)
    after = clients.per_process()
    return [a - b for (a, _), (b, _) in zip(after, before, strict=True)]


def _warm_up(port: int, key: str, cid: str, url: str, headers: dict[str, str], root: str) -> None:
    """One subscription, one event, closed: the code paths and caches of a socket are loaded before the mark."""
    from websockets.sync.client import connect

    with connect(f"ws://127.0.0.1:{port}/graphql", subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
        ws.send(
            orjson.dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {key}"}}).decode()
        )
        ws.recv(timeout=30)
        ws.send(
            orjson.dumps(
                {"id": "1", "type": "subscribe", "payload": {"query": QUERY, "variables": {"c": cid}}}
            ).decode()
        )
        time.sleep(0.5)
        with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
            _graphql_ok(client, REPLY, {"p": root, "x": "warm-up"})
        ws.recv(timeout=30)


def run_idle_threadline(
    subscribers: int,
    procs: int,
    rounds: int,
    sources: list[str],
    conversations: int,
    trace: int,
    socket_graph: bool = False,
) -> dict[str, Any]:
    database = Database()
    dsn = database.start()
    env = dict(UNTHROTTLED)
    if trace:
        env["THREADLINE_BENCH_TRACEMALLOC"] = str(trace)
    if socket_graph:
        env["THREADLINE_BENCH_SOCKET_GRAPH"] = "1"
    # Thousands of sockets connect at once on a shared machine: a connection_init still queued after the default
    # 10 s would be closed (4408) and the run void; the figures are about the sockets once they are open.
    env["THREADLINE_WS_INIT_TIMEOUT_SECONDS"] = "300"
    server = Server(dsn, env=env)
    try:
        caller = create_tenant(dsn)
        keys, cids, roots, streams, _ = _idle_world(server.url, caller, conversations)
        _warm_up(server.port, keys[1], cids[0], server.url, caller.headers, roots[0])
        time.sleep(1.0)
        httpx.get(f"{server.url}/_bench/memory", params={"op": "mark"}, timeout=120).raise_for_status()
        t0 = time.monotonic()
        clients = _IdleClients(f"ws://127.0.0.1:{server.port}/graphql", True, keys, cids, subscribers, procs)
        # Every socket live, or closed on the client's side (counted as lost and left out of the per-socket figures).
        deadline = time.monotonic() + max(60.0, subscribers / 20)
        while (active := _active_subscriptions(server.url)) + clients.counts()[1] < subscribers:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {active} of {subscribers} subscriptions became active")
            time.sleep(0.5)
        connect_s = time.monotonic() - t0
        time.sleep(2.0)
        memory = httpx.get(
            f"{server.url}/_bench/memory", params={"op": "diff", "per": str(active)}, timeout=300
        ).json()
        result: dict[str, Any] = {"memory": memory, "connect_s": connect_s, "sources": {}, "open": active}
        if socket_graph:
            result["socket_graph"] = httpx.get(
                f"{server.url}/_bench/memory", params={"op": "socket"}, timeout=300
            ).json()
        for source in sources:
            counter = iter(range(10**6))

            def trigger(_: int = 0, source: str = source, counter: Any = counter) -> float:
                bodies = _idle_mutations(source, next(counter), cids, roots, streams)
                return _send_all(server.url, caller.headers, bodies)

            expected = _frames_of_round(clients, trigger)
            result["sources"][source] = {
                "frames_per_socket": round(sum(expected) / subscribers, 2),
                **_rounds(clients, trigger, expected, rounds),
            }
        if sources:
            # Again after the rounds: the events the lanes declined (none expected here) or the sockets woke for
            # must not leave per-socket tasks behind (parked subscriptions park again).
            time.sleep(2.0)
            result["memory_after"] = httpx.get(
                f"{server.url}/_bench/memory", params={"op": "diff", "per": str(active)}, timeout=300
            ).json()
        result["lost_sockets"] = clients.counts()[1]
        result["lost_why"] = dict(clients.lost_why)
        clients.stop()
        return result
    finally:
        server.stop()
        database.stop()


IDLE_BASELINE_SERVER = r"""
import asyncio, json, sys, time
sys.path.insert(0, sys.argv[2])
import uvloop, websockets
from websockets.asyncio.server import serve, broadcast
from memory import MemoryProbe
clients = set()
probe = MemoryProbe()
async def handler(ws):
    clients.add(ws)
    try:
        await ws.wait_closed()
    finally:
        clients.discard(ws)
async def main(port):
    async with serve(handler, "127.0.0.1", port, max_size=None, backlog=2048):
        print("ready", flush=True)
        sent = 0
        while True:
            line = (await asyncio.to_thread(sys.stdin.readline)).split()
            if not line:
                return
            if line[0] == "mark":
                print(json.dumps(probe.mark()), flush=True)
            elif line[0] == "diff":
                print(json.dumps(probe.diff(int(line[1]))), flush=True)
            elif line[0] == "send":
                frame = json.dumps({"id": "1", "type": "next", "payload": {"data": {"conversationEvents": {
                    "cursor": "c1.0123456789abcdef01234567", "type": "thread.activity", "occurredAt": time.time(),
                    "replyCount": sent, "changedMessage": {"id": "msg_x", "content": f"event {sent}"}}}}})
                broadcast(clients, frame)
                sent += 1
                print("sent", flush=True)
uvloop.run(main(int(sys.argv[1])))
"""


def run_idle_baseline(subscribers: int, procs: int, rounds: int) -> dict[str, Any]:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-c", IDLE_BASELINE_SERVER, str(port), str(Path(__file__).resolve().parent)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None and server.stdin is not None
    stdin, stdout = server.stdin, server.stdout

    def ask(line: str) -> str:
        stdin.write(line + "\n")
        stdin.flush()
        return stdout.readline()

    try:
        assert stdout.readline().strip() == "ready"
        ask("mark")
        t0 = time.monotonic()
        clients = _IdleClients(f"ws://127.0.0.1:{port}", False, [""], [""], subscribers, procs)
        connect_s = time.monotonic() - t0
        time.sleep(2.0)
        memory = orjson.loads(ask(f"diff {subscribers}"))

        def trigger(_: int = 0) -> float:
            sent = time.time()
            ask("send")
            return sent

        result = _rounds(clients, trigger, [len(range(i, subscribers, procs)) for i in range(procs)], rounds)
        lost = clients.counts()[1]
        lost_why = dict(clients.lost_why)
        clients.stop()
        return {
            "memory": memory,
            "connect_s": connect_s,
            "sources": {"broadcast": {"frames_per_socket": 1, **result}},
            "lost_sockets": lost,
            "lost_why": lost_why,
        }
    finally:
        server.kill()


def idle_main(args: argparse.Namespace) -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, hard), hard))  # the servers inherit it
    sources = [s.strip() for s in args.idle_sources.split(",") if s.strip()]
    baseline = (
        None if args.skip_baseline else run_idle_baseline(args.subscribers, args.client_procs, args.rounds)
    )
    threadline = run_idle_threadline(
        args.subscribers,
        args.client_procs,
        args.rounds,
        sources,
        args.conversations,
        args.trace,
        args.socket_graph,
    )
    n = args.subscribers
    print(
        f"idle sockets: {n} graphql-transport-ws sockets with one conversationEvents each, over {args.conversations} "
        f"conversation(s), 2 users (writer and reader, alternating); {args.client_procs} client processes; "
        f"{args.rounds} rounds per source (RLIMIT_NOFILE {resource.getrlimit(resource.RLIMIT_NOFILE)})"
    )
    tl_mem = threadline["memory"]
    print(f"{'':12} {'RSS/socket':>11} {'traced/socket':>14} {'connect s':>10} {'lost':>5}")
    for name, r in (("baseline", baseline), ("threadline", threadline)):
        if r is None:
            continue
        m = r["memory"]
        per = r.get("open", n)  # the sockets open when memory was measured
        traced = m.get("traced_delta")
        print(
            f"{name:12} {m['rss_delta'] / per / 1024:>8.1f} KB {traced / per / 1024 if traced else float('nan'):>11.1f} KB "
            f"{r['connect_s']:>10.1f} {r['lost_sockets']:>5}"
            + (f"  lost: {r['lost_why']}" if r.get("lost_why") else "")
        )
    opened = threadline.get("open", n)
    after = threadline.get("memory_after")
    if after is not None:
        traced = after.get("traced_delta")
        tasks = (after.get("objects") or {}).get("Task", 0)
        print(
            f"{'  after rounds':12} {after['rss_delta'] / opened / 1024:>8.1f} KB "
            f"{traced / opened / 1024 if traced else float('nan'):>11.1f} KB   (asyncio tasks per socket: {tasks})"
        )
    if baseline is not None:
        ratio = (tl_mem["rss_delta"] / opened) / max(baseline["memory"]["rss_delta"] / n, 1)
        print(f"ratio RSS per socket threadline/baseline: {ratio:.2f}x")
    print("one event to every socket, from the mutation's send to the last socket's last frame (ms):")
    print(f"{'':34} {'frames/socket':>13} {'p50':>8} {'p99':>8} {'max':>8} {'timed out':>9}")
    rows = [] if baseline is None else [("baseline broadcast", baseline["sources"]["broadcast"])]
    rows += [(f"threadline {s}", r) for s, r in threadline["sources"].items()]
    for name, r in rows:
        print(
            f"{name:34} {r['frames_per_socket']:>13} {r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} {r['max_ms']:>8.1f} "
            f"{r['timed_out']:>9}"
        )
    if baseline is not None:
        b = baseline["sources"]["broadcast"]["p99_ms"]
        for s, r in threadline["sources"].items():
            print(f"ratio p99 threadline {s}/baseline: {r['p99_ms'] / max(b, 0.001):.1f}x")
    for s, d in IDLE_SOURCES.items():
        if s in threadline["sources"]:
            print(f"  {s}: {d}")
    for name, r in (("baseline", baseline), ("threadline", threadline)):
        if r is not None and r["memory"].get("heaps_per"):
            print(
                f"{name} heaps per socket (bytes, growth since the mark):",
                orjson.dumps(r["memory"]["heaps_per"]).decode(),
                f"cyclic garbage collected per socket: {r['memory'].get('cyclic_garbage_per')}",
            )
    print("threadline objects per socket:", orjson.dumps(tl_mem.get("objects")).decode())
    if "by_package" in tl_mem:
        print("threadline traced bytes per socket by owner:", orjson.dumps(tl_mem["by_package"]).decode())
        for row in tl_mem["by_site"]:
            print(f"  {row['bytes']:>7} B  {row['package']:<28} {row['site']:<36} {row['stack']}")
    graph = threadline.get("socket_graph")
    if graph:
        print(
            f"one idle socket's own Python objects (sys.getsizeof, reached from its uvicorn protocol and ASGI task): "
            f"{graph['bytes']} B"
        )
        for owner, size in graph["by_owner"].items():
            print(f"  {size:>7} B  {owner}")
        print("  by type (bytes, count):", orjson.dumps(graph["by_type"]).decode())
    if baseline is not None:
        print("baseline objects per socket:", orjson.dumps(baseline["memory"].get("objects")).decode())


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
    parser.add_argument(
        "--idle",
        action="store_true",
        help="idle sockets (issue 15): memory per socket and one event to every socket, against a bare websockets server",
    )
    parser.add_argument("--rounds", type=int, default=10, help="--idle: events timed per source")
    parser.add_argument(
        "--select-author",
        action="store_true",
        help="the subscription also selects changedMessage.author (a resolver's field; the reply source shows it)",
    )
    parser.add_argument(
        "--idle-sources",
        default="append,reply,thread",
        help="--idle: which mutations (append, reply, thread)",
    )
    parser.add_argument("--conversations", type=int, default=1, help="--idle: sockets spread over this many")
    parser.add_argument(
        "--trace",
        type=int,
        default=0,
        help="--idle: tracemalloc frames in the server (0: off), for where memory goes",
    )
    parser.add_argument(
        "--socket-graph",
        action="store_true",
        help="--idle: one idle socket's own objects by owner (a walk of the server's object graph)",
    )
    args = parser.parse_args()
    if args.select_author and os.environ.get(SELECT_AUTHOR) != "1":
        os.environ[SELECT_AUTHOR] = "1"
        os.execv(sys.executable, [sys.executable, *sys.argv])  # QUERY is read at import
    if args.idle:
        idle_main(args)
        return
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
