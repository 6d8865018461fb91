"""LibreChat and Open WebUI imports (issue 22 item 9): their conversations are import sources too."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from threadline.db.migration_sql import run_sql

ID = "2026-12-06T02:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "import_source.source accepts librechat and openwebui"

SQL = """
ALTER TABLE import_source DROP CONSTRAINT IF EXISTS import_source_source_check;
ALTER TABLE import_source ADD CONSTRAINT import_source_source_check
    CHECK (source IN ('threadline', 'chatgpt', 'claude', 'librechat', 'openwebui'));
"""


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="threadline", description=DESCRIPTION)
    manager.add_raw(run_sql(SQL))
    return manager
