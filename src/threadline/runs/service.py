"""Run rules: creating, reading and cancelling runs, and what entering each state does."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg

from threadline.auth.principal import Principal
from threadline.conversations.access import Access, require, require_writable
from threadline.db import Database, Executor
from threadline.errors import ErrorCode, ThreadlineError, bad_input, conflict, not_found
from threadline.events.announce import publish_error, publish_run_status
from threadline.events.payloads import RunStatusChanged, StreamError
from threadline.runs import output
from threadline.runs import repository as repo
from threadline.runs.output import Usage
from threadline.runs.providers import NAMES, catalogue
from threadline.runs.tool_rules import validate_tools
from threadline.runs.transitions import STEP_END, TERMINAL, RunStatus, check
from threadline.settings import Settings
from threadline.threads import repository as threads

MAX_HISTORY_LIMIT = 10_000
# Runs whose end a subscriber learns from `message.done`; FAILED and EXPIRED publish `error` instead.
ANNOUNCED_DONE = frozenset({RunStatus.COMPLETED, RunStatus.INCOMPLETE, RunStatus.CANCELLED})


@dataclass(frozen=True)
class RunSpec:
    message_id: uuid.UUID
    provider: str | None = None
    model: str | None = None
    instructions: str | None = None
    max_history_messages: int | None = None
    regenerate: bool = False
    tools: Any = None  # OpenAI function tools, checked by runs.tool_rules
    tool_choice: Any = None


def _validate(spec: RunSpec, settings: Settings) -> None:
    validate_tools(spec.tools, spec.tool_choice, settings)
    if spec.max_history_messages is not None and not 1 <= spec.max_history_messages <= MAX_HISTORY_LIMIT:
        raise bad_input(
            f"maxHistoryMessages must be between 1 and {MAX_HISTORY_LIMIT}", argument="maxHistoryMessages"
        )
    if spec.instructions is not None:
        if len(spec.instructions.encode("utf-8", errors="surrogatepass")) > settings.message_max_bytes:
            raise bad_input(
                f"instructions are limited to {settings.message_max_bytes} bytes",
                argument="instructions",
                limit=settings.message_max_bytes,
            )
        if "\x00" in spec.instructions:
            raise bad_input("instructions must not contain NUL characters", argument="instructions")


def _provider_and_model(spec: RunSpec, settings: Settings, conversation: asyncpg.Record) -> tuple[str, str]:
    """The run's input, else the conversation's defaults, else the server's."""
    conversation_provider = (conversation["ai_provider"] or settings.run_default_provider).lower()
    provider = (spec.provider or conversation_provider).strip().lower()
    known = catalogue(settings, provider)
    if known is None:
        raise bad_input(
            f"Unknown provider {provider!r}; known providers: {', '.join(NAMES)}", argument="provider"
        )
    models, default = known
    model = spec.model or (conversation["model"] if provider == conversation_provider else None) or default
    if model not in models:
        raise bad_input(
            f"Unknown model {model!r} for provider {provider}; known models: {', '.join(sorted(models))}",
            argument="model",
        )
    return provider, model


async def create_run(db: Database, settings: Settings, principal: Principal, spec: RunSpec) -> asyncpg.Record:
    _validate(spec, settings)
    async with db.transaction() as tx:
        message = await threads.message(tx, principal.tenant_id, spec.message_id)
        if message is None:
            raise not_found("Message")
        conversation = await require(
            tx, principal, message["conversation_id"], Access.WRITE, asked_for="Message"
        )
        if spec.regenerate:
            message = await _regenerated(tx, principal.tenant_id, message)
        require_writable(conversation)
        if message["deleted_at"] is not None:
            raise conflict("Cannot answer a deleted message")
        provider, model = _provider_and_model(spec, settings, conversation)
        await repo.lock_user_runs(tx, principal.tenant_id, principal.user_id)
        active = await repo.count_active_for_user(tx, principal.tenant_id, principal.user_id)
        if active >= settings.run_max_active_per_user:
            raise ThreadlineError(
                ErrorCode.RATE_LIMITED,
                f"You have {active} active runs and /v1 completions in progress; the limit is "
                f"{settings.run_max_active_per_user}. Wait for one to finish or cancel one.",
                retryAfter=1,
                limit=settings.run_max_active_per_user,
            )
        try:
            row = await repo.insert_run(
                tx,
                principal.tenant_id,
                conversation_id=message["conversation_id"],
                message_id=message["id"],
                root_id=message["root_id"],
                created_by=principal.user_id,
                queue=settings.run_queue,
                provider=provider,
                model=model,
                instructions=spec.instructions,
                max_history_messages=spec.max_history_messages,
                tools=spec.tools,
                tool_choice=spec.tool_choice,
            )
        except asyncpg.UniqueViolationError as exc:
            raise conflict("The message already has an active run; cancel it or wait for it to end") from exc
        await repo.notify_workers(tx, f"queued:{settings.run_queue}")
    return row


async def _regenerated(tx: Executor, tenant_id: uuid.UUID, message: asyncpg.Record) -> asyncpg.Record:
    """The message a regenerating run answers: the message itself, or for an ASSISTANT answer the message it
    answered, so the new answer is a sibling of the old ones (never an answer to an answer)."""
    if message["role"] != "ASSISTANT":
        return message
    if message["parent_id"] is None:
        raise bad_input(
            "This answer starts its thread: there is no message to answer again", argument="regenerate"
        )
    parent = await threads.message(tx, tenant_id, message["parent_id"])
    assert parent is not None
    return parent


async def readable_run(db: Executor, principal: Principal, run_id: uuid.UUID) -> asyncpg.Record:
    row = await repo.run(db, principal.tenant_id, run_id)
    if row is None:
        raise not_found("Run")
    try:
        await require(db, principal, row["conversation_id"], Access.READ)
    except ThreadlineError as exc:
        raise not_found("Run") from exc
    return row


def worker_gone(run: asyncpg.Record, settings: Settings) -> bool:
    age = run["heartbeat_age"]
    return age is None or age > settings.run_stale_seconds


def stored_usage(run: asyncpg.Record) -> Usage:
    """The usage a worker recorded as it went: partial for a run that did not end normally."""
    return Usage(run["prompt_tokens"], run["completion_tokens"])


async def cancel_run(
    db: Database, settings: Settings, principal: Principal, run_id: uuid.UUID
) -> asyncpg.Record:
    """Queued or waiting runs end at once; an executing run goes to CANCELLING and its worker ends it,
    unless the worker is gone, then it is cancelled here (forced). Cancelling a cancelling run again
    only forces it if its worker is gone."""
    async with db.transaction() as tx:
        run = await repo.run(tx, principal.tenant_id, run_id, lock=True)
        if run is None:
            raise not_found("Run")
        await require(tx, principal, run["conversation_id"], Access.WRITE, asked_for="Run")
        status = RunStatus(run["status"])
        if status in (RunStatus.IN_PROGRESS, RunStatus.CANCELLING) and not worker_gone(run, settings):
            if status is RunStatus.CANCELLING:
                return run
            updated = await transition(tx, run, RunStatus.CANCELLING)
            await repo.notify_workers(tx, f"cancel:{run_id.hex}")
            return updated
        return await end_run(tx, run, RunStatus.CANCELLED, usage=stored_usage(run))


async def transition(
    tx: Executor, run: asyncpg.Record, target: RunStatus, **changes: object
) -> asyncpg.Record:
    """Apply one transition of the table to a row locked by the caller (CONFLICT if not allowed)."""
    check(RunStatus(run["status"]), target)
    updated = await repo.set_status(
        tx,
        run["tenant_id"],
        run["id"],
        current=RunStatus(run["status"]),
        attempt=run["attempt"],
        target=target,
        **changes,  # type: ignore[arg-type]
    )
    if updated is None:
        raise conflict("The run changed meanwhile; read it again")
    return updated


async def announce_status(tx: Executor, run: asyncpg.Record) -> None:
    """`run.status` for a run entering or leaving REQUIRES_ACTION (readers of its conversation)."""
    await publish_run_status(
        tx,
        run["tenant_id"],
        RunStatusChanged(run["id"], run["status"]),
        conversation_id=run["conversation_id"],
        root_id=run["root_id"],
    )


async def end_run(
    tx: Executor,
    run: asyncpg.Record,
    target: RunStatus,
    *,
    usage: Usage | None = None,
    error: tuple[str, str] | None = None,
    run_usage: Usage | None = None,
) -> asyncpg.Record:
    """Leave the executing states: the run's status, its open steps, its output message made final
    (with `message.done`), and an `error` event for FAILED and EXPIRED. `usage` is the output message's;
    the run records `run_usage` when given (every tool round's, runs.tools), else the same."""
    total = run_usage if run_usage is not None else usage
    usage_pair = (total.prompt_tokens, total.completion_tokens) if total is not None else None
    updated = await transition(tx, run, target, error=error, usage=usage_pair)
    if run["status"] == RunStatus.REQUIRES_ACTION:
        await announce_status(tx, updated)
    step_end = STEP_END.get(target)
    if step_end is not None:
        await repo.end_open_steps(tx, run["tenant_id"], run["id"], step_end)
    message = None
    if target in TERMINAL and run["output_message_id"] is not None:
        message = await threads.message(tx, run["tenant_id"], run["output_message_id"], lock=True)
        if message is not None:
            announce = target in ANNOUNCED_DONE
            await output.finish(
                tx, run["tenant_id"], message, run["id"], usage, announce=announce, strict=False
            )
    if target in (RunStatus.FAILED, RunStatus.EXPIRED):
        code, text = error or (target.value, f"The run is {target.value.lower()}")
        await publish_error(
            tx,
            run["tenant_id"],
            StreamError(code, text, run["id"], message["id"] if message is not None else None),
            conversation_id=run["conversation_id"],
            root_id=run["root_id"],
        )
    return updated
