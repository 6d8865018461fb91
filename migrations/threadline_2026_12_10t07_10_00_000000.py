"""Gateway call leases (2026_12_10t06_20) that a renewal rewrites in place, and that name their caller.

Renewal: every process rewrites `expires_at` of each lease it holds on every beat. Both indexes held `expires_at`,
so no renewal could be a HOT update: each wrote a new entry in both indexes for every call in progress (and left
dead ones for vacuum). The queries need no index on it: the table holds only calls in progress, so a tenant's or a
user's rows are a handful found by `gateway_call_tenant_user`, and the sweep of lapsed leases (run recovery) scans
the table. With `expires_at` in no index, and room left on each page (fillfactor), a renewal is a HOT update.

`user_id`: the caller, on the first row of each call (one row per choice `n`; a call counts once toward its user's
cap): THREADLINE_RUN_MAX_ACTIVE_PER_USER counts a user's /v1 calls in progress across every process, with their
active runs (gateway.repository.take_call_place, runs.repository.count_active_for_user). Never updated, so its
index does not stop HOT updates either."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from threadline.db.migration_sql import run_sql

ID = "2026-12-10T07:10:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "gateway_call: renewals are HOT updates; user_id counts a user's calls"

SQL = """
ALTER TABLE gateway_call ADD COLUMN user_id uuid REFERENCES app_user (id) ON DELETE CASCADE;
DROP INDEX gateway_call_tenant;
DROP INDEX gateway_call_expires;
CREATE INDEX gateway_call_tenant_user ON gateway_call (tenant_id, user_id);
ALTER TABLE gateway_call SET (fillfactor = 50);
"""


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="threadline", description=DESCRIPTION)
    manager.add_raw(run_sql(SQL))
    return manager
