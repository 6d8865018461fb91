"""Idempotency keys (issue 23, item 5): a retried creating mutation returns the first result, written once."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from threadline.db.migration_sql import run_sql

ID = "2026-11-24T10:23:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "idempotency keys"

# The unique index is the lock concurrent retries of one key wait on; the expiry index serves the purge.
SQL = """
CREATE TABLE idempotency_key (
    id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    user_id uuid NOT NULL REFERENCES app_user (id) ON DELETE CASCADE,
    key varchar(200) NOT NULL,
    operation varchar(64) NOT NULL,
    request_hash varchar(64) NOT NULL,
    result jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
CREATE UNIQUE INDEX idempotency_key_owner ON idempotency_key (tenant_id, user_id, key);
CREATE INDEX idempotency_key_expiry ON idempotency_key (expires_at);
"""


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="threadline", description=DESCRIPTION)
    manager.add_raw(run_sql(SQL))
    return manager
