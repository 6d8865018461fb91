"""Fair run claims read one index entry a waiting tenant, not the whole queue (runs.repository.claim_next)."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from threadline.db.migration_sql import run_sql

ID = "2026-12-10T06:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "run claims by tenant"

# The queued runs of a queue by tenant, oldest first: a claim finds the tenants waiting by a skip scan of it and
# each one's oldest run by one probe. It replaces `run_claim` (by queue and age alone: the FIFO claim's).
SQL = """
CREATE INDEX run_claim_tenant ON run (queue, tenant_id, created_at, id) WHERE status = 'QUEUED';
DROP INDEX IF EXISTS run_claim;
"""


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="threadline", description=DESCRIPTION)
    manager.add_raw(run_sql(SQL))
    return manager
