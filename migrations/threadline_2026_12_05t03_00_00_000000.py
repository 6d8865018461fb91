"""Content parts of messages: images, files, tool calls and results, reasoning (issue 17 item 1)."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from threadline.db.migration_sql import run_sql

ID = "2026-12-05T03:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "message content parts"

# NULL for a plain-text message (most rows): `content` says it all. Otherwise the whole ordered list of parts,
# with `content` as its plain-text projection (what search indexes). Scrubbed with the content (deletes, erasure).
SQL = """
ALTER TABLE message ADD COLUMN parts jsonb;
"""


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="threadline", description=DESCRIPTION)
    manager.add_raw(run_sql(SQL))
    return manager
