"""Tool calls in runs: the tools a run offers, the wait for their outputs, and the rounds after.

A run created with `tools` passes them (and `toolChoice`) to its provider. When the model answers with tool
calls, the run's output message keeps them as tool-call parts, a TOOL_CALLS step opens, and the run waits
in REQUIRES_ACTION with the calls in `requiredAction`. `runSubmitToolOutputs` stores one TOOL message per
output (a tool-result part each, chained under the calls), makes the last of them the message the run
answers next, and queues the run again: the next round reads them in its context. Any number of rounds;
a run left waiting longer than `THREADLINE_RUN_TOOL_OUTPUTS_TIMEOUT_SECONDS` expires.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import asyncpg

from threadline.auth.principal import Principal
from threadline.conversations.access import Access, require, require_writable
from threadline.db import Database, Executor
from threadline.errors import ThreadlineError, bad_input, conflict, not_found
from threadline.ids import Kind, encode_id
from threadline.parts import model as parts
from threadline.runs import output
from threadline.runs import repository as repo
from threadline.runs.output import Usage
from threadline.runs.providers.base import ToolCall
from threadline.runs.service import announce_status, end_run, stored_usage, transition
from threadline.runs.transitions import RunStatus, StepStatus, StepType
from threadline.settings import Settings
from threadline.threads import repository as threads
from threadline.threads.service import MessageDraft, add_reply

BATCH = 100
# Call ids an error names at most (each at most this many characters): the rest are counted, never echoed, so
# a request naming thousands of unknown ids is not answered with all of them again.
ERROR_IDS = 5
ERROR_ID_CHARS = 64


def _few(ids: list[str]) -> str:
    shown = ", ".join(i if len(i) <= ERROR_ID_CHARS else i[:ERROR_ID_CHARS] + "..." for i in ids[:ERROR_IDS])
    return shown + (f" and {len(ids) - ERROR_IDS} more" if len(ids) > ERROR_IDS else "")


def call_part(call: ToolCall) -> parts.Part:
    return parts.tool_call_part(id=call.id, name=call.name, arguments=call.arguments)


async def require_action(
    tx: Executor,
    run: asyncpg.Record,
    message: asyncpg.Record,
    calls: tuple[ToolCall, ...],
    usage: Usage,
    run_usage: Usage,
) -> asyncpg.Record:
    """The model asked for tool calls: keep them on the output message (made final, `message.done`), end its
    MESSAGE_CREATION step, open a TOOL_CALLS step and wait in REQUIRES_ACTION. `run` is locked by the caller."""
    tenant_id = run["tenant_id"]
    current = await threads.message(tx, tenant_id, message["id"], lock=True)
    assert current is not None
    found = [call_part(c) for c in calls]
    stored = ([parts.text_part(current["content"])] if current["content"] else []) + found
    await threads.set_parts(tx, tenant_id, current["id"], stored)
    await output.finish(tx, tenant_id, current, run["id"], usage, strict=False)
    await repo.end_open_steps(tx, tenant_id, run["id"], StepStatus.COMPLETED)
    # Ids only, here and in `required_action`: the calls' names and arguments live in the message's parts,
    # where a delete or an erasure removes them (ARCHITECTURE.md, "Deleted means gone").
    ids = [c["id"] for c in found]
    # The run's usage so far goes with the step, for the next round to add to (execution.carried_usage).
    total = [run_usage.prompt_tokens, run_usage.completion_tokens]
    details = {"messageId": encode_id(Kind.MESSAGE, current["id"]), "toolCallIds": ids, "runUsage": total}
    await repo.insert_step(tx, tenant_id, run["id"], run["attempt"], StepType.TOOL_CALLS.value, details)
    await transition(tx, run, RunStatus.REQUIRES_ACTION, usage=(total[0], total[1]))
    waiting = await repo.set_required_action(
        tx, tenant_id, run["id"], {"messageId": str(current["id"]), "toolCallIds": ids}
    )
    await announce_status(tx, waiting)
    return waiting


@dataclass(frozen=True)
class ToolOutput:
    tool_call_id: str
    output: str
    is_error: bool = False


async def submit_tool_outputs(
    db: Database, settings: Settings, principal: Principal, run_id: uuid.UUID, outputs: list[ToolOutput]
) -> asyncpg.Record:
    """Answer every call a waiting run asked for: CONFLICT unless it is in REQUIRES_ACTION (a second submit
    finds it queued or running), BAD_USER_INPUT for an unknown, repeated or missing call id; all or nothing."""
    async with db.transaction() as tx:
        run = await repo.run(tx, principal.tenant_id, run_id, lock=True)
        if run is None:
            raise not_found("Run")
        conversation = await require(tx, principal, run["conversation_id"], Access.WRITE, asked_for="Run")
        if run["status"] != RunStatus.REQUIRES_ACTION:
            raise conflict(f"The run is {run['status']}: it is not waiting for tool outputs")
        require_writable(conversation)
        calls: list[str] = run["required_action"]["toolCallIds"]
        by_id = {o.tool_call_id: o for o in outputs}
        known = set(calls)
        unknown = [o.tool_call_id for o in outputs if o.tool_call_id not in known]
        if unknown:
            raise bad_input(f"Unknown tool call ids: {_few(sorted(set(unknown)))}", argument="outputs")
        if len(by_id) != len(outputs):
            raise bad_input("Each tool call takes one output", argument="outputs")
        missing = [c for c in calls if c not in by_id]
        if missing:
            raise bad_input(f"Outputs are missing for: {_few(missing)}", argument="outputs")
        parent = await threads.message(
            tx, principal.tenant_id, uuid.UUID(run["required_action"]["messageId"]), lock=True
        )
        if parent is None or parent["deleted_at"] is not None:
            raise conflict("The message holding the tool calls was deleted")
        for call in calls:
            answer = by_id[call]
            part = parts.tool_result_part(tool_call_id=call, content=answer.output, is_error=answer.is_error)
            try:
                parts.validate_parts([part], settings)
            except ThreadlineError as exc:  # said of the argument the caller sent, not of the stored part
                extensions = {**exc.extensions, "argument": "outputs"}
                raise bad_input(f"The output for {_few([call])}: {exc.message}", **extensions) from exc
            draft = MessageDraft(content=answer.output, role="TOOL", parts=[part])
            parent, _ = await add_reply(tx, settings, principal.tenant_id, parent, draft, principal.user_id)
        await repo.end_open_steps(tx, principal.tenant_id, run_id, StepStatus.COMPLETED)
        await repo.continue_with(tx, principal.tenant_id, run_id, parent["id"])
        await repo.set_required_action(tx, principal.tenant_id, run_id, None)
        locked = await repo.run(tx, principal.tenant_id, run_id)
        assert locked is not None
        updated = await transition(tx, locked, RunStatus.QUEUED)
        await announce_status(tx, updated)
        await repo.notify_workers(tx, f"queued:{run['queue']}")
    return updated


async def expire_waiting(db: Database, settings: Settings) -> int:
    """Expire runs that waited for tool outputs longer than the configured time; returns how many."""
    limit = settings.run_tool_outputs_timeout_seconds
    expired = 0
    for candidate in await repo.waiting_run_ids(db, limit, BATCH):
        async with db.transaction() as tx:
            run = await repo.lock_if_waiting(tx, candidate["tenant_id"], candidate["id"], limit)
            if run is None:
                continue
            reason = f"No tool outputs were submitted within {limit:g} seconds"
            await end_run(
                tx, run, RunStatus.EXPIRED, usage=stored_usage(run), error=("TOOL_OUTPUTS_TIMEOUT", reason)
            )
        expired += 1
    return expired
