"""Conversations, their participants and invites."""

from piccolo.columns import (
    JSONB,
    UUID,
    Array,
    BigInt,
    ForeignKey,
    Integer,
    Text,
    Timestamptz,
    Varchar,
)
from piccolo.columns.defaults.timestamptz import TimestamptzNow
from piccolo.table import Table

from threadline.auth.tables import AppUser, Tenant


class Conversation(Table, tablename="conversation"):
    id = UUID(primary_key=True)
    tenant_id = ForeignKey(Tenant, null=False)
    owner_id = ForeignKey(AppUser, null=True)
    title = Text(default="")
    # Who set the title: DEFAULT (the placeholder), USER, or GENERATED (enrich/); never replaced once USER.
    title_source = Varchar(length=16, default="USER")
    # The smallest message count an enrichment job of this conversation waits for (enrich/); None: none waits.
    enrichment_due = Integer(null=True, default=None)
    description = Text(default="")
    tags = Array(base_column=Varchar(length=64), default=list)
    status = Varchar(length=16, default="ACTIVE")
    session_id = Varchar(length=255, null=True, default=None)
    ai_provider = Varchar(length=64, null=True, default=None)
    model = Varchar(length=128, null=True, default=None)
    max_history_messages = Integer(default=20)
    message_count = Integer(default=0)
    token_count = BigInt(default=0)
    created_at = Timestamptz(default=TimestamptzNow())
    updated_at = Timestamptz(default=TimestamptzNow())
    last_activity_at = Timestamptz(default=TimestamptzNow())
    # Key/value strings set by clients (conversations.metadata); None until some are set.
    metadata = JSONB(null=True, default=None)
    # A fork's source (forks/): kept as plain ids that go null when the source is deleted.
    forked_from_conversation_id = UUID(null=True, default=None)
    forked_from_message_id = UUID(null=True, default=None)
    # An imported conversation's origin (porting/): {format, source_id, imported_at}; None for others.
    imported_from = JSONB(null=True, default=None)


class Participant(Table, tablename="participant"):
    id = UUID(primary_key=True)
    tenant_id = ForeignKey(Tenant, null=False)
    conversation_id = ForeignKey(Conversation, null=False)
    user_id = ForeignKey(AppUser, null=False)
    role = Varchar(length=16, default="MEMBER")
    joined_at = Timestamptz(default=TimestamptzNow())


class Invite(Table, tablename="invite"):
    id = UUID(primary_key=True)
    tenant_id = ForeignKey(Tenant, null=False)
    conversation_id = ForeignKey(Conversation, null=False)
    user_id = ForeignKey(AppUser, null=False)
    inviter_id = ForeignKey(AppUser, null=True)
    role = Varchar(length=16, default="MEMBER")
    status = Varchar(length=16, default="PENDING")
    created_at = Timestamptz(default=TimestamptzNow())
    accepted_at = Timestamptz(null=True, default=None)
