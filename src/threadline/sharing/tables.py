"""Share links (a hashed token naming a conversation or a branch of it) and the readers' rate windows."""

from piccolo.columns import UUID, BigInt, Boolean, Bytea, ForeignKey, Integer, Text, Timestamptz
from piccolo.columns.defaults.timestamptz import TimestamptzNow
from piccolo.table import Table

from threadline.auth.tables import AppUser, Tenant
from threadline.conversations.tables import Conversation
from threadline.threads.tables import Message


class ShareLink(Table, tablename="share_link"):
    id = UUID(primary_key=True)
    tenant_id = ForeignKey(Tenant, null=False)
    conversation_id = ForeignKey(Conversation, null=False)
    # The branch shared (the path from its root down to this message); null: the whole conversation.
    message_id = ForeignKey(Message, null=True)
    created_by = ForeignKey(AppUser, null=False)
    token_hash = Bytea()  # SHA-256 of the token: the token itself is shown once and never stored
    live = Boolean(default=False)
    # The last message sequence number visible when it was shared (a snapshot shows nothing newer).
    snapshot_seq = BigInt(default=0)
    created_at = Timestamptz(default=TimestamptzNow())
    expires_at = Timestamptz(null=True, default=None)
    revoked_at = Timestamptz(null=True, default=None)
    view_count = BigInt(default=0)
    last_viewed_at = Timestamptz(null=True, default=None)


class ShareRateWindow(Table, tablename="share_rate_window"):
    """Reads of shared conversations per token and per client address in the current window (UNLOGGED)."""

    key = Text(primary_key=True)
    window_start = Timestamptz(default=TimestamptzNow())
    hits = Integer(default=0)
