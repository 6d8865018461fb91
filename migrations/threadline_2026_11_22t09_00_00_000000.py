"""Runs: run, run_step and message_stream, with the indexes that claiming and recovery rely on."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from threadline.db.migration_sql import run_sql

ID = "2026-11-22T09:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "runs, run steps, message streams"

SQL = """
CREATE TABLE run (
    id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    conversation_id uuid NOT NULL REFERENCES conversation (id) ON DELETE CASCADE,
    message_id uuid NOT NULL REFERENCES message (id) ON DELETE CASCADE,
    root_id uuid NOT NULL,
    output_message_id uuid,
    created_by uuid REFERENCES app_user (id) ON DELETE SET NULL,
    queue varchar(64) NOT NULL DEFAULT 'default',
    status varchar(16) NOT NULL DEFAULT 'QUEUED' CHECK (status IN ('QUEUED', 'IN_PROGRESS', 'REQUIRES_ACTION',
        'CANCELLING', 'CANCELLED', 'FAILED', 'COMPLETED', 'INCOMPLETE', 'EXPIRED')),
    provider varchar(64) NOT NULL,
    model varchar(128) NOT NULL,
    instructions text,
    max_history_messages integer,
    prompt_tokens integer NOT NULL DEFAULT 0,
    completion_tokens integer NOT NULL DEFAULT 0,
    last_error_code varchar(64),
    last_error_message text,
    attempt integer NOT NULL DEFAULT 0,
    worker_id varchar(128),
    heartbeat_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    started_at timestamptz,
    completed_at timestamptz,
    cancelled_at timestamptz,
    failed_at timestamptz,
    expired_at timestamptz
);
-- At most one active run per input message; a second one is a unique violation (CONFLICT).
CREATE UNIQUE INDEX run_active_message ON run (message_id)
    WHERE status IN ('QUEUED', 'IN_PROGRESS', 'REQUIRES_ACTION', 'CANCELLING');
CREATE INDEX run_claim ON run (queue, created_at, id) WHERE status = 'QUEUED';
CREATE INDEX run_executing ON run (heartbeat_at) WHERE status IN ('IN_PROGRESS', 'CANCELLING');
CREATE INDEX run_user_active ON run (created_by)
    WHERE status IN ('QUEUED', 'IN_PROGRESS', 'REQUIRES_ACTION', 'CANCELLING');
CREATE INDEX run_conversation ON run (conversation_id, created_at DESC, id DESC);
CREATE INDEX run_output ON run (output_message_id) WHERE output_message_id IS NOT NULL;

CREATE TABLE run_step (
    id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    run_id uuid NOT NULL REFERENCES run (id) ON DELETE CASCADE,
    attempt integer NOT NULL DEFAULT 1,
    type varchar(32) NOT NULL DEFAULT 'MESSAGE_CREATION' CHECK (type IN ('MESSAGE_CREATION', 'TOOL_CALLS')),
    status varchar(16) NOT NULL DEFAULT 'IN_PROGRESS'
        CHECK (status IN ('IN_PROGRESS', 'CANCELLED', 'FAILED', 'COMPLETED', 'EXPIRED')),
    details jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    completed_at timestamptz,
    cancelled_at timestamptz,
    failed_at timestamptz,
    expired_at timestamptz
);
CREATE INDEX run_step_run ON run_step (run_id, created_at, id);

CREATE TABLE message_stream (
    id uuid PRIMARY KEY REFERENCES message (id) ON DELETE CASCADE,
    tenant_id uuid NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    next_index integer NOT NULL DEFAULT 0,
    finished_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now()
);
"""


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="threadline", description=DESCRIPTION)
    manager.add_raw(run_sql(SQL))
    return manager
