"""The enrichment worker no longer writes `conversation.enrichment_due` (issue 19 item 3).

A background write to the conversation row, minutes after the user's last request, changed a row that nobody
asked to change. Now only the user's own transactions keep it: the queueing trigger (a BEFORE trigger on the
message count) recomputes it whenever it fires, as the smallest count a waiting job needs, or the next message
while a job is queued or running (its next due is not known yet); deleting or editing a message, and a retry,
set it to the next message too.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from threadline.db.migration_sql import run_sql

ID = "2026-12-06T04:30:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "enrichment_due kept by the triggers alone"

SQL = """
CREATE OR REPLACE FUNCTION threadline_enrichment_enqueue() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    waiting integer;
BEGIN
    IF OLD.message_count < 2 AND NEW.message_count >= 2 THEN
        INSERT INTO enrichment_job (id, tenant_id, conversation_id, kind)
        SELECT gen_random_uuid(), NEW.tenant_id, NEW.id, k.kind
        FROM unnest(ARRAY['TITLE', 'SUMMARY', 'TAGS']) AS k(kind)
        WHERE k.kind <> 'TITLE' OR NEW.title_source = 'DEFAULT'
        ON CONFLICT (conversation_id, kind) DO NOTHING;
        PERFORM pg_notify('threadline_enrichment', 'queued');
    ELSE
        UPDATE enrichment_job SET status = 'QUEUED', run_after = now(), due_messages = NULL, attempts = 0,
            updated_at = now()
        WHERE conversation_id = NEW.id AND status IN ('WAITING', 'COMPLETED')
            AND due_messages IS NOT NULL AND due_messages <= NEW.message_count;
        IF FOUND THEN
            PERFORM pg_notify('threadline_enrichment', 'queued');
        END IF;
    END IF;
    SELECT min(CASE WHEN status IN ('QUEUED', 'RUNNING') THEN NEW.message_count + 1 ELSE due_messages END)
        INTO waiting
    FROM enrichment_job WHERE conversation_id = NEW.id
        AND (status IN ('QUEUED', 'RUNNING') OR (status IN ('WAITING', 'COMPLETED') AND due_messages IS NOT NULL));
    NEW.enrichment_due := waiting;
    RETURN NEW;
END $$;

CREATE OR REPLACE FUNCTION threadline_enrichment_follow_message() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    requeued integer;
    retitled integer;
BEGIN
    UPDATE enrichment_job SET status = 'QUEUED', run_after = now(), due_messages = NULL, attempts = 0,
        generation = generation + 1, result_text = NULL, result_tags = ARRAY[]::varchar(64)[],
        source_ids = ARRAY[]::uuid[], updated_at = now()
    WHERE conversation_id = NEW.conversation_id AND kind IN ('SUMMARY', 'TAGS') AND status <> 'SKIPPED'
        AND NOT (status = 'QUEUED' AND result_text IS NULL AND cardinality(result_tags) = 0);
    GET DIAGNOSTICS requeued = ROW_COUNT;
    UPDATE enrichment_job SET status = 'QUEUED', run_after = now(), due_messages = NULL, attempts = 0,
        generation = generation + 1, result_text = NULL, source_ids = ARRAY[]::uuid[], updated_at = now()
    WHERE conversation_id = NEW.conversation_id AND kind = 'TITLE'
        AND (NEW.id = ANY (source_ids) OR status = 'RUNNING');
    GET DIAGNOSTICS retitled = ROW_COUNT;
    IF requeued > 0 OR retitled > 0 THEN
        UPDATE conversation c SET enrichment_due = c.message_count + 1,
            title = CASE WHEN retitled > 0 AND c.title_source = 'GENERATED' THEN 'New conversation' ELSE c.title END,
            title_source = CASE WHEN retitled > 0 AND c.title_source = 'GENERATED' THEN 'DEFAULT'
                                ELSE c.title_source END,
            updated_at = CASE WHEN retitled > 0 AND c.title_source = 'GENERATED' THEN now() ELSE c.updated_at END
        WHERE c.id = NEW.conversation_id;
        PERFORM pg_notify('threadline_enrichment', 'queued');
    END IF;
    RETURN NULL;
END $$;
"""


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="threadline", description=DESCRIPTION)
    manager.add_raw(run_sql(SQL))
    return manager
