"""Titles, summaries and tag suggestions as background jobs (issue 19 item 3).

`conversation.title_source` says who set the title: DEFAULT (the placeholder), USER, or GENERATED. Rows that
exist already, and rows other writers insert without saying (imports, forks), count as USER: a title that
came from somewhere else is never replaced. Only conversations that still show the placeholder and are short
enough to reach their first exchange later become DEFAULT here.

`enrichment_job` holds one row per conversation and kind (TITLE, SUMMARY, TAGS): its status, attempts, last
error and result. The triggers queue the work, so every writer of messages (threads, runs, imports, the
gateway) is covered without knowing about it:
- the conversation reaching two messages (its first exchange) queues all three kinds (TITLE only while the
  title is DEFAULT); a job that waits for more messages (`due_messages`) is queued when the count reaches it;
- a message deleted or edited queues SUMMARY and TAGS again and drops their results at once (deleted means
  gone), and the TITLE too when the message was one it was generated from (`source_ids`) while the title is
  still GENERATED: that title goes back to the placeholder; a TITLE job running then is queued again too.
  `generation` moves on, so a worker still busy with the old text cannot store it.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from threadline.db.migration_sql import run_sql

ID = "2026-12-06T04:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "conversation title source, enrichment jobs and their triggers"

SQL = """
ALTER TABLE conversation ADD COLUMN title_source varchar(16) NOT NULL DEFAULT 'USER';
UPDATE conversation SET title_source = 'DEFAULT' WHERE title = 'New conversation' AND message_count < 2;

CREATE TABLE enrichment_job (
    id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    conversation_id uuid NOT NULL REFERENCES conversation (id) ON DELETE CASCADE,
    kind varchar(16) NOT NULL,
    status varchar(16) NOT NULL DEFAULT 'QUEUED',
    generation integer NOT NULL DEFAULT 0,
    attempts integer NOT NULL DEFAULT 0,
    due_messages integer,
    run_after timestamptz NOT NULL DEFAULT now(),
    locked_by text,
    locked_until timestamptz,
    generator varchar(64),
    last_error_code varchar(64),
    last_error_message text,
    result_text text,
    result_tags varchar(64)[] NOT NULL DEFAULT ARRAY[]::varchar(64)[],
    result_messages integer NOT NULL DEFAULT 0,
    source_ids uuid[] NOT NULL DEFAULT ARRAY[]::uuid[],
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);
CREATE UNIQUE INDEX enrichment_job_conversation_kind ON enrichment_job (conversation_id, kind);
CREATE INDEX enrichment_job_tenant ON enrichment_job (tenant_id);
-- What a worker may claim: queued and due, or running with a lapsed lease.
CREATE INDEX enrichment_job_claimable ON enrichment_job (run_after) WHERE status IN ('QUEUED', 'RUNNING');

CREATE FUNCTION threadline_enrichment_enqueue() RETURNS trigger LANGUAGE plpgsql AS $$
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
    RETURN NULL;
END $$;
CREATE TRIGGER conversation_enrichment AFTER UPDATE OF message_count ON conversation
    FOR EACH ROW WHEN (NEW.message_count > OLD.message_count)
    EXECUTE FUNCTION threadline_enrichment_enqueue();

CREATE FUNCTION threadline_enrichment_follow_message() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    requeued integer;
BEGIN
    UPDATE enrichment_job SET status = 'QUEUED', run_after = now(), due_messages = NULL, attempts = 0,
        generation = generation + 1, result_text = NULL, result_tags = ARRAY[]::varchar(64)[],
        source_ids = ARRAY[]::uuid[], updated_at = now()
    WHERE conversation_id = NEW.conversation_id AND kind IN ('SUMMARY', 'TAGS') AND status <> 'SKIPPED';
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
CREATE TRIGGER message_enrichment AFTER UPDATE OF deleted_at, edited_at ON message
    FOR EACH ROW WHEN (NEW.deleted_at IS DISTINCT FROM OLD.deleted_at OR NEW.edited_at IS DISTINCT FROM OLD.edited_at)
    EXECUTE FUNCTION threadline_enrichment_follow_message();
"""


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="threadline", description=DESCRIPTION)
    manager.add_raw(run_sql(SQL))
    return manager
