"""Links between two conversations of a tenant."""

from piccolo.columns import UUID, ForeignKey, Timestamptz, Varchar
from piccolo.columns.defaults.timestamptz import TimestamptzNow
from piccolo.table import Table

from threadline.auth.tables import AppUser, Tenant
from threadline.conversations.tables import Conversation


class ConversationLink(Table, tablename="conversation_link"):
    id = UUID(primary_key=True)
    tenant_id = ForeignKey(Tenant, null=False)
    from_id = ForeignKey(Conversation, null=False)
    to_id = ForeignKey(Conversation, null=False)
    kind = Varchar(length=16)
    # Who linked them; null once that user is gone (the link itself is shared and stays).
    created_by = ForeignKey(AppUser, null=True)
    created_at = Timestamptz(default=TimestamptzNow())
