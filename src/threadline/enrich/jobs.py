"""What each job kind does with a claimed job: read the conversation (bounded), generate, and store the result
with the status, announcing it to the conversation's live subscribers in the same transaction.

TITLE: after the first exchange (a user message and the first assistant answer after it), while the title is
the placeholder. SUMMARY: the newest messages, again when the conversation has grown by
`enrichment_summary_every`. TAGS: suggestions from the owner's tag vocabulary and the content (never applied).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from threadline import crypto
from threadline.db import Executor
from threadline.enrich import repository as repo
from threadline.enrich import text
from threadline.enrich.generate import (
    SUMMARY_INSTRUCTIONS,
    TITLE_INSTRUCTIONS,
    Generator,
    ask,
    choose,
    transcript,
)
from threadline.enrich.yielding import YIELDED, Yielding
from threadline.events.announce import publish_enrichment_job
from threadline.events.payloads import EnrichmentJobChanged
from threadline.privacy import repository as privacy
from threadline.privacy.masking import mask_text
from threadline.privacy.modes import PiiPolicy
from threadline.runs.providers import Provider, ProviderError
from threadline.settings import Settings

log = logging.getLogger(__name__)

QUESTION_CHARS = 4000  # of each message of the first exchange, for a title
MESSAGE_CHARS = 2000  # of each message, for a summary or tags
RECENT_MESSAGES = 200
PROMPT_CHARS = 12_000
STREAM_WAIT = timedelta(minutes=10)  # a title waits this long at most for a streaming answer to finish
TAG_LIMIT = 5
VOCABULARY_LIMIT = 500


@dataclass
class Outcome:
    status: str
    changes: dict[str, Any] = field(default_factory=dict)
    title: str | None = None  # a TITLE to set on the conversation


@dataclass(frozen=True)
class JobContext:
    db: Yielding
    settings: Settings
    providers: dict[str, Provider]


def _now() -> datetime:
    return datetime.now(UTC)


def _done(generator: Generator, **changes: Any) -> dict[str, Any]:
    return {
        "generator": generator.name,
        "finished_at": _now(),
        "last_error_code": None,
        "last_error_message": None,
        **changes,
    }


async def _title(ctx: JobContext, job: asyncpg.Record, conversation: asyncpg.Record) -> Outcome:
    if conversation["title_source"] != "DEFAULT":
        return Outcome("SKIPPED", {"finished_at": _now(), "due_messages": None})
    tenant_id, conversation_id = job["tenant_id"], job["conversation_id"]
    exchange = await repo.first_exchange(ctx.db, tenant_id, conversation_id, QUESTION_CHARS)
    if exchange is None or exchange["answer_id"] is None:
        # No exchange yet: wait for the next message.
        return Outcome("WAITING", {"due_messages": conversation["message_count"] + 1, "attempts": 0})
    if exchange["streaming"] and _now() - exchange["answered_at"] < STREAM_WAIT:
        # The answer is still being written: look again shortly (not an attempt).
        return Outcome(
            "QUEUED", {"run_after": _now() + timedelta(seconds=1), "attempts": job["attempts"] - 1}
        )
    limit = ctx.settings.enrichment_title_max_chars
    generator = choose(ctx.providers, conversation["ai_provider"], conversation["model"])
    title = ""
    if generator.provider is not None:
        prompt = transcript([("user", exchange["question"]), ("assistant", exchange["answer"])], PROMPT_CHARS)
        answer = await ask(
            generator, TITLE_INSTRUCTIONS, prompt, limit * 4, ctx.settings.enrichment_timeout_seconds
        )
        title = text.clean_title(answer, limit)
    if not title:
        generator = Generator(None, "")
        title = text.extractive_title(exchange["question"], limit)
    if not title:
        return Outcome("SKIPPED", {"finished_at": _now(), "generator": generator.name})
    changes = _done(generator, result_text=title, source_ids=[exchange["question_id"], exchange["answer_id"]])
    return Outcome("COMPLETED", changes, title=title)


async def _messages(ctx: JobContext, job: asyncpg.Record) -> list[asyncpg.Record]:
    return await repo.recent_messages(
        ctx.db, job["tenant_id"], job["conversation_id"], RECENT_MESSAGES, MESSAGE_CHARS
    )


def _growth(conversation: asyncpg.Record, settings: Settings) -> dict[str, Any]:
    count = conversation["message_count"]
    return {"result_messages": count, "due_messages": count + max(1, settings.enrichment_summary_every)}


async def _summary(ctx: JobContext, job: asyncpg.Record, conversation: asyncpg.Record) -> Outcome:
    messages = await _messages(ctx, job)
    if not messages:
        return Outcome("WAITING", {"due_messages": conversation["message_count"] + 1, "attempts": 0})
    limit = ctx.settings.enrichment_summary_max_chars
    generator = Generator(None, "")
    if ctx.settings.enrichment_summaries == "provider":
        generator = choose(ctx.providers, conversation["ai_provider"], conversation["model"])
    summary = ""
    if generator.provider is not None:
        prompt = transcript([(m["role"], m["content"]) for m in messages], PROMPT_CHARS)
        answer = await ask(
            generator, SUMMARY_INSTRUCTIONS, prompt, limit * 2, ctx.settings.enrichment_timeout_seconds
        )
        summary = text.clean_summary(answer, limit)
    if not summary:
        generator = Generator(None, "")
        summary = text.extractive_summary([m["content"] for m in messages], limit)
    changes = _done(generator, result_text=summary or None, **_growth(conversation, ctx.settings))
    return Outcome("COMPLETED", changes)


async def _tags(ctx: JobContext, job: asyncpg.Record, conversation: asyncpg.Record) -> Outcome:
    messages = await _messages(ctx, job)
    vocabulary = await repo.owner_vocabulary(
        ctx.db, job["tenant_id"], conversation["owner_id"], VOCABULARY_LIMIT
    )
    content = "\n".join(
        [conversation["title"] if conversation["title_source"] == "USER" else ""]
        + [m["content"] for m in messages]
    )
    tags = text.suggest_tags(text.visible(content), vocabulary, list(conversation["tags"] or []), TAG_LIMIT)
    changes = _done(Generator(None, ""), result_tags=tags, **_growth(conversation, ctx.settings))
    return Outcome("COMPLETED", changes)


KINDS: dict[str, Callable[[JobContext, asyncpg.Record, asyncpg.Record], Awaitable[Outcome]]] = {
    "TITLE": _title,
    "SUMMARY": _summary,
    "TAGS": _tags,
}


# Under a masking PII policy, what is derived from messages is stored masked: a title or summary is read by every
# reader of the conversation, and logged nowhere else (privacy/).
MASKING = (PiiPolicy.MASK_ON_WRITE, PiiPolicy.MASK_ON_READ)


def _masked(outcome: Outcome) -> Outcome:
    changes = dict(outcome.changes)
    if changes.get("result_text"):
        changes["result_text"] = mask_text(changes["result_text"])
    if changes.get("result_tags"):
        changes["result_tags"] = [t for t in changes["result_tags"] if mask_text(t) == t]
    title = mask_text(outcome.title) if outcome.title is not None else None
    return Outcome(outcome.status, changes, title)


def _failure(job: asyncpg.Record, settings: Settings, code: str, message: str) -> Outcome:
    """Try again later with a growing pause while attempts remain; FAILED after the last (retry by hand)."""
    error = {"last_error_code": code[:64], "last_error_message": text.cut(text.visible(message), 500)}
    if job["attempts"] < settings.enrichment_max_attempts:
        pause = timedelta(seconds=2 ** job["attempts"])
        return Outcome("QUEUED", {"run_after": _now() + pause, **error})
    return Outcome("FAILED", {"finished_at": _now(), "due_messages": None, **error})


async def announce(tx: Executor, job: asyncpg.Record, status: str) -> None:
    await publish_enrichment_job(
        tx,
        job["tenant_id"],
        EnrichmentJobChanged(job["kind"], status),
        conversation_id=job["conversation_id"],
    )


async def execute(ctx: JobContext, job: asyncpg.Record) -> str | None:
    """Run one claimed job to its next status; None when the job was taken from this claim meanwhile."""
    conversation = await repo.conversation(ctx.db, job["tenant_id"], job["conversation_id"])
    if conversation is None:
        return None  # deleted for good: its jobs went with it
    if conversation["status"] == "DELETED":
        outcome = Outcome("SKIPPED", {"finished_at": _now(), "due_messages": None})
    elif job["attempts"] > ctx.settings.enrichment_max_attempts:
        outcome = Outcome(
            "FAILED",
            {
                "finished_at": _now(),
                "last_error_code": "EXHAUSTED",
                "last_error_message": "Every attempt was lost with its worker",
            },
        )
    else:
        async with ctx.db.transaction() as tx:
            await announce(tx, job, "RUNNING")
        try:
            outcome = await KINDS[job["kind"]](ctx, job, conversation)
        except ProviderError as exc:
            outcome = _failure(job, ctx.settings, exc.code, exc.message)
        except (OSError, asyncpg.PostgresError):
            raise  # the database (or a lock it gave way to): the worker puts the job back
        except Exception:  # noqa: BLE001 - a bug must not stop the worker; the job says it failed
            log.exception("enrichment job %s (%s) failed", job["id"], job["kind"])
            outcome = _failure(job, ctx.settings, "INTERNAL", "The generation failed")
    if await privacy.tenant_policy(ctx.db, job["tenant_id"]) in MASKING:
        outcome = _masked(outcome)
    # A title or summary is content: its job row holds it sealed like the messages (crypto/, encryption at rest).
    if outcome.changes.get("result_text"):
        sealed = await crypto.seal(job["tenant_id"], outcome.changes["result_text"])
        outcome = Outcome(outcome.status, {**outcome.changes, "result_text": sealed}, outcome.title)
    async with ctx.db.transaction() as tx:
        if outcome.title is not None:
            if await repo.title_source(tx, job["tenant_id"], job["conversation_id"], lock=True) != "DEFAULT":
                outcome = Outcome("SKIPPED", {"finished_at": _now(), "due_messages": None})
        row = await repo.finish(tx, job, outcome.status, outcome.changes)
        if row is None:
            return None
        if outcome.title is not None:
            await repo.apply_title(tx, job["tenant_id"], job["conversation_id"], outcome.title)
        await announce(tx, job, outcome.status)
    return outcome.status


async def put_back(
    db: Executor, settings: Settings, job: asyncpg.Record, *, gave_way: bool, wait: float = 1.0
) -> asyncpg.Record | None:
    """A claimed job that did not finish: one whose statements gave way to a lock (or whose worker is stopping)
    is queued again in `wait` seconds, the attempt not counted; one that met a database error counts the
    attempt like a provider failure. If even this fails, the job's lease lapses and it is claimed again.
    None when the job was no longer this claim's (it finished, or an edit queued it again)."""
    if gave_way:
        outcome = Outcome(
            "QUEUED", {"run_after": _now() + timedelta(seconds=wait), "attempts": job["attempts"] - 1}
        )
    else:
        outcome = _failure(job, settings, "INTERNAL", "The database failed while the job ran")
    return await repo.finish(db, job, outcome.status, outcome.changes)


__all__ = ["YIELDED", "JobContext", "execute", "put_back"]
