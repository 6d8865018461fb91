"""Load: 200 concurrent clients of mixed queries and mutations against one server process, vs a raw baseline.

    .venv/bin/python bench/load.py [--quick] [--seconds 60] [--clients 200] [--users 20]

One server process (bench/server.py, default settings; rate limits stay on and the load users get a
rate-limit profile with budgets the load cannot exhaust, assigned through the admin API), one tenant
with `--users` MEMBERs, each owning 200 bulk-loaded conversations plus 6 made through the API with 3
threads of 4 replies, 2 of which are shared with two other members (participantInvite + inviteAccept).

The clients run in 2 separate processes (half the clients each, asyncio, one keep-alive HTTP/1.1
connection per client on a minimal client so the client side spends little CPU), each a closed loop
over a weighted mix of queries and mutations for `--seconds`. Rounds, in this order:

  warm-up (app, then baseline) -> RSS before -> app round 1 -> RSS after, then after a settle + gc
  -> raw baseline round -> app round 2 -> RSS after, then after a settle + gc

The raw baseline is the same clients against a trivial Starlette endpoint in its own uvicorn process
(this file with --serve-baseline) that runs one asyncpg query (the caller's conversation page, owner
joined, 20 rows) on a pool of the app's size and returns it with orjson: transport + SQL + JSON only.
The server's memory is read through an extra route, /_bench/memory (gc.collect, then RSS, live objects,
asyncio tasks), added to bench/server.py's app when this file starts it with --serve-app.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
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

import httpx
import orjson
import psutil

from fixtures import (
    BENCH_DIR,
    Caller,
    Database,
    create_tenant,
    free_port,
    percentile_ms,
    seed_conversations,
    stop_process,
)

CONVERSATIONS_PER_USER_API = 6
THREADS_PER_CONVERSATION = 3
REPLIES_PER_THREAD = 4
BULK_CONVERSATIONS_PER_USER = 200
PROFILE_BUDGET = 100_000_000
# The operator's ceilings (THREADLINE_RATE_LIMIT_CEILING_*) must admit the load profile.
CEILINGS = {
    "THREADLINE_RATE_LIMIT_CEILING_REQUESTS": str(PROFILE_BUDGET),
    "THREADLINE_RATE_LIMIT_CEILING_MUTATIONS": str(PROFILE_BUDGET),
}

rng_vocab = random.Random(5)
VOCAB = sorted(
    {
        "".join(
            rng_vocab.choice(("ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "pe", "da", "qu", "zen"))
            for _ in range(rng_vocab.randint(2, 4))
        )
        for _ in range(600)
    }
)
VOCAB_WEIGHTS = [1 / (i + 1) for i in range(len(VOCAB))]  # Zipf-like: some words everywhere, most rare
TAGS = [f"tag{i}" for i in range(30)]

# kind -> (weight, GraphQL document)
MIX: dict[str, tuple[int, str]] = {
    "viewer": (10, "{ viewer { id email displayName role } }"),
    "conversations": (
        20,
        """{ conversations(first: 20) { edges { cursor node { id title tags status messageCount lastActivityAt
             owner { id email } participants { role user { id } } } } pageInfo { hasNextPage endCursor } } }""",
    ),
    "conversation": (
        12,
        """query($id: ID!) { conversation(id: $id) { id title tags messageCount lastActivityAt
             threads(first: 10) { edges { node { id replyCount lastActivityAt unreadCount
               root { id content createdAt author { id displayName } } } } pageInfo { hasNextPage } } } }""",
    ),
    "threadTree": (
        12,
        """query($r: ID!) { threadTree(rootId: $r) { totalCount root { id }
             nodes { id parentId depth role content childCount createdAt } } }""",
    ),
    "search": (
        8,
        """query($q: String!) { search(input: {query: $q, first: 20}) { edges { cursor node {
             score snippet matchedBy conversation { id title } message { id } } } pageInfo { hasNextPage } } }""",
    ),
    "tags": (5, "{ tags { tag count } }"),
    "messageReply": (
        12,
        """mutation($p: ID!, $c: String!) { messageReply(parentId: $p, input: {content: $c}) {
             id rootId depth createdAt } }""",
    ),
    "threadStart": (
        5,
        """mutation($c: ID!, $m: String!) { threadStart(conversationId: $c, input: {content: $m}) {
             id rootId createdAt } }""",
    ),
    "conversationCreate": (
        4,
        """mutation($t: String!, $tags: [String!]) { conversationCreate(input: {title: $t, tags: $tags}) {
             id title tags } }""",
    ),
    "conversationUpdate": (
        6,
        """mutation($id: ID!, $tags: [String!]) { conversationUpdate(id: $id, input: {tags: $tags}) {
             id tags updatedAt } }""",
    ),
    "threadMarkRead": (6, "mutation($r: ID!) { threadMarkRead(rootId: $r) { id unreadCount } }"),
}
KINDS = list(MIX)
WEIGHTS = [MIX[k][0] for k in KINDS]
BASELINE_KIND = "raw page"


def words(rng: random.Random, count: int) -> str:
    return " ".join(rng.choices(VOCAB, weights=VOCAB_WEIGHTS, k=count))


# ---------------------------------------------------------------------------------------------------
# Servers: the app (bench/server.py plus a memory route) and the raw baseline, each in its own process


def serve_app(port: int) -> None:
    """bench/server.py, with /_bench/memory added to its app before uvicorn starts."""
    import gc
    import threading

    import server
    import uvicorn
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def memory(request: Request) -> JSONResponse:
        collected = gc.collect()
        me = psutil.Process()
        return JSONResponse(
            {
                "rss": me.memory_info().rss,
                "objects": len(gc.get_objects()),
                "tasks": len(asyncio.all_tasks()),
                "threads": threading.active_count(),
                "fds": me.num_fds(),
                "collected": collected,
            }
        )

    run = uvicorn.run

    def run_with_memory_route(app: Any, **kwargs: Any) -> None:
        app.router.routes.append(Route("/_bench/memory", memory))
        run(app, **kwargs)

    uvicorn.run = run_with_memory_route  # type: ignore[assignment]
    sys.argv = [str(BENCH_DIR / "server.py"), "--port", str(port)]
    server.main()


BASELINE_SQL = """
SELECT c.id, c.title, c.tags, c.status, c.message_count, c.last_activity_at, c.owner_id, u.email
FROM conversation c
JOIN participant p ON p.conversation_id = c.id AND p.tenant_id = c.tenant_id AND p.user_id = $2
LEFT JOIN app_user u ON u.id = c.owner_id AND u.tenant_id = c.tenant_id
WHERE c.tenant_id = $1 AND c.status = 'ACTIVE'
ORDER BY c.last_activity_at DESC, c.id DESC
LIMIT 21"""


def serve_baseline(port: int) -> None:
    """POST /page: the caller's first 20 conversations (one asyncpg query) as orjson; nothing else."""
    import contextlib
    from collections.abc import AsyncIterator

    import asyncpg
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from threadline.ids import Kind, encode_id
    from threadline.settings import Settings

    settings = Settings.from_env()
    pools: list[asyncpg.Pool] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        pools.append(
            await asyncpg.create_pool(
                os.environ["DATABASE_URL"], min_size=settings.db_pool_min, max_size=settings.db_pool_max
            )
        )
        yield
        await pools[0].close()

    async def page(request: Request) -> Response:
        await request.body()
        tenant_id = uuid.UUID(request.headers["x-tenant-id"])
        user_id = uuid.UUID(request.headers["x-user-id"])
        async with pools[0].acquire() as conn:
            rows = await conn.fetch(BASELINE_SQL, tenant_id, user_id)
        edges = [
            {
                "node": {
                    "id": encode_id(Kind.CONVERSATION, r["id"]),
                    "title": r["title"],
                    "tags": r["tags"],
                    "status": r["status"],
                    "messageCount": r["message_count"],
                    "lastActivityAt": r["last_activity_at"],
                    "owner": {"id": encode_id(Kind.USER, r["owner_id"]), "email": r["email"]},
                }
            }
            for r in rows[:20]
        ]
        body = {"data": {"conversations": {"edges": edges, "pageInfo": {"hasNextPage": len(rows) > 20}}}}
        return Response(orjson.dumps(body), media_type="application/json")

    async def readyz(request: Request) -> Response:
        return Response(b"ok")

    app = Starlette(
        routes=[Route("/page", page, methods=["POST"]), Route("/readyz", readyz)], lifespan=lifespan
    )
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


class ServerProcess:
    """This file in `--serve-app` or `--serve-baseline` mode, in a child process on 127.0.0.1."""

    def __init__(self, dsn: str, mode: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "DATABASE_URL": dsn, "THREADLINE_MIGRATE_ON_START": "0", **CEILINGS}
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), f"--serve-{mode}", "--port", str(self.port)],
            env=env,
        )
        self.ps = psutil.Process(self.process.pid)
        deadline = time.monotonic() + 60
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"{mode} server exited during start-up")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{mode} server did not become ready")
            time.sleep(0.05)

    def sql_statements(self) -> int | None:
        try:
            return int(httpx.get(f"{self.url}/_bench/sql-statements", timeout=30).json()["count"])
        except (httpx.HTTPError, ValueError):
            return None  # the baseline has no such route

    def memory(self) -> dict[str, int]:
        """After a gc.collect() in the server: rss, objects, tasks, threads, fds."""
        return dict(httpx.get(f"{self.url}/_bench/memory", timeout=30).json())

    def processes(self) -> list[psutil.Process]:
        """The server's processes (with --workers: the parent and every worker)."""
        return [self.ps, *self.ps.children(recursive=True)]

    def rss(self) -> int:
        return sum(p.memory_info().rss for p in self.processes())

    def stop(self) -> None:
        stop_process(self.process)


class WorkersProcess(ServerProcess):
    """`threadline serve --workers N` on the bench database: no /_bench routes (SQL counts and the in-process
    memory figures are not measured), RSS summed over its processes."""

    def __init__(self, dsn: str, workers: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "DATABASE_URL": dsn,
            "THREADLINE_MIGRATE_ON_START": "0",
            "THREADLINE_WORKERS": "1",
            "THREADLINE_LOG_LEVEL": "warning",  # no access log line per request, as bench/server.py
            **CEILINGS,
        }
        command = [str(Path(sys.executable).parent / "threadline"), "serve", "--port", str(self.port)]
        self.process = subprocess.Popen([*command, "--workers", str(workers)], env=env)
        self.ps = psutil.Process(self.process.pid)
        deadline = time.monotonic() + 60
        while True:
            if self.process.poll() is not None:
                raise RuntimeError("threadline serve exited during start-up")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("threadline serve did not become ready")
            time.sleep(0.05)

    def memory(self) -> dict[str, int]:
        return {"rss": self.rss(), "objects": 0, "tasks": 0, "threads": 0, "fds": 0, "collected": 0}


# ---------------------------------------------------------------------------------------------------
# Seeding, through the API (and COPY for the bulk of the conversation lists)


@dataclass
class LoadUser:
    """What one load user's clients start from: its credentials and the ids it may use."""

    tenant_id: str
    user_id: str  # global id
    raw_user_id: str  # uuid, for the baseline
    api_key: str
    own: list[str] = field(default_factory=list)  # conversations it owns (conversationUpdate)
    conversations: list[str] = field(default_factory=list)  # own + shared with it
    roots: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)


async def gql(
    client: httpx.AsyncClient, query: str, variables: dict[str, Any] | None = None
) -> dict[str, Any]:
    response = await client.post("/graphql", json={"query": query, "variables": variables or {}})
    body: dict[str, Any] = response.json()
    if body.get("errors"):
        raise RuntimeError(f"seeding failed: {body['errors']}")
    data: dict[str, Any] = body["data"]
    return data


async def seed_api(url: str, admin: Caller, count: int) -> tuple[list[LoadUser], str]:
    from threadline.ids import Kind, decode_id

    users: list[LoadUser] = []
    async with httpx.AsyncClient(base_url=url, headers=admin.headers, timeout=60) as client:
        profile = (
            await gql(
                client,
                """mutation($i: RateLimitProfileCreateInput!) { rateLimitProfileCreate(input: $i) {
                     id requestsPerWindow mutationsPerWindow windowSeconds } }""",
                {
                    "i": {
                        "name": "bench-load",
                        "windowSeconds": 60,
                        "requestsPerWindow": PROFILE_BUDGET,
                        "mutationsPerWindow": PROFILE_BUDGET,
                    }
                },
            )
        )["rateLimitProfileCreate"]
        for i in range(count):
            user_id = (
                await gql(
                    client,
                    "mutation($i: UserCreateInput!) { userCreate(input: $i) { id } }",
                    {"i": {"email": f"load{i}@example.com", "displayName": f"Load {i}", "role": "MEMBER"}},
                )
            )["userCreate"]["id"]
            secret = (
                await gql(
                    client,
                    'mutation($u: ID!) { apiKeyCreate(userId: $u, name: "load") { secret } }',
                    {"u": user_id},
                )
            )["apiKeyCreate"]["secret"]
            effective = (
                await gql(
                    client,
                    """mutation($u: ID!, $p: ID) { rateLimitProfileAssign(userId: $u, profileId: $p) {
                         profile { name } requestsPerWindow mutationsPerWindow } }""",
                    {"u": user_id, "p": profile["id"]},
                )
            )["rateLimitProfileAssign"]
            assert effective["requestsPerWindow"] == PROFILE_BUDGET, effective
            users.append(LoadUser(str(admin.tenant_id), user_id, str(decode_id(user_id, Kind.USER)), secret))

    async def fill(user: LoadUser, seed: int) -> None:
        rng = random.Random(seed)
        async with httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {user.api_key}"}, timeout=60
        ) as client:
            for _ in range(CONVERSATIONS_PER_USER_API):
                conversation = (
                    await gql(
                        client,
                        "mutation($t: String!, $g: [String!]) { conversationCreate(input: {title: $t, tags: $g}) { id } }",
                        {"t": words(rng, 5), "g": rng.sample(TAGS, 3)},
                    )
                )["conversationCreate"]["id"]
                user.own.append(conversation)
                user.conversations.append(conversation)
                for _ in range(THREADS_PER_CONVERSATION):
                    root = (
                        await gql(
                            client,
                            "mutation($c: ID!, $m: String!) { threadStart(conversationId: $c, input: {content: $m}) { id } }",
                            {"c": conversation, "m": words(rng, 30)},
                        )
                    )["threadStart"]["id"]
                    user.roots.append(root)
                    user.messages.append(root)
                    thread = [root]
                    for _ in range(REPLIES_PER_THREAD):
                        reply = (
                            await gql(
                                client,
                                "mutation($p: ID!, $m: String!) { messageReply(parentId: $p, input: {content: $m}) { id } }",
                                {"p": rng.choice(thread), "m": words(rng, 30)},
                            )
                        )["messageReply"]["id"]
                        thread.append(reply)
                        user.messages.append(reply)

    await asyncio.gather(*(fill(user, n) for n, user in enumerate(users)))

    # Share each user's first 2 conversations with two other members.
    for n, owner in enumerate(users):
        for conversation, guest in zip(
            owner.own[:2], (users[(n + 1) % count], users[(n + 7) % count]), strict=True
        ):
            if guest is owner:
                continue
            async with httpx.AsyncClient(base_url=url, timeout=60) as client:
                client.headers["Authorization"] = f"Bearer {owner.api_key}"
                invite = (
                    await gql(
                        client,
                        "mutation($c: ID!, $u: ID!) { participantInvite(conversationId: $c, userId: $u) { id } }",
                        {"c": conversation, "u": guest.user_id},
                    )
                )["participantInvite"]["id"]
                client.headers["Authorization"] = f"Bearer {guest.api_key}"
                await gql(client, "mutation($i: ID!) { inviteAccept(id: $i) { id role } }", {"i": invite})
                tree = (
                    await gql(
                        client,
                        "query($c: ID!) { conversation(id: $c) { threads(first: 10) { nodes { root { id } } } } }",
                        {"c": conversation},
                    )
                )["conversation"]["threads"]["nodes"]
            guest.conversations.append(conversation)
            for thread in tree:
                guest.roots.append(thread["root"]["id"])
                guest.messages.append(thread["root"]["id"])
    return users, profile["id"]


# ---------------------------------------------------------------------------------------------------
# Clients


class HttpConnection:
    """One keep-alive HTTP/1.1 connection: POST a body, read the status, headers and body."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes, headers: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        self.writer.write(
            b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s"
            % (path.encode(), len(body), headers, body)
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        fields: dict[bytes, bytes] = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(b":")
                fields[name.strip().lower()] = value.strip()
        if b"content-length" in fields:
            content = await self.reader.readexactly(int(fields[b"content-length"]))
        elif fields.get(b"transfer-encoding", b"").lower() == b"chunked":
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                parts.append(await self.reader.readexactly(size + 2))
                if size == 0:
                    break
            content = b"".join(p[:-2] for p in parts)
        else:
            content = await self.reader.read()
            self.close()
        if fields.get(b"connection", b"").lower() == b"close":
            self.close()
        return status, fields, content

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


@dataclass
class ClientReport:
    """One client process's round: latencies and failures per kind, what went wrong, when it ran."""

    latencies: dict[str, list[float]]
    errors: dict[str, Counter[str]]
    internal: list[str]
    started: float
    finished: float
    cpu_seconds: float


def build(kind: str, user: LoadUser, rng: random.Random) -> dict[str, Any]:
    if kind == "conversation":
        return {"id": rng.choice(user.conversations)}
    if kind in ("threadTree", "threadMarkRead"):
        return {"r": rng.choice(user.roots)}
    if kind == "search":
        return {"q": words(rng, 1 if rng.random() < 0.7 else 2)}
    if kind == "messageReply":
        return {"p": rng.choice(user.messages), "c": words(rng, 30)}
    if kind == "threadStart":
        return {"c": rng.choice(user.conversations), "m": words(rng, 30)}
    if kind == "conversationCreate":
        return {"t": words(rng, 5), "tags": rng.sample(TAGS, 3)}
    if kind == "conversationUpdate":
        return {"id": rng.choice(user.own), "tags": rng.sample(TAGS, rng.randint(1, 4))}
    return {}


def remember(kind: str, user: LoadUser, data: dict[str, Any]) -> None:
    """New ids go into the pools later requests of this user (in this process) draw from."""
    if kind == "messageReply":
        user.messages.append(data["messageReply"]["id"])
    elif kind == "threadStart":
        user.roots.append(data["threadStart"]["id"])
        user.messages.append(data["threadStart"]["id"])
    elif kind == "conversationCreate":
        user.own.append(data["conversationCreate"]["id"])
        user.conversations.append(data["conversationCreate"]["id"])


async def run_clients(
    port: int,
    mode: str,
    users: list[LoadUser],
    first: int,
    clients: int,
    seconds: float,
    seed: int,
    ready: Any,
    go: Any,
) -> ClientReport:
    latencies: dict[str, list[float]] = {}
    errors: dict[str, Counter[str]] = {}
    internal: list[str] = []
    connections = [HttpConnection(port) for _ in range(clients)]
    for connection in connections:  # connect before the clock starts
        connection.reader, connection.writer = await asyncio.open_connection("127.0.0.1", port)
    ready.set()
    await asyncio.get_running_loop().run_in_executor(None, go.wait)
    started = time.time()
    deadline = time.monotonic() + seconds
    cpu = time.process_time()

    async def client(n: int) -> None:
        rng = random.Random(seed * 100_000 + n)
        user = users[(first + n) % len(users)]
        connection = connections[n]
        if mode == "baseline":
            headers = b"X-Tenant-Id: %s\r\nX-User-Id: %s\r\n" % (
                user.tenant_id.encode(),
                user.raw_user_id.encode(),
            )
        else:
            headers = b"Authorization: Bearer %s\r\n" % user.api_key.encode()
        while time.monotonic() < deadline:
            if mode == "baseline":
                kind, path, variables, body = BASELINE_KIND, "/page", {}, b"{}"
            else:
                kind = rng.choices(KINDS, WEIGHTS)[0]
                variables = build(kind, user, rng)
                path, body = "/graphql", orjson.dumps({"query": MIX[kind][1], "variables": variables})
            start = time.perf_counter()
            try:
                status, fields, content = await asyncio.wait_for(connection.post(path, body, headers), 60)
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError) as exc:
                connection.close()
                latencies.setdefault(kind, []).append(time.perf_counter() - start)
                errors.setdefault(kind, Counter())[f"transport {type(exc).__name__}"] += 1
                continue
            latencies.setdefault(kind, []).append(time.perf_counter() - start)
            codes: list[str] = []
            parsed: dict[str, Any] = {}
            try:
                parsed = orjson.loads(content)
            except orjson.JSONDecodeError:
                codes.append("unparseable body")
            for error in parsed.get("errors") or ():
                codes.append(str((error.get("extensions") or {}).get("code", "no code")))
            if status != 200:
                codes.append(f"HTTP {status}")
            for code in codes:
                errors.setdefault(kind, Counter())[code] += 1
            if any(c == "INTERNAL" or c.startswith("HTTP 5") for c in codes) and len(internal) < 10:
                internal.append(
                    f"{kind} {variables} -> HTTP {status}, request id {fields.get(b'x-request-id', b'?').decode()}:"
                    f" {content[:300].decode(errors='replace')}"
                )
            if not codes and mode == "app":
                remember(kind, user, parsed["data"])

    await asyncio.gather(*(client(n) for n in range(clients)))
    for connection in connections:
        connection.close()
    return ClientReport(latencies, errors, internal, started, time.time(), time.process_time() - cpu)


def client_process(
    port: int,
    mode: str,
    users: list[LoadUser],
    first: int,
    clients: int,
    seconds: float,
    seed: int,
    ready: Any,
    go: Any,
    results: Any,
) -> None:
    import uvloop

    report = uvloop.run(run_clients(port, mode, users, first, clients, seconds, seed, ready, go))
    results.put(report)


@dataclass
class Round:
    name: str
    seconds: float
    latencies: dict[str, list[float]]
    errors: dict[str, Counter[str]]
    internal: list[str]
    server_cpu: float  # seconds of CPU the server process used during the round
    postgres_cpu: float
    client_cpu: float
    machine_cpu: float  # percent of all cores, whole machine (other engineers' work included)
    sql_statements: int | None  # sent by the server for requests during the round (app only)

    def all_latencies(self) -> list[float]:
        return [x for samples in self.latencies.values() for x in samples]

    def requests(self) -> int:
        return sum(len(samples) for samples in self.latencies.values())

    def error_codes(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for counts in self.errors.values():
            total.update(counts)
        return total


def postgres_processes(database: Database) -> list[psutil.Process]:
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or ())
        if "postgres" in cmdline and str(database.tmp) in cmdline:
            return [proc, *proc.children(recursive=True)]
    return []


def cpu_seconds(processes: list[psutil.Process]) -> float:
    total = 0.0
    for proc in processes:
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def load_round(
    name: str,
    server: ServerProcess,
    database: Database,
    mode: str,
    users: list[LoadUser],
    clients: int,
    seconds: float,
    seed: int,
) -> Round:
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    go = ctx.Event()
    halves = (clients // 2, clients - clients // 2)
    readies = [ctx.Event() for _ in halves]
    processes = [
        ctx.Process(
            target=client_process,
            args=(
                server.port,
                mode,
                users,
                sum(halves[:i]),
                count,
                seconds,
                seed * 10 + i,
                readies[i],
                go,
                results,
            ),
        )
        for i, count in enumerate(halves)
    ]
    for process in processes:
        process.start()
    for ready in readies:
        if not ready.wait(120):
            raise RuntimeError("client processes did not start")
    postgres = postgres_processes(database)
    statements_before = server.sql_statements()
    server_before, postgres_before = cpu_seconds(server.processes()), cpu_seconds(postgres)
    psutil.cpu_percent()
    go.set()
    reports: list[ClientReport] = [results.get() for _ in processes]
    machine = psutil.cpu_percent()
    server_cpu = cpu_seconds(server.processes()) - server_before
    postgres_cpu = cpu_seconds(postgres_processes(database)) - postgres_before
    statements_after = server.sql_statements()
    statements = (
        None
        if statements_before is None or statements_after is None
        else statements_after - statements_before
    )
    for process in processes:
        process.join()
    latencies: dict[str, list[float]] = {}
    errors: dict[str, Counter[str]] = {}
    for report in reports:
        for kind, samples in report.latencies.items():
            latencies.setdefault(kind, []).extend(samples)
        for kind, counts in report.errors.items():
            errors.setdefault(kind, Counter()).update(counts)
    elapsed = max(r.finished for r in reports) - min(r.started for r in reports)
    return Round(
        name,
        elapsed,
        latencies,
        errors,
        [line for r in reports for line in r.internal],
        server_cpu,
        postgres_cpu,
        sum(r.cpu_seconds for r in reports),
        machine,
        statements,
    )


# ---------------------------------------------------------------------------------------------------
# Report


def print_round(result: Round, baseline: Round | None) -> None:
    base_p50 = percentile_ms(baseline.all_latencies(), 0.5) if baseline else None
    print(
        f"\n{result.name}: {result.requests()} requests in {result.seconds:.1f} s = "
        f"{result.requests() / result.seconds:.1f} req/s"
    )
    print(
        f"  CPU during the round: server process {result.server_cpu / result.seconds * 100:.0f}% of a core,"
        f" its PostgreSQL {result.postgres_cpu / result.seconds * 100:.0f}%, client processes"
        f" {result.client_cpu / result.seconds * 100:.0f}%; machine {result.machine_cpu:.0f}% of all cores"
    )
    per_request = (
        f"  per request: server CPU {result.server_cpu / result.requests() * 1000:.2f} ms,"
        f" PostgreSQL CPU {result.postgres_cpu / result.requests() * 1000:.2f} ms"
    )
    if result.sql_statements is not None:
        per_request += f", SQL statements {result.sql_statements / result.requests():.1f}"
    print(per_request)
    header = (
        f"  {'kind':20} {'count':>7} {'req/s':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8}"
    )
    print(header + ("  p50/raw" if base_p50 else "") + "  errors")
    rows = [k for k in [*KINDS, BASELINE_KIND] if k in result.latencies] + ["all"]
    for kind in rows:
        samples = result.all_latencies() if kind == "all" else result.latencies[kind]
        counts = result.error_codes() if kind == "all" else result.errors.get(kind, Counter())
        p50 = percentile_ms(samples, 0.5)
        line = (
            f"  {kind:20} {len(samples):>7} {len(samples) / result.seconds:>7.1f} {p50:>8.1f}"
            f" {percentile_ms(samples, 0.95):>8.1f} {percentile_ms(samples, 0.99):>8.1f} {max(samples) * 1000:>8.1f}"
        )
        if base_p50:
            line += f" {p50 / base_p50:>8.1f}"
        line += "  " + (", ".join(f"{code} {n}" for code, n in counts.most_common()) or "0")
        print(line)
    if result.internal:
        print(f"  !!! INTERNAL errors or 5xx responses in {result.name} (first {len(result.internal)}):")
        for sample in result.internal:
            print(f"  !!!   {sample}")


def mb(value: int) -> str:
    return f"{value / 2**20:.1f} MB"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--quick", action="store_true", help="20 clients for 10 s (a smoke test of the bench)"
    )
    parser.add_argument("--seconds", type=float, default=None, help="length of each load round (default 60)")
    parser.add_argument("--clients", type=int, default=None, help="concurrent clients (default 200)")
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--settle", type=float, default=None, help="idle seconds before the settled RSS (10)")
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="the app is `threadline serve --workers N` (0: bench/server.py)",
    )
    parser.add_argument("--serve-app", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--serve-baseline", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_app:
        return serve_app(args.port)
    if args.serve_baseline:
        return serve_baseline(args.port)
    seconds = args.seconds or (10.0 if args.quick else 60.0)
    clients = args.clients or (20 if args.quick else 200)
    settle = args.settle if args.settle is not None else (3.0 if args.quick else 10.0)
    warm = 3.0 if args.quick else 10.0

    database = Database()
    dsn = database.start()
    app: ServerProcess = WorkersProcess(dsn, args.workers) if args.workers else ServerProcess(dsn, "app")
    baseline = ServerProcess(dsn, "baseline")
    try:
        admin = create_tenant(dsn)
        seeding = time.perf_counter()
        users, _ = asyncio.run(seed_api(app.url, admin, args.users))
        from threadline.ids import Kind, decode_id

        for n, user in enumerate(users):
            seed_conversations(
                dsn,
                admin.tenant_id,
                decode_id(user.user_id, Kind.USER),
                BULK_CONVERSATIONS_PER_USER,
                seed=100 + n,
            )
        print(
            f"seeded in {time.perf_counter() - seeding:.1f} s: 1 tenant, {len(users)} MEMBERs, each owning"
            f" {BULK_CONVERSATIONS_PER_USER} bulk conversations + {CONVERSATIONS_PER_USER_API} via the API with"
            f" {THREADS_PER_CONVERSATION} threads x {REPLIES_PER_THREAD} replies, 2 shared with 2 other members"
        )
        print(
            "rate limits: on (server defaults); the load users are assigned profile 'bench-load'"
            f" ({PROFILE_BUDGET:,} requests and mutations per 60 s) via rateLimitProfileCreate/Assign"
        )
        print(
            f"load: {clients} clients in 2 client processes, closed loop, {seconds:.0f} s per round;"
            f" mix (weights): {', '.join(f'{k} {w}' for k, w in zip(KINDS, WEIGHTS, strict=True))}"
        )
        print(
            (
                f"server: threadline serve --workers {args.workers} (pool max 20 split among them), pid {app.process.pid};"
                if args.workers
                else f"server: one process (bench/server.py, uvicorn, pool max 20), pid {app.process.pid};"
            )
            + f" load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} cores",
            flush=True,
        )

        load_round("warm-up app", app, database, "app", users, clients, warm, 1)
        load_round("warm-up baseline", baseline, database, "baseline", users, clients, warm / 2, 2)
        time.sleep(settle)
        memory = {"before (after warm-up, gc)": app.memory()}
        first = load_round("app round 1", app, database, "app", users, clients, seconds, 3)
        memory["right after round 1"] = {"rss": app.rss()}
        time.sleep(settle)
        memory[f"round 1 + {settle:.0f} s idle + gc"] = app.memory()
        raw = load_round("raw baseline", baseline, database, "baseline", users, clients, seconds, 4)
        second = load_round("app round 2", app, database, "app", users, clients, seconds, 5)
        memory["right after round 2"] = {"rss": app.rss()}
        time.sleep(settle)
        memory[f"round 2 + {settle:.0f} s idle + gc"] = app.memory()

        for result in (first, raw, second):
            print_round(result, None if result is raw else raw)

        print("\nratios to the raw baseline (same clients, one asyncpg conversation-page query + orjson):")
        raw_all = raw.all_latencies()
        for result in (first, second):
            samples = result.all_latencies()
            page = result.latencies.get("conversations", [])
            print(
                f"  {result.name}: throughput raw/app {raw.requests() / raw.seconds / (result.requests() / result.seconds):.1f}x;"
                f" p50 app/raw {percentile_ms(samples, 0.5) / percentile_ms(raw_all, 0.5):.1f}x;"
                f" p99 app/raw {percentile_ms(samples, 0.99) / percentile_ms(raw_all, 0.99):.1f}x;"
                f" conversations(first: 20) p50 / raw page p50 "
                f"{percentile_ms(page, 0.5) / percentile_ms(raw_all, 0.5):.1f}x;"
                f" server CPU per request app/raw "
                f"{result.server_cpu / result.requests() / (raw.server_cpu / raw.requests()):.1f}x"
            )

        print("\nserver process memory:")
        for label, figures in memory.items():
            extra = ""
            if "objects" in figures:
                extra = (
                    f"  objects {figures['objects']:,}, asyncio tasks {figures['tasks']},"
                    f" threads {figures['threads']}, fds {figures['fds']}"
                )
            print(f"  {label:32} RSS {mb(figures['rss']):>9}{extra}")
        values = list(memory.values())
        print(
            f"  growth round 1 -> round 2 (settled, gc): {mb(values[4]['rss'] - values[2]['rss'])} RSS,"
            f" {values[4]['objects'] - values[2]['objects']:+,} objects, {values[4]['tasks'] - values[2]['tasks']:+}"
            f" tasks; over both rounds from before: {mb(values[4]['rss'] - values[0]['rss'])}"
        )
        problems = sum(
            n
            for r in (first, second)
            for code, n in r.error_codes().items()
            if code == "INTERNAL" or code.startswith("HTTP 5") or code.startswith("transport")
        )
        if problems:
            print(f"\n!!! {problems} INTERNAL / 5xx / transport failures under load: see the samples above")
        print(f"\nload average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        baseline.stop()
        app.stop()
        database.stop()


if __name__ == "__main__":
    main()
