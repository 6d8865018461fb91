"""Faults around the database: an outage is answered (503 UNAVAILABLE with retryAfter, WebSocket 1013) and
the server recovers once PostgreSQL is back (a second embedded PostgreSQL the tests stop and start); the
embedded PostgreSQL of `threadline serve` never outlives its last user; every connection is named by role."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import uvicorn
from websockets.exceptions import ConnectionClosed

from tests.harness import (
    TEST_JWT_SECRET,
    Actor,
    Loop,
    ServerThread,
    create_database,
    free_port,
    test_settings,
)
from tests.ws import WsClient
from threadline.db.embedded import EmbeddedPostgres

VIEWER = "{ viewer { id } }"


class Outage:
    """A second embedded PostgreSQL (its own data directory) with a migrated database and a tenant."""

    def __init__(self, loop: Loop) -> None:
        self.loop = loop
        self.data_dir = Path(tempfile.mkdtemp(prefix="tl-outage-", dir="/tmp"))
        os.chmod(self.data_dir, 0o755)
        self.embedded = EmbeddedPostgres(self.data_dir)
        admin_dsn = self.embedded.start()
        self.dsn = loop.run(create_database(admin_dsn, "threadline_outage"))
        self.api_key = loop.run(self._tenant())

    async def _tenant(self) -> str:
        from threadline.auth.service import create_tenant
        from threadline.db import Database
        from threadline.db.migrate import apply_migrations

        await apply_migrations(self.dsn)
        db = await Database.connect(self.dsn, 1, 1)
        try:
            return (await create_tenant(db, "outage", "admin@example.com")).api_key
        finally:
            await db.close()

    def stop_database(self) -> None:
        self.embedded.stop()

    def start_database(self) -> None:
        self.embedded = EmbeddedPostgres(self.data_dir)
        self.embedded.start()


@pytest.fixture
def outage(loop: Loop) -> Iterator[Outage]:
    setup = Outage(loop)
    yield setup
    setup.embedded.stop()


def post(url: str, api_key: str, query: str = VIEWER) -> httpx.Response:
    return httpx.post(
        f"{url}/graphql", json={"query": query}, headers={"Authorization": f"Bearer {api_key}"}, timeout=60
    )


def assert_unavailable(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "5"
    error: dict[str, Any] = response.json()["errors"][0]
    assert error["extensions"]["code"] == "UNAVAILABLE"
    assert error["extensions"]["retryAfter"] == 5
    return error


def test_database_restart_is_unavailable_then_recovers(outage: Outage) -> None:
    server = ServerThread(test_settings(outage.dsn, migrate_on_start=False))
    server.start()
    try:
        assert post(server.url, outage.api_key).json()["data"]["viewer"]["id"]

        outage.stop_database()
        # Every request while it is down, including the first one on the pool's now dead connections.
        for _ in range(3):
            error = assert_unavailable(post(server.url, outage.api_key))
            assert error["message"] == "The database is unavailable; retry later"
            assert error["extensions"]["requestId"]
        assert httpx.get(f"{server.url}/readyz").status_code == 503

        # A new WebSocket cannot be authenticated: closed with 1013 (try again later) and a reason.
        client = WsClient(server.ws_url, None, init=False)
        client.send({"type": "connection_init", "payload": {"authorization": f"Bearer {outage.api_key}"}})
        with pytest.raises(ConnectionClosed) as closed:
            client.receive(timeout=30)
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (
            1013,
            "database unavailable; retry later",
        )

        outage.start_database()
        deadline = time.monotonic() + 60
        while (
            response := post(server.url, outage.api_key)
        ).status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert response.status_code == 200
        assert response.json()["data"]["viewer"]["id"]
        assert httpx.get(f"{server.url}/readyz").status_code == 200
        socket = WsClient(server.ws_url, outage.api_key)  # acknowledged again
        socket.ws.close()
    finally:
        server.stop()


def test_request_cut_off_by_the_shutdown_grace_is_unavailable_json(outage: Outage) -> None:
    from threadline.app import create_app

    port = free_port()
    config = uvicorn.Config(
        create_app(test_settings(outage.dsn, migrate_on_start=False)),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        assert thread.is_alive()
        time.sleep(0.02)
    url = f"http://127.0.0.1:{port}"
    assert post(url, outage.api_key).status_code == 200

    async def lock_users() -> asyncpg.Connection:
        conn = await asyncpg.connect(outage.dsn)
        await conn.execute("BEGIN; LOCK TABLE app_user IN ACCESS EXCLUSIVE MODE")
        return conn

    async def blocked() -> int:
        conn = await asyncpg.connect(outage.dsn)
        try:
            return int(
                await conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
                )
            )
        finally:
            await conn.close()

    locker = outage.loop.run(lock_users())
    try:
        answers: list[httpx.Response] = []
        request = threading.Thread(target=lambda: answers.append(post(url, outage.api_key)))
        request.start()
        deadline = time.monotonic() + 30
        while outage.loop.run(blocked()) == 0:
            assert time.monotonic() < deadline, "the request never waited for the lock"
            time.sleep(0.05)
        server.should_exit = True  # what SIGTERM does; the request outlives the 1 s grace
        request.join(timeout=60)
        thread.join(timeout=60)
    finally:
        outage.loop.run(locker.close())
    assert len(answers) == 1
    assert answers[0].headers["content-type"] == "application/json"
    error = assert_unavailable(answers[0])
    assert error["message"] == "The server is shutting down; retry later"


# --- the embedded PostgreSQL of `threadline serve` ------------------------------------------------


def postmasters(pgdata: Path) -> list[int]:
    """Pids of the PostgreSQL servers (postmasters, not their backends) running on `pgdata`."""
    import psutil

    found = []
    for proc in psutil.process_iter(["name", "cmdline", "ppid"]):
        cmdline = proc.info["cmdline"] or []
        if proc.info["name"] == "postgres" and str(pgdata) in cmdline:
            found.append(proc.pid)  # backends rewrite their command line ("postgres: checkpointer", ...)
    return found


class Serve:
    """Starts `threadline serve` on the embedded PostgreSQL of one data directory (no DATABASE_URL)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.pgdata = (data_dir / "pgdata").resolve()
        self.started: list[subprocess.Popen[bytes]] = []

    def __call__(self) -> tuple[subprocess.Popen[bytes], str]:
        """A new server process, once it is ready."""
        port = free_port()
        env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "threadline.cli", "serve", "--port", str(port)],
            env={**env, "THREADLINE_DATA_DIR": str(self.data_dir), "THREADLINE_JWT_SECRET": TEST_JWT_SECRET},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.started.append(proc)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    return proc, url
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, "threadline serve exited"
            assert time.monotonic() < deadline, "threadline serve did not start"
            time.sleep(0.1)


@pytest.fixture
def serve() -> Iterator[Serve]:
    data_dir = Path(tempfile.mkdtemp(prefix="tl-serve-", dir="/tmp"))
    os.chmod(data_dir, 0o755)
    servers = Serve(data_dir)
    yield servers
    for proc in servers.started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    for pid in postmasters(servers.pgdata):  # whatever a failing test left running
        os.kill(pid, signal.SIGQUIT)


def stop(proc: subprocess.Popen[bytes], sig: signal.Signals) -> int:
    proc.send_signal(sig)
    return proc.wait(timeout=60)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stopping_serve_stops_its_embedded_postgres(serve: Serve, sig: signal.Signals) -> None:
    proc, _ = serve()
    assert len(postmasters(serve.pgdata)) == 1
    stop(proc, sig)
    assert postmasters(serve.pgdata) == []


def test_sigterm_ends_serve_by_the_signal_after_stopping_postgres(serve: Serve) -> None:
    proc, _ = serve()
    # As uvicorn does: a supervisor sees the process ended by the signal it sent (a clean stop for systemd).
    assert stop(proc, signal.SIGTERM) == -signal.SIGTERM
    assert postmasters(serve.pgdata) == []


def test_a_killed_server_leaves_postgres_to_the_next_one_which_stops_it(serve: Serve) -> None:
    first, _ = serve()
    [running] = postmasters(serve.pgdata)
    first.kill()
    first.wait(timeout=30)
    assert postmasters(serve.pgdata) == [running]  # nothing could stop it; its pid stays in pgserver's list

    second, url = serve()
    assert postmasters(serve.pgdata) == [running]  # joined, not a second server on the same data
    assert httpx.get(f"{url}/readyz").status_code == 200
    stop(second, signal.SIGTERM)
    assert postmasters(serve.pgdata) == []  # the dead first user no longer keeps it running


def test_two_servers_share_one_postgres_stopped_by_the_last(serve: Serve) -> None:
    first, _ = serve()
    second, url = serve()
    [running] = postmasters(serve.pgdata)
    stop(first, signal.SIGTERM)
    assert postmasters(serve.pgdata) == [running]
    assert httpx.get(f"{url}/readyz").status_code == 200
    stop(second, signal.SIGINT)
    assert postmasters(serve.pgdata) == []


# --- application_name by role -----------------------------------------------------------------------


async def backends(dsn: str) -> list[tuple[str, str | None]]:
    """(application_name, wait_event_type) of every other connection to the database."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT application_name, wait_event_type FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    finally:
        await conn.close()
    return [(r["application_name"], r["wait_event_type"]) for r in rows]


def test_every_connection_of_a_server_is_named_by_its_role(
    server: ServerThread, dsn: str, loop: Loop
) -> None:
    names = {name for name, _ in loop.run(backends(dsn))}
    # The pool, the hub's LISTEN connection, the run worker's LISTEN connection; nothing unnamed.
    assert {"threadline-pool", "threadline-hub", "threadline-worker"} <= names
    assert all(name.startswith("threadline-") for name in names), names


def test_an_import_on_an_up_to_date_database_passes_a_held_migration_lock_and_shows_as_import(
    admin: Actor, dsn: str, loop: Loop
) -> None:
    # Every migration file is listed as run, so the import reads that in one query and does not queue behind
    # another process's migration lock; while it waits for the table, pg_stat_activity names it by its role.
    from threadline.db.migrate import _MIGRATION_LOCK

    async def hold() -> asyncpg.Connection:
        conn = await asyncpg.connect(dsn)
        await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
        await conn.execute("BEGIN; LOCK TABLE conversation IN ACCESS EXCLUSIVE MODE")
        return conn

    def waiting(name: str) -> None:
        deadline = time.monotonic() + 60
        while (name, "Lock") not in loop.run(backends(dsn)):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, f"no {name} connection waited: {loop.run(backends(dsn))}"
            time.sleep(0.05)

    holder = loop.run(hold())
    env = {**os.environ, "DATABASE_URL": dsn}
    env.pop("THREADLINE_API_KEY", None)
    file = Path(__file__).parent / "fixtures" / "claude" / "conversations.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "threadline.cli", "import", str(file), "--format", "claude", "--quiet",
         "--api-key", admin.api_key],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        waiting("threadline-import")  # on the conversation table, the migration lock still held
        assert ("threadline-migrate", "Lock") not in loop.run(backends(dsn))
        loop.run(holder.execute("COMMIT"))
        loop.run(holder.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK))
        assert proc.wait(timeout=120) == 0, proc.communicate()
    finally:
        loop.run(holder.close())
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
