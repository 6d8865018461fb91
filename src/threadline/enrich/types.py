"""GraphQL types of titles, summaries and tag suggestions, and the Conversation fields that read them."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

import asyncpg
import strawberry

from threadline.enrich import repository as repo
from threadline.graphql.context import Info
from threadline.graphql.describe import describe_values
from threadline.graphql.loaders import grouped_loader


@strawberry.enum(description="What an enrichment job makes for a conversation.")
class EnrichmentKind(StrEnum):
    TITLE = "TITLE"
    SUMMARY = "SUMMARY"
    TAGS = "TAGS"


@strawberry.enum(description="Where an enrichment job is.")
class EnrichmentStatus(StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    WAITING = "WAITING"
    COMPLETED = "COMPLETED"
    SKIPPED = "SKIPPED"
    FAILED = "FAILED"


@strawberry.enum(description="Who set a conversation's title.")
class TitleSource(StrEnum):
    DEFAULT = "DEFAULT"
    USER = "USER"
    GENERATED = "GENERATED"


describe_values(
    EnrichmentKind,
    {
        "TITLE": "A title, made once after the first exchange (a user message and the first assistant answer after "
        "it) while the title is still the placeholder; through the conversation's provider (its `aiProvider`, "
        "if the server has it set up), or extracted from the first question otherwise.",
        "SUMMARY": "`Conversation.summary`: made after the first exchange and again each time the conversation "
        "grows by THREADLINE_ENRICHMENT_SUMMARY_EVERY messages (20), from its newest 200 messages: its most "
        "telling sentences, or through the conversation's provider where THREADLINE_ENRICHMENT_SUMMARIES=provider.",
        "TAGS": "`Conversation.suggestedTags`: tags of the owner's other conversations that the content names, "
        "then the content's own frequent keywords; made with the summary. Never applied by itself.",
    },
)
describe_values(
    EnrichmentStatus,
    {
        "QUEUED": "Waiting for a worker (after a failed attempt too, until `runAfter`).",
        "RUNNING": "A worker is generating it.",
        "WAITING": "Waits for the conversation to reach `waitsForMessageCount` messages (e.g. no answer yet).",
        "COMPLETED": "Done; a SUMMARY or TAGS job is queued again at `waitsForMessageCount` messages.",
        "SKIPPED": "Nothing to do: the title was set by a user, or the conversation was deleted.",
        "FAILED": "Every attempt failed (`lastError`); `conversationEnrichmentRetry` queues it again.",
    },
)
describe_values(
    TitleSource,
    {
        "DEFAULT": "The placeholder (no title was given): a title is generated after the first exchange.",
        "USER": "Set by a user (`conversationCreate`, `conversationUpdate`) or brought by an import or fork: never "
        "replaced by a generated one.",
        "GENERATED": "Generated (`EnrichmentKind.TITLE`). A user's edit makes it USER; if a message it was made "
        "from is deleted or edited, it goes back to the placeholder and is made again.",
    },
)


@strawberry.type(description="Why an enrichment job's last attempt failed.")
class EnrichmentError:
    code: str = strawberry.field(
        description="TIMEOUT, a provider's error code (PROVIDER_ERROR, PROVIDER_UNAVAILABLE, ...), EXHAUSTED "
        "(every attempt was lost with its worker) or INTERNAL."
    )
    message: str = strawberry.field(description="An explanation for people, at most 500 characters.")


@strawberry.type(
    description="A background job that makes a conversation's title, summary or tag suggestions."
)
class EnrichmentJob:
    kind: EnrichmentKind = strawberry.field(description="What it makes.")
    status: EnrichmentStatus = strawberry.field(description="Where it is.")
    attempts: int = strawberry.field(description="Attempts since it was last queued.")
    generator: str | None = strawberry.field(
        description="Who made the last result: a provider's name (`echo`, `openai`) or `extractive` (the offline "
        "rules); null before the first."
    )
    last_error: EnrichmentError | None = strawberry.field(
        description="The last failure, if the last attempt failed."
    )
    waits_for_message_count: int | None = strawberry.field(
        description="It is queued again when the conversation reaches this many messages; null if it does not wait."
    )
    covers_message_count: int = strawberry.field(
        description="The conversation's message count when the last SUMMARY or TAGS result was made."
    )
    created_at: datetime = strawberry.field(description="When it was first queued.")
    updated_at: datetime = strawberry.field(description="Its last change.")
    finished_at: datetime | None = strawberry.field(
        description="When it last completed, was skipped or failed."
    )

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> EnrichmentJob:
        error = None
        if row["last_error_code"] is not None:
            error = EnrichmentError(code=row["last_error_code"], message=row["last_error_message"] or "")
        return cls(
            kind=EnrichmentKind(row["kind"]),
            status=EnrichmentStatus(row["status"]),
            attempts=row["attempts"],
            generator=row["generator"],
            last_error=error,
            waits_for_message_count=row["due_messages"],
            covers_message_count=row["result_messages"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            finished_at=row["finished_at"],
        )


_ORDER = {"TITLE": 0, "SUMMARY": 1, "TAGS": 2}


async def _state(info: Info, conversation_id: uuid.UUID) -> list[asyncpg.Record]:
    principal = await info.context.principal()
    db = info.context.db
    loader = grouped_loader(
        info,
        "enrichment_state",
        lambda ids: repo.states_of(db, principal.tenant_id, ids),
        key=lambda row: row["conversation_id"],
    )
    rows: list[asyncpg.Record] = await loader.load(conversation_id)
    return rows


def _job(rows: list[asyncpg.Record], kind: str) -> asyncpg.Record | None:
    return next((r for r in rows if r["kind"] == kind), None)


async def title_source(info: Info, conversation_id: uuid.UUID) -> TitleSource:
    rows = await _state(info, conversation_id)
    return TitleSource(rows[0]["title_source"]) if rows else TitleSource.USER


async def summary(info: Info, conversation_id: uuid.UUID) -> str | None:
    job = _job(await _state(info, conversation_id), "SUMMARY")
    return None if job is None else job["result_text"]


async def suggested_tags(info: Info, conversation_id: uuid.UUID, applied: list[str]) -> list[str]:
    job = _job(await _state(info, conversation_id), "TAGS")
    if job is None:
        return []
    taken = set(applied)
    return [tag for tag in job["result_tags"] or [] if tag not in taken]


async def jobs(info: Info, conversation_id: uuid.UUID) -> list[EnrichmentJob]:
    rows: list[Any] = [r for r in await _state(info, conversation_id) if r["kind"] is not None]
    return [EnrichmentJob.from_row(r) for r in sorted(rows, key=lambda r: _ORDER.get(r["kind"], 9))]
