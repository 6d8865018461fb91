"""Imported conversations found by the fingerprint of their source item's bytes (issue 22 figure): a re-import
looks its items up by fingerprint before decoding them, so the index is per importing user and source."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from threadline.db.migration_sql import run_sql

ID = "2026-12-08T02:10:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "import_source fingerprint index"

SQL = """
CREATE INDEX import_source_fingerprint ON import_source (tenant_id, owner_id, source, fingerprint)
    WHERE fingerprint IS NOT NULL;
"""


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="threadline", description=DESCRIPTION)
    manager.add_raw(run_sql(SQL))
    return manager
