"""Forks' provenance, metadata on conversations and messages, message feedback (issue 16 items 3, 4, 5)."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from threadline.db.migration_sql import run_sql

ID = "2026-12-05T02:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "fork provenance, metadata, message feedback"

# Provenance of a fork: plain columns that lose their value (not the fork) when the source goes.
# Metadata is NULL when none was set (most rows): the GIN indexes (jsonb_path_ops answers `@>` only,
# which is all the filters ask) hold only the rows that have some.
# Feedback: one row per user and message; it goes with the message, and with the user (erasure).
SQL = """
ALTER TABLE conversation ADD COLUMN metadata jsonb;
ALTER TABLE conversation ADD COLUMN forked_from_conversation_id uuid
    REFERENCES conversation (id) ON DELETE SET NULL;
ALTER TABLE conversation ADD COLUMN forked_from_message_id uuid REFERENCES message (id) ON DELETE SET NULL;
CREATE INDEX conversation_metadata ON conversation USING gin (metadata jsonb_path_ops)
    WHERE metadata IS NOT NULL;
CREATE INDEX conversation_forked_from ON conversation (forked_from_conversation_id)
    WHERE forked_from_conversation_id IS NOT NULL;
CREATE INDEX conversation_forked_from_message ON conversation (forked_from_message_id)
    WHERE forked_from_message_id IS NOT NULL;

ALTER TABLE message ADD COLUMN metadata jsonb;
CREATE INDEX message_metadata ON message USING gin (metadata jsonb_path_ops) WHERE metadata IS NOT NULL;

CREATE TABLE message_feedback (
    id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    message_id uuid NOT NULL REFERENCES message (id) ON DELETE CASCADE,
    user_id uuid NOT NULL REFERENCES app_user (id) ON DELETE CASCADE,
    rating varchar(8) NOT NULL CHECK (rating IN ('UP', 'DOWN')),
    reasons varchar(64)[] NOT NULL,
    comment text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX message_feedback_message_user ON message_feedback (message_id, user_id);
CREATE INDEX message_feedback_user ON message_feedback (user_id);
"""


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="threadline", description=DESCRIPTION)
    manager.add_raw(run_sql(SQL))
    return manager
