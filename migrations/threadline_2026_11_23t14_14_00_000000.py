"""The event log names the message whose content an event carries, so edits, deletes and erasure can
rewrite those events (ARCHITECTURE.md, "Deleted means gone"; issue 12, item 4)."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from threadline.db.migration_sql import run_sql

ID = "2026-11-23T14:14:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "stream_event.message_id"

# Generated from the payload (public ids are "msg_" + the UUID's hex), so every publisher fills it and
# existing rows get it too: thread.new and thread.activity carry a message snapshot, message.delta a piece
# of a message's text. Only those rows are indexed.
SQL = """
ALTER TABLE stream_event ADD COLUMN message_id uuid GENERATED ALWAYS AS (
    CASE type
        WHEN 'message.delta' THEN substr(payload ->> 'messageId', 5)::uuid
        WHEN 'thread.new' THEN substr(payload -> 'message' ->> 'id', 5)::uuid
        WHEN 'thread.activity' THEN substr(payload -> 'message' ->> 'id', 5)::uuid
    END
) STORED;

CREATE INDEX stream_event_message ON stream_event (message_id) WHERE message_id IS NOT NULL;
"""


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="threadline", description=DESCRIPTION)
    manager.add_raw(run_sql(SQL))
    return manager
