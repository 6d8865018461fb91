"""Where imported conversations came from, and message attachments (files, images, tool blocks)."""

from piccolo.columns import JSONB, UUID, Bytea, ForeignKey, Integer, Timestamptz, Varchar
from piccolo.columns.defaults.timestamptz import TimestamptzNow
from piccolo.table import Table

from threadline.auth.tables import AppUser, Tenant
from threadline.conversations.tables import Conversation
from threadline.threads.tables import Message


class ImportSource(Table, tablename="import_source"):
    """(tenant, importing user, source, external id) -> conversation: re-importing a file creates no
    duplicates (it merges), and each user of a tenant has their own import of their own copy."""

    id = UUID(primary_key=True)
    tenant_id = ForeignKey(Tenant, null=False)
    # Null only for rows from before owners were recorded whose conversation had no owner.
    owner_id = ForeignKey(AppUser, null=True)
    source = Varchar(length=16)
    external_id = Varchar(length=255)
    conversation_id = ForeignKey(Conversation, null=False)
    created_at = Timestamptz(default=TimestamptzNow())
    # Source node id -> digest of the node as last imported (ChatGPT): a re-import reads only new nodes.
    node_digests = JSONB(null=True, default=None)
    # SHA-256 of the source item's JSON bytes as last imported or merged (porting.jsonstream.fingerprint): a
    # re-import of the very same bytes skips the item before digesting, comparing or planning it. Null: not known
    # (an API import, or a merge through it).
    fingerprint = Bytea(null=True, default=None)


class MessageAttachment(Table, tablename="message_attachment"):
    """A non-text part of a message, kept as the JSON object the export format carries."""

    id = UUID(primary_key=True)
    tenant_id = ForeignKey(Tenant, null=False)
    message_id = ForeignKey(Message, null=False)
    position = Integer(default=0)
    data = JSONB(default="{}")
