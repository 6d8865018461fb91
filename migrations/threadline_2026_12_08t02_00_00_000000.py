"""The fingerprint of the source item an imported conversation was last imported or merged from (issue 22
figure): the SHA-256 of the item's JSON bytes as read from the file (porting.jsonstream.fingerprint). A
re-import of the very same bytes by the same user is recognised by it (read with the import identity) and
skipped before its nodes are digested, compared or planned."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from threadline.db.migration_sql import run_sql

ID = "2026-12-08T02:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "import_source.fingerprint"

SQL = """
ALTER TABLE import_source ADD COLUMN fingerprint bytea;
"""


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="threadline", description=DESCRIPTION)
    manager.add_raw(run_sql(SQL))
    return manager
