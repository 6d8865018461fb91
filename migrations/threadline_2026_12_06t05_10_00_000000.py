"""`message.pii` always describes the content beside it (issue 20 item 2): an UPDATE that changes the content
without writing new detections clears them (NULL: not scanned), so a writer that does not know about PII (a
streamed append, a restore, an operator's SQL) can never leave spans that point at the wrong characters, which
MASK_ON_READ would otherwise splice instead of detecting again."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from threadline.db.migration_sql import run_sql

ID = "2026-12-06T05:10:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "message.pii follows the content"

SQL = """
CREATE FUNCTION threadline_message_pii_follows() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.content IS DISTINCT FROM OLD.content AND NEW.pii IS NOT DISTINCT FROM OLD.pii THEN
        NEW.pii := NULL;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER message_pii_follows BEFORE UPDATE OF content ON message
    FOR EACH ROW WHEN (OLD.pii IS NOT NULL) EXECUTE FUNCTION threadline_message_pii_follows();
"""


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="threadline", description=DESCRIPTION)
    manager.add_raw(run_sql(SQL))
    return manager
