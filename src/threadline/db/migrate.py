"""Apply the Piccolo migrations in `migrations/`, one process at a time."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
from pathlib import Path

import asyncpg

log = logging.getLogger(__name__)

# Any constant works: it only serialises concurrent `migrate` runs against one database.
_MIGRATION_LOCK = 0x7468726C


def direct_dsn_for(dsn: str) -> str:
    """Where migrations run: straight to PostgreSQL when DATABASE_URL goes through a transaction-mode pooler
    (THREADLINE_DIRECT_DATABASE_URL, or THREADLINE_BROADCAST_URL when it is a PostgreSQL URL): the migration lock
    is a session advisory lock, and Piccolo's statements would each land on another server connection."""
    from threadline.settings import Settings

    settings = Settings.from_env()
    if settings.direct_database_url:
        return settings.direct_database_url
    if (
        settings.database_pooler != "none"
        and settings.direct_url
        and settings.direct_url != settings.database_url
    ):
        return settings.direct_url
    return dsn


def migrations_folder() -> Path:
    """`migrations/` at the repo root in a checkout; packaged as `threadline/_migrations` in a wheel."""
    repo = Path(__file__).resolve().parents[3] / "migrations"
    if repo.is_dir():
        return repo
    return Path(__file__).resolve().parents[1] / "_migrations"


_MIGRATION_ID = re.compile(r'^ID = "([^"]+)"$', re.M)
UP_TO_DATE = "No migrations need to be run"


def _migration_ids() -> set[str] | None:
    """The IDs of the migration files, read from their text (None if one has no plain `ID = "..."` line)."""
    ids = set()
    for path in migrations_folder().glob("*.py"):
        if path.name != "__init__.py":
            found = _MIGRATION_ID.search(path.read_text(encoding="utf-8"))
            if found is None:
                return None
            ids.add(found.group(1))
    return ids


async def _up_to_date(dsn: str) -> bool:
    """Whether Piccolo's `migration` table lists every migration file as run: one query, without importing
    Piccolo's migration machinery (which imports every migration module: ~0.2 s of each command line run)."""
    ids = _migration_ids()
    if not ids:
        return False
    from threadline.db.database import MIGRATE, connect_settings

    conn = await asyncpg.connect(dsn, server_settings=connect_settings(MIGRATE, dsn))
    try:
        ran = await conn.fetch(
            "SELECT name FROM migration WHERE app_name = 'threadline' AND name = ANY($1::text[])", list(ids)
        )
    except asyncpg.UndefinedTableError:
        return False
    finally:
        await conn.close()
    return len(ran) == len(ids)


async def apply_migrations(dsn: str) -> str:
    """Run every pending migration (on `direct_dsn_for(dsn)`); returns Piccolo's summary line."""
    dsn = direct_dsn_for(dsn)
    os.environ["THREADLINE_RESOLVED_DSN"] = dsn
    os.environ.setdefault("PICCOLO_CONF", "threadline.db.piccolo_conf")
    if await _up_to_date(dsn):
        log.info("migrations: %s", UP_TO_DATE)
        return UP_TO_DATE
    from piccolo.apps.migrations.commands.forwards import run_forwards

    from threadline.db import piccolo_conf
    from threadline.db.database import MIGRATE, connect_settings

    piccolo_conf.DB.config = {"dsn": dsn, "server_settings": connect_settings(MIGRATE, dsn)}
    lock = await asyncpg.connect(dsn, server_settings=connect_settings(MIGRATE, dsn))
    try:
        await lock.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            result = await run_forwards(app_name="threadline", migration_id="all", fake=False)
        if not result.success:
            raise RuntimeError(f"migrations failed: {result.message}\n{out.getvalue()}")
        log.info("migrations: %s", result.message)
        return str(result.message)
    finally:
        await lock.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
        await lock.close()
