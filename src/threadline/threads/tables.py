"""Messages (tree nodes), threads (one row per root), edit history, read markers, chunks."""

from piccolo.columns import (
    JSONB,
    UUID,
    BigInt,
    Boolean,
    Bytea,
    ForeignKey,
    Integer,
    Text,
    Timestamptz,
    Varchar,
)
from piccolo.columns.defaults.timestamptz import TimestamptzNow
from piccolo.table import Table

from threadline.auth.tables import AppUser, Tenant
from threadline.conversations.tables import Conversation


class Message(Table, tablename="message"):
    id = UUID(primary_key=True)
    tenant_id = ForeignKey(Tenant, null=False)
    conversation_id = ForeignKey(Conversation, null=False)
    # root_id/parent_id are plain columns: a root points at itself, and tombstones keep the tree.
    root_id = UUID()
    parent_id = UUID(null=True, default=None)
    depth = Integer(default=0)
    # Order-preserving encoding of the sibling ranks from the root: sorts depth-first.
    path = Bytea()
    seq = BigInt()
    child_count = Integer(default=0)
    role = Varchar(length=16, default="USER")
    content = Text(default="")
    author_id = ForeignKey(AppUser, null=True)
    model = Varchar(length=128, null=True, default=None)
    prompt_tokens = Integer(null=True, default=None)
    completion_tokens = Integer(null=True, default=None)
    created_at = Timestamptz(default=TimestamptzNow())
    edited_at = Timestamptz(null=True, default=None)
    deleted_at = Timestamptz(null=True, default=None)
    # The usage came from an import file (self-reported): shown, but not counted as spend.
    usage_imported = Boolean(default=False)
    # The message's id in the export it was imported from (porting): a re-import merges by it.
    import_key = Text(null=True, default=None)
    # Key/value strings set by clients (conversations.metadata); None until some are set.
    metadata = JSONB(null=True, default=None)
    # Content parts (parts.model) when the message is more than plain text; None otherwise.
    parts = JSONB(null=True, default=None)
    # PII detections in `content` (privacy.masking: [{kind, start, end}]); None when never scanned.
    pii = JSONB(null=True, default=None)


class Thread(Table, tablename="thread"):
    id = UUID(primary_key=True)  # the root message's id
    tenant_id = ForeignKey(Tenant, null=False)
    conversation_id = ForeignKey(Conversation, null=False)
    reply_count = Integer(default=0)
    last_seq = BigInt(default=0)
    created_at = Timestamptz(default=TimestamptzNow())
    last_activity_at = Timestamptz(default=TimestamptzNow())


class MessageEdit(Table, tablename="message_edit"):
    id = UUID(primary_key=True)
    tenant_id = ForeignKey(Tenant, null=False)
    message_id = ForeignKey(Message, null=False)
    content = Text(default="")
    editor_id = ForeignKey(AppUser, null=True)
    edited_at = Timestamptz(default=TimestamptzNow())


class ReadMarker(Table, tablename="read_marker"):
    id = UUID(primary_key=True)
    tenant_id = ForeignKey(Tenant, null=False)
    user_id = ForeignKey(AppUser, null=False)
    root_id = ForeignKey(Thread, null=False)
    last_read_seq = BigInt(default=0)
    read_at = Timestamptz(default=TimestamptzNow())


class MessageChunk(Table, tablename="message_chunk"):
    id = BigInt(primary_key=True)
    tenant_id = ForeignKey(Tenant, null=False)
    message_id = ForeignKey(Message, null=False)
    index = Integer()
    content = Text(default="")
    run_id = UUID(null=True, default=None)
    created_at = Timestamptz(default=TimestamptzNow())


class ThreadCurrentLeaf(Table, tablename="thread_current_leaf"):
    """The branch a user is on in a thread: the leaf `Thread.currentPath` ends at (threads.branches)."""

    id = UUID(primary_key=True)
    tenant_id = ForeignKey(Tenant, null=False)
    user_id = ForeignKey(AppUser, null=False)
    root_id = ForeignKey(Thread, null=False)
    message_id = ForeignKey(Message, null=False)
    updated_at = Timestamptz(default=TimestamptzNow())
