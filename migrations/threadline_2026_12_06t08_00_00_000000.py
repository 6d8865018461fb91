"""Cold storage tier (issue 20 item 4): one compressed document per cold conversation.

`conversation_tier` holds, for a conversation whose content went cold, the compressed document of every
row that hangs off it (messages and everything keyed by them, threads, runs), with the ids a lookup may
arrive by (messages, runs) and every user the document names (erasure and data-access exports restore
those first). A restored conversation keeps its row without a document (`restored_at`), so the
background pass does not freeze it again straight away.

Moving a conversation's attachments (`message_file`) to the document must not drop the uploads
themselves: the trigger that deletes an upload no message names any more stands aside while the tier
pass deletes rows (a transaction-local setting).
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from threadline.db.migration_sql import run_sql

ID = "2026-12-06T08:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "cold tier: compressed conversation documents"

SQL = """
CREATE TABLE conversation_tier (
    conversation_id uuid PRIMARY KEY REFERENCES conversation(id) ON DELETE CASCADE,
    tenant_id uuid NOT NULL REFERENCES tenant(id) ON DELETE CASCADE,
    document bytea,
    codec varchar(16) NOT NULL DEFAULT 'zlib',
    hot_bytes bigint NOT NULL DEFAULT 0,
    cold_bytes bigint NOT NULL DEFAULT 0,
    row_count integer NOT NULL DEFAULT 0,
    message_ids uuid[] NOT NULL DEFAULT ARRAY[]::uuid[],
    run_ids uuid[] NOT NULL DEFAULT ARRAY[]::uuid[],
    user_ids uuid[] NOT NULL DEFAULT ARRAY[]::uuid[],
    frozen_at timestamptz,
    restored_at timestamptz
);
CREATE INDEX conversation_tier_tenant ON conversation_tier (tenant_id) WHERE document IS NOT NULL;
CREATE INDEX conversation_tier_messages ON conversation_tier USING gin (message_ids);
CREATE INDEX conversation_tier_runs ON conversation_tier USING gin (run_ids);
CREATE INDEX conversation_tier_users ON conversation_tier USING gin (user_ids);

CREATE OR REPLACE FUNCTION threadline_drop_unattached_file() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('threadline.tier_move', true) = 'on' THEN
        RETURN NULL;  -- the attachment moves into a cold document; the upload stays
    END IF;
    DELETE FROM file f WHERE f.id = OLD.file_id AND f.attached_at IS NOT NULL
        AND NOT EXISTS (SELECT 1 FROM message_file mf WHERE mf.file_id = OLD.file_id);
    RETURN NULL;
END $$;
"""


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="threadline", description=DESCRIPTION)
    manager.add_raw(run_sql(SQL))
    return manager
