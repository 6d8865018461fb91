"""Conversations found by their client session id: the OpenAI-compatible gateway's `session_id` (issue 17)."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from threadline.db.migration_sql import run_sql

ID = "2026-12-05T04:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "conversation session id index"

# Every gateway call with a session_id looks its conversation up by (tenant, session id); without an index
# that is a scan of the tenant's conversations per chat completion.
SQL = """
CREATE INDEX conversation_session ON conversation (tenant_id, session_id, last_activity_at DESC)
    WHERE session_id IS NOT NULL;
"""


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="threadline", description=DESCRIPTION)
    manager.add_raw(run_sql(SQL))
    return manager
