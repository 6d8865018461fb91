"""Runs (an assistant generating a reply), their steps, and the streaming state of output messages."""

from piccolo.columns import JSONB, UUID, ForeignKey, Integer, Text, Timestamptz, Varchar
from piccolo.columns.defaults.timestamptz import TimestamptzNow
from piccolo.table import Table

from threadline.auth.tables import AppUser, Tenant
from threadline.conversations.tables import Conversation
from threadline.threads.tables import Message


class Run(Table, tablename="run"):
    id = UUID(primary_key=True)
    tenant_id = ForeignKey(Tenant, null=False)
    conversation_id = ForeignKey(Conversation, null=False)
    message_id = ForeignKey(Message, null=False)  # the input: the run answers this message
    root_id = UUID()  # the input's thread root, so events route without a join
    output_message_id = UUID(null=True, default=None)
    created_by = ForeignKey(AppUser, null=True)
    queue = Varchar(length=64, default="default")
    status = Varchar(length=16, default="QUEUED")
    provider = Varchar(length=64)
    model = Varchar(length=128)
    instructions = Text(null=True, default=None)
    max_history_messages = Integer(null=True, default=None)
    prompt_tokens = Integer(default=0)
    completion_tokens = Integer(default=0)
    last_error_code = Varchar(length=64, null=True, default=None)
    last_error_message = Text(null=True, default=None)
    # The fence: a worker's writes name the attempt it claimed, so a worker presumed dead cannot
    # write into a run that was expired or requeued meanwhile.
    attempt = Integer(default=0)
    worker_id = Varchar(length=128, null=True, default=None)
    heartbeat_at = Timestamptz(null=True, default=None)
    created_at = Timestamptz(default=TimestamptzNow())
    updated_at = Timestamptz(default=TimestamptzNow())
    started_at = Timestamptz(null=True, default=None)
    completed_at = Timestamptz(null=True, default=None)
    cancelled_at = Timestamptz(null=True, default=None)
    failed_at = Timestamptz(null=True, default=None)
    expired_at = Timestamptz(null=True, default=None)
    # Tool calls (runs.tools): the tools offered, and the calls a run in REQUIRES_ACTION waits for since when.
    tools = JSONB(null=True, default=None)
    tool_choice = JSONB(null=True, default=None)
    required_action = JSONB(null=True, default=None)
    requires_action_at = Timestamptz(null=True, default=None)


class RunStep(Table, tablename="run_step"):
    id = UUID(primary_key=True)
    tenant_id = ForeignKey(Tenant, null=False)
    run_id = ForeignKey(Run, null=False)
    attempt = Integer(default=1)
    type = Varchar(length=32, default="MESSAGE_CREATION")
    status = Varchar(length=16, default="IN_PROGRESS")
    details = JSONB(default="{}")
    created_at = Timestamptz(default=TimestamptzNow())
    completed_at = Timestamptz(null=True, default=None)
    cancelled_at = Timestamptz(null=True, default=None)
    failed_at = Timestamptz(null=True, default=None)
    expired_at = Timestamptz(null=True, default=None)


class MessageStream(Table, tablename="message_stream"):
    """Streaming state of a message written in pieces: the next chunk index, and whether it is final."""

    id = UUID(primary_key=True)  # the message's id
    tenant_id = ForeignKey(Tenant, null=False)
    next_index = Integer(default=0)
    finished_at = Timestamptz(null=True, default=None)
    updated_at = Timestamptz(default=TimestamptzNow())
