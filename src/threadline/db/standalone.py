"""The database for one command line run (`threadline migrate`, `import`, `export`, `worker`, ...): the
embedded PostgreSQL started and stopped around the work when no DATABASE_URL is given, also on SIGTERM.

`threadline serve` keeps the server's own lifetime (cli.py) but shares the SIGTERM handling below.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, TypeVar

from threadline.settings import Settings

T = TypeVar("T")


class Terminated(BaseException):
    """SIGTERM, turned into an exception so that `finally` blocks (stopping the embedded PostgreSQL) run."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated


class GracefulTermination:
    """Runs the body with SIGTERM raising `Terminated`, then dies of SIGTERM as asked, after the body's
    cleanup. Python's default for SIGTERM ends the process on the spot, and uvicorn re-raises the SIGTERM it
    caught once it has shut down: without this, an embedded PostgreSQL would outlive every `systemctl stop`,
    `docker stop` or Kubernetes eviction."""

    def __enter__(self) -> None:
        self._previous = signal.signal(signal.SIGTERM, _raise_terminated)

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is not Terminated:
            signal.signal(signal.SIGTERM, self._previous)
            return
        # Exit the way the signal asked (systemd counts a SIGTERM death as a clean stop).
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.raise_signal(signal.SIGTERM)
        raise SystemExit(128 + signal.SIGTERM) from None  # only if the signal is blocked


def with_database(settings: Settings, work: Callable[[str], Coroutine[Any, Any, T]]) -> T:
    """Runs `work(dsn)` to completion against the configured database, or an embedded one started for it."""
    from threadline.db.embedded import EmbeddedPostgres

    with GracefulTermination():
        embedded = None if settings.database_url else EmbeddedPostgres(settings.data_dir)
        try:
            dsn = embedded.start() if embedded is not None else str(settings.database_url)
            return asyncio.run(work(dsn))
        finally:
            if embedded is not None:
                embedded.stop()


def with_pool(settings: Settings, body: Callable[[Any], Coroutine[Any, Any, T]]) -> T:
    """`body(db)` with a small pool of a migrated database (commands of the CLI: tiers, keys)."""
    from threadline.db import Database
    from threadline.db.database import CLI
    from threadline.db.migrate import apply_migrations

    async def work(dsn: str) -> T:
        await apply_migrations(dsn)
        db = await Database.connect(dsn, 1, 2, application_name=CLI)
        try:
            return await body(db)
        finally:
            await db.close()

    return with_database(settings, work)
