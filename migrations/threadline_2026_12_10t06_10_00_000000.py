"""A delete, edit or masking of a message also forgets its conversation's enrichment jobs' last error: a provider's
error text may quote the prompt (the deleted words), and `enrichmentJobs.lastError` showed it after the delete.
The function of 2026-12-10T03:37 with the two error columns cleared where the results are."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from threadline.db.migration_sql import run_sql

ID = "2026-12-10T06:10:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "enrichment forgets its last error with the results"

SQL = """
CREATE OR REPLACE FUNCTION threadline_enrichment_forget(conversation uuid, messages uuid[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    requeued integer := 0;
    retitled integer;
    taken_key text := 'threadline.enrichment_taken_' || replace(conversation::text, '-', '');
    taken boolean := coalesce(current_setting(taken_key, true), '') = 'on';
BEGIN
    IF NOT taken THEN
        PERFORM set_config(taken_key, 'on', true);
        UPDATE enrichment_job SET status = 'QUEUED', run_after = now(), due_messages = NULL, attempts = 0,
            generation = generation + 1, result_text = NULL, result_tags = ARRAY[]::varchar(64)[],
            source_ids = ARRAY[]::uuid[], last_error_code = NULL, last_error_message = NULL, updated_at = now()
        WHERE conversation_id = conversation AND kind IN ('SUMMARY', 'TAGS') AND status <> 'SKIPPED';
        GET DIAGNOSTICS requeued = ROW_COUNT;
    END IF;
    UPDATE enrichment_job SET status = 'QUEUED', run_after = now(), due_messages = NULL, attempts = 0,
        generation = generation + 1, result_text = NULL, source_ids = ARRAY[]::uuid[], last_error_code = NULL,
        last_error_message = NULL, updated_at = now()
    WHERE conversation_id = conversation AND kind = 'TITLE'
        AND (source_ids && messages OR (NOT taken AND status IN ('RUNNING', 'QUEUED')));
    GET DIAGNOSTICS retitled = ROW_COUNT;
    IF requeued > 0 OR retitled > 0 THEN
        UPDATE conversation c SET enrichment_due = c.message_count + 1,
            title = CASE WHEN retitled > 0 AND c.title_source = 'GENERATED' THEN 'New conversation' ELSE c.title END,
            title_source = CASE WHEN retitled > 0 AND c.title_source = 'GENERATED' THEN 'DEFAULT'
                                ELSE c.title_source END,
            updated_at = CASE WHEN retitled > 0 AND c.title_source = 'GENERATED' THEN now() ELSE c.updated_at END
        WHERE c.id = conversation;
        PERFORM pg_notify('threadline_enrichment', 'queued');
    END IF;
END $$;
"""


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="threadline", description=DESCRIPTION)
    manager.add_raw(run_sql(SQL))
    return manager
