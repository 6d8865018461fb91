"""A conversation's cold document (tiers/): one row per conversation that went cold, kept after a restore."""

from piccolo.columns import UUID, Array, BigInt, Boolean, Bytea, ForeignKey, Integer, Timestamptz, Varchar
from piccolo.columns.defaults.timestamptz import TimestamptzNow
from piccolo.table import Table

from threadline.auth.tables import Tenant
from threadline.conversations.tables import Conversation


class ConversationTier(Table, tablename="conversation_tier"):
    conversation_id = ForeignKey(Conversation, primary_key=True, null=False)
    tenant_id = ForeignKey(Tenant, null=False)
    document = Bytea(null=True, default=None)  # the compressed document; NULL once restored
    codec = Varchar(length=16, default="zlib")
    hot_bytes = BigInt(default=0)  # the moved rows' size in the hot tables
    cold_bytes = BigInt(default=0)  # the document's size
    row_count = Integer(default=0)
    message_ids = Array(base_column=UUID(), default=list)  # lookups by id find the conversation
    run_ids = Array(base_column=UUID(), default=list)
    user_ids = Array(base_column=UUID(), default=list)  # everyone the document names (erasure, exports)
    frozen_at = Timestamptz(null=True, default=None)
    restored_at = Timestamptz(null=True, default=None)
    deep = Boolean(default=False)  # deep storage: back only when asked (conversationRestore)


class TierRestore(Table, tablename="tier_restore"):
    """Progress of the latest explicit restore of a conversation from deep storage."""

    conversation_id = ForeignKey(Conversation, primary_key=True, null=False)
    tenant_id = ForeignKey(Tenant, null=False)
    state = Varchar(length=16)  # RESTORING, DONE or FAILED
    rows_done = Integer(default=0)
    rows_total = Integer(default=0)
    started_at = Timestamptz(default=TimestamptzNow())
    updated_at = Timestamptz(default=TimestamptzNow())
