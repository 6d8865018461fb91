"""PgBouncer in transaction mode between two `threadline serve` processes and PostgreSQL (Debian's `pgbouncer`,
installed by .ci/run, started here): streaming, runs, imports and search work through it, with
THREADLINE_DATABASE_POOLER=pgbouncer; LISTEN, the workers' wake-ups and the migrations' lock go direct."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import asyncpg
import pytest

from tests.api import create_conversation, start_thread
from tests.harness import Actor, Loop, create_admin, free_port, serve_process
from tests.test_porting_import import fixture, import_report
from tests.test_redis import replay_then_live
from tests.test_runs_support import create_run, wait_for
from tests.test_search import titles

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
pytestmark = pytest.mark.skipif(
    not os.access(PGBOUNCER, os.X_OK), reason="pgbouncer is not installed (.ci/run installs Debian's package)"
)


class PgBouncer:
    """A pgbouncer in transaction mode in front of the test database `dsn` (a Unix socket or TCP)."""

    def __init__(self, dsn: str, pool_size: int = 6) -> None:
        parts = urlsplit(dsn)
        self.database = parts.path.lstrip("/")
        host = parse_qs(parts.query).get("host", [parts.hostname or "127.0.0.1"])[0]
        user = parts.username or "postgres"
        self.dir = Path(tempfile.mkdtemp(prefix="tl-pgbouncer-"))
        self.dir.chmod(0o777)  # pgbouncer drops to another user below and writes its log here
        self.port = free_port()
        (self.dir / "users.txt").write_text(f'"{user}" "{parts.password or ""}"\n')
        (self.dir / "pgbouncer.ini").write_text(
            f"""[databases]
{self.database} = host={host} port={parts.port or 5432} dbname={self.database} user={user}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = trust
auth_file = {self.dir}/users.txt
pool_mode = transaction
default_pool_size = {pool_size}
max_client_conn = 500
logfile = {self.dir}/pgbouncer.log
pidfile = {self.dir}/pgbouncer.pid
"""
        )
        for path in self.dir.iterdir():
            path.chmod(0o666)
        command = [PGBOUNCER, str(self.dir / "pgbouncer.ini")]
        if os.geteuid() == 0:
            # pgbouncer refuses to run as root; the owner of the socket directory (the embedded PostgreSQL's user,
            # `pgserver` when the tests run as root) can reach the socket.
            owner = pwd.getpwuid(os.stat(host).st_uid).pw_name if host.startswith("/") else "nobody"
            command[1:1] = ["-u", owner]
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = f"postgresql://{user}@127.0.0.1:{self.port}/{self.database}"
        deadline = time.monotonic() + 20
        while "listening on" not in self.log():
            assert self.proc.poll() is None, f"pgbouncer exited: {self.log()}"
            assert time.monotonic() < deadline, "pgbouncer did not start"
            time.sleep(0.05)

    def log(self) -> str:
        path = self.dir / "pgbouncer.log"
        return path.read_text() if path.exists() else ""

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def bouncer(dsn: str) -> Iterator[PgBouncer]:
    bouncer = PgBouncer(dsn)
    yield bouncer
    bouncer.stop()


@pytest.fixture(scope="module")
def queue() -> str:
    return f"pgbouncer-{os.getpid()}"  # the runs of these servers: no other server's worker takes them


@pytest.fixture(scope="module")
def pooled(dsn: str, bouncer: PgBouncer, queue: str) -> Iterator[tuple[str, str]]:
    """Two server processes whose pools go through pgbouncer; LISTEN (and so the workers' wake-ups) goes straight
    to PostgreSQL through THREADLINE_BROADCAST_URL."""
    env = {
        "THREADLINE_DATABASE_POOLER": "pgbouncer",
        "THREADLINE_BROADCAST_URL": dsn,
        "THREADLINE_RUN_QUEUE": queue,
    }
    with serve_process(bouncer.url, **env) as first, serve_process(bouncer.url, **env) as second:
        yield first, second


@pytest.fixture
def writer(pooled: tuple[str, str], loop: Loop, dsn: str) -> Iterator[Actor]:
    actor = create_admin(loop, dsn, pooled[0])
    yield actor
    actor.client.close()


def test_replay_with_since_then_live_through_pgbouncer_has_no_gap_or_duplicate(
    pooled: tuple[str, str], writer: Actor
) -> None:
    replay_then_live(pooled[1], writer, pooled[1])


def test_a_run_an_import_and_search_work_through_pgbouncer(
    pooled: tuple[str, str], writer: Actor, bouncer: PgBouncer
) -> None:
    cid = create_conversation(writer, "pooled run")
    message = start_thread(writer, cid, "echo this through the pooler")
    run = wait_for(writer, create_run(writer, message)["id"])
    assert run["status"] == "COMPLETED" and run["output"]["content"] == "echo: echo this through the pooler"

    report = import_report(writer, "CHATGPT", fixture("chatgpt/conversations.json"))
    assert report["imported"] >= 1 and report["failed"] == 0
    imported = report["conversations"][0]["title"]
    assert imported in titles(writer, query=imported)
    assert "pooled run" in titles(writer, query="pooler")
    assert "ERROR" not in bouncer.log(), bouncer.log()


def test_pool_connections_through_pgbouncer_keep_their_timeouts_as_set_local(
    bouncer: PgBouncer, loop: Loop
) -> None:
    from threadline.db import Database

    async def settings_seen() -> tuple[str, str]:
        db = await Database.connect(
            bouncer.url,
            1,
            2,
            statement_timeout_seconds=7,
            idle_in_transaction_timeout_seconds=3,
            pooler="pgbouncer",
        )
        try:
            async with db.transaction() as tx:
                row = await tx.fetchrow(
                    "SELECT current_setting('statement_timeout') AS s,"
                    " current_setting('idle_in_transaction_session_timeout') AS i"
                )
            assert row is not None
            return str(row["s"]), str(row["i"])
        finally:
            await db.close()

    assert loop.run(settings_seen()) == ("7s", "3s")


def test_migrate_through_pgbouncer_takes_its_lock_on_the_direct_url(
    bouncer: PgBouncer, dsn: str, loop: Loop
) -> None:
    env = {
        **os.environ,
        "DATABASE_URL": bouncer.url,
        "THREADLINE_DATABASE_POOLER": "pgbouncer",
        "THREADLINE_DIRECT_DATABASE_URL": dsn,
    }
    done = subprocess.run(
        [sys.executable, "-m", "threadline.cli", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr

    async def migration_locks() -> int:
        from threadline.db.migrate import _MIGRATION_LOCK

        conn = await asyncpg.connect(dsn)
        try:
            held = await conn.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = $1",
                _MIGRATION_LOCK & 0xFFFFFFFF,
            )
            return int(held)
        finally:
            await conn.close()

    assert loop.run(migration_locks()) == 0  # taken and released on one session, none left on a pooled one
