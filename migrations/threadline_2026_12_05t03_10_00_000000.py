"""Tool calls in runs: the tools a run offers, and what it waits for in REQUIRES_ACTION (issue 17 item 2)."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from threadline.db.migration_sql import run_sql

ID = "2026-12-05T03:10:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "run tools and required action"

# `tools` and `tool_choice` as the client gave them (OpenAI function tools), NULL for a run without tools.
# `required_action` holds the tool calls a run in REQUIRES_ACTION waits for, `requires_action_at` since when:
# the partial index is what the expiry scan reads (few rows wait at any time).
SQL = """
ALTER TABLE run ADD COLUMN tools jsonb;
ALTER TABLE run ADD COLUMN tool_choice jsonb;
ALTER TABLE run ADD COLUMN required_action jsonb;
ALTER TABLE run ADD COLUMN requires_action_at timestamptz;
CREATE INDEX run_requires_action ON run (requires_action_at) WHERE status = 'REQUIRES_ACTION';
"""


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="threadline", description=DESCRIPTION)
    manager.add_raw(run_sql(SQL))
    return manager
