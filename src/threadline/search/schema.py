"""Query and Mutation fields of search, tags, insights and the search language."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, TypeVar

import strawberry

from threadline.conversations.rules import AI_PROVIDER_MAX_CHARS, bounded_text, normalise_tags
from threadline.errors import bad_input
from threadline.graphql.context import Info
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
from threadline.ids import Kind, decode_id
from threadline.metadata import rules as metadata_rules
from threadline.search import insight_service, tag_service
from threadline.search import service as search_service
from threadline.search.repository import SearchFilters
from threadline.search.service import Continuation, Retrieval, SearchMode, SearchRequest, sendable
from threadline.search.types import (
    ConversationSearchInput,
    Insights,
    SearchResult,
    SearchSettings,
    TagCount,
    hit_cursor,
)

DEFAULT_STATUSES = ("ACTIVE", "ARCHIVED")
T = TypeVar("T")


def _as_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("not a boolean")
    return value


def _as_score(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("not a number")
    return float(value)


def _given_once(name: str, argument: T | None, in_input: T | None) -> T | None:
    """`first`/`after` as field arguments (what Relay's compiler needs) or, deprecated, inside the input: either
    place, or both with the same value (a client moving over may send both); different values are refused."""
    if argument is not None and in_input is not None and argument != in_input:
        raise bad_input(
            f"`{name}` is given both as an argument of `search` and in its input, with different values; "
            f"give it once, as the argument (`input.{name}` is deprecated)",
            argument=name,
        )
    return argument if argument is not None else in_input


def _request(
    info: Info, input: ConversationSearchInput, first: int | None, after_cursor: str | None
) -> SearchRequest:
    settings = info.context.settings
    limit = page_size(
        _given_once("first", first, input.first), settings.page_size_default, settings.page_size_max
    )
    cursor = _given_once("after", after_cursor, input.after)
    after = None
    if cursor:
        mode, capped, score, at, cid = decode_cursor(
            cursor, (SearchMode, _as_bool, _as_score, as_datetime, as_uuid)
        )
        after = Continuation(mode, capped, (score, at, cid))
    if input.min_messages is not None and input.min_messages < 0:
        raise bad_input("`minMessages` must not be negative", argument="minMessages")
    # As long as a stored one at most (conversationCreate's bound): a longer value could only match nothing.
    provider = sendable(input.ai_provider).strip() if input.ai_provider else ""
    filters = SearchFilters(
        statuses=(input.status.value,) if input.status is not None else DEFAULT_STATUSES,
        tags=normalise_tags([sendable(t) for t in input.tags], settings) if input.tags else None,
        owner_id=decode_id(input.user_id, Kind.USER) if input.user_id is not None else None,
        ai_provider=bounded_text(provider, AI_PROVIDER_MAX_CHARS, "aiProvider") or None,
        min_messages=input.min_messages,
        metadata=metadata_rules.containment(((m.key, m.value) for m in input.metadata or []), "metadata"),
        since=input.from_,
        until=input.to,
    )
    retrieval = Retrieval(input.mode.value) if input.mode is not None else None
    return SearchRequest(query=input.query, filters=filters, limit=limit, after=after, retrieval=retrieval)


@strawberry.type
class SearchQuery:
    @strawberry.field(
        description="Search over the conversations the caller may read, best match first (ties: most recent "
        "activity first): full-text (KEYWORD; when nothing matches exactly, titles and tags are matched tolerantly "
        "of typos), by meaning (SEMANTIC) or both fused (HYBRID), by `input.mode`. Without words, lists "
        "conversations matching the filters by recent activity."
    )
    async def search(
        self,
        info: Info,
        input: Annotated[
            ConversationSearchInput,
            strawberry.argument(
                description="The words to find and the filters; `{}` lists everything readable."
            ),
        ],
        first: First = None,
        after: After = None,
    ) -> Connection[SearchResult]:
        principal = await info.context.principal()
        request = _request(info, input, first, after)
        embeddings = getattr(info.context.services, "embeddings", None)
        replica = getattr(info.context.services, "replica", None)  # db.replica: fresh enough, or the primary
        db = await replica.database() if replica is not None else info.context.db
        page = await search_service.search(db, principal, request, embeddings)
        return connection(
            page.hits,
            request.limit,
            SearchResult.from_hit,
            hit_cursor,
            page.count,
            has_previous=request.after is not None,
        )

    @strawberry.field(
        description="Tags of the conversations the caller may read (deleted ones left out) with their counts, "
        "most used first. `first` defaults to 100, at most 1000."
    )
    async def tags(
        self,
        info: Info,
        first: Annotated[
            int | None,
            strawberry.argument(
                description="How many tags to return: 100 by default, at most 1000 (more is BAD_USER_INPUT)."
            ),
        ] = None,
    ) -> list[TagCount]:
        principal = await info.context.principal()
        limit = page_size(first, tag_service.TAGS_LIMIT_DEFAULT, tag_service.TAGS_LIMIT_MAX)
        rows = await tag_service.tag_counts(info.context.db, principal, limit)
        return [TagCount(tag=r["tag"], count=r["count"]) for r in rows]

    @strawberry.field(
        description="Usage insights over [from, to) (default: the last 30 days, at most 366) for the caller's "
        "scope: their own and shared conversations, their team's for managers, the tenant's for admins."
    )
    async def insights(
        self,
        info: Info,
        from_: Annotated[
            datetime | None,
            strawberry.argument(name="from", description="Start (inclusive); default `to` - 30 days."),
        ] = None,
        to: Annotated[
            datetime | None, strawberry.argument(description="End (exclusive); default now.")
        ] = None,
    ) -> Insights:
        principal = await info.context.principal()
        window = insight_service.window(from_, to)
        return Insights(
            from_=window.since,
            to=window.until,
            scope=insight_service.scope_of(principal),
            principal=principal,
            window=window,
            memo={},
        )

    @strawberry.field(description="The tenant's search language and the languages it may choose from.")
    async def search_settings(self, info: Info) -> SearchSettings:
        principal = await info.context.principal()
        language, available = await search_service.search_language(info.context.db, principal)
        return SearchSettings(language=language, available_languages=available)


@strawberry.type
class SearchMutation:
    @strawberry.mutation(
        description="Set the tenant's search language (admins only), e.g. 'english', 'german', or 'simple' for "
        "no stemming. Every conversation and message of the tenant is re-indexed in the same transaction."
    )
    async def search_language_set(
        self,
        info: Info,
        language: Annotated[
            str,
            strawberry.argument(
                description="A PostgreSQL text search configuration listed in `searchSettings.availableLanguages` "
                "(e.g. `english`, `german`, `simple`); another is BAD_USER_INPUT."
            ),
        ],
    ) -> SearchSettings:
        principal = await info.context.principal()
        chosen, available = await search_service.set_search_language(info.context.db, principal, language)
        return SearchSettings(language=chosen, available_languages=available)
