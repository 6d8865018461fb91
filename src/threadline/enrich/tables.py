"""Enrichment jobs: one row per conversation and kind (TITLE, SUMMARY, TAGS), queued by triggers (see the
migration of 2026-12-06T04), claimed by the enrichment worker, and holding the last result."""

from piccolo.columns import UUID, Array, ForeignKey, Integer, Text, Timestamptz, Varchar
from piccolo.columns.defaults.timestamptz import TimestamptzNow
from piccolo.table import Table

from threadline.auth.tables import Tenant
from threadline.conversations.tables import Conversation


class EnrichmentJob(Table, tablename="enrichment_job"):
    id = UUID(primary_key=True)
    tenant_id = ForeignKey(Tenant, null=False)
    conversation_id = ForeignKey(Conversation, null=False)
    kind = Varchar(length=16)
    status = Varchar(length=16, default="QUEUED")
    # Moves on whenever the inputs change (a message deleted or edited): a stale result is not stored.
    generation = Integer(default=0)
    attempts = Integer(default=0)
    # Queued again when the conversation reaches this many messages (None: not waiting for growth).
    due_messages = Integer(null=True, default=None)
    run_after = Timestamptz(default=TimestamptzNow())
    locked_by = Text(null=True, default=None)
    locked_until = Timestamptz(null=True, default=None)
    generator = Varchar(length=64, null=True, default=None)  # a provider's name, or "extractive"
    last_error_code = Varchar(length=64, null=True, default=None)
    last_error_message = Text(null=True, default=None)
    result_text = Text(null=True, default=None)
    result_tags = Array(base_column=Varchar(length=64), default=list)
    result_messages = Integer(default=0)
    source_ids = Array(base_column=UUID(), default=list)
    created_at = Timestamptz(default=TimestamptzNow())
    updated_at = Timestamptz(default=TimestamptzNow())
    finished_at = Timestamptz(null=True, default=None)
