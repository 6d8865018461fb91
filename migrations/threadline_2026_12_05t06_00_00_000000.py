"""Share links and file attachments (issue 18 items 3, 5)."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from threadline.db.migration_sql import run_sql

ID = "2026-12-05T06:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "share links, share rate windows, files, file blobs and chunks, message files"

# Share links keep only the SHA-256 of their token: a database dump names no working link. The token is
# looked up globally (an anonymous reader has no tenant), hence the unique index on the hash alone.
#
# Files: an upload (`file`) names a blob (`file_blob`) of the tenant, deduplicated by checksum; the bytes are
# PostgreSQL chunks (`file_chunk`) or a file in a directory (storage 'directory'). Deleted means gone: the
# triggers remove a message's files when it becomes a tombstone, an attached file when no message holds it
# any more, and a blob when no upload names it (chunks follow by cascade; a directory blob is queued in
# `file_blob_gone` for the server to unlink).
SQL = """
CREATE TABLE share_link (
    id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    conversation_id uuid NOT NULL REFERENCES conversation (id) ON DELETE CASCADE,
    message_id uuid REFERENCES message (id) ON DELETE CASCADE,
    created_by uuid NOT NULL REFERENCES app_user (id) ON DELETE CASCADE,
    token_hash bytea NOT NULL,
    live boolean NOT NULL DEFAULT false,
    snapshot_seq bigint NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz,
    revoked_at timestamptz,
    view_count bigint NOT NULL DEFAULT 0,
    last_viewed_at timestamptz
);
CREATE UNIQUE INDEX share_link_token ON share_link (token_hash);
CREATE INDEX share_link_creator ON share_link (tenant_id, created_by, created_at, id);
CREATE INDEX share_link_conversation ON share_link (tenant_id, conversation_id);

CREATE UNLOGGED TABLE share_rate_window (
    key text PRIMARY KEY,
    window_start timestamptz NOT NULL,
    hits integer NOT NULL DEFAULT 0
);

CREATE TABLE file_blob (
    id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    sha256 bytea NOT NULL,
    size bigint NOT NULL,
    content_type text NOT NULL,
    storage varchar(16) NOT NULL DEFAULT 'postgres',
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX file_blob_checksum ON file_blob (tenant_id, sha256);

CREATE TABLE file_chunk (
    blob_id uuid NOT NULL REFERENCES file_blob (id) ON DELETE CASCADE,
    tenant_id uuid NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    seq integer NOT NULL,
    data bytea NOT NULL,
    PRIMARY KEY (blob_id, seq)
);

CREATE TABLE file (
    id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    blob_id uuid NOT NULL REFERENCES file_blob (id) ON DELETE CASCADE,
    uploaded_by uuid REFERENCES app_user (id) ON DELETE CASCADE,
    filename text NOT NULL,
    attached_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX file_blob_ref ON file (blob_id);
CREATE INDEX file_uploader ON file (tenant_id, uploaded_by);

CREATE TABLE message_file (
    tenant_id uuid NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    message_id uuid NOT NULL REFERENCES message (id) ON DELETE CASCADE,
    file_id uuid NOT NULL REFERENCES file (id) ON DELETE CASCADE,
    position integer NOT NULL DEFAULT 0,
    PRIMARY KEY (message_id, file_id)
);
CREATE INDEX message_file_file ON message_file (file_id);

CREATE TABLE file_blob_gone (
    id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL,
    sha256 bytea NOT NULL,
    gone_at timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION threadline_message_files_follow_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM message_file WHERE message_id = NEW.id;
    RETURN NULL;
END $$;
CREATE TRIGGER message_files_follow_delete AFTER UPDATE OF deleted_at ON message
    FOR EACH ROW WHEN (NEW.deleted_at IS NOT NULL AND OLD.deleted_at IS NULL)
    EXECUTE FUNCTION threadline_message_files_follow_delete();

CREATE FUNCTION threadline_drop_unattached_file() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM file f WHERE f.id = OLD.file_id AND f.attached_at IS NOT NULL
        AND NOT EXISTS (SELECT 1 FROM message_file mf WHERE mf.file_id = OLD.file_id);
    RETURN NULL;
END $$;
CREATE TRIGGER message_file_dropped AFTER DELETE ON message_file
    FOR EACH ROW EXECUTE FUNCTION threadline_drop_unattached_file();

CREATE FUNCTION threadline_drop_unnamed_blob() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM file_blob b WHERE b.id = OLD.blob_id
        AND NOT EXISTS (SELECT 1 FROM file f WHERE f.blob_id = OLD.blob_id);
    RETURN NULL;
END $$;
CREATE TRIGGER file_dropped AFTER DELETE ON file
    FOR EACH ROW EXECUTE FUNCTION threadline_drop_unnamed_blob();

CREATE FUNCTION threadline_queue_gone_blob() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.storage = 'directory' THEN
        INSERT INTO file_blob_gone (id, tenant_id, sha256) VALUES (OLD.id, OLD.tenant_id, OLD.sha256);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER file_blob_dropped AFTER DELETE ON file_blob
    FOR EACH ROW EXECUTE FUNCTION threadline_queue_gone_blob();
"""


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="threadline", description=DESCRIPTION)
    manager.add_raw(run_sql(SQL))
    return manager
