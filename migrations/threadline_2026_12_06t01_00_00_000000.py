"""Where an imported conversation came from (issue 22 item 8): its format, its id there and when it was imported,
kept on the conversation (an import identity is released when its conversation is deleted; this is not)."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from threadline.db.migration_sql import run_sql

ID = "2026-12-06T01:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "conversation.imported_from"

SQL = """
ALTER TABLE conversation ADD COLUMN imported_from jsonb;
"""


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="threadline", description=DESCRIPTION)
    manager.add_raw(run_sql(SQL))
    return manager
