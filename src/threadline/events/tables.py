"""The event log: every stream event, in commit-safe cursor order."""

from piccolo.columns import JSONB, UUID, BigInt, Timestamptz, Varchar
from piccolo.columns.defaults.timestamptz import TimestamptzNow
from piccolo.table import Table


class StreamEvent(Table, tablename="stream_event"):
    """(Also `message_id`, generated from the payload by a migration and not a Piccolo column: the message
    whose content a thread.new, thread.activity or message.delta carries, for events.scrub.)"""

    id = BigInt(primary_key=True)
    tenant_id = UUID()
    conversation_id = UUID(null=True, default=None)
    root_id = UUID(null=True, default=None)
    recipient_id = UUID(null=True, default=None)
    type = Varchar(length=32)
    payload = JSONB(default="{}")
    created_at = Timestamptz(default=TimestamptzNow())


class StreamState(Table, tablename="stream_state"):
    """Process-independent facts about the log, e.g. the highest id pruned by retention."""

    id = Varchar(length=64, primary_key=True)
    value = BigInt(default=0)
