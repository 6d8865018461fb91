"""Runs: streaming overhead of one run, and throughput of many runs across worker processes.

    .venv/bin/python bench/runs.py [--tokens 3000] [--subscribers 100] [--runs 200] [--concurrency 8]

Streaming: a provider paced at 1,000 tokens/s streams `--tokens` tokens through the real run
execution (this process: claim, reply creation, coalesced chunks + `message.delta`, `message.done`).
Baseline: the same provider consumed alone (its own time). Reported: wall/provider time, NOTIFYs
per second, and two latencies per `message.delta`: (a) to a LISTEN connection on the event channel
(what every hub sees), from the event's transaction start; (b) to `--subscribers` graphql-transport-ws
subscribers of `conversationEvents` on a real server (bench/server.py, its own process; subscribers in
another), from the event's `occurredAt` (its transaction start) to receipt. One machine, one clock.

Throughput: `--runs` echo runs (echo delay 0: pipeline cost only) queued at once, then two
`threadline worker --concurrency N` processes started; runs/s from the first claim to the last end
(database clock). Proof of exactly once: every run COMPLETED in attempt 1 with one step, one output
message whose chunks are contiguous and spell the expected reply, one `message.done`, and the
workers' own counts add up to the runs. Baseline: single-row UPDATE transactions/s on one connection.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fixtures import Database, Server, percentile_ms  # noqa: E402
from threadline.auth.principal import Principal, Role  # noqa: E402
from threadline.runs.providers import CompletionRequest, Finish  # noqa: E402
from threadline.settings import Settings  # noqa: E402

REPLY_INPUT = "one two three four five six seven eight"
SUBSCRIPTION = """subscription($c: ID!) { conversationEvents(conversationId: $c) {
  type occurredAt ... on MessageDeltaEvent { index } } }"""


class PacedProvider:
    """Emits `tokens` tokens at `rate` per second on an absolute schedule (no drift)."""

    name = "echo"

    def __init__(self, tokens: int, rate: float) -> None:
        self.tokens = tokens
        self.rate = rate

    def models(self) -> frozenset[str]:
        return frozenset({"echo"})

    def default_model(self) -> str:
        return "echo"

    async def stream(self, request: CompletionRequest) -> AsyncIterator[str | Finish]:
        start = time.monotonic()
        for i in range(self.tokens):
            delay = start + i / self.rate - time.monotonic()
            await asyncio.sleep(max(delay, 0.0))
            yield f"t{i} "
        yield Finish("stop", 10, self.tokens)

    async def close(self) -> None:
        return None


async def provider_alone(provider: PacedProvider) -> float:
    start = time.monotonic()
    async for _ in provider.stream(CompletionRequest("echo", [])):
        pass
    return time.monotonic() - start


async def seed(
    dsn: str, settings: Settings, messages: int, content: str
) -> tuple[Principal, uuid.UUID, list[uuid.UUID], str]:
    """A tenant, a conversation and `messages` thread roots, through the services."""
    from threadline.auth.service import create_tenant
    from threadline.conversations import service as conversations
    from threadline.conversations.service import ConversationFields
    from threadline.db import Database as Pool
    from threadline.threads import service as threads
    from threadline.threads.service import MessageDraft

    db = await Pool.connect(dsn, 1, 4)
    try:
        made = await create_tenant(
            db, f"bench-{uuid.uuid4().hex[:6]}", f"a-{uuid.uuid4().hex[:6]}@example.com"
        )
        principal = Principal(made.tenant_id, made.user_id, Role.ADMIN, None)
        conversation = await conversations.create(db, settings, principal, ConversationFields(title="runs"))
        roots = [
            (await threads.start_thread(db, settings, principal, conversation["id"], MessageDraft(content)))[
                "id"
            ]
            for _ in range(messages)
        ]
    finally:
        await db.close()
    return principal, conversation["id"], roots, made.api_key


# streaming ---------------------------------------------------------------------------------------


async def _subscribers(url: str, key: str, cid: str, count: int, conn: Any) -> None:
    import websockets

    latencies: list[float] = []
    done = [0]
    ready = [0]
    all_ready = asyncio.Event()
    finished = asyncio.Event()

    async def one() -> None:
        async with websockets.connect(
            url, subprotocols=["graphql-transport-ws"], max_size=None, open_timeout=60
        ) as ws:
            await ws.send(
                orjson.dumps(
                    {"type": "connection_init", "payload": {"authorization": f"Bearer {key}"}}
                ).decode()
            )
            assert orjson.loads(await ws.recv())["type"] == "connection_ack"
            await ws.send(
                orjson.dumps(
                    {
                        "id": "1",
                        "type": "subscribe",
                        "payload": {"query": SUBSCRIPTION, "variables": {"c": cid}},
                    }
                ).decode()
            )
            ready[0] += 1
            if ready[0] == count:
                all_ready.set()
            async for raw in ws:
                now = time.time()
                message = orjson.loads(raw)
                if message.get("type") != "next":
                    continue
                event = message["payload"]["data"]["conversationEvents"]
                if event["type"] == "message.delta":
                    latencies.append(now - datetime.fromisoformat(event["occurredAt"]).timestamp())
                elif event["type"] == "message.done":
                    done[0] += 1
                    if done[0] == count:
                        finished.set()
                    return

    tasks = [asyncio.create_task(one()) for _ in range(count)]
    await all_ready.wait()
    await asyncio.sleep(0.5)  # subscriptions are registered with the hub once the first frame is read
    conn.send("ready")
    try:
        await asyncio.wait_for(finished.wait(), 120)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    conn.send((latencies, done[0]))


def _subscriber_process(url: str, key: str, cid: str, count: int, conn: Any) -> None:
    asyncio.run(_subscribers(url, key, cid, count, conn))


async def streaming(
    dsn: str, tokens: int, rate: float, subscribers: int, ws_url: str | None
) -> dict[str, Any]:
    from threadline.db import Database as Pool
    from threadline.events.publish import CHANNEL
    from threadline.ids import Kind, encode_id
    from threadline.runs import repository as runs_repo
    from threadline.runs import service as runs
    from threadline.runs.execution import Signals, execute
    from threadline.runs.service import RunSpec

    settings = Settings(database_url=dsn, run_queue="bench-stream", run_max_active_per_user=10_000)
    provider = PacedProvider(tokens, rate)
    alone = await provider_alone(provider)

    principal, cid, (root,), key = await seed(dsn, settings, 1, "stream please")  # type: ignore[misc]
    clients = None
    if ws_url:
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        clients = (
            ctx.Process(
                target=_subscriber_process,
                args=(ws_url, key, encode_id(Kind.CONVERSATION, cid), subscribers, child),
                daemon=True,
            ),
            parent,
        )
        clients[0].start()
        assert await asyncio.to_thread(parent.recv) == "ready"

    listen_latencies: list[float] = []
    listener = await asyncpg.connect(dsn)
    reader = await asyncpg.connect(dsn)
    arrivals: list[tuple[float, int]] = []

    def notified(*args: Any) -> None:
        payload = args[3]
        if payload.startswith(cid.hex):
            arrivals.append((time.time(), int(payload.rpartition(":")[2])))

    await listener.add_listener(CHANNEL, notified)
    db = await Pool.connect(dsn, 2, 8)
    try:
        run = await runs.create_run(db, settings, principal, RunSpec(root))
        claimed = await runs_repo.claim_next(db, settings.run_queue, "bench")
        assert claimed is not None and claimed["id"] == run["id"]
        start = time.monotonic()
        await execute(db, settings, {"echo": provider}, claimed, Signals())  # type: ignore[dict-item]
        wall = time.monotonic() - start
        final = await runs_repo.run(db, principal.tenant_id, run["id"])
        assert final is not None and final["status"] == "COMPLETED", final
    finally:
        await db.close()
    await asyncio.sleep(0.5)
    rows = await reader.fetch(
        "SELECT id, type, extract(epoch FROM created_at)::float8 AS at FROM stream_event WHERE conversation_id = $1 ORDER BY id",
        cid,
    )
    await listener.close()
    await reader.close()
    created = {r["id"]: r["at"] for r in rows if r["type"] == "message.delta"}
    for at, event_id in arrivals:
        if event_id in created:
            listen_latencies.append(at - created[event_id])
    deltas = len(created)
    result: dict[str, Any] = {
        "tokens": tokens,
        "provider_s": alone,
        "wall_s": wall,
        "ratio": wall / alone,
        "deltas": deltas,
        "notifications_per_s": deltas / wall,
        "listen_p50_ms": percentile_ms(listen_latencies, 0.5),
        "listen_p99_ms": percentile_ms(listen_latencies, 0.99),
    }
    if clients is not None:
        latencies, done = await asyncio.to_thread(clients[1].recv)
        clients[0].join(timeout=30)
        result.update(
            subscribers=subscribers,
            delivered=len(latencies),
            expected=deltas * subscribers,
            done_seen=done,
            ws_p50_ms=percentile_ms(latencies, 0.5) if latencies else float("nan"),
            ws_p99_ms=percentile_ms(latencies, 0.99) if latencies else float("nan"),
        )
    return result


# throughput --------------------------------------------------------------------------------------


async def raw_updates(dsn: str, count: int = 2000) -> float:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS bench_counter (id int PRIMARY KEY, n bigint)")
        await conn.execute("INSERT INTO bench_counter VALUES (1, 0) ON CONFLICT DO NOTHING")
        start = time.monotonic()
        for _ in range(count):
            await conn.execute("UPDATE bench_counter SET n = n + 1 WHERE id = 1")
        return count / (time.monotonic() - start)
    finally:
        await conn.close()


async def queue_runs(dsn: str, count: int, conversations: int) -> tuple[list[uuid.UUID], list[uuid.UUID]]:
    """`count` queued runs, each on its own thread root, spread over `conversations` conversations."""
    from threadline.db import Database as Pool
    from threadline.runs import service as runs
    from threadline.runs.service import RunSpec

    settings = Settings(database_url=dsn, run_queue="bench-throughput", run_max_active_per_user=10_000)
    principal, cid, roots, _ = await seed(dsn, settings, count // conversations, REPLY_INPUT)
    cids, all_roots = [cid], list(roots)
    from threadline.conversations import service as conversation_service
    from threadline.conversations.service import ConversationFields
    from threadline.threads import service as threads
    from threadline.threads.service import MessageDraft

    db = await Pool.connect(dsn, 1, 4)
    try:
        for _ in range(conversations - 1):
            other = await conversation_service.create(
                db, settings, principal, ConversationFields(title="runs")
            )
            cids.append(other["id"])
            for _ in range(count // conversations):
                root = await threads.start_thread(
                    db, settings, principal, other["id"], MessageDraft(REPLY_INPUT)
                )
                all_roots.append(root["id"])
        ids = [(await runs.create_run(db, settings, principal, RunSpec(r)))["id"] for r in all_roots]
    finally:
        await db.close()
    return cids, ids


async def verify(dsn: str, cids: list[uuid.UUID], ids: list[uuid.UUID]) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        runs = await conn.fetch(
            """SELECT r.id, r.status, r.attempt, m.content,
                      (SELECT count(*) FROM run_step s WHERE s.run_id = r.id) AS steps,
                      (SELECT count(*) FROM message o WHERE o.parent_id = r.message_id) AS outputs,
                      (SELECT array_agg(c.index ORDER BY c.index) FROM message_chunk c WHERE c.message_id = r.output_message_id) AS indexes,
                      (SELECT string_agg(c.content, '' ORDER BY c.index) FROM message_chunk c WHERE c.message_id = r.output_message_id) AS chunks
               FROM run r JOIN message m ON m.id = r.output_message_id WHERE r.id = ANY($1::uuid[])""",
            ids,
        )
        done = await conn.fetch(
            "SELECT payload->>'runId' AS run FROM stream_event WHERE conversation_id = ANY($1::uuid[]) AND type = 'message.done'",
            cids,
        )
        span = await conn.fetchrow(
            """SELECT extract(epoch FROM max(completed_at) - min(started_at))::float8 AS seconds
               FROM run WHERE id = ANY($1::uuid[])""",
            ids,
        )
    finally:
        await conn.close()
    expected = f"echo: {REPLY_INPUT}"
    exactly_once = (
        len(runs) == len(ids)
        and all(
            r["status"] == "COMPLETED"
            and r["attempt"] == 1
            and r["steps"] == 1
            and r["outputs"] == 1
            and r["content"] == expected
            and r["chunks"] == expected
            and list(r["indexes"]) == list(range(len(r["indexes"])))
            for r in runs
        )
        and sorted(d["run"] for d in done) == sorted(f"run_{i.hex}" for i in ids)
    )
    return {"exactly_once": exactly_once, "seconds": span["seconds"] if span else float("nan")}


def throughput(dsn: str, count: int, concurrency: int, conversations: int) -> dict[str, Any]:
    raw = asyncio.run(raw_updates(dsn))
    cids, ids = asyncio.run(queue_runs(dsn, count, conversations))
    env = {
        **os.environ,
        "DATABASE_URL": dsn,
        "THREADLINE_MIGRATE_ON_START": "0",
        "THREADLINE_RUN_QUEUE": "bench-throughput",
        "THREADLINE_ECHO_DELAY_SECONDS": "0",
    }
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "threadline.cli", "worker", "--concurrency", str(concurrency)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for _ in range(2)
    ]

    async def wait_all() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                left = await conn.fetchval(
                    "SELECT count(*) FROM run WHERE id = ANY($1::uuid[]) AND status <> 'COMPLETED'", ids
                )
                if left == 0:
                    return
                await asyncio.sleep(0.05)
            raise RuntimeError("runs did not finish")
        finally:
            await conn.close()

    asyncio.run(wait_all())
    executed = []
    for worker in workers:
        worker.terminate()
        out, _ = worker.communicate(timeout=30)
        executed.append(int(out.strip().splitlines()[-1].rsplit("after ", 1)[1].split()[0]))
    checked = asyncio.run(verify(dsn, cids, ids))
    runs_per_s = count / checked["seconds"]
    return {
        "runs": count,
        "conversations": conversations,
        "concurrency": concurrency,
        "seconds": checked["seconds"],
        "runs_per_s": runs_per_s,
        "per_worker": executed,
        "exactly_once": checked["exactly_once"] and sum(executed) == count,
        "raw_updates_per_s": raw,
        "raw_updates_per_run": raw / runs_per_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()

    database = Database()
    dsn = database.start()
    os.environ["THREADLINE_RUN_WORKERS"] = "0"  # the bench server must not execute the measured runs
    server = Server(dsn)
    try:
        s = asyncio.run(
            streaming(dsn, args.tokens, args.rate, args.subscribers, f"ws://127.0.0.1:{server.port}/graphql")
        )
        print(f"streaming: {s['tokens']} tokens at {args.rate:g}/s")
        print(
            f"  provider alone {s['provider_s']:.2f} s, run end to end {s['wall_s']:.2f} s: ratio {s['ratio']:.3f}"
        )
        print(f"  {s['deltas']} message.delta notifications: {s['notifications_per_s']:.1f}/s")
        print(
            f"  transaction start -> LISTEN delivery: p50 {s['listen_p50_ms']:.1f} ms, p99 {s['listen_p99_ms']:.1f} ms"
        )
        if "ws_p50_ms" in s:
            print(
                f"  {s['subscribers']} WebSocket subscribers: {s['delivered']}/{s['expected']} deltas delivered, "
                f"{s['done_seen']} message.done; occurredAt -> receipt p50 {s['ws_p50_ms']:.1f} ms, p99 {s['ws_p99_ms']:.1f} ms"
            )
        for conversations in (args.runs, 1):
            t = throughput(dsn, args.runs, args.concurrency, conversations)
            print(
                f"throughput: {t['runs']} echo runs in {t['conversations']} conversation(s), "
                f"2 worker processes x concurrency {t['concurrency']}"
            )
            print(
                f"  {t['seconds']:.2f} s first claim to last end: {t['runs_per_s']:.1f} runs/s; per worker {t['per_worker']}"
            )
            print(f"  exactly once: {t['exactly_once']}")
            print(
                f"  baseline: {t['raw_updates_per_s']:.0f} single-row UPDATE transactions/s on one connection;"
            )
            print(f"  one run costs as much time as {t['raw_updates_per_run']:.1f} of them")
    finally:
        server.stop()
        database.stop()


if __name__ == "__main__":
    main()
