"""Row types of a page's relations (issue 14 figure): `conversations` reads each conversation's participants,
their users and its owner as arrays of these composite values in the page's own statement, one round trip
instead of two. asyncpg decodes them to records with the same names and values as the participant and user
loaders' rows (conversations/repository.py `PAGE_RELATION_COLUMNS`)."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from threadline.db.migration_sql import run_sql

ID = "2026-12-09T04:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "page relation row types"

SQL = """
CREATE TYPE page_participant AS (
    id uuid, tenant_id uuid, conversation_id uuid, user_id uuid, role text, joined_at timestamptz
);
CREATE TYPE page_user AS (
    id uuid, tenant_id uuid, email text, display_name text, role text, team text, external_subject text,
    created_at timestamptz
);
"""


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="threadline", description=DESCRIPTION)
    manager.add_raw(run_sql(SQL))
    return manager
