"""JWT subjects of erased users (a hash per tenant): an erased subject is not provisioned again."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from threadline.db.migration_sql import run_sql

ID = "2026-11-23T12:12:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "erased JWT subjects"

SQL = """
CREATE TABLE erased_subject (
    id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    subject_hash varchar(64) NOT NULL,
    erased_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX erased_subject_key ON erased_subject (tenant_id, subject_hash);
"""


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="threadline", description=DESCRIPTION)
    manager.add_raw(run_sql(SQL))
    return manager
