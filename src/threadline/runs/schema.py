"""Query and Mutation fields of runs."""

from __future__ import annotations

import uuid
from typing import Annotated

import strawberry

from threadline.graphql.context import Info
from threadline.graphql.node import register
from threadline.graphql.pagination import (
    Connection,
    as_datetime,
    as_uuid,
    connection,
    decode_cursor,
    page_size,
)
from threadline.idempotency.schema import run_once
from threadline.idempotency.types import ClientMutationId
from threadline.ids import Kind, decode_id
from threadline.runs import repository as repo
from threadline.runs import service, transitions
from threadline.runs.service import RunSpec
from threadline.runs.tools import ToolOutput, submit_tool_outputs
from threadline.runs.types import Run, RunCreateInput, RunStep, ToolOutputInput


async def conversation_runs(
    info: Info,
    conversation_id: uuid.UUID,
    first: int | None,
    after: str | None,
    status: transitions.RunStatus | None,
) -> Connection[Run]:
    """`Conversation.runs`: the caller can read the conversation (checked by the parent field)."""
    principal = await info.context.principal()
    settings = info.context.settings
    db = info.context.db
    limit = page_size(first, settings.page_size_default, settings.page_size_max)
    cursor = decode_cursor(after, (as_datetime, as_uuid)) if after else None
    status_value = status.value if status is not None else None
    rows = await repo.runs_page(
        db, principal.tenant_id, conversation_id, status=status_value, limit=limit + 1, after=cursor
    )
    return connection(
        rows,
        limit,
        Run.from_row,
        lambda r: (r["created_at"], r["id"]),
        lambda: repo.count_runs(db, principal.tenant_id, conversation_id, status_value),
        has_previous=cursor is not None,
    )


@strawberry.type
class RunQuery:
    @strawberry.field(description="A run in a conversation the caller may read (NOT_FOUND otherwise).")
    async def run(
        self,
        info: Info,
        id: Annotated[strawberry.ID, strawberry.argument(description="The run's id (`Run.id`).")],
    ) -> Run | None:
        principal = await info.context.principal()
        return Run.from_row(await service.readable_run(info.context.db, principal, decode_id(id, Kind.RUN)))


@strawberry.type
class RunMutation:
    @strawberry.mutation(
        description="Queue a run: an assistant reply to `input.messageId`, streamed into a new ASSISTANT reply "
        "as `message.delta` events and ending with `message.done`. Needs write access; CONFLICT if the message "
        "already has an active run; RATE_LIMITED beyond the per-user cap of active runs."
    )
    async def run_create(
        self,
        info: Info,
        input: Annotated[
            RunCreateInput,
            strawberry.argument(
                description="The message to answer, and optionally the provider, model and instructions."
            ),
        ],
        client_mutation_id: ClientMutationId = None,
    ) -> Run:
        principal = await info.context.principal()
        settings = info.context.settings
        spec = RunSpec(
            message_id=decode_id(input.message_id, Kind.MESSAGE),
            provider=input.provider,
            model=input.model,
            instructions=input.instructions,
            max_history_messages=input.max_history_messages,
            regenerate=input.regenerate,
            tools=input.tools,
            tool_choice=input.tool_choice,
        )
        done = await run_once(
            info,
            client_mutation_id,
            {"input": input},
            lambda db: service.create_run(db, settings, principal, spec),
            lambda row: [row["id"]],
        )
        row = done.value
        if row is None:
            row = await service.readable_run(info.context.db, principal, done.ids[0])
        return Run.from_row(row)

    @strawberry.mutation(
        description="Cancel a run. A queued run is cancelled at once; an executing one becomes CANCELLING and its "
        "worker stops within a second, keeping the partial output (forced to CANCELLED if its worker is gone). "
        "CONFLICT for a run that already ended."
    )
    async def run_cancel(
        self,
        info: Info,
        id: Annotated[strawberry.ID, strawberry.argument(description="The run to cancel (`Run.id`).")],
    ) -> Run:
        principal = await info.context.principal()
        row = await service.cancel_run(
            info.context.db, info.context.settings, principal, decode_id(id, Kind.RUN)
        )
        return Run.from_row(row)

    @strawberry.mutation(
        description="Answer the tool calls of a run in REQUIRES_ACTION: each output is stored as a TOOL message "
        "(a tool-result part) under the calls, and the run is queued again with them in its context (another "
        "round may call tools again). All calls at once: BAD_USER_INPUT for an unknown, repeated or missing call "
        "id; CONFLICT when the run is not waiting (outputs submitted twice, or the run ended). Nothing is stored "
        "on an error."
    )
    async def run_submit_tool_outputs(
        self,
        info: Info,
        run_id: Annotated[strawberry.ID, strawberry.argument(description="The waiting run (`Run.id`).")],
        outputs: Annotated[
            list[ToolOutputInput],
            strawberry.argument(description="One output per call in `Run.requiredAction.toolCalls`."),
        ],
        client_mutation_id: ClientMutationId = None,
    ) -> Run:
        principal = await info.context.principal()
        settings = info.context.settings
        run = decode_id(run_id, Kind.RUN)
        answers = [ToolOutput(o.tool_call_id, o.output, o.is_error) for o in outputs]
        done = await run_once(
            info,
            client_mutation_id,
            {"runId": run_id, "outputs": outputs},
            lambda db: submit_tool_outputs(db, settings, principal, run, answers),
            lambda row: [row["id"]],
        )
        row = done.value
        if row is None:
            row = await service.readable_run(info.context.db, principal, done.ids[0])
        return Run.from_row(row)


async def _run_node(info: Info, run_id: uuid.UUID) -> Run:
    principal = await info.context.principal()
    return Run.from_row(await service.readable_run(info.context.db, principal, run_id))


async def _run_step_node(info: Info, step_id: uuid.UUID) -> RunStep | None:
    principal = await info.context.principal()
    step = await repo.step(info.context.db, principal.tenant_id, step_id)
    if step is None:
        return None
    await service.readable_run(info.context.db, principal, step["run_id"])
    return RunStep.from_row(step)


register(Kind.RUN, _run_node)
register(Kind.RUN_STEP, _run_step_node)
