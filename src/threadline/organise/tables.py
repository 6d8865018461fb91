"""Folders, folder placements, pins and bookmarks: rows of one user each."""

from piccolo.columns import UUID, ForeignKey, Integer, Text, Timestamptz, Varchar
from piccolo.columns.defaults.timestamptz import TimestamptzNow
from piccolo.table import Table

from threadline.auth.tables import AppUser, Tenant
from threadline.conversations.tables import Conversation
from threadline.threads.tables import Message


class Folder(Table, tablename="folder"):
    id = UUID(primary_key=True)
    tenant_id = ForeignKey(Tenant, null=False)
    user_id = ForeignKey(AppUser, null=False)
    parent_id: ForeignKey["Folder"] = ForeignKey("self", null=True)
    name = Varchar(length=1000)
    # Dense among siblings (0..n-1), rewritten under the user's organise lock.
    position = Integer()
    depth = Integer()
    created_at = Timestamptz(default=TimestamptzNow())
    updated_at = Timestamptz(default=TimestamptzNow())


class ConversationFolder(Table, tablename="conversation_folder"):
    """Where one user keeps one conversation (at most one folder per user and conversation)."""

    id = UUID(primary_key=True)
    tenant_id = ForeignKey(Tenant, null=False)
    user_id = ForeignKey(AppUser, null=False)
    conversation_id = ForeignKey(Conversation, null=False)
    folder_id = ForeignKey(Folder, null=False)
    placed_at = Timestamptz(default=TimestamptzNow())


class ConversationPin(Table, tablename="conversation_pin"):
    id = UUID(primary_key=True)
    tenant_id = ForeignKey(Tenant, null=False)
    user_id = ForeignKey(AppUser, null=False)
    conversation_id = ForeignKey(Conversation, null=False)
    position = Integer()
    pinned_at = Timestamptz(default=TimestamptzNow())


class MessageBookmark(Table, tablename="message_bookmark"):
    id = UUID(primary_key=True)
    tenant_id = ForeignKey(Tenant, null=False)
    user_id = ForeignKey(AppUser, null=False)
    message_id = ForeignKey(Message, null=False)
    conversation_id = ForeignKey(Conversation, null=False)
    note = Text(null=True, default=None)
    created_at = Timestamptz(default=TimestamptzNow())
    updated_at = Timestamptz(default=TimestamptzNow())
