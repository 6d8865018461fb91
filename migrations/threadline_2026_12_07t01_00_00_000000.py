"""Bulk import at COPY speed (issue 15 item 2): the full-text trigger on `message` no longer runs for a row
whose INSERT brings its vector.

The import's bulk write path (`threadline.porting.bulk`) inserts many conversations' messages with one
`INSERT ... SELECT` from a staging table and builds every row's vector in that statement, from the same content,
with the same functions the trigger uses and the tenant's configuration looked up once (the per-row trigger
calls a PL/pgSQL function that looks it up again for each row). Search is exact as soon as the import commits:
no pending state, no second write of every row.

Only INSERT changes: an UPDATE of content or deleted_at always recomputes (an edit must never keep the vector of
the earlier text). Nothing else inserts a vector: forks copy content without it, tier restores leave derived
columns out, the API never writes the column.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from threadline.db.migration_sql import run_sql

ID = "2026-12-07T01:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "full-text trigger skips inserts that bring their vector"

SQL = """
DROP TRIGGER message_search ON message;
CREATE TRIGGER message_search BEFORE UPDATE OF content, deleted_at ON message
    FOR EACH ROW EXECUTE FUNCTION threadline_message_search();
CREATE TRIGGER message_search_insert BEFORE INSERT ON message
    FOR EACH ROW WHEN (NEW.search_vector IS NULL) EXECUTE FUNCTION threadline_message_search();
"""


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="threadline", description=DESCRIPTION)
    manager.add_raw(run_sql(SQL))
    return manager
