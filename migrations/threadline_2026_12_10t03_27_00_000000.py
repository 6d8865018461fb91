"""Enrichment results follow a message's text when it is masked in place (PII backfill, anonymisation), not only
when it is edited or deleted.

`threadline_enrichment_forget(conversation, messages)` is the body of the message trigger (2026-12-06T04:30),
for a set of messages of one conversation: the summary and tag suggestions are dropped and queued again, and a
title made from one of the messages goes back to the placeholder and is made again. The trigger calls it; so do
the writers that change a message's text without editing it (`enrich.repository.forget_results_of`). Before,
`threadline pii backfill` and `userAnonymise` masked a message while the title, summary and suggestions made
from its unmasked text kept the PII, shown to every reader of the conversation.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from threadline.db.migration_sql import run_sql

ID = "2026-12-10T03:27:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "enrichment results follow messages masked in place"

SQL = """
CREATE FUNCTION threadline_enrichment_forget(conversation uuid, messages uuid[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    requeued integer;
    retitled integer;
BEGIN
    UPDATE enrichment_job SET status = 'QUEUED', run_after = now(), due_messages = NULL, attempts = 0,
        generation = generation + 1, result_text = NULL, result_tags = ARRAY[]::varchar(64)[],
        source_ids = ARRAY[]::uuid[], updated_at = now()
    WHERE conversation_id = conversation AND kind IN ('SUMMARY', 'TAGS') AND status <> 'SKIPPED'
        AND NOT (status = 'QUEUED' AND result_text IS NULL AND cardinality(result_tags) = 0);
    GET DIAGNOSTICS requeued = ROW_COUNT;
    UPDATE enrichment_job SET status = 'QUEUED', run_after = now(), due_messages = NULL, attempts = 0,
        generation = generation + 1, result_text = NULL, source_ids = ARRAY[]::uuid[], updated_at = now()
    WHERE conversation_id = conversation AND kind = 'TITLE'
        AND (source_ids && messages OR status = 'RUNNING');
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

CREATE OR REPLACE FUNCTION threadline_enrichment_follow_message() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM threadline_enrichment_forget(NEW.conversation_id, ARRAY[NEW.id]);
    RETURN NULL;
END $$;
"""


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="threadline", description=DESCRIPTION)
    manager.add_raw(run_sql(SQL))
    return manager
