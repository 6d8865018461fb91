"""Executing one claimed run: start (the assistant reply and its prompt), stream, end.

Every write names the attempt the worker claimed, so a worker that was presumed dead (expired,
requeued or force-cancelled meanwhile) finds its run gone at its next write and stops without
writing: a run's output is never produced twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid
from dataclasses import dataclass, field

import asyncpg

from threadline.auth import repository as users
from threadline.auth.principal import Principal, Role
from threadline.conversations import repository as conversations
from threadline.conversations.access import Access, access_level, require_writable
from threadline.db import Database, Executor
from threadline.errors import ThreadlineError, conflict, forbidden
from threadline.ids import Kind, encode_id
from threadline.runs import output
from threadline.runs import output_repository as streams
from threadline.runs import repository as repo
from threadline.runs.context import (
    ChatMessage,
    ContextTooLarge,
    build_prompt,
    history_limit,
    prompt_budget,
    prompt_tokens,
    suffix_suffices,
)
from threadline.runs.output import OutputDeleted, Usage
from threadline.runs.providers import CompletionRequest, Finish, Provider, ProviderError
from threadline.runs.providers.base import ToolCall
from threadline.runs.service import end_run
from threadline.runs.tools import require_action
from threadline.runs.transitions import EXECUTING, RunStatus, StepType
from threadline.settings import Settings
from threadline.threads import branches
from threadline.threads import repository as threads
from threadline.threads.service import MessageDraft, add_reply, follow_content, path_ids

log = logging.getLogger(__name__)

FINISH_STATUS = {"length": RunStatus.INCOMPLETE, "content_filter": RunStatus.INCOMPLETE}
OUTPUT_DELETED = ("OUTPUT_DELETED", "The output message was deleted while it was written")
# The reason `_produce` ends a stream with once the output reached the message size limit (the provider's stream
# is closed there: a model streaming without end costs the limit, never more).
OUTPUT_FULL = "output_full"
# Ancestors a run's context reads per statement, newest first (`context_rows`).
CONTEXT_BATCH = 50
# What a model may stream that PostgreSQL text cannot hold: NUL, and surrogates without their pair (a JSON
# "\ud800" decodes to one).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


class Lost(Exception):
    """This attempt no longer owns the run."""


@dataclass
class Signals:
    cancel: asyncio.Event = field(default_factory=asyncio.Event)
    lost: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(frozen=True)
class Claim:
    tenant_id: uuid.UUID
    run_id: uuid.UUID
    attempt: int


@dataclass
class Outcome:
    status: RunStatus
    error: tuple[str, str] | None = None
    finish: Finish | None = None


async def guard(tx: Executor, settings: Settings) -> None:
    """A worker frozen inside a transaction (a paused VM, SIGSTOP) must not hold its run's lock forever."""
    await repo.limit_idle_in_transaction(tx, settings.run_stale_seconds)


async def owned(tx: Executor, claim: Claim, settings: Settings) -> asyncpg.Record:
    """The run, locked, if this attempt still owns it; Lost otherwise."""
    await guard(tx, settings)
    run = await repo.run(tx, claim.tenant_id, claim.run_id, lock=True)
    if run is None or run["attempt"] != claim.attempt or RunStatus(run["status"]) not in EXECUTING:
        raise Lost()
    return run


async def start(
    db: Database, settings: Settings, claim: Claim
) -> tuple[list[ChatMessage], asyncpg.Record, Usage] | None:
    """The prompt, the output message and the usage of the run's earlier tool rounds, or None if the run
    ended here (cancelled, or failed to start)."""
    async with db.transaction() as tx:
        run = await owned(tx, claim, settings)
        carried = await carried_usage(tx, run)
        if run["status"] == RunStatus.CANCELLING:
            await end_run(tx, run, RunStatus.CANCELLED, usage=Usage(0, 0), run_usage=carried)
            return None
        try:
            prompt, message = await _prepare(tx, settings, run)
        except (ThreadlineError, ContextTooLarge) as exc:
            code, text = (
                (exc.code.value, exc.message)
                if isinstance(exc, ThreadlineError)
                else ("CONTEXT_TOO_LARGE", str(exc))
            )
            await end_run(tx, run, RunStatus.FAILED, usage=Usage(0, 0), error=(code, text), run_usage=carried)
            return None
        await repo.insert_step(
            tx,
            claim.tenant_id,
            claim.run_id,
            claim.attempt,
            StepType.MESSAGE_CREATION.value,
            {"messageId": encode_id(Kind.MESSAGE, message["id"])},
        )
        await repo.progress(
            tx,
            claim.tenant_id,
            claim.run_id,
            claim.attempt,
            carried.prompt_tokens + prompt_tokens(prompt),
            carried.completion_tokens,
        )
    return prompt, message, carried


async def carried_usage(tx: Executor, run: asyncpg.Record) -> Usage:
    """What the run's earlier rounds used (tool calls: runs.tools records the total at each wait), so
    `Run.usage` counts every round; zero for a first round."""
    # The newest answered wait only: reading every step (all rounds') made each round cost the run's length.
    total = await repo.last_run_usage(tx, run["tenant_id"], run["id"])
    return Usage(total[0], total[1]) if isinstance(total, list) and len(total) == 2 else Usage(0, 0)


async def context_rows(
    tx: Executor, tenant_id: uuid.UUID, ids: list[uuid.UUID], max_history: int, budget: int
) -> list[asyncpg.Record]:
    """The newest rows of the ancestor path `ids` (root first) that give the prompt the whole path would, read
    newest first CONTEXT_BATCH at a time: a run answering the end of a 1,000-deep branch of 1 MiB messages
    reads the messages its prompt can hold, not the branch."""
    rows: list[asyncpg.Record] = []
    end = len(ids)
    while end > 0:
        start = max(0, end - CONTEXT_BATCH)
        found = {r["id"]: r for r in await streams.messages_by_ids(tx, tenant_id, ids[start:end])}
        rows[:0] = [found[i] for i in ids[start:end]]
        end = start
        if suffix_suffices(rows, max_history, budget):
            break
    return rows


async def _creator_may_write(
    tx: Executor, tenant_id: uuid.UUID, user_id: uuid.UUID, conversation: asyncpg.Record
) -> None:
    """Credentials are live (ARCHITECTURE.md): a run whose creator lost write access to its conversation while it
    waited in the queue (removed, made a viewer, a changed role or team; erased: their runs pass to the tenant's
    placeholder, who takes part in nothing) fails FORBIDDEN when a worker takes it, and writes nothing there."""
    user = await users.user_by_id(tx, tenant_id, user_id)
    creator = Principal(tenant_id, user_id, Role(user["role"]), user["team"]) if user is not None else None
    if creator is None or access_level(creator, conversation) < Access.WRITE:
        raise forbidden("The run's creator may no longer write in this conversation")


async def _prepare(
    tx: Executor, settings: Settings, run: asyncpg.Record
) -> tuple[list[ChatMessage], asyncpg.Record]:
    tenant_id = run["tenant_id"]
    conversation = await conversations.conversation_with_access(
        tx, tenant_id, run["conversation_id"], run["created_by"] or run["id"]
    )
    if (
        conversation is None
    ):  # hard-deleted: the run goes with it (cascade), so its lock keeps this from happening
        raise conflict("The conversation is no longer active")
    require_writable(conversation)
    if run["created_by"] is not None:
        await _creator_may_write(tx, tenant_id, run["created_by"], conversation)
    message = await threads.message(tx, tenant_id, run["message_id"], lock=True)
    if message is None or message["deleted_at"] is not None:
        raise conflict("The message to answer was deleted")
    (ids,) = await path_ids(tx, tenant_id, [message])
    max_history = history_limit(run["max_history_messages"], conversation["max_history_messages"])
    budget = prompt_budget(settings, run["model"])
    rows = await context_rows(tx, tenant_id, ids, max_history, budget)
    prompt = build_prompt(rows, run["instructions"], max_history, budget)
    if run["output_message_id"] is None:
        reply, _ = await add_reply(
            tx,
            settings,
            tenant_id,
            message,
            MessageDraft(content="", role="ASSISTANT", model=run["model"]),
            None,
        )
        await repo.set_output(tx, tenant_id, run["id"], reply["id"])
        await streams.open_stream(tx, tenant_id, reply["id"])
        if run["created_by"] is not None:
            # The run's creator sees its answer stream on their branch (threads.branches).
            await branches.move_current(tx, tenant_id, run["created_by"], reply, branches.RUN)
        return prompt, reply
    # A requeued run: the lost attempt's partial output is discarded and written again from index 0.
    reply = await threads.message(tx, tenant_id, run["output_message_id"], lock=True)
    if reply is None or reply["deleted_at"] is not None:
        raise conflict("The run's output message was deleted")
    await streams.restart_stream(tx, tenant_id, reply["id"])
    # The lost attempt's deltas stay in the log: they lose their text, so a replay (`since`) shows only
    # what the message now holds (events.scrub).
    reset = await threads.message(tx, tenant_id, reply["id"])
    assert reset is not None
    await follow_content(tx, tenant_id, [reset])
    return prompt, reply


class DeltaWriter:
    """Buffers deltas and writes them as one chunk and one `message.delta` at most every `interval`."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        claim: Claim,
        message: asyncpg.Record,
        signals: Signals,
        prompt: int,
    ) -> None:
        self.db = db
        self.settings = settings
        self.claim = claim
        self.message = message
        self.signals = signals
        self.prompt_tokens = prompt
        self.completion_tokens = 0  # deltas received: the usage estimate until the provider reports one
        self.carried = Usage(0, 0)  # earlier tool rounds' usage, added to the run's (not the message's)
        self.pending: list[str] = []
        self.size = 0  # UTF-8 bytes of the output so far (written and pending)
        self.full = False  # the output reached THREADLINE_MESSAGE_MAX_BYTES: the stream must stop
        self.wake = asyncio.Event()
        self.lock = asyncio.Lock()

    def add(self, text: str) -> None:
        """Queue a delta: NUL and lone surrogates (which PostgreSQL text cannot hold: the run failed writing them)
        become U+FFFD, and the output stops at the message size limit (`full`), cut at a character boundary."""
        text = _UNSTORABLE.sub("\ufffd", text)
        encoded = text.encode("utf-8", errors="surrogatepass")
        room = self.settings.message_max_bytes - self.size
        if len(encoded) >= room:
            self.full = True
            encoded = encoded[: max(room, 0)]
            text = encoded.decode("utf-8", errors="ignore")
            encoded = text.encode("utf-8", errors="surrogatepass")
        self.size += len(encoded)
        self.completion_tokens += 1
        if text:
            self.pending.append(text)
            self.wake.set()

    async def run(self) -> None:
        last = -self.settings.run_delta_interval_seconds
        while True:
            await self.wake.wait()
            # Writes start at most once per interval, however long each takes.
            delay = last + self.settings.run_delta_interval_seconds - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            self.wake.clear()
            last = time.monotonic()
            async with self.lock:
                async with self.db.transaction() as tx:
                    await guard(tx, self.settings)
                    await self.write(tx)

    async def write(self, tx: Executor) -> None:
        """Write what is pending as one chunk, in the caller's transaction; Lost if the run is gone."""
        if not self.pending:
            return
        count = len(self.pending)
        text = "".join(self.pending[:count])
        status = await repo.progress(
            tx,
            self.claim.tenant_id,
            self.claim.run_id,
            self.claim.attempt,
            self.carried.prompt_tokens + self.prompt_tokens,
            self.carried.completion_tokens + self.completion_tokens,
        )
        if status is None:
            raise Lost()
        if status == RunStatus.CANCELLING:
            self.signals.cancel.set()
        await output.append(
            tx, self.claim.tenant_id, self.message, text, self.claim.run_id, self.claim.attempt
        )
        del self.pending[:count]

    async def stop(self, task: asyncio.Task[None]) -> None:
        """Stop the background flusher between two writes, never inside one."""
        async with self.lock:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):  # its exception is read by the caller
            await task


async def _produce(provider: Provider, request: CompletionRequest, writer: DeltaWriter) -> Finish:
    async with contextlib.aclosing(provider.stream(request)) as stream:  # type: ignore[type-var]
        async for item in stream:
            if isinstance(item, Finish):
                return item
            writer.add(item)
            if writer.full:
                return Finish(OUTPUT_FULL)
    raise ProviderError("PROVIDER_BAD_STREAM", "The stream ended without finishing")


async def execute(
    db: Database,
    settings: Settings,
    providers: dict[str, Provider],
    claimed: asyncpg.Record,
    signals: Signals,
) -> bool:
    """Run a claimed attempt to its end; False if the attempt lost the run to another instance."""
    claim = Claim(claimed["tenant_id"], claimed["id"], claimed["attempt"])
    began = time.monotonic()
    try:
        started = await start(db, settings, claim)
    except Lost:
        log.warning("run %s lost before it started (attempt %d)", claim.run_id, claim.attempt)
        return False
    if started is None:
        return True
    prompt, message, carried = started
    writer = DeltaWriter(db, settings, claim, message, signals, prompt_tokens(prompt))
    writer.carried = carried
    request = CompletionRequest(
        model=claimed["model"], messages=prompt, tools=claimed["tools"], tool_choice=claimed["tool_choice"]
    )
    remaining = settings.run_timeout_seconds - (time.monotonic() - began)
    outcome = await _stream(providers[claimed["provider"]], request, writer, signals, remaining)
    if outcome is not None and outcome.error is not None and outcome.error[0] == "TIMEOUT":
        outcome.error = ("TIMEOUT", f"The run did not finish within {settings.run_timeout_seconds:g} seconds")
    if outcome is None:
        log.warning(
            "run %s lost while streaming (attempt %d); another instance took it over",
            claim.run_id,
            claim.attempt,
        )
        return False
    return await _end(db, settings, claim, writer, outcome)


async def _stream(
    provider: Provider, request: CompletionRequest, writer: DeltaWriter, signals: Signals, timeout: float
) -> Outcome | None:
    producer = asyncio.create_task(_produce(provider, request, writer))
    flusher = asyncio.create_task(writer.run())
    cancelled = asyncio.create_task(signals.cancel.wait())
    lost = asyncio.create_task(signals.lost.wait())
    try:
        done, _ = await asyncio.wait(
            {producer, flusher, cancelled, lost},
            timeout=max(timeout, 0.0),
            return_when=asyncio.FIRST_COMPLETED,
        )
    finally:
        for task in (producer, cancelled, lost):
            task.cancel()
        await writer.stop(flusher)
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await producer
    if lost in done or (flusher in done and isinstance(flusher.exception(), Lost)):
        return None
    if cancelled in done:
        return Outcome(RunStatus.CANCELLED)
    if flusher in done:
        exc = flusher.exception()
        if isinstance(exc, OutputDeleted):
            return Outcome(RunStatus.FAILED, OUTPUT_DELETED)
        raise exc  # type: ignore[misc]  # a database failure: the reaper recovers the run
    if producer in done:
        exc = producer.exception()
        if exc is None:
            finish = producer.result()
            if finish.reason == OUTPUT_FULL:
                limit = writer.settings.message_max_bytes
                text = f"The output reached the message size limit ({limit} bytes) and was cut there"
                return Outcome(RunStatus.INCOMPLETE, ("OUTPUT_TOO_LARGE", text), finish)
            return Outcome(FINISH_STATUS.get(finish.reason or "stop", RunStatus.COMPLETED), finish=finish)
        if isinstance(exc, ProviderError):
            return Outcome(RunStatus.FAILED, (exc.code, exc.message))
        log.error("provider %s failed unexpectedly", provider.name, exc_info=exc)
        return Outcome(RunStatus.FAILED, ("PROVIDER_ERROR", f"The provider failed: {type(exc).__name__}"))
    return Outcome(RunStatus.FAILED, ("TIMEOUT", "The run did not finish in time"))


def unstorable_calls(settings: Settings, calls: tuple[ToolCall, ...]) -> str | None:
    """Why the model's tool calls cannot be kept as the parts of one message (too many, too big, NUL), else
    None. The message and `requiredAction` would hold them as they are: they are bounded like client input."""
    if not calls:
        return None
    if len(calls) > settings.message_max_parts:
        return f"The model made {len(calls)} tool calls; a message holds at most {settings.message_max_parts}"
    texts = [t for c in calls for t in (c.id, c.name, c.arguments)]
    if any(_UNSTORABLE.search(t) for t in texts):
        return "The model's tool calls contain NUL characters or lone surrogates"
    size = sum(len(t.encode("utf-8", errors="surrogatepass")) for t in texts)
    if size > settings.message_max_bytes:
        return (
            f"The model's tool calls are {size} bytes; a message holds at most {settings.message_max_bytes}"
        )
    return None


async def _end(db: Database, settings: Settings, claim: Claim, writer: DeltaWriter, outcome: Outcome) -> bool:
    finish = outcome.finish
    usage = Usage(
        finish.prompt_tokens if finish and finish.prompt_tokens is not None else writer.prompt_tokens,
        finish.completion_tokens
        if finish and finish.completion_tokens is not None
        else writer.completion_tokens,
    )
    run_usage = Usage(
        writer.carried.prompt_tokens + usage.prompt_tokens,
        writer.carried.completion_tokens + usage.completion_tokens,
    )
    try:
        async with db.transaction() as tx:
            run = await owned(tx, claim, settings)
            try:
                await writer.write(tx)  # the partial output is kept whatever the outcome
            except OutputDeleted:
                outcome = Outcome(RunStatus.FAILED, OUTPUT_DELETED)
            if run["status"] == RunStatus.CANCELLING:
                # Cancelled while finishing: CANCELLING only leads to CANCELLED, with whatever was written.
                outcome = Outcome(RunStatus.CANCELLED)
            refused = unstorable_calls(settings, finish.tool_calls) if finish is not None else None
            if outcome.status is RunStatus.COMPLETED and refused is not None:
                outcome = Outcome(RunStatus.FAILED, ("PROVIDER_BAD_STREAM", refused))
            if outcome.status is RunStatus.COMPLETED and finish is not None and finish.tool_calls:
                # The model asked for tools: the run waits for their outputs (runs.tools).
                await require_action(tx, run, writer.message, finish.tool_calls, usage, run_usage)
            else:
                await end_run(tx, run, outcome.status, usage=usage, error=outcome.error, run_usage=run_usage)
    except Lost:
        log.warning("run %s lost at its end (attempt %d)", claim.run_id, claim.attempt)
        return False
    return True
