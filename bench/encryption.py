"""Encryption at rest (issue 20 item 1): reads and writes with content sealed vs plain, in the same run.

    .venv/bin/python bench/encryption.py [--rounds 15] [--writes 200] [--imports 500]

Two databases on one embedded PostgreSQL, seeded alike (a 10,000-message random thread, ~200-byte contents, by
COPY as bench/thread_tree.py does): in the second, every message is then sealed (crypto/, the admin's data key,
as the API would have written it). Two servers (bench/server.py), one without a master key on the plain
database and one with a key on the sealed one, answer in turn (interleaved, so load drifts hit both):

- threadTree of the 10,000-message thread (id parentId depth path role content createdAt), median latency;
- a page of messages: `conversation(id) { messages(first: 50) }` with content, median latency;
- writes: messageReply (each a new sealed value, its full-text vector from the plaintext, the logged event's
  copy sealed), median latency;
- with `--imports N`: `threadline import` of a generated ChatGPT export of N conversations (bench/porting.py's
  generator, `--import-messages` each) into each database in turn, by a new tenant each time (a fresh import,
  not a merge), the sealed one with the key: every message's content and parts sealed in the COPY path. Wall
  time of the command (its start-up included), best of `--import-rounds`.

Ratio = sealed / plain; the goal is <= 1.2x on the page and on the 10,000-message tree. The sealed server keeps
opened values (THREADLINE_PLAINTEXT_CACHE_BYTES, 64 MiB): the rounds after the warm-up read them from it.
`--no-plaintext-cache` measures every read opening every value; `--control` seals nothing and gives the second
server no key (the ratio two identical setups show on this machine: order and database effects).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
import httpx

from fixtures import Caller, Database, Server, create_tenant, seed_tree, start_conversation
from threadline.db.migrate import apply_migrations

TREE = """query($r: ID!) { threadTree(rootId: $r) {
  totalCount nodes { id parentId depth path role content createdAt } } }"""
PAGE = """query($c: ID!) { conversation(id: $c) { messages(first: 50) {
  nodes { id role content createdAt author { id } } } } }"""
REPLY = (
    """mutation($p: ID!, $x: String!) { messageReply(parentId: $p, input: {content: $x}) { id content } }"""
)
UNTHROTTLED = {
    "THREADLINE_RATE_LIMIT_MUTATIONS": "10000000",
    "THREADLINE_RATE_LIMIT_REQUESTS": "10000000",
    "THREADLINE_ENRICHMENT_WORKERS": "0",
}


async def second_database(dsn: str, name: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    base, sep, query = dsn.partition("?")
    other = f"{base.rpartition('/')[0]}/{name}{sep}{query}"
    await apply_migrations(other)
    return other


async def seal_everything(dsn: str, caller: Caller, master_key: str) -> int:
    """Seal every message's content as the API would have (the author's key, the vector from the plaintext)."""
    from threadline import crypto
    from threadline.db import Database as Pool
    from threadline.settings import Settings

    crypto.install_from(Settings(master_key=master_key))
    db = await Pool.connect(dsn, 1, 2)
    try:
        rows = await db.fetch("SELECT id, content FROM message WHERE content <> '' ORDER BY id")
        sealed = await crypto.seal_many(caller.tenant_id, [r["content"] for r in rows], caller.user_id)
        await db.execute(
            """UPDATE message m SET content = v.content FROM unnest($1::uuid[], $2::text[]) AS v(id, content)
               WHERE m.id = v.id""",
            [r["id"] for r in rows],
            sealed,
        )
        return len(rows)
    finally:
        await db.close()
        crypto.install(None)


async def vacuum(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("VACUUM (FULL, ANALYZE) message")
    finally:
        await conn.close()


def timed(client: httpx.Client, query: str, variables: dict[str, object]) -> float:
    start = time.perf_counter()
    response = client.post("/graphql", json={"query": query, "variables": variables})
    elapsed = time.perf_counter() - start
    body = response.json()
    if body.get("errors"):
        raise RuntimeError(body["errors"])
    return elapsed


def import_seconds(dsn: str, path: str, env: dict[str, str]) -> tuple[float, int]:
    """`threadline import` of the file by a new tenant's admin: wall seconds and messages imported."""
    caller = create_tenant(dsn)
    command = [sys.executable, "-m", "threadline.cli", "import", path, "--format", "chatgpt", "--quiet"]
    environment = {**os.environ, "DATABASE_URL": dsn, "THREADLINE_ENRICHMENT_WORKERS": "0", **env}
    start = time.perf_counter()
    done = subprocess.run(
        [*command, "--api-key", caller.api_key], env=environment, capture_output=True, text=True
    )
    elapsed = time.perf_counter() - start
    report = json.loads(done.stdout.strip().splitlines()[-1]) if done.stdout.strip() else {}
    if done.returncode != 0 or report.get("failed"):
        raise RuntimeError(f"import failed: {done.stderr[-2000:]} {report.get('failures')}")
    return elapsed, int(report["messages"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--writes", type=int, default=200)
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument(
        "--no-plaintext-cache",
        action="store_true",
        help="the sealed server opens every value on every read (THREADLINE_PLAINTEXT_CACHE_BYTES=0)",
    )
    parser.add_argument("--imports", type=int, default=0, help="conversations of the import figure (0: none)")
    parser.add_argument("--import-messages", type=int, default=50)
    parser.add_argument("--import-rounds", type=int, default=2)
    parser.add_argument(
        "--control",
        action="store_true",
        help="nothing sealed and no key on the second server either: the ratio two identical setups give here",
    )
    args = parser.parse_args()

    key = base64.b64encode(os.urandom(32)).decode()
    database = Database()
    plain_dsn = database.start()
    servers: list[Server] = []
    try:
        sealed_dsn = asyncio.run(second_database(plain_dsn, "threadline_bench_sealed"))
        setups: dict[str, tuple[str, Caller, str, str]] = {}
        sealed_env = {"THREADLINE_MASTER_KEY": key}
        if args.no_plaintext_cache:
            sealed_env["THREADLINE_PLAINTEXT_CACHE_BYTES"] = "0"
        if args.control:
            sealed_env = {}
        for name, dsn, env in (
            ("plain", plain_dsn, {}),
            ("sealed", sealed_dsn, sealed_env),
        ):
            caller = create_tenant(dsn)
            server = Server(dsn, env={**UNTHROTTLED, **env})
            servers.append(server)
            with httpx.Client(base_url=server.url, headers=caller.headers, timeout=120) as client:
                conversation, root = start_conversation(client)
            seed_tree(dsn, caller, root, args.nodes)
            setups[name] = (server.url, caller, conversation, root)
        if not args.control:
            count = asyncio.run(seal_everything(sealed_dsn, setups["sealed"][1], key))
            print(f"sealed {count} messages of the second database")
        for dsn in (
            plain_dsn,
            sealed_dsn,
        ):  # the sealing UPDATE left dead rows behind: both tables alike again
            asyncio.run(vacuum(dsn))

        clients = {
            name: httpx.Client(base_url=url, headers=caller.headers, timeout=120)
            for name, (url, caller, _, _) in setups.items()
        }
        # Warm-up: each server loads its thread once (and unwraps its key once).
        for name, (_, _, conversation, root) in setups.items():
            timed(clients[name], TREE, {"r": root})
            timed(clients[name], PAGE, {"c": conversation})
        samples: dict[str, dict[str, list[float]]] = {
            n: {"tree": [], "page": [], "write": []} for n in setups
        }
        for _ in range(args.rounds):
            for name, (_, _, _, root) in setups.items():
                samples[name]["tree"].append(timed(clients[name], TREE, {"r": root}))
            for name, (_, _, conversation, _) in setups.items():
                for _ in range(5):
                    samples[name]["page"].append(timed(clients[name], PAGE, {"c": conversation}))
        for i in range(args.writes):
            for name, (_, _, _, root) in setups.items():
                text = f"reply {i}: the quick brown fox jumps over the lazy dog, again and again"
                samples[name]["write"].append(timed(clients[name], REPLY, {"p": root, "x": text}))
        for client in clients.values():
            client.close()
        imports: dict[str, list[float]] = {n: [] for n in setups}
        imported = 0
        if args.imports:
            from porting import write_export

            with tempfile.TemporaryDirectory() as workdir:
                path = os.path.join(workdir, "conversations.json")
                write_export(Path(path), args.imports, args.import_messages)
                for _ in range(args.import_rounds):
                    for name, dsn, env in (("plain", plain_dsn, {}), ("sealed", sealed_dsn, sealed_env)):
                        seconds, imported = import_seconds(dsn, path, env)
                        imports[name].append(seconds)

        load = os.getloadavg()
        print(
            f"load average during the run: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} ({os.cpu_count()} cores)"
        )
        cache = "off" if args.no_plaintext_cache else "on"
        print(f"plaintext cache of the sealed server: {cache}")
        print(f"{'measure':<34} {'plain ms':>10} {'sealed ms':>10} {'ratio':>7}")
        labels = {
            "tree": f"threadTree {args.nodes:,} nodes (median)",
            "page": "messages(first: 50) page (median)",
            "write": "messageReply write (median)",
        }
        for what, label in labels.items():
            plain = statistics.median(samples["plain"][what]) * 1000
            sealed = statistics.median(samples["sealed"][what]) * 1000
            print(f"{label:<34} {plain:>10.2f} {sealed:>10.2f} {sealed / plain:>6.2f}x")
        if args.imports:
            plain, sealed = min(imports["plain"]), min(imports["sealed"])
            label = f"import {imported:,} messages (s)"
            print(f"{label:<34} {plain:>10.2f} {sealed:>10.2f} {sealed / plain:>6.2f}x")
            print(f"  messages/s: plain {imported / plain:,.0f}, sealed {imported / sealed:,.0f}")
    finally:
        for server in servers:
            server.stop()
        database.stop()


if __name__ == "__main__":
    main()
