"""A digest of each node of an imported ChatGPT conversation (issue 22 figure): a re-import of a newer export
reads only the nodes that are new, unless one it had seen changed."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from threadline.db.migration_sql import run_sql

ID = "2026-12-06T01:10:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "import_source.node_digests"

SQL = """
ALTER TABLE import_source ADD COLUMN node_digests jsonb;
"""


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="threadline", description=DESCRIPTION)
    manager.add_raw(run_sql(SQL))
    return manager
