"""What the benchmarks share: a fresh embedded PostgreSQL, a real server in a child process, bulk seeding.

The server runs in its own process (bench/server.py) so the client's work never shares a CPU
time slice or the GIL with the work being measured. Data is seeded with COPY, straight into the
tables, with the same encodings the application writes (ordered `path` bytes, counters).
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from threadline.threads.paths import encode_rank

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def median_ms(samples: Sequence[float]) -> float:
    return statistics.median(samples) * 1000


def percentile_ms(samples: Sequence[float], q: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index] * 1000


class Database:
    """A private embedded PostgreSQL with a migrated `threadline_bench` database; removed on stop."""

    def __init__(self, *, commit_timestamps: bool = False) -> None:
        # commit_timestamps: PostgreSQL records when each transaction committed (track_commit_timestamp),
        # so a bench can measure from the commit, via pg_xact_commit_timestamp(xmin).
        self.commit_timestamps = commit_timestamps
        self.tmp = Path(tempfile.mkdtemp(prefix="tl-bench-"))
        os.chmod(self.tmp, 0o755)
        self._embedded: Any = None
        self.dsn = ""

    def start(self) -> str:
        from threadline.db.embedded import EmbeddedPostgres
        from threadline.db.migrate import apply_migrations

        self._embedded = EmbeddedPostgres(self.tmp)
        admin_dsn = self._embedded.start()
        if self.commit_timestamps:  # takes effect at a restart

            async def track() -> None:
                conn = await asyncpg.connect(admin_dsn)
                try:
                    await conn.execute("ALTER SYSTEM SET track_commit_timestamp = on")
                finally:
                    await conn.close()

            asyncio.run(track())
            self._embedded.stop()
            self._embedded = EmbeddedPostgres(self.tmp)
            admin_dsn = self._embedded.start()

        async def create() -> str:
            conn = await asyncpg.connect(admin_dsn)
            try:
                await conn.execute('DROP DATABASE IF EXISTS "threadline_bench" WITH (FORCE)')
                await conn.execute('CREATE DATABASE "threadline_bench"')
            finally:
                await conn.close()
            base, sep, query = admin_dsn.partition("?")
            dsn = f"{base.rpartition('/')[0]}/threadline_bench{sep}{query}"
            await apply_migrations(dsn)
            return dsn

        self.dsn = asyncio.run(create())
        return self.dsn

    def stop(self) -> None:
        if self._embedded is not None:
            self._embedded.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


class Server:
    """`bench/server.py` (the real app under uvicorn) in a child process on 127.0.0.1."""

    def __init__(
        self,
        dsn: str,
        *,
        executor: str = "fast",
        env: dict[str, str] | None = None,
        python: str | None = None,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "DATABASE_URL": dsn,
            "THREADLINE_MIGRATE_ON_START": "0",
            "THREADLINE_METRICS_TOKEN": BENCH_METRICS_TOKEN,
            **(env or {}),
        }
        self.process = subprocess.Popen(
            [
                python or sys.executable,
                str(BENCH_DIR / "server.py"),
                "--port",
                str(self.port),
                "--executor",
                executor,
            ],
            env=env,
        )
        deadline = time.monotonic() + 60
        while True:
            if self.process.poll() is not None:
                raise RuntimeError("bench server exited during start-up")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("bench server did not become ready")
            time.sleep(0.05)

    def sql_statements(self) -> int:
        """The server process's `threadline.db.sql_statement_count()`."""
        return int(httpx.get(f"{self.url}/_bench/sql-statements", timeout=10).json()["count"])

    def stop(self) -> None:
        stop_process(self.process)


def stop_process(process: subprocess.Popen[Any]) -> None:
    """Ctrl-C a server process (a graceful shutdown), killing it if it has not ended within 20 s."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# /metrics needs a bearer token (THREADLINE_METRICS_TOKEN); the benches read it.
BENCH_METRICS_TOKEN = "bench-metrics-token"
METRICS_HEADERS = {"Authorization": f"Bearer {BENCH_METRICS_TOKEN}"}

# Benches where one user writes (and subscribes) far beyond the default per-minute budgets.
UNTHROTTLED = {
    "THREADLINE_RATE_LIMIT_MUTATIONS": "10000000",
    "THREADLINE_RATE_LIMIT_REQUESTS": "10000000",
    "THREADLINE_RATE_LIMIT_SUBSCRIPTIONS": "10000000",
}


@dataclass
class Caller:
    tenant_id: uuid.UUID
    user_id: uuid.UUID
    api_key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}


def create_tenant(dsn: str) -> Caller:
    """A tenant and its admin, through the service the CLI uses."""
    from threadline.auth.service import create_tenant as create
    from threadline.db import Database as Pool

    async def work() -> Caller:
        db = await Pool.connect(dsn, 1, 1)
        try:
            made = await create(
                db, f"bench-{uuid.uuid4().hex[:6]}", f"admin-{uuid.uuid4().hex[:6]}@example.com"
            )
        finally:
            await db.close()
        return Caller(made.tenant_id, made.user_id, made.api_key)

    return asyncio.run(work())


def graphql(client: httpx.Client, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    response = client.post("/graphql", json={"query": query, "variables": variables or {}})
    body: dict[str, Any] = response.json()
    if body.get("errors"):
        raise RuntimeError(f"GraphQL errors: {body['errors']}")
    data: dict[str, Any] = body["data"]
    return data


def start_conversation(client: httpx.Client) -> tuple[str, str]:
    """A new conversation and a thread root in it, through the API: (conversation id, root id)."""
    conversation = graphql(client, 'mutation { conversationCreate(input: {title: "bench"}) { id } }')[
        "conversationCreate"
    ]["id"]
    root = graphql(
        client,
        'mutation($c: ID!) { threadStart(conversationId: $c, input: {content: "root"}) { id } }',
        {"c": conversation},
    )["threadStart"]["id"]
    return conversation, root


def random_content(rng: random.Random, size: int = 200) -> str:
    words = []
    length = 0
    while length < size:
        word = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9)))
        words.append(word)
        length += len(word) + 1
    return " ".join(words)[:size]


def seed_tree(dsn: str, caller: Caller, root_public_id: str, nodes: int, seed: int = 7) -> None:
    """Grow the thread under `root_public_id` to `nodes` messages: a random recursive tree.

    Each new message replies to a uniformly chosen earlier one (depth grows like ln n; ~9 at
    10,000), with ~200-byte contents. Rows go in with COPY; child counts, the thread's reply
    count and the conversation's message count are set as the application would leave them.
    """
    from threadline.ids import Kind, decode_id

    root_id = decode_id(root_public_id, Kind.MESSAGE)
    rng = random.Random(seed)

    async def work() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            root = await conn.fetchrow(
                "SELECT conversation_id, created_at FROM message WHERE id = $1", root_id
            )
            assert root is not None
            conversation_id = root["conversation_id"]
            ids = [root_id]
            paths = [b""]
            depths = [0]
            children = [0]
            records = []
            start = root["created_at"]
            for i in range(1, nodes):
                parent = rng.randrange(i)
                message_id = uuid.uuid4()
                path = paths[parent] + encode_rank(children[parent])
                children[parent] += 1
                ids.append(message_id)
                paths.append(path)
                depths.append(depths[parent] + 1)
                children.append(0)
                records.append(
                    (
                        message_id,
                        caller.tenant_id,
                        conversation_id,
                        root_id,
                        ids[parent],
                        depths[parent] + 1,
                        path,
                        "ASSISTANT" if i % 2 else "USER",
                        random_content(rng),
                        caller.user_id,
                        start + timedelta(milliseconds=i),
                    )
                )
            await conn.copy_records_to_table(
                "message",
                records=records,
                columns=[
                    "id",
                    "tenant_id",
                    "conversation_id",
                    "root_id",
                    "parent_id",
                    "depth",
                    "path",
                    "role",
                    "content",
                    "author_id",
                    "created_at",
                ],
            )
            await conn.execute(
                """UPDATE message m SET child_count = k.n
                   FROM unnest($1::uuid[], $2::int[]) AS k(id, n) WHERE m.id = k.id AND k.n > 0""",
                ids,
                children,
            )
            await conn.execute(
                """UPDATE thread SET reply_count = $2,
                       last_seq = (SELECT max(seq) FROM message WHERE root_id = $1) WHERE id = $1""",
                root_id,
                nodes - 1,
            )
            await conn.execute(
                "UPDATE conversation SET message_count = message_count + $2 WHERE id = $1",
                conversation_id,
                nodes - 1,
            )
            await conn.execute("ANALYZE message")
        finally:
            await conn.close()

    asyncio.run(work())


def seed_conversations(
    dsn: str, tenant_id: uuid.UUID, user_id: uuid.UUID, count: int, seed: int = 11
) -> None:
    """`count` conversations owned by `user_id` (OWNER participant rows), spread over 30 days of activity."""
    rng = random.Random(seed)

    async def work() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            now = datetime.now(UTC)
            conversations = []
            participants = []
            for i in range(count):
                conversation_id = uuid.uuid4()
                activity = now - timedelta(seconds=rng.randrange(30 * 24 * 3600))
                conversations.append(
                    (
                        conversation_id,
                        tenant_id,
                        user_id,
                        f"Conversation {i} about {random_content(rng, 30)}",
                        random_content(rng, 120),
                        ["bench", f"t{i % 10}"],
                        "ACTIVE",
                        20,
                        0,
                        0,
                        activity,
                        activity,
                        activity,
                    )
                )
                participants.append((uuid.uuid4(), tenant_id, conversation_id, user_id, "OWNER", activity))
            await conn.copy_records_to_table(
                "conversation",
                records=conversations,
                columns=[
                    "id",
                    "tenant_id",
                    "owner_id",
                    "title",
                    "description",
                    "tags",
                    "status",
                    "max_history_messages",
                    "message_count",
                    "token_count",
                    "created_at",
                    "updated_at",
                    "last_activity_at",
                ],
            )
            await conn.copy_records_to_table(
                "participant",
                records=participants,
                columns=["id", "tenant_id", "conversation_id", "user_id", "role", "joined_at"],
            )
            await conn.execute("ANALYZE conversation")
            await conn.execute("ANALYZE participant")
        finally:
            await conn.close()

    asyncio.run(work())
