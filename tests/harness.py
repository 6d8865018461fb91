"""Test harness: one embedded PostgreSQL and one real uvicorn per session, plain sync clients.

Tests talk to the server the way clients do: HTTP with httpx and WebSockets with `websockets`.
The database is truncated between tests (streaming tests commit, so rollback cannot clean up).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx
import uvicorn

from threadline.settings import Settings

T = TypeVar("T")

TEST_JWT_SECRET = "test-secret-that-is-long-enough-for-hs256"
TEST_METRICS_TOKEN = "test-metrics-token"
# What a scraper sends to /metrics (THREADLINE_METRICS_TOKEN).
METRICS_HEADERS = {"Authorization": f"Bearer {TEST_METRICS_TOKEN}"}


class Loop:
    """A private event loop for the test thread, for direct database work (setup and assertions)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def close(self) -> None:
        self.loop.close()


class EmbeddedDatabase:
    """The session's PostgreSQL: embedded (pgserver) unless THREADLINE_TEST_DATABASE_URL is set."""

    def __init__(self) -> None:
        self._embedded: Any = None
        self._tmp: str | None = None
        self.admin_dsn = ""

    def start(self) -> str:
        given = os.environ.get("THREADLINE_TEST_DATABASE_URL")
        if given:
            self.admin_dsn = given
            return given
        from threadline.db.embedded import EmbeddedPostgres

        parent = "/tmp" if Path("/tmp").is_dir() else None
        _sweep_abandoned(Path(parent or tempfile.gettempdir()))
        self._tmp = tempfile.mkdtemp(prefix="tl-test-", dir=parent)
        os.chmod(self._tmp, 0o755)
        self._embedded = EmbeddedPostgres(Path(self._tmp))
        self.admin_dsn = self._embedded.start()
        return self.admin_dsn

    def stop(self) -> None:
        if self._embedded is not None:
            self._embedded.stop()
        if self._tmp is not None:
            shutil.rmtree(
                self._tmp, ignore_errors=True
            )  # ~370 MB a session: left behind, they filled the disk


# A session's directory whose PostgreSQL is gone (the session was killed before `stop`) is removed by the next one.
ABANDONED_AFTER_SECONDS = 600


def _sweep_abandoned(parent: Path) -> None:
    for directory in parent.glob("tl-test-*"):
        try:
            if time.time() - directory.stat().st_mtime < ABANDONED_AFTER_SECONDS:
                continue  # being set up, or just stopped
            pid_file = directory / "pgdata" / "postmaster.pid"
            if pid_file.exists():
                pid = int(pid_file.read_text().split()[0])
                try:
                    os.kill(pid, 0)
                    continue  # its PostgreSQL still runs: another session's
                except ProcessLookupError:
                    pass
                except PermissionError:
                    continue  # someone else's process
            shutil.rmtree(directory, ignore_errors=True)
        except (OSError, ValueError, IndexError):
            continue


def database_dsn(admin_dsn: str, name: str) -> str:
    """`admin_dsn` pointed at database `name` (handles the socket-style DSN pgserver gives)."""
    base, sep, query = admin_dsn.partition("?")
    head, _, _ = base.rpartition("/")
    return f"{head}/{name}{sep}{query}"


async def create_database(admin_dsn: str, name: str) -> str:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return database_dsn(admin_dsn, name)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerThread:
    """A real uvicorn serving the real app on 127.0.0.1, in a background thread of this process."""

    def __init__(self, settings: Settings) -> None:
        from threadline.app import create_app

        self.port = free_port()
        self.app = create_app(settings)
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="on",
            ws_max_size=1024 * 1024,
            # As `threadline serve` (cli.py, serving.py): the app derives the client address
            # (THREADLINE_TRUSTED_PROXIES); uvicorn's own handling trusted X-Forwarded-For from 127.0.0.1.
            proxy_headers=False,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/graphql"

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("test server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


def test_settings(dsn: str, **overrides: Any) -> Settings:
    base = Settings(
        database_url=dsn,
        data_dir=Path(tempfile.gettempdir()) / "threadline-test-unused",
        jwt_secret=TEST_JWT_SECRET,
        metrics_token=TEST_METRICS_TOKEN,
        expose_sql_count=True,
        migrate_on_start=True,
        db_pool_min=1,
        db_pool_max=10,
        # Off unless a test asks (tests/test_credential_cache.py): statement counts stay exact per request.
        credential_cache_seconds=0.0,
        # Off unless a test asks (tests/test_ratelimits.py): a query served from tokens taken ahead skips the
        # rate-limit statement, so counts would depend on how close together a test's queries come.
        rate_limit_lease_max=1,
        # Off unless a test asks (tests/test_ratelimits.py): every test server of the session shares one address
        # and the process's anonymous windows.
        rate_limit_anonymous=0,
    )
    return dataclasses.replace(base, **overrides)


test_settings.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


# stream_cursor_key: the secret cursors are encoded with (a server setting kept in the database, not data).
TABLES_TO_KEEP = {"migration", "stream_cursor_key"}


async def truncate_all(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        names = [
            r["tablename"]
            for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            if r["tablename"] not in TABLES_TO_KEEP
        ]
        if names:
            # A background worker of a test server (runs, the embedding indexer) may hold a row lock on one table
            # and wait for another that TRUNCATE took first: PostgreSQL ends one of the two; try again.
            for attempt in range(5):
                try:
                    await conn.execute("TRUNCATE " + ", ".join(f'"{n}"' for n in names) + " CASCADE")
                    break
                except asyncpg.exceptions.DeadlockDetectedError:
                    if attempt == 4:
                        raise
    finally:
        await conn.close()


class GraphQLError(AssertionError):
    pass


def without_count(body: dict[str, Any]) -> dict[str, Any]:
    """Drops what differs per request so bodies compare as values: `extensions.sqlStatements` (test servers
    expose it) and each error's `extensions.requestId` (tests/test_hardening.py checks those)."""
    extensions = body.get("extensions")
    if isinstance(extensions, dict):
        extensions.pop("sqlStatements", None)
        if not extensions:
            del body["extensions"]
    for error in body.get("errors") or ():
        if isinstance(error, dict) and isinstance(error.get("extensions"), dict):
            error["extensions"].pop("requestId", None)
    return body


class Client:
    """A GraphQL-over-HTTP client for one caller."""

    def __init__(self, base_url: str, token: str | None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=base_url, headers=headers, timeout=60)
        self.token = token

    def execute(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        """The whole response body (data and errors), without the test server's diagnostic SQL count."""
        body = self.raw(query, variables)
        without_count(body)
        return body

    def raw(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        """The whole response body as served."""
        response = self.http.post("/graphql", json={"query": query, "variables": variables or {}})
        assert response.status_code in (200, 400), response.text
        body: dict[str, Any] = response.json()
        return body

    def ok(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        """`data` of a response that must have no errors."""
        body = self.execute(query, variables)
        if body.get("errors"):
            raise GraphQLError(f"unexpected errors: {body['errors']}")
        data: dict[str, Any] = body["data"]
        return data

    def error(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        """The first error of a response that must fail."""
        body = self.execute(query, variables)
        assert body.get("errors"), f"expected an error, got {body}"
        first: dict[str, Any] = body["errors"][0]
        return first

    def statements(self, query: str, variables: dict[str, Any] | None = None) -> int:
        """SQL statements the server sent for this one request (`extensions.sqlStatements`)."""
        body = self.raw(query, variables)
        if body.get("errors"):
            raise GraphQLError(f"unexpected errors: {body['errors']}")
        return int(body["extensions"]["sqlStatements"])

    def code(self, query: str, variables: dict[str, Any] | None = None) -> str:
        return str(self.error(query, variables)["extensions"]["code"])

    def close(self) -> None:
        self.http.close()


@dataclasses.dataclass
class Actor:
    """A user with a working API key."""

    tenant_id: str
    user_id: str
    api_key: str
    client: Client


def unique(prefix: str = "x") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@contextmanager
def serve_process(dsn: str, **env: str) -> Iterator[str]:
    """`threadline serve` in a process of its own on the session database (plus `env`); yields its base URL
    once /readyz answers, and terminates it afterwards."""
    port = free_port()
    environment = {
        **os.environ,
        "DATABASE_URL": dsn,
        "THREADLINE_MIGRATE_ON_START": "false",
        "THREADLINE_WORKERS": "1",  # one process unless a test asks for more (the default is one per core)
        **env,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "threadline.cli", "serve", "--port", str(port)],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, "the second server exited"
            assert time.monotonic() < deadline, "the second server did not start"
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def create_admin(loop: Loop, dsn: str, base_url: str, name: str | None = None) -> Actor:
    """A new tenant and its admin (`threadline tenant-create`), as an Actor calling the server at `base_url`.
    The caller closes `actor.client`."""
    from threadline.auth.service import create_tenant
    from threadline.db import Database
    from threadline.ids import Kind, encode_id

    async def work() -> Any:
        # The server's pool belongs to its own loop: a short-lived connection here.
        db = await Database.connect(dsn, 1, 1)
        try:
            return await create_tenant(db, name or unique("tenant"), f"{unique('admin')}@example.com")
        finally:
            await db.close()

    created = loop.run(work())
    return Actor(
        encode_id(Kind.TENANT, created.tenant_id),
        encode_id(Kind.USER, created.user_id),
        created.api_key,
        Client(base_url, created.api_key),
    )
