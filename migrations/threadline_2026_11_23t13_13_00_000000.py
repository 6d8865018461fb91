"""Token usage read from import files is flagged on the message and not counted as spend (issue 12, item 13)."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from threadline.db.migration_sql import run_sql

ID = "2026-11-23T13:13:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "imported usage flag on messages"

# Backfill: usage of messages that came from an import (created no later than the import recorded its
# source, and not written by a run) is flagged, and taken out of their conversation's token count.
SQL = """
ALTER TABLE message ADD COLUMN usage_imported boolean NOT NULL DEFAULT false;

UPDATE message m SET usage_imported = true
FROM import_source s
WHERE s.tenant_id = m.tenant_id AND s.conversation_id = m.conversation_id AND m.created_at <= s.created_at
  AND (m.prompt_tokens IS NOT NULL OR m.completion_tokens IS NOT NULL)
  AND NOT EXISTS (SELECT 1 FROM run r WHERE r.tenant_id = m.tenant_id AND r.output_message_id = m.id);

UPDATE conversation c SET token_count = greatest(c.token_count - u.tokens, 0)
FROM (SELECT conversation_id, sum(coalesce(prompt_tokens, 0) + coalesce(completion_tokens, 0)) AS tokens
      FROM message WHERE usage_imported GROUP BY conversation_id) u
WHERE c.id = u.conversation_id;
"""


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="threadline", description=DESCRIPTION)
    manager.add_raw(run_sql(SQL))
    return manager
