"""Porting and audit: import provenance, message attachments, the audit log."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from threadline.db.migration_sql import run_sql

ID = "2026-11-21T21:07:31:000000"
VERSION = "1.38.0"
DESCRIPTION = "import_source, message_attachment, audit_log"

SQL = """
CREATE TABLE import_source (
    id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    source varchar(16) NOT NULL CHECK (source IN ('threadline', 'chatgpt', 'claude')),
    external_id varchar(255) NOT NULL,
    conversation_id uuid NOT NULL REFERENCES conversation (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX import_source_key ON import_source (tenant_id, source, external_id);
CREATE INDEX import_source_conversation ON import_source (conversation_id);

CREATE TABLE message_attachment (
    id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    message_id uuid NOT NULL REFERENCES message (id) ON DELETE CASCADE,
    position integer NOT NULL DEFAULT 0,
    data jsonb NOT NULL DEFAULT '{}'
);
CREATE UNIQUE INDEX message_attachment_message ON message_attachment (message_id, position);

CREATE TABLE audit_log (
    id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    actor_id uuid,
    action varchar(64) NOT NULL,
    target_kind varchar(16),
    target_id uuid,
    details jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_log_tenant_time ON audit_log (tenant_id, created_at DESC, id DESC);
CREATE INDEX audit_log_actor ON audit_log (tenant_id, actor_id);
CREATE INDEX audit_log_target ON audit_log (tenant_id, target_id);
"""


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="threadline", description=DESCRIPTION)
    manager.add_raw(run_sql(SQL))
    return manager
