"""Apply the Piccolo migrations in `migrations/`, one process at a time."""

from __future__ import annotations

import contextlib
import io
import logging
import os

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


async def apply_migrations(dsn: str) -> str:
    """Run every pending migration (on `direct_dsn_for(dsn)`); returns Piccolo's summary line."""
    dsn = direct_dsn_for(dsn)
    os.environ["THREADLINE_RESOLVED_DSN"] = dsn
    os.environ.setdefault("PICCOLO_CONF", "threadline.db.piccolo_conf")
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
