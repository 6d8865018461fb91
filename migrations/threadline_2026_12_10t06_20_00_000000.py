"""Completions in progress through the gateway (/v1), one row each while it lasts: they count toward
THREADLINE_RUN_MAX_EXECUTING_PER_TENANT with the tenant's executing runs (runs.repository.claim_next,
gateway.admission). A row is a lease: the process serving the call renews `expires_at` while it lasts and deletes
the row when it ends; a row whose process died stops counting when its lease runs out."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from threadline.db.migration_sql import run_sql

ID = "2026-12-10T06:20:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "gateway calls in progress count toward the tenant's executing cap"

SQL = """
CREATE TABLE gateway_call (
    id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    expires_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX gateway_call_tenant ON gateway_call (tenant_id, expires_at);
CREATE INDEX gateway_call_expires ON gateway_call (expires_at);
"""


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="threadline", description=DESCRIPTION)
    manager.add_raw(run_sql(SQL))
    return manager
