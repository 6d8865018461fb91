"""Files in an S3-compatible store (issue 18 item 5): deleted blobs of any store outside PostgreSQL are queued."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from threadline.db.migration_sql import run_sql

ID = "2026-12-05T06:10:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "file_blob_gone.storage; queue deleted directory and s3 blobs"

# The queue says which store holds the bytes to remove: a process removes only what its own store holds.
SQL = """
ALTER TABLE file_blob_gone ADD COLUMN storage varchar(16) NOT NULL DEFAULT 'directory';

CREATE OR REPLACE FUNCTION threadline_queue_gone_blob() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.storage <> 'postgres' THEN
        INSERT INTO file_blob_gone (id, tenant_id, sha256, storage)
        VALUES (OLD.id, OLD.tenant_id, OLD.sha256, OLD.storage);
    END IF;
    RETURN NULL;
END $$;
"""


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="threadline", description=DESCRIPTION)
    manager.add_raw(run_sql(SQL))
    return manager
