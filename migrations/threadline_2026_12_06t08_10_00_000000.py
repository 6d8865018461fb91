"""Deep storage, the coldest tier (issue 20 item 4): cold documents older than a tenant's `deepAfterDays` are
recompressed harder (lzma) and come back only when asked (`conversationRestore`), whose progress other readers
follow in `tier_restore` (written outside the restoring transaction, so it is visible while it runs)."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from threadline.db.migration_sql import run_sql

ID = "2026-12-06T08:10:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "deep storage tier and restore progress"

SQL = """
ALTER TABLE conversation_tier ADD COLUMN deep boolean NOT NULL DEFAULT false;
CREATE TABLE tier_restore (
    conversation_id uuid PRIMARY KEY REFERENCES conversation(id) ON DELETE CASCADE,
    tenant_id uuid NOT NULL REFERENCES tenant(id) ON DELETE CASCADE,
    state varchar(16) NOT NULL,
    rows_done integer NOT NULL DEFAULT 0,
    rows_total integer NOT NULL DEFAULT 0,
    started_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
"""


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="threadline", description=DESCRIPTION)
    manager.add_raw(run_sql(SQL))
    return manager
