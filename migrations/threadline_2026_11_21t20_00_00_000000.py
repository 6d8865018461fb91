"""Sequences, indexes and checks that Piccolo's column API cannot express."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from threadline.db.migration_sql import run_sql

ID = "2026-11-21T20:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "sequences, indexes and checks"

SQL = """
CREATE SEQUENCE message_seq_seq OWNED BY message.seq;
ALTER TABLE message ALTER COLUMN seq SET DEFAULT nextval('message_seq_seq');
CREATE SEQUENCE stream_event_id_seq OWNED BY stream_event.id;
ALTER TABLE stream_event ALTER COLUMN id SET DEFAULT nextval('stream_event_id_seq');
CREATE SEQUENCE message_chunk_id_seq OWNED BY message_chunk.id;
ALTER TABLE message_chunk ALTER COLUMN id SET DEFAULT nextval('message_chunk_id_seq');

ALTER TABLE app_user ADD CONSTRAINT app_user_role_check CHECK (role IN ('ADMIN', 'MANAGER', 'MEMBER'));
CREATE UNIQUE INDEX app_user_tenant_email ON app_user (tenant_id, lower(email)) WHERE email IS NOT NULL;
CREATE UNIQUE INDEX app_user_tenant_subject ON app_user (tenant_id, external_subject)
    WHERE external_subject IS NOT NULL;
CREATE INDEX app_user_tenant_team ON app_user (tenant_id, team);
CREATE INDEX api_key_user ON api_key (user_id);

ALTER TABLE conversation ADD CONSTRAINT conversation_status_check
    CHECK (status IN ('ACTIVE', 'ARCHIVED', 'DELETED'));
CREATE INDEX conversation_tenant_activity ON conversation (tenant_id, last_activity_at DESC, id DESC);
CREATE INDEX conversation_owner_activity ON conversation (owner_id, last_activity_at DESC, id DESC);
CREATE INDEX conversation_tags ON conversation USING gin (tags);

ALTER TABLE participant ADD CONSTRAINT participant_role_check CHECK (role IN ('OWNER', 'MEMBER', 'VIEWER'));
CREATE UNIQUE INDEX participant_conversation_user ON participant (conversation_id, user_id);
CREATE INDEX participant_user ON participant (user_id, conversation_id);

ALTER TABLE invite ADD CONSTRAINT invite_status_check CHECK (status IN ('PENDING', 'ACCEPTED', 'REVOKED'));
CREATE INDEX invite_conversation_user ON invite (conversation_id, user_id);
CREATE INDEX invite_user ON invite (user_id, status);

ALTER TABLE message ADD CONSTRAINT message_role_check CHECK (role IN ('USER', 'ASSISTANT', 'SYSTEM', 'TOOL'));
CREATE UNIQUE INDEX message_root_path ON message (root_id, path);
CREATE INDEX message_conversation_seq ON message (conversation_id, seq);
CREATE INDEX message_root_seq ON message (root_id, seq);
CREATE INDEX message_author ON message (author_id);

CREATE INDEX thread_conversation_activity ON thread (conversation_id, last_activity_at DESC, id DESC);
CREATE INDEX message_edit_message ON message_edit (message_id, edited_at);
CREATE UNIQUE INDEX read_marker_user_root ON read_marker (user_id, root_id);
CREATE UNIQUE INDEX message_chunk_message_index ON message_chunk (message_id, index);

CREATE INDEX stream_event_conversation ON stream_event (conversation_id, id);
CREATE INDEX stream_event_recipient ON stream_event (recipient_id, id) WHERE recipient_id IS NOT NULL;
CREATE INDEX stream_event_created ON stream_event (created_at);
"""


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="threadline", description=DESCRIPTION)
    manager.add_raw(run_sql(SQL))
    return manager
