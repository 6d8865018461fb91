"""Streaming: presence, typing state and the log's retention watermark."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from threadline.db.migration_sql import run_sql

ID = "2026-11-21T20:30:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "presence, typing state, stream state"

SQL = """
CREATE TABLE stream_state (id varchar(64) PRIMARY KEY, value bigint NOT NULL DEFAULT 0);
INSERT INTO stream_state (id, value) VALUES ('pruned_through', 0);

CREATE TABLE presence (
    id uuid PRIMARY KEY REFERENCES app_user (id) ON DELETE CASCADE,
    tenant_id uuid NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    status varchar(16) NOT NULL DEFAULT 'OFFLINE' CHECK (status IN ('ONLINE', 'AWAY', 'OFFLINE')),
    last_seen_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX presence_online ON presence (last_seen_at) WHERE status <> 'OFFLINE';

CREATE TABLE typing_state (
    id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    conversation_id uuid NOT NULL REFERENCES conversation (id) ON DELETE CASCADE,
    user_id uuid NOT NULL REFERENCES app_user (id) ON DELETE CASCADE,
    root_id uuid,
    expires_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX typing_state_user ON typing_state (conversation_id, user_id);
CREATE INDEX typing_state_expiry ON typing_state (expires_at);
"""


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="threadline", description=DESCRIPTION)
    manager.add_raw(run_sql(SQL))
    return manager
