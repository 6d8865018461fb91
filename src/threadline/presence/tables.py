"""Presence (per user) and typing state (per user and conversation), both expiring."""

from piccolo.columns import UUID, ForeignKey, Timestamptz, Varchar
from piccolo.columns.defaults.timestamptz import TimestamptzNow
from piccolo.table import Table

from threadline.auth.tables import AppUser, Tenant
from threadline.conversations.tables import Conversation


class Presence(Table, tablename="presence"):
    id = ForeignKey(AppUser, primary_key=True, null=False)  # one row per user
    tenant_id = ForeignKey(Tenant, null=False)
    status = Varchar(length=16, default="OFFLINE")
    last_seen_at = Timestamptz(default=TimestamptzNow())


class TypingState(Table, tablename="typing_state"):
    id = UUID(primary_key=True)
    tenant_id = ForeignKey(Tenant, null=False)
    conversation_id = ForeignKey(Conversation, null=False)
    user_id = ForeignKey(AppUser, null=False)
    root_id = UUID(null=True, default=None)
    expires_at = Timestamptz(default=TimestamptzNow())
