"""A bulk delete or erasure touches each enrichment job once (issue 19 item 3).

The message trigger queued SUMMARY and TAGS again for every deleted or edited message, so erasing a user with
100,000 messages updated the same two job rows 100,000 times in one transaction. A job already QUEUED with its
results dropped needs nothing more (no worker holds a QUEUED job), so now only the first row changes it.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from threadline.db.migration_sql import run_sql

ID = "2026-12-06T04:20:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "the enrichment message trigger skips jobs already queued without results"

SQL = """
CREATE OR REPLACE FUNCTION threadline_enrichment_follow_message() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    requeued integer;
BEGIN
    UPDATE enrichment_job SET status = 'QUEUED', run_after = now(), due_messages = NULL, attempts = 0,
        generation = generation + 1, result_text = NULL, result_tags = ARRAY[]::varchar(64)[],
        source_ids = ARRAY[]::uuid[], updated_at = now()
    WHERE conversation_id = NEW.conversation_id AND kind IN ('SUMMARY', 'TAGS') AND status <> 'SKIPPED'
        AND NOT (status = 'QUEUED' AND result_text IS NULL AND cardinality(result_tags) = 0);
    GET DIAGNOSTICS requeued = ROW_COUNT;
    WITH generated AS (
        UPDATE enrichment_job SET status = 'QUEUED', run_after = now(), due_messages = NULL, attempts = 0,
            generation = generation + 1, result_text = NULL, source_ids = ARRAY[]::uuid[], updated_at = now()
        WHERE conversation_id = NEW.conversation_id AND kind = 'TITLE'
            AND (NEW.id = ANY (source_ids) OR status = 'RUNNING')
        RETURNING conversation_id
    )
    UPDATE conversation c SET title = 'New conversation', title_source = 'DEFAULT', updated_at = now()
    FROM generated g WHERE c.id = g.conversation_id AND c.title_source = 'GENERATED';
    IF requeued > 0 OR FOUND THEN
        PERFORM pg_notify('threadline_enrichment', 'queued');
    END IF;
    RETURN NULL;
END $$;
"""


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="threadline", description=DESCRIPTION)
    manager.add_raw(run_sql(SQL))
    return manager
