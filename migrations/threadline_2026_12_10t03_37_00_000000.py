"""A delete, edit or masking of a message takes over its conversation's enrichment jobs until its transaction
commits, the QUEUED ones too.

Since 2026-12-06T04:20 the message trigger left jobs QUEUED without results alone ("no worker holds a QUEUED
job"), so that a bulk write touched each job once. But a worker may claim such a job after the trigger fired and
before the writing transaction commits, and read the text as it was then: the deleted message's words became
tag suggestions or a summary (a QUEUED TITLE: a title) stored for good, since nothing queued the job again after
the commit. Now the first message of a conversation that a transaction changes takes over every job of it: its
generation is bumped (a claim made before drops its result) and its row stays locked until the commit (claims
skip locked jobs, so the next one reads the committed text). Later messages of the same conversation in the same
transaction (a transaction-local setting per conversation; a savepoint rolled back forgets it with its updates)
only reset a title made from them, so a bulk write still touches each job once.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from threadline.db.migration_sql import run_sql

ID = "2026-12-10T03:37:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "the enrichment message trigger takes over queued jobs until its transaction commits"

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
            source_ids = ARRAY[]::uuid[], updated_at = now()
        WHERE conversation_id = conversation AND kind IN ('SUMMARY', 'TAGS') AND status <> 'SKIPPED';
        GET DIAGNOSTICS requeued = ROW_COUNT;
    END IF;
    UPDATE enrichment_job SET status = 'QUEUED', run_after = now(), due_messages = NULL, attempts = 0,
        generation = generation + 1, result_text = NULL, source_ids = ARRAY[]::uuid[], updated_at = now()
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
