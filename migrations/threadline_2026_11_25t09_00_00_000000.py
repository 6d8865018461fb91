"""Opaque stream cursors (issue 12 item 14): the server secret per-tenant cursor keys derive from."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from threadline.db.migration_sql import run_sql

ID = "2026-11-25T09:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "stream cursor key"

# One row, written here so that every process reads the same secret (two v4 UUIDs as hex: 244 random
# bits). `numeric_through`: the sequence position now; numeric cursors (the form issued until now) above
# it were never issued and are refused (streaming.cursors).
SQL = """
CREATE TABLE stream_cursor_key (
    id varchar(16) PRIMARY KEY,
    secret text NOT NULL,
    numeric_through bigint NOT NULL DEFAULT 0
);
INSERT INTO stream_cursor_key (id, secret, numeric_through)
SELECT 'current',
       replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''),
       CASE WHEN is_called THEN last_value ELSE last_value - 1 END
FROM stream_event_id_seq;
"""


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="threadline", description=DESCRIPTION)
    manager.add_raw(run_sql(SQL))
    return manager
