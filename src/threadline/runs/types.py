"""GraphQL types of runs and run steps."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any
from uuid import UUID

import asyncpg
import orjson
import strawberry
from strawberry.scalars import JSON

from threadline.graphql import budget
from threadline.graphql.context import Info
from threadline.graphql.describe import describe_values
from threadline.graphql.node import Node
from threadline.graphql.pagination import (
    After,
    Connection,
    First,
    as_datetime,
    as_uuid,
    connection,
    decode_cursor,
    page_size,
)
from threadline.ids import Kind, encode_id
from threadline.runs import loaders, transitions

if TYPE_CHECKING:
    from threadline.parts.types import ToolCallPart
    from threadline.threads.types import Message, Usage

RunStatus = strawberry.enum(
    transitions.RunStatus,
    name="RunStatus",
    description="Where a run is: QUEUED -> IN_PROGRESS -> COMPLETED | FAILED | INCOMPLETE | EXPIRED, or "
    "CANCELLING -> CANCELLED, or REQUIRES_ACTION (tool calls) -> QUEUED (outputs submitted) | EXPIRED | CANCELLED. "
    "COMPLETED, FAILED, INCOMPLETE, CANCELLED and EXPIRED are final.",
)
RunStepStatus = strawberry.enum(
    transitions.StepStatus, name="RunStepStatus", description="Where a run step is."
)
RunStepType = strawberry.enum(
    transitions.StepType,
    name="RunStepType",
    description="MESSAGE_CREATION writes an output message; TOOL_CALLS waits for the outputs of tool calls.",
)

describe_values(
    RunStatus,
    {
        "QUEUED": "Waiting for a worker.",
        "IN_PROGRESS": "A worker is producing the output message (streamed as `message.delta` events).",
        "REQUIRES_ACTION": "The model called tools: waiting for their outputs (`requiredAction`, "
        "`runSubmitToolOutputs`); expires after THREADLINE_RUN_TOOL_OUTPUTS_TIMEOUT_SECONDS.",
        "CANCELLING": "`runCancel` was asked; the worker stops at its next step, then CANCELLED.",
        "CANCELLED": "Final: cancelled; the partial output stays.",
        "FAILED": "Final: the provider or the worker failed; `error` says why.",
        "COMPLETED": "Final: the output message is complete.",
        "INCOMPLETE": "Final: the model stopped early (output length limit or content filter); the partial output "
        "stays.",
        "EXPIRED": "Final: its worker was lost (and THREADLINE_RUN_ON_LOST_WORKER is `expire`) or tool outputs "
        "did not come in time; the partial output stays.",
    },
)
describe_values(
    RunStepStatus,
    {
        "IN_PROGRESS": "The step is running.",
        "CANCELLED": "Final: the run was cancelled during this step.",
        "FAILED": "Final: the step failed; the run's `error` says why.",
        "COMPLETED": "Final: the step finished.",
        "EXPIRED": "Final: the run expired during this step.",
    },
)
describe_values(
    RunStepType,
    {
        "MESSAGE_CREATION": "The step writes the run's output message.",
        "TOOL_CALLS": "The model called tools: the step lasts until their outputs are submitted "
        '(details: {"messageId", "toolCallIds", "runUsage": [prompt, completion] so far}; the calls themselves '
        "are the message's tool-call parts).",
    },
)

# Bytes a step costs in a response besides its details: its id, type, status, attempt, timestamps and JSON syntax.
STEP_BYTES = 300

_MessageType = Annotated["Message", strawberry.lazy("threadline.threads.types")]
_ToolCallType = Annotated["ToolCallPart", strawberry.lazy("threadline.parts.types")]


@strawberry.type(description="What a run in REQUIRES_ACTION waits for.")
class RequiredAction:
    message_id: strawberry.ID = strawberry.field(description="The ASSISTANT message holding the calls.")
    message_uuid: strawberry.Private[UUID]
    call_ids: strawberry.Private[list[str]]

    @strawberry.field(
        description="The calls the model made (the message's tool-call parts), each to be answered in "
        "`runSubmitToolOutputs` by its id; empty if the message was deleted."
    )
    async def tool_calls(self, info: Info) -> list[_ToolCallType]:
        from threadline.parts.types import ToolCallPart

        found = await loaders.message(info, self.message_uuid)
        row = found[0] if found is not None else None
        stored = row["parts"] if row is not None and row["deleted_at"] is None else None
        calls = {p["id"]: p for p in stored or [] if p["type"] == "tool_call"}
        return [
            ToolCallPart(id=i, name=calls[i]["name"], arguments=calls[i]["arguments"])
            for i in self.call_ids
            if i in calls
        ]


_UsageType = Annotated["Usage", strawberry.lazy("threadline.threads.types")]


@strawberry.type(description="Why a run failed or expired.")
class RunError:
    code: str = strawberry.field(
        description="PROVIDER_ERROR, PROVIDER_UNAVAILABLE, PROVIDER_BAD_STREAM, TIMEOUT, RUN_EXPIRED, "
        "TOOL_OUTPUTS_TIMEOUT, CONTEXT_TOO_LARGE, OUTPUT_DELETED, or an API error code (e.g. CONFLICT) when the run could not start."
    )
    message: str = strawberry.field(
        description="An explanation for people (the provider's message where there is one); match on `code`, not on it."
    )


@strawberry.type(description="One step of a run: an output message written (or, later, tool calls).")
class RunStep(Node):
    type: RunStepType = strawberry.field(description="What the step does.")  # type: ignore[valid-type]
    status: RunStepStatus = strawberry.field(description="Where the step is.")  # type: ignore[valid-type]
    details: JSON = strawberry.field(
        description='For MESSAGE_CREATION: {"messageId": ...}; for TOOL_CALLS: {"messageId", "toolCallIds", '
        '"runUsage"}.'
    )
    attempt: int = strawberry.field(
        description="The run attempt the step belongs to (a requeued run retries)."
    )
    created_at: datetime = strawberry.field(description="When the step began.")
    completed_at: datetime | None = strawberry.field(description="When it completed.")
    cancelled_at: datetime | None = strawberry.field(description="When it was cancelled.")
    failed_at: datetime | None = strawberry.field(description="When it failed.")
    expired_at: datetime | None = strawberry.field(description="When it expired.")

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> RunStep:
        return cls(
            id=strawberry.ID(encode_id(Kind.RUN_STEP, row["id"])),
            type=transitions.StepType(row["type"]),
            status=transitions.StepStatus(row["status"]),
            details=row["details"],
            attempt=row["attempt"],
            created_at=row["created_at"],
            completed_at=row["completed_at"],
            cancelled_at=row["cancelled_at"],
            failed_at=row["failed_at"],
            expired_at=row["expired_at"],
        )


@strawberry.type(description="An assistant generating a reply to a message, streamed into an output message.")
class Run(Node):
    status: RunStatus = strawberry.field(description="Where the run is.")  # type: ignore[valid-type]
    provider: str = strawberry.field(description="`echo` or `openai`.")
    model: str = strawberry.field(description="The model asked for.")
    instructions: str | None = strawberry.field(description="Sent first, as a system message.")
    max_history_messages: int | None = strawberry.field(description="The history limit asked for, if any.")
    conversation_id: strawberry.ID = strawberry.field(description="The conversation of the message.")
    attempt: int = strawberry.field(
        description="How many times a worker has started it (more than 1 after a requeue)."
    )
    last_error: RunError | None = strawberry.field(description="Why it failed or expired.")
    created_at: datetime = strawberry.field(description="When it was queued.")
    started_at: datetime | None = strawberry.field(description="When a worker first started it.")
    completed_at: datetime | None = strawberry.field(description="When it completed (or ended INCOMPLETE).")
    cancelled_at: datetime | None = strawberry.field(description="When it was cancelled.")
    failed_at: datetime | None = strawberry.field(description="When it failed.")
    expired_at: datetime | None = strawberry.field(description="When it expired.")
    tools: list[JSON] | None = strawberry.field(
        description="The function tools offered to the model, if any."
    )
    tool_choice: JSON | None = strawberry.field(
        description="How the model may choose among `tools`, if given."
    )
    required_action: RequiredAction | None = strawberry.field(
        description="In REQUIRES_ACTION: the tool calls to answer with `runSubmitToolOutputs`; null otherwise."
    )
    uuid: strawberry.Private[UUID]
    message_uuid: strawberry.Private[UUID]
    output_uuid: strawberry.Private[UUID | None]
    prompt_tokens: strawberry.Private[int]
    completion_tokens: strawberry.Private[int]

    @strawberry.field(description="The message the run answers.")
    async def message(self, info: Info) -> _MessageType | None:
        return await _load_message(info, self.message_uuid)

    @strawberry.field(description="The assistant reply it writes (null until a worker starts it).")
    async def output(self, info: Info) -> _MessageType | None:
        return await _load_message(info, self.output_uuid) if self.output_uuid else None

    @strawberry.field(
        description="Token usage so far (partial while running or after a cancel); null while queued."
    )
    def usage(self) -> _UsageType | None:
        from threadline.threads.types import Usage

        if self.status is transitions.RunStatus.QUEUED:
            return None
        return Usage.of(self.prompt_tokens, self.completion_tokens)

    @strawberry.field(
        description="Its steps, oldest first: at most the first THREADLINE_PAGE_SIZE_MAX (100 by default). A long "
        "agent run may have thousands: page through them with `stepConnection`.",
        deprecation_reason="Returns at most the first THREADLINE_PAGE_SIZE_MAX (100 by default) steps; use "
        "`stepConnection(first:, after:)`, which pages through all of them.",
    )
    async def steps(self, info: Info) -> list[RunStep]:
        limit = info.context.settings.page_size_max
        # Priced as one object by the query limits, so charged before the rows are read: a response asking for the
        # steps of thousands of runs (aliases, `conversations { runs }`) is refused before it reads them.
        if budget.current() is not None:
            _charge_steps(info, await loaders.step_count(info, self.uuid, at_most=limit), [])
        rows = await loaders.steps(info, self.uuid, limit, None)
        _charge_steps(info, 0, rows)
        return [RunStep.from_row(row) for row in rows]

    @strawberry.field(description="Its steps, oldest first, a page at a time.")
    async def step_connection(
        self, info: Info, first: First = None, after: After = None
    ) -> Connection[RunStep]:
        settings = info.context.settings
        limit = page_size(first, settings.page_size_default, settings.page_size_max)
        cursor = decode_cursor(after, (as_datetime, as_uuid)) if after else None
        rows = await loaders.steps(info, self.uuid, limit + 1, cursor)
        _charge_steps(info, len(rows[:limit]), rows[:limit])
        run_id = self.uuid

        async def total() -> int:
            return await loaders.step_count(info, run_id)

        return connection(
            rows,
            limit,
            RunStep.from_row,
            lambda r: (r["created_at"], r["id"]),
            total,
            has_previous=cursor is not None,
        )

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Run:
        error = None
        if row["last_error_code"] is not None:
            error = RunError(code=row["last_error_code"], message=row["last_error_message"] or "")
        return cls(
            id=strawberry.ID(encode_id(Kind.RUN, row["id"])),
            uuid=row["id"],
            message_uuid=row["message_id"],
            output_uuid=row["output_message_id"],
            status=transitions.RunStatus(row["status"]),
            provider=row["provider"],
            model=row["model"],
            instructions=row["instructions"],
            max_history_messages=row["max_history_messages"],
            conversation_id=strawberry.ID(encode_id(Kind.CONVERSATION, row["conversation_id"])),
            attempt=row["attempt"],
            last_error=error,
            prompt_tokens=row["prompt_tokens"],
            completion_tokens=row["completion_tokens"],
            created_at=row["created_at"],
            started_at=row["started_at"],
            completed_at=row["completed_at"],
            cancelled_at=row["cancelled_at"],
            failed_at=row["failed_at"],
            expired_at=row["expired_at"],
            tools=row["tools"],
            tool_choice=row["tool_choice"],
            # Shown only while the run waits: the calls stay stored for the record (`steps`) after it moves on.
            required_action=_required_action(row["required_action"])
            if row["status"] == transitions.RunStatus.REQUIRES_ACTION
            else None,
        )


def _required_action(stored: dict[str, Any] | None) -> RequiredAction | None:
    if stored is None:
        return None
    message_uuid = UUID(stored["messageId"])
    return RequiredAction(
        message_id=strawberry.ID(encode_id(Kind.MESSAGE, message_uuid)),
        message_uuid=message_uuid,
        call_ids=list(stored["toolCallIds"]),
    )


async def _load_message(info: Info, message_id: UUID) -> Message | None:
    from threadline.threads.types import Message

    found = await loaders.message(info, message_id)
    if found is None:
        return None
    row, path = found
    # Charged as every message a response returns is (graphql.budget): `conversations { runs { output } }` read
    # thousands of outputs with nothing counting them until the response's final size check.
    if budget.charge_messages(info, 1, len(row["content"]), len(path)):
        await budget.hand_over()
    return Message.from_row(row, path)


def _charge_steps(info: Info, count: int, rows: Sequence[asyncpg.Record]) -> None:
    """Charges the response bytes of `count` steps about to be returned, and of the details of `rows` (when
    `details` is selected): steps are not messages, but a run may have thousands of them."""
    found = budget.current()
    if found is None:
        return
    size = count * STEP_BYTES
    if rows and "details" in found.selected(info):
        size += sum(len(orjson.dumps(row["details"])) for row in rows)
    budget.charge_bytes(size)


@strawberry.input(description="A run to queue: an assistant reply to `messageId`.")
class RunCreateInput:
    message_id: strawberry.ID = strawberry.field(
        description="The message to answer; the reply goes under it."
    )
    provider: str | None = strawberry.field(
        default=None, description="`echo` or `openai`; default: the conversation's aiProvider, else `echo`."
    )
    model: str | None = strawberry.field(
        default=None,
        description="Default: the conversation's model (same provider), else the provider's default.",
    )
    instructions: str | None = strawberry.field(default=None, description="Sent first, as a system message.")
    max_history_messages: int | None = strawberry.field(
        default=None,
        description="How many messages of the branch (ending with `messageId`) to send; default: the "
        "conversation's maxHistoryMessages, else 20. The result is trimmed to the model's token budget.",
    )
    regenerate: bool = strawberry.field(
        default=False,
        description="Answer again: the new answer becomes a sibling of the earlier ones (`Message.siblings`), "
        "never an answer to an answer. `messageId` may be the question (a USER message) or one of its ASSISTANT "
        "answers (then its parent is answered). The context sent is the branch root -> question only.",
    )
    tools: list[JSON] | None = strawberry.field(
        default=None,
        description="OpenAI function tools the model may call: "
        '`{"type": "function", "function": {"name", "description", "parameters"}}`, at most 128 (256 KiB of JSON). '
        "When the model calls some, the run waits in REQUIRES_ACTION (`requiredAction`) for `runSubmitToolOutputs`.",
    )
    tool_choice: JSON | None = strawberry.field(
        default=None,
        description='"none", "auto" (the default), "required", or {"type": "function", "function": {"name"}} to '
        "force one tool; passed to the provider as OpenAI's tool_choice.",
    )


@strawberry.input(description="The output of one tool call of a run in REQUIRES_ACTION.")
class ToolOutputInput:
    tool_call_id: str = strawberry.field(description="The call it answers (`requiredAction.toolCalls[].id`).")
    output: str = strawberry.field(
        description="What the tool returned, as text (within the message size limit)."
    )
    is_error: bool = strawberry.field(
        default=False, description="True when the tool failed and `output` says why."
    )
