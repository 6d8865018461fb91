"""Streamed output of a message: append a delta (a chunk row, the content, a `message.delta` event) and
finish it (final usage, the conversation's token count, one `message.done`).

Runs call these from the worker; `messageAppend` / `messageFinish` call them for clients that stream
an assistant message themselves. Chunk `i` and the delta event with `index` `i` carry the same text,
and the content is always the concatenation of the chunks, so a client that missed deltas can read
`Message.chunks` and continue from the next index. Each delta names the run's `attempt` (1 for clients'
own streams): a requeued run writes the message again from index 0 under a higher attempt, and a delta
with a higher attempt than any seen before tells clients to drop the text they have.
"""

from __future__ import annotations

import uuid

import asyncpg

from threadline.auth.principal import Principal
from threadline.conversations import repository as conversations
from threadline.conversations.access import Access, require, require_writable
from threadline.db import Database, Executor
from threadline.errors import bad_input, conflict, forbidden, not_found
from threadline.events.announce import publish_message_delta, publish_message_done
from threadline.events.payloads import MessageDelta, MessageDone, TokenUsage
from threadline.privacy.writing import settle_output, streamed_delta
from threadline.runs import output_repository as streams
from threadline.runs import repository as repo
from threadline.settings import Settings
from threadline.threads import repository as threads

# The token counts a run or a client reports: the same value `message.done` carries.
Usage = TokenUsage


class OutputDeleted(Exception):
    """The message being written was deleted."""


async def append(
    tx: Executor,
    tenant_id: uuid.UUID,
    message: asyncpg.Record,
    delta: str,
    run_id: uuid.UUID | None,
    attempt: int = 1,
) -> int:
    """Append `delta` to `message` (a row with id, conversation_id, root_id) as written by `attempt` of
    its run; returns its chunk index."""
    index = await streams.take_chunk_index(tx, tenant_id, message["id"])
    if index is None:
        raise conflict("The message is final; nothing can be appended")
    # The tenant's PII policy: what is stored, and what the event carries (privacy.writing).
    stored, announced = await streamed_delta(tx, tenant_id, delta)
    if not await streams.append_content(tx, tenant_id, message["id"], stored, run_id, index):
        raise OutputDeleted()
    await publish_message_delta(
        tx,
        tenant_id,
        MessageDelta(message["id"], run_id, attempt, index, announced),
        conversation_id=message["conversation_id"],
        root_id=message["root_id"],
    )
    return index


async def finish(
    tx: Executor,
    tenant_id: uuid.UUID,
    message: asyncpg.Record,
    run_id: uuid.UUID | None,
    usage: Usage | None,
    *,
    announce: bool = True,
    strict: bool = True,
) -> asyncpg.Record | None:
    """Make the message final: record `usage` (replacing what it had, the conversation's token count
    adjusted by the difference) and publish `message.done` unless `announce` is False (a failed run
    announces an `error` instead). If it already was final: CONFLICT, or None when not `strict`."""
    if not await streams.finish_stream(tx, tenant_id, message["id"]):
        if not strict:
            return None
        raise conflict("The message is already final")
    if await settle_output(tx, tenant_id, message["id"]):  # masked (privacy): the row as it now is
        message = await threads.message(tx, tenant_id, message["id"]) or message
    await streams.seal_final(tx, tenant_id, message["id"])  # encryption at rest: one value, indexed
    row = message
    if usage is not None:
        before = (message["prompt_tokens"] or 0) + (message["completion_tokens"] or 0)
        row = await streams.set_message_usage(
            tx, tenant_id, message["id"], usage.prompt_tokens, usage.completion_tokens
        )
        await conversations.touch_activity(
            tx, tenant_id, message["conversation_id"], 0, usage.total_tokens - before
        )
    if announce:
        await publish_message_done(
            tx,
            tenant_id,
            MessageDone(message["id"], run_id, usage if usage is not None else _recorded(row)),
            conversation_id=message["conversation_id"],
            root_id=message["root_id"],
        )
    return row


def _recorded(row: asyncpg.Record) -> Usage | None:
    if row["prompt_tokens"] is None and row["completion_tokens"] is None:
        return None
    return Usage(row["prompt_tokens"] or 0, row["completion_tokens"] or 0)


# clients that stream an assistant message themselves -------------------------------------------


async def _writable_stream(tx: Executor, principal: Principal, message_id: uuid.UUID) -> asyncpg.Record:
    row = await threads.message(tx, principal.tenant_id, message_id, lock=True)
    if row is None:
        raise not_found("Message")
    conversation = await require(tx, principal, row["conversation_id"], Access.WRITE, asked_for="Message")
    require_writable(conversation)
    if row["role"] != "ASSISTANT":
        raise bad_input("Only ASSISTANT messages are streamed", argument="id")
    if row["deleted_at"] is not None:
        raise conflict("The message is deleted")
    if await repo.active_run_writing(tx, principal.tenant_id, message_id) is not None:
        raise conflict("A run is writing this message")
    if row["author_id"] != principal.user_id:
        raise forbidden("Only the message's author may stream into it")
    return row


async def client_append(
    db: Database, settings: Settings, principal: Principal, message_id: uuid.UUID, delta: str
) -> asyncpg.Record:
    if delta == "":
        raise bad_input("delta must not be empty", argument="delta")
    if "\x00" in delta:
        raise bad_input("delta must not contain NUL characters", argument="delta")
    async with db.transaction() as tx:
        row = await _writable_stream(tx, principal, message_id)
        size = len(row["content"].encode()) + len(delta.encode("utf-8", errors="surrogatepass"))
        if size > settings.message_max_bytes:
            raise bad_input(
                f"content would be {size} bytes; the limit is {settings.message_max_bytes} bytes",
                argument="delta",
                limit=settings.message_max_bytes,
            )
        await streams.open_stream(tx, principal.tenant_id, message_id)
        try:
            await append(tx, principal.tenant_id, row, delta, None)
        except OutputDeleted as exc:  # pragma: no cover - the row is locked and was checked above
            raise conflict("The message is deleted") from exc
        updated = await threads.message(tx, principal.tenant_id, message_id)
    assert updated is not None
    return updated


async def client_finish(
    db: Database, principal: Principal, message_id: uuid.UUID, usage: Usage | None
) -> asyncpg.Record:
    if usage is not None and not (
        0 <= usage.prompt_tokens <= 10_000_000 and 0 <= usage.completion_tokens <= 10_000_000
    ):
        raise bad_input("usage values must be between 0 and 10000000", argument="usage")
    async with db.transaction() as tx:
        row = await _writable_stream(tx, principal, message_id)
        finished = await finish(tx, principal.tenant_id, row, None, usage)
    assert finished is not None
    return finished
