"""Message feedback: one row per user and message (unique), gone with either."""

from piccolo.columns import UUID, Array, ForeignKey, Text, Timestamptz, Varchar
from piccolo.columns.defaults.timestamptz import TimestamptzNow
from piccolo.table import Table

from threadline.auth.tables import AppUser, Tenant
from threadline.threads.tables import Message


class MessageFeedback(Table, tablename="message_feedback"):
    id = UUID(primary_key=True)
    tenant_id = ForeignKey(Tenant, null=False)
    message_id = ForeignKey(Message, null=False)
    user_id = ForeignKey(AppUser, null=False)
    rating = Varchar(length=8)  # UP or DOWN
    reasons = Array(base_column=Varchar(length=64), default=list)
    comment = Text(default="")
    created_at = Timestamptz(default=TimestamptzNow())
    updated_at = Timestamptz(default=TimestamptzNow())
