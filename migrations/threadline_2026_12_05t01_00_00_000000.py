"""Each user's current leaf per thread: the branch they are on (issue 16 item 1)."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from threadline.db.migration_sql import run_sql

ID = "2026-12-05T01:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "current leaf per user and thread"

# One row per (user, thread) that has chosen or moved to a leaf; a thread without one shows its newest
# branch (threads.branches). Everything cascades: the thread, the message, the user or the tenant going
# takes the row with it (erasure deletes it as personal data).
SQL = """
CREATE TABLE thread_current_leaf (
    id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    user_id uuid NOT NULL REFERENCES app_user (id) ON DELETE CASCADE,
    root_id uuid NOT NULL REFERENCES thread (id) ON DELETE CASCADE,
    message_id uuid NOT NULL REFERENCES message (id) ON DELETE CASCADE,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX thread_current_leaf_user_root ON thread_current_leaf (user_id, root_id);
CREATE INDEX thread_current_leaf_message ON thread_current_leaf (message_id);
CREATE INDEX thread_current_leaf_root ON thread_current_leaf (root_id);
"""


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="threadline", description=DESCRIPTION)
    manager.add_raw(run_sql(SQL))
    return manager
