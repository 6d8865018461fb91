"""Enrichment costs nothing on most message writes (issue 19 item 3).

The first version called the queueing function on every message (to see whether a waiting summary had come
due), about a millisecond per message on a busy machine. Now `conversation.enrichment_due` holds the smallest
message count a waiting job of the conversation waits for (NULL: none), the worker keeps it when it leaves a
job waiting, and the trigger's WHEN clause (evaluated without calling any function) lets through only the
writes that cross the first exchange or reach that count. It is a BEFORE trigger now, so it sets the next due
on the row being written instead of updating it again.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from threadline.db.migration_sql import run_sql

ID = "2026-12-06T04:10:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "enrichment_due on conversation; the enrichment trigger fires only when work comes due"

SQL = """
ALTER TABLE conversation ADD COLUMN enrichment_due integer;
UPDATE conversation c SET enrichment_due = j.due
FROM (SELECT conversation_id, min(due_messages) AS due FROM enrichment_job
      WHERE status IN ('WAITING', 'COMPLETED') AND due_messages IS NOT NULL GROUP BY conversation_id) j
WHERE c.id = j.conversation_id;

DROP TRIGGER conversation_enrichment ON conversation;
DROP FUNCTION threadline_enrichment_enqueue();

CREATE FUNCTION threadline_enrichment_enqueue() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.message_count < 2 AND NEW.message_count >= 2 THEN
        INSERT INTO enrichment_job (id, tenant_id, conversation_id, kind)
        SELECT gen_random_uuid(), NEW.tenant_id, NEW.id, k.kind
        FROM unnest(ARRAY['TITLE', 'SUMMARY', 'TAGS']) AS k(kind)
        WHERE k.kind <> 'TITLE' OR NEW.title_source = 'DEFAULT'
        ON CONFLICT (conversation_id, kind) DO NOTHING;
        PERFORM pg_notify('threadline_enrichment', 'queued');
    END IF;
    IF NEW.enrichment_due IS NOT NULL AND NEW.enrichment_due <= NEW.message_count THEN
        UPDATE enrichment_job SET status = 'QUEUED', run_after = now(), due_messages = NULL, attempts = 0,
            updated_at = now()
        WHERE conversation_id = NEW.id AND status IN ('WAITING', 'COMPLETED')
            AND due_messages IS NOT NULL AND due_messages <= NEW.message_count;
        IF FOUND THEN
            PERFORM pg_notify('threadline_enrichment', 'queued');
        END IF;
        NEW.enrichment_due := (SELECT min(due_messages) FROM enrichment_job WHERE conversation_id = NEW.id
                               AND status IN ('WAITING', 'COMPLETED') AND due_messages IS NOT NULL);
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER conversation_enrichment BEFORE UPDATE OF message_count ON conversation
    FOR EACH ROW WHEN (NEW.message_count > OLD.message_count
        AND ((OLD.message_count < 2 AND NEW.message_count >= 2) OR NEW.enrichment_due <= NEW.message_count))
    EXECUTE FUNCTION threadline_enrichment_enqueue();
"""


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="threadline", description=DESCRIPTION)
    manager.add_raw(run_sql(SQL))
    return manager
