"""Slow writer: how long one open publishing transaction delays other tenants' live events.

    .venv/bin/python bench/slow_writer.py [--hold 10] [--rate 20] [--idle-timeout 3] [--import-messages 20000] [--baseline-src DIR]

One server process (bench/server.py). Tenant 1's writer publishes an event on conversation A and keeps its
transaction open for `--hold` seconds (an import, a fork, a process frozen mid-transaction). Meanwhile
tenant 2 replies on conversation B at `--rate` per second, and its user follows B twice: a
conversationEvents and a viewerEvents subscription. Delay is receipt minus the reply's response (its
commit, one clock: this machine's). Phases: no writer (the baseline), the writer open for `--hold`, and
the writer idle in its transaction with PostgreSQL's idle_in_transaction_session_timeout at
`--idle-timeout` (what THREADLINE_DB_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS sets on the pool): it is ended
after that long, which bounds the delay even for the streams that keep the global order. Last, a real bulk
writer: `threadline import` of one ChatGPT conversation of `--import-messages` messages (one transaction).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fixtures import UNTHROTTLED, Caller, Database, Server, create_tenant, start_conversation  # noqa: E402
from threadline.events.kinds import EventType  # noqa: E402
from threadline.events.publish import bucket_of, publish  # noqa: E402
from threadline.ids import Kind, decode_id  # noqa: E402

FIELDS = "cursor type ... on ThreadActivityEvent { changedMessage { content } }"
REPLY = "mutation($p: ID!, $x: String!) { messageReply(parentId: $p, input: {content: $x}) { id } }"


async def follow(
    url: str, caller: Caller, query: str, variables: dict[str, Any], seen: dict[str, float]
) -> None:
    async with websockets.connect(url, subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
        await ws.send(
            json.dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {caller.api_key}"}})
        )
        await ws.recv()
        await ws.send(
            json.dumps({"id": "1", "type": "subscribe", "payload": {"query": query, "variables": variables}})
        )
        async for raw in ws:
            message = json.loads(raw)
            if message.get("type") == "ping":
                await ws.send(json.dumps({"type": "pong"}))
            if message.get("type") != "next":
                continue
            event = next(iter(message["payload"]["data"].values()))
            content = (event.get("changedMessage") or {}).get("content")
            if content:
                seen[content] = time.monotonic()


async def phase(
    name: str, seconds: float, base: str, root: str, caller: Caller, rate: float
) -> dict[str, float]:
    """Replies for `seconds`; returns when each was acknowledged (committed), by content."""
    sent: dict[str, float] = {}
    async with httpx.AsyncClient(base_url=base, headers=caller.headers, timeout=30) as client:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            content = f"{name}-{uuid.uuid4().hex[:8]}"
            body = (
                await client.post("/graphql", json={"query": REPLY, "variables": {"p": root, "x": content}})
            ).json()
            assert not body.get("errors"), body
            sent[content] = time.monotonic()
            await asyncio.sleep(1 / rate)
    return sent


async def report(name: str, sent: dict[str, float], streams: dict[str, dict[str, float]]) -> None:
    deadline = time.monotonic() + 60
    while any(c not in seen for seen in streams.values() for c in sent) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    for stream, seen in streams.items():
        delays = sorted(seen[c] - t for c, t in sent.items() if c in seen)
        lost = sum(1 for c in sent if c not in seen)
        worst = f"{delays[-1] * 1000:8.1f}" if delays else "       -"
        median = f"{delays[len(delays) // 2] * 1000:7.1f}" if delays else "      -"
        print(
            f"| {name} | {stream} | {len(sent)} | {worst} | {median} | {lost} |",
            flush=True,
        )


async def open_writer(dsn: str, caller: Caller, conversation: str, idle_timeout: float | None) -> Any:
    settings = {"idle_in_transaction_session_timeout": str(int(idle_timeout * 1000))} if idle_timeout else {}
    conn = await asyncpg.connect(dsn, server_settings=settings)
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    tx = conn.transaction()
    await tx.start()
    await publish(
        conn,
        caller.tenant_id,
        EventType.TYPING_UPDATE,
        conversation_id=decode_id(conversation, Kind.CONVERSATION),
        payload={"userId": f"usr_{caller.user_id.hex}", "isTyping": True},
    )
    return conn, tx


async def import_while_replying(
    name: str,
    args: argparse.Namespace,
    dsn: str,
    base: str,
    root: str,
    slow: Caller,
    other: Caller,
    path: Path,
    src: str | None,
) -> tuple[dict[str, float], float]:
    """`threadline import` of `path` by tenant 1 (with the threadline package of `src` if given) while tenant
    2 replies at `--rate`, until the import ends."""
    start = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "threadline.cli",
        "import",
        str(path),
        "--format",
        "chatgpt",
        "--api-key",
        slow.api_key,
        "--quiet",
        env={**os.environ, "DATABASE_URL": dsn, **({"PYTHONPATH": src} if src else {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    sent: dict[str, float] = {}
    async with httpx.AsyncClient(base_url=base, headers=other.headers, timeout=30) as client:
        while process.returncode is None:
            content = f"{name}-{uuid.uuid4().hex[:8]}"
            body = (
                await client.post("/graphql", json={"query": REPLY, "variables": {"p": root, "x": content}})
            ).json()
            assert not body.get("errors"), body
            sent[content] = time.monotonic()
            try:
                await asyncio.wait_for(process.wait(), 1 / args.rate)
            except TimeoutError:
                pass
    out, err = await process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"import failed: {out.decode()[-2000:]} {err.decode()[-2000:]}")
    return sent, time.monotonic() - start


async def import_phases(
    args: argparse.Namespace,
    dsn: str,
    base: str,
    root: str,
    slow: Caller,
    other: Caller,
    streams: dict[str, dict[str, float]],
    index: int,
    src: str | None,
) -> None:
    """Real bulk writers, each one transaction: the first import of one big ChatGPT conversation, then the
    merge of a later export of it that grew by `--growth` messages per branch (a thread.activity REPLY per new
    branch tip, whose path names the new messages above it, and the unread updates)."""
    import orjson
    from porting import conversation, grown

    who = f"code in {src}" if src else "this code"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "conversations.json"
        branches = max(1, args.import_messages // 500)  # chains of 500: within the tree's depth limit
        first = conversation(index, args.import_messages, branches)
        path.write_bytes(orjson.dumps([first]))
        name = f"import of {args.import_messages:,} messages ({who})"
        sent, seconds = await import_while_replying(name, args, dsn, base, root, slow, other, path, src)
        await report(f"{name}, {seconds:.1f} s", sent, streams)
        path.write_bytes(orjson.dumps([grown(first, args.growth)]))
        name = f"merge of {branches * args.growth:,} new messages ({who})"
        sent, seconds = await import_while_replying(name, args, dsn, base, root, slow, other, path, src)
        await report(f"{name}, {seconds:.1f} s", sent, streams)


async def run(
    args: argparse.Namespace, dsn: str, server: Server, slow_caller: Caller, other_caller: Caller
) -> None:
    with httpx.Client(base_url=server.url, headers=slow_caller.headers, timeout=30) as client:
        slow, _ = start_conversation(client)
    with httpx.Client(base_url=server.url, headers=other_caller.headers, timeout=30) as client:
        while True:
            other, root = start_conversation(client)
            if bucket_of(decode_id(other, Kind.CONVERSATION)) != bucket_of(
                decode_id(slow, Kind.CONVERSATION)
            ):
                break
    ws_url = server.url.replace("http", "ws") + "/graphql"
    streams: dict[str, dict[str, float]] = {"conversationEvents": {}, "viewerEvents": {}}
    tasks = [
        asyncio.create_task(
            follow(
                ws_url,
                other_caller,
                "subscription($c: ID!) { conversationEvents(conversationId: $c) { " + FIELDS + " } }",
                {"c": other},
                streams["conversationEvents"],
            )
        ),
        asyncio.create_task(
            follow(
                ws_url,
                other_caller,
                "subscription { viewerEvents { " + FIELDS + " } }",
                {},
                streams["viewerEvents"],
            )
        ),
    ]
    await asyncio.sleep(1)
    for task in tasks:
        if task.done():
            task.result()  # a subscription that failed to start: raise its error
    print("| phase | stream | replies | worst ms | median ms | not received |")
    print("| --- | --- | --- | --- | --- | --- |")
    name = "no writer"
    await report(name, await phase(name, 3, server.url, root, other_caller, args.rate), streams)
    name = f"writer open {args.hold:g} s"
    conn, tx = await open_writer(dsn, slow_caller, slow, None)
    sent = await phase(name, args.hold, server.url, root, other_caller, args.rate)
    await tx.commit()
    await conn.close()
    await report(name, sent, streams)
    name = f"idle writer, {args.hold:g} s, idle timeout {args.idle_timeout:g} s"
    conn, tx = await open_writer(dsn, slow_caller, slow, args.idle_timeout)
    sent = await phase(name, args.hold, server.url, root, other_caller, args.rate)
    await report(name, sent, streams)
    try:
        await tx.rollback()
    except (asyncpg.PostgresError, asyncpg.InterfaceError, ConnectionError) as exc:
        print(f"(the idle writer was ended by PostgreSQL: {type(exc).__name__})")
    await conn.close()
    if args.import_messages:
        await import_phases(args, dsn, server.url, root, slow_caller, other_caller, streams, 0, None)
        if args.baseline_src:
            await import_phases(
                args, dsn, server.url, root, slow_caller, other_caller, streams, 1, args.baseline_src
            )
    for task in tasks:
        task.cancel()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hold", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--idle-timeout", type=float, default=3.0)
    parser.add_argument("--import-messages", type=int, default=20_000, help="0 skips the import phase")
    parser.add_argument("--growth", type=int, default=50, help="new messages per branch in the merge")
    parser.add_argument(
        "--baseline-src",
        help="also import with the threadline package from this src/ directory (e.g. a `git worktree` of an "
        "older commit): the before figure, in the same run",
    )
    args = parser.parse_args()
    database = Database()
    dsn = database.start()
    server = Server(dsn, env=UNTHROTTLED)
    try:
        asyncio.run(run(args, dsn, server, create_tenant(dsn), create_tenant(dsn)))
    finally:
        server.stop()
        database.stop()


if __name__ == "__main__":
    main()
