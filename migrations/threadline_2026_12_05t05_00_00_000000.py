"""Folders, pins, bookmarks and links between conversations (issue 18 items 1, 2, 4)."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from threadline.db.migration_sql import run_sql

ID = "2026-12-05T05:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "folders, pins, bookmarks, conversation links"

# Folders, pins and bookmarks are one user's view of conversations they may read: each row names its user
# (erasure deletes them with the user). Siblings' `position` is dense (0..n-1) and rewritten under a per-user
# lock, so concurrent moves never leave two folders (or pins) at one position. A placement is one row per
# (user, conversation): a conversation sits in at most one folder of each user; deleting a folder deletes its
# subtree and its placements, which puts the conversations back at the root. Links are shared (anyone who
# may read both ends sees them) and stay when their creator is erased.
SQL = """
CREATE TABLE folder (
    id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    user_id uuid NOT NULL REFERENCES app_user (id) ON DELETE CASCADE,
    parent_id uuid REFERENCES folder (id) ON DELETE CASCADE,
    name varchar(1000) NOT NULL,
    position integer NOT NULL,
    depth integer NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX folder_user ON folder (tenant_id, user_id, parent_id, position);
CREATE INDEX folder_parent ON folder (parent_id);

CREATE TABLE conversation_folder (
    id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    user_id uuid NOT NULL REFERENCES app_user (id) ON DELETE CASCADE,
    conversation_id uuid NOT NULL REFERENCES conversation (id) ON DELETE CASCADE,
    folder_id uuid NOT NULL REFERENCES folder (id) ON DELETE CASCADE,
    placed_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_id, conversation_id)
);
CREATE INDEX conversation_folder_folder ON conversation_folder (folder_id, conversation_id);

CREATE TABLE conversation_pin (
    id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    user_id uuid NOT NULL REFERENCES app_user (id) ON DELETE CASCADE,
    conversation_id uuid NOT NULL REFERENCES conversation (id) ON DELETE CASCADE,
    position integer NOT NULL,
    pinned_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_id, conversation_id)
);
CREATE INDEX conversation_pin_conversation ON conversation_pin (conversation_id);

CREATE TABLE message_bookmark (
    id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    user_id uuid NOT NULL REFERENCES app_user (id) ON DELETE CASCADE,
    message_id uuid NOT NULL REFERENCES message (id) ON DELETE CASCADE,
    conversation_id uuid NOT NULL REFERENCES conversation (id) ON DELETE CASCADE,
    note text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_id, message_id)
);
CREATE INDEX message_bookmark_user ON message_bookmark (tenant_id, user_id, created_at DESC, id DESC);
CREATE INDEX message_bookmark_message ON message_bookmark (message_id);
CREATE INDEX message_bookmark_conversation ON message_bookmark (conversation_id);

CREATE TABLE conversation_link (
    id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    from_id uuid NOT NULL REFERENCES conversation (id) ON DELETE CASCADE,
    to_id uuid NOT NULL REFERENCES conversation (id) ON DELETE CASCADE,
    kind varchar(16) NOT NULL,
    created_by uuid REFERENCES app_user (id) ON DELETE SET NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (from_id, to_id, kind),
    CHECK (from_id <> to_id)
);
CREATE INDEX conversation_link_from ON conversation_link (from_id, created_at, id);
CREATE INDEX conversation_link_to ON conversation_link (to_id, created_at, id);
"""


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="threadline", description=DESCRIPTION)
    manager.add_raw(run_sql(SQL))
    return manager
