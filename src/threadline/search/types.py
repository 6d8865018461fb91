"""GraphQL types of search, tags and insights."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import date, datetime
from typing import TYPE_CHECKING, Annotated, Any

import strawberry

from threadline.auth.principal import Principal
from threadline.conversations.types import Conversation, ConversationStatus
from threadline.graphql.context import Info
from threadline.graphql.describe import describe_values
from threadline.graphql.pagination import page_size
from threadline.metadata.types import MetadataFilterInput
from threadline.privacy import reading
from threadline.privacy.reading import masked_snippet
from threadline.search import insight_service
from threadline.search.insight_service import InsightScope as InsightScopeValue
from threadline.search.insight_service import Window
from threadline.search.service import Retrieval, SearchHit
from threadline.search.service import SearchMode as SearchModeValue
from threadline.threads.types import Message
from threadline.tiers.schema import cold_storage
from threadline.tiers.types import TierStorage

if TYPE_CHECKING:
    from threadline.enrich.insights.types import ConversationLength, InsightTopic, KnowledgeGap

SearchMatch = strawberry.enum(
    SearchModeValue,
    name="SearchMatch",
    description="How a result was found: TEXT (full-text match), FUZZY (typo-tolerant match on titles and "
    "tags, used only when no TEXT match exists), RECENT (no words to search: filters only, newest first), "
    "SEMANTIC (by meaning: its messages' vectors are near the query's), HYBRID (both by keywords and by meaning).",
)
SearchModeEnum = strawberry.enum(
    Retrieval,
    name="SearchMode",
    description="What a search with words looks at: KEYWORD (full text), SEMANTIC (meaning: message embeddings) "
    "or HYBRID (both, fused by reciprocal rank).",
)
InsightScope = strawberry.enum(
    InsightScopeValue,
    name="InsightScope",
    description="Whose conversations insights cover: OWN (yours and those shared with you), TEAM (also your "
    "team's, for managers), TENANT (everyone's, for admins).",
)


describe_values(
    SearchMatch,
    {
        "TEXT": "A full-text match of the query's words (titles, descriptions, tags and message content).",
        "FUZZY": "A typo-tolerant match on titles and tags, used only when no TEXT match exists.",
        "RECENT": "No words to search: the filters only, newest first.",
        "SEMANTIC": "Found by meaning only: chunks of its messages are among the nearest to the query's vector.",
        "HYBRID": "Found both ways: among the keyword candidates and among the nearest by meaning.",
    },
)
describe_values(
    SearchModeEnum,
    {
        "KEYWORD": "Full-text search (with the typo-tolerant fallback on titles and tags). The default without "
        "embeddings.",
        "SEMANTIC": "By meaning only: the conversations holding the message chunks nearest to the query's vector "
        "(at most the 100 nearest conversations). Needs an embeddings provider (BAD_USER_INPUT without).",
        "HYBRID": "The keyword and the semantic candidates (100 each at most) fused by reciprocal rank. The default "
        "when an embeddings provider is configured.",
    },
)
describe_values(
    InsightScope,
    {
        "OWN": "Your conversations and those shared with you.",
        "TEAM": "Also your team's conversations (managers).",
        "TENANT": "Every conversation in the tenant (admins).",
    },
)


@strawberry.input(description="A search over the conversations the caller may read. Every field is optional.")
class ConversationSearchInput:
    query: str | None = strawberry.field(
        default=None,
        description="Words to find in titles, descriptions, tags and messages, web-search style: "
        '"quoted phrase", OR, -excluded. Empty lists conversations by recent activity. At most 10,000 characters; '
        "words after the 32nd are ignored.",
    )
    tags: list[str] | None = strawberry.field(
        default=None,
        description="Conversations carrying all of these tags (compared trimmed and lower-case); each at most 64 "
        "characters, at most 50 tags, as a conversation carries (more is BAD_USER_INPUT).",
    )
    user_id: strawberry.ID | None = strawberry.field(
        default=None, description="Conversations owned by this user."
    )
    from_: datetime | None = strawberry.field(
        default=None,
        name="from",
        description="Active at or after this time (message hits: written at or after it).",
    )
    to: datetime | None = strawberry.field(
        default=None, description="Created before this time (message hits: written before it)."
    )
    ai_provider: str | None = strawberry.field(
        default=None,
        description="Conversations with this AI provider (ignoring case); at most 64 characters, as "
        "`ConversationCreateInput.aiProvider` (more is BAD_USER_INPUT).",
    )
    min_messages: int | None = strawberry.field(
        default=None, description="Conversations with at least this many messages."
    )
    metadata: list[MetadataFilterInput] | None = strawberry.field(
        default=None,
        description="Conversations whose metadata holds every one of these key/value pairs (exact match; indexed).",
    )
    status: ConversationStatus | None = strawberry.field(
        default=None, description="Only this status; by default ACTIVE and ARCHIVED (not DELETED)."
    )
    mode: SearchModeEnum | None = strawberry.field(  # type: ignore[valid-type]
        default=None,
        description="KEYWORD, SEMANTIC or HYBRID; by default HYBRID when the server has an embeddings provider, "
        "else KEYWORD. Ignored without words (filters only). A cursor continues only the mode it came from.",
    )
    first: int | None = strawberry.field(
        default=None,
        description="Page size (default 20, at most 100). Deprecated: pass `first` as an argument of `search`.",
        deprecation_reason="Pass `first` as an argument of `search` (Relay connection arguments). Both may be "
        "given only with the same value.",
    )
    after: str | None = strawberry.field(
        default=None,
        description="Cursor of the last result of the previous page. Deprecated: pass `after` as an argument of "
        "`search`.",
        deprecation_reason="Pass `after` as an argument of `search` (Relay connection arguments). Both may be "
        "given only with the same value.",
    )


@strawberry.type(description="A conversation found by a search.")
class SearchResult:
    conversation: Conversation = strawberry.field(
        description="The conversation found (also when the match is in one of its messages)."
    )
    message: Message | None = strawberry.field(
        description="Its best-matching message, or null when the match is in the title, description or tags."
    )
    score: float = strawberry.field(description="Relevance; higher is better. 0 for RECENT results.")
    snippet: str = strawberry.field(
        description="HTML-escaped text around the match, matched words wrapped in <mark>...</mark>."
    )
    matched_by: SearchMatch = strawberry.field(description="How the result was found.")  # type: ignore[valid-type]
    keyword_rank: int | None = strawberry.field(
        description="SEMANTIC and HYBRID searches: its rank among the keyword candidates (1 is best); null when "
        "the keywords did not find it, and for KEYWORD searches."
    )
    semantic_rank: int | None = strawberry.field(
        description="SEMANTIC and HYBRID searches: its rank among the nearest by meaning (1 is nearest); null when "
        "it is not among them, and for KEYWORD searches."
    )

    @classmethod
    def from_hit(cls, hit: SearchHit) -> SearchResult:
        return cls(
            conversation=Conversation.from_row(hit.conversation),
            message=Message.from_row(hit.message, hit.message_path) if hit.message is not None else None,
            score=hit.score,
            snippet=masked_snippet(reading.active(), hit.message, hit.snippet),  # privacy: MASK_ON_READ
            matched_by=hit.matched or hit.mode,
            keyword_rank=hit.keyword_rank,
            semantic_rank=hit.semantic_rank,
        )


@strawberry.type(description="A tag and how many conversations carry it.")
class TagCount:
    tag: str = strawberry.field(description="The tag as stored (trimmed, lower-case).")
    count: int = strawberry.field(description="Conversations carrying it.")


@strawberry.type(description="The tenant's full-text search language.")
class SearchSettings:
    language: str = strawberry.field(
        description="Stemming configuration added to exact ('simple') matching; 'simple' alone disables stemming."
    )
    available_languages: list[str] = strawberry.field(description="Every language that may be chosen.")


@strawberry.type(description="A count for one UTC day.")
class DailyCount:
    day: date = strawberry.field(description="The UTC day.")
    count: int = strawberry.field(description="How many that day (0 for a day without any).")


@strawberry.type(description="Messages and token usage for one UTC day.")
class DailyUsage:
    day: date = strawberry.field(description="The UTC day.")
    messages: int = strawberry.field(description="Messages written that day.")
    prompt_tokens: int = strawberry.field(description="Prompt tokens recorded that day.")
    completion_tokens: int = strawberry.field(description="Completion tokens recorded that day.")
    total_tokens: int = strawberry.field(description="promptTokens + completionTokens.")


@strawberry.type(description="Conversations using an AI provider.")
class ProviderCount:
    provider: str | None = strawberry.field(description="The provider; null for conversations without one.")
    count: int = strawberry.field(description="The window's conversations with this provider.")
    share: float = strawberry.field(description="Fraction of the window's conversations, 0 to 1.")


@strawberry.type(description="Feedback (`messageFeedbackSet`) on the messages of one model and provider.")
class FeedbackCount:
    model: str | None = strawberry.field(description="The model that wrote the rated messages; null if none.")
    provider: str | None = strawberry.field(
        description="The provider of the run that wrote them, else their conversation's; null if none."
    )
    up: int = strawberry.field(description="UP ratings given in the window.")
    down: int = strawberry.field(description="DOWN ratings given in the window.")


@strawberry.type(description="Messages written in one hour of the day (UTC).")
class HourCount:
    hour: int = strawberry.field(description="Hour of the day, 0-23, UTC.")
    count: int = strawberry.field(description="Messages written in that hour over the window.")


@strawberry.type(
    description="Usage over a window [from, to) for the viewer's scope. A conversation counts when it was "
    "created in the window, a message when it was written in it; deleted conversations are left out. "
    "Each field costs one query, only when asked."
)
class Insights:
    from_: datetime = strawberry.field(name="from", description="Start of the window (inclusive).")
    to: datetime = strawberry.field(description="End of the window (exclusive).")
    scope: InsightScope = strawberry.field(description="Whose conversations are counted.")  # type: ignore[valid-type]
    principal: strawberry.Private[Principal]
    window: strawberry.Private[Window]
    memo: strawberry.Private[dict[str, Any]]
    cold_storage: TierStorage | None = strawberry.field(
        resolver=cold_storage,
        description="Storage the cold tier saves across the tenant now (not limited to the window); null unless "
        "the caller is a tenant admin.",
    )

    async def _once(self, key: str, load: Callable[[], Awaitable[Any]]) -> Any:
        if key not in self.memo:
            self.memo[key] = await load()
        return self.memo[key]

    async def _totals(self, info: Info) -> Any:
        return await self._once(
            "totals",
            lambda: insight_service.conversation_totals(info.context.db, self.principal, self.window),
        )

    async def _activity(self, info: Info) -> insight_service.Activity:
        result: insight_service.Activity = await self._once(
            "activity", lambda: insight_service.message_activity(info.context.db, self.principal, self.window)
        )
        return result

    @strawberry.field(description="Conversations created in the window.")
    async def conversation_count(self, info: Info) -> int:
        return int((await self._totals(info))["conversations"])

    @strawberry.field(description="Messages written in the window.")
    async def message_count(self, info: Info) -> int:
        return sum(day[1] for day in (await self._activity(info)).per_day)

    @strawberry.field(
        description="Conversations created per UTC day; every day of the window, zeros included."
    )
    async def conversations_per_day(self, info: Info) -> list[DailyCount]:
        rows = await insight_service.conversations_per_day(info.context.db, self.principal, self.window)
        return [DailyCount(day=day, count=count) for day, count in rows]

    @strawberry.field(
        description="Average messageCount of the conversations created in the window (0 if none)."
    )
    async def average_messages_per_conversation(self, info: Info) -> float:
        return float((await self._totals(info))["average_messages"])

    @strawberry.field(description="Messages and tokens per UTC day; every day of the window, zeros included.")
    async def token_usage_per_day(self, info: Info) -> list[DailyUsage]:
        return [
            DailyUsage(day=d, messages=m, prompt_tokens=p, completion_tokens=c, total_tokens=p + c)
            for d, m, p, c in (await self._activity(info)).per_day
        ]

    @strawberry.field(description="Most used tags of the window's conversations, most used first.")
    async def popular_tags(
        self,
        info: Info,
        first: Annotated[
            int,
            strawberry.argument(
                description="How many tags to return: 10 by default, at most 100 (more is BAD_USER_INPUT)."
            ),
        ] = 10,
    ) -> list[TagCount]:
        limit = page_size(first, 10, 100)
        rows = await insight_service.popular_tags(info.context.db, self.principal, self.window, limit)
        return [TagCount(tag=r["tag"], count=r["count"]) for r in rows]

    @strawberry.field(
        description="Ratings given in the window (`messageFeedbackSet`) per model and provider, most rated first."
    )
    async def feedback(self, info: Info) -> list[FeedbackCount]:
        rows = await insight_service.feedback_by_model(info.context.db, self.principal, self.window)
        return [
            FeedbackCount(model=r["model"], provider=r["provider"], up=r["up"], down=r["down"]) for r in rows
        ]

    @strawberry.field(description="The window's conversations by AI provider, most used first.")
    async def provider_distribution(self, info: Info) -> list[ProviderCount]:
        rows = await insight_service.providers(info.context.db, self.principal, self.window)
        total = sum(r["count"] for r in rows)
        return [
            ProviderCount(provider=r["provider"], count=r["count"], share=r["count"] / total) for r in rows
        ]

    @strawberry.field(
        description="Messages per hour of the day (UTC) over the window, busiest first; idle hours omitted."
    )
    async def peak_usage_hours(self, info: Info) -> list[HourCount]:
        return [HourCount(hour=h, count=c) for h, c in (await self._activity(info)).per_hour]

    @strawberry.field(
        description="Most discussed topics: keywords of the newest 2,000 user messages written in the window (each "
        "read up to 500 characters), ranked by the conversations that name them, with up to 3 example "
        "conversations each. Keywords named only once are left out."
    )
    async def topics(
        self,
        info: Info,
        first: Annotated[
            int,
            strawberry.argument(
                description="How many topics: 10 by default, at most 50 (more is BAD_USER_INPUT)."
            ),
        ] = 10,
    ) -> list[Annotated[InsightTopic, strawberry.lazy("threadline.enrich.insights.types")]]:
        from threadline.enrich.insights import types as insight_types

        return await insight_types.topics(info, self.principal, self.window, first)

    @strawberry.field(
        description="Average and median length of the conversations created in the window: messages, and time "
        "from creation to last activity."
    )
    async def conversation_length(
        self, info: Info
    ) -> Annotated[ConversationLength, strawberry.lazy("threadline.enrich.insights.types")]:
        from threadline.enrich.insights import types as insight_types

        return await insight_types.conversation_length(info, self.principal, self.window)

    @strawberry.field(
        description="Knowledge gaps: user messages written in the window whose answers were down-rated (message "
        "feedback), regenerated (sibling assistant replies) or abandoned (a run asked, no answer with text), worst "
        "first (most DOWN ratings, then most answers). Only messages of conversations the caller may read."
    )
    async def knowledge_gaps(
        self,
        info: Info,
        first: Annotated[
            int,
            strawberry.argument(
                description="How many gaps: 10 by default, at most 50 (more is BAD_USER_INPUT)."
            ),
        ] = 10,
    ) -> list[Annotated[KnowledgeGap, strawberry.lazy("threadline.enrich.insights.types")]]:
        from threadline.enrich.insights import types as insight_types

        return await insight_types.knowledge_gaps(info, self.principal, self.window, first)


def hit_cursor(hit: SearchHit) -> tuple[str, bool, float, datetime, uuid.UUID]:
    cont = hit.continuation
    return (cont.mode.value, cont.capped, *cont.position)
