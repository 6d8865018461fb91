"""Import identity per importing owner, and message source ids for merge re-imports (issue 22 items 1, 2)."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from threadline.db.migration_sql import run_sql

ID = "2026-12-04T18:30:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "import identity per owner, message import keys"

# An import is identified by (tenant, importing user, source, external id): another user of the tenant
# importing their own copy gets their own conversation. Existing rows are credited to the conversation's
# owner (who imported it: imports create conversations owned by the caller). Messages keep their source id
# (`import_key`) so that a later, fuller export merges into the tree; rows imported before have none, and
# their conversations are reported as skipped on re-import, as before.
SQL = """
ALTER TABLE import_source ADD COLUMN owner_id uuid REFERENCES app_user (id) ON DELETE CASCADE;
UPDATE import_source s SET owner_id = c.owner_id FROM conversation c WHERE c.id = s.conversation_id;
DROP INDEX import_source_key;
CREATE UNIQUE INDEX import_source_key ON import_source (tenant_id, owner_id, source, external_id);

ALTER TABLE message ADD COLUMN import_key text;
"""


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="threadline", description=DESCRIPTION)
    manager.add_raw(run_sql(SQL))
    return manager
