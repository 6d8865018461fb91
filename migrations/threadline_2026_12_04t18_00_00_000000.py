"""Persisted documents (issue 21 item 2): automatic persisted queries and trusted documents."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from threadline.db.migration_sql import run_sql

ID = "2026-12-04T18:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "persisted documents"

# Not tenant-scoped: a document is public API text addressed by its hash or a manifest id. The partial index
# serves eviction of the unpinned (automatically persisted) documents by last use.
SQL = """
CREATE TABLE persisted_document (
    id varchar(200) PRIMARY KEY,
    sha256 varchar(64) NOT NULL,
    body text NOT NULL,
    pinned boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX persisted_document_sha256 ON persisted_document (sha256);
CREATE INDEX persisted_document_unpinned_use ON persisted_document (last_used_at) WHERE NOT pinned;
"""


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="threadline", description=DESCRIPTION)
    manager.add_raw(run_sql(SQL))
    return manager
