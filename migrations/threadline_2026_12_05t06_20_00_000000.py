"""Uploads never attached are deleted after a while (issue 18 item 5): found by a partial index."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from threadline.db.migration_sql import run_sql

ID = "2026-12-05T06:20:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "index of unattached uploads"

SQL = """
CREATE INDEX file_unattached ON file (created_at) WHERE attached_at IS NULL;
"""


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="threadline", description=DESCRIPTION)
    manager.add_raw(run_sql(SQL))
    return manager
