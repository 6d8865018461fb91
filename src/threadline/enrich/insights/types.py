"""GraphQL types of the knowledge insights (issue 19 item 4): most discussed topics, conversation length and
knowledge gaps. `Insights` (search/types.py) exposes them; the rules and SQL are the insights module's."""

from __future__ import annotations

from enum import StrEnum

import strawberry

from threadline.auth.principal import Principal
from threadline.conversations.types import Conversation
from threadline.graphql.context import Info
from threadline.graphql.describe import describe_values
from threadline.graphql.pagination import page_size
from threadline.search import insight_service
from threadline.search.insight_service import Window
from threadline.threads.service import path_ids
from threadline.threads.types import Message


@strawberry.type(
    description="A topic of the window: a keyword of the users' messages, with where it came up."
)
class InsightTopic:
    keyword: str = strawberry.field(
        description="The keyword, lower-case (a plural's final s dropped); common words are never topics."
    )
    conversation_count: int = strawberry.field(description="Conversations whose user messages name it.")
    message_count: int = strawberry.field(description="User messages that name it.")
    examples: list[Conversation] = strawberry.field(
        description="Up to 3 conversations that name it, most recent mention first: only conversations the caller "
        "may read (the same ones counted)."
    )


@strawberry.type(description="How long the window's conversations are (those created in it).")
class ConversationLength:
    conversations: int = strawberry.field(description="Conversations measured.")
    average_messages: float = strawberry.field(description="Average messageCount (0 if none).")
    median_messages: float = strawberry.field(description="Median messageCount (0 if none).")
    average_duration_seconds: float = strawberry.field(
        description="Average time from creation to last activity, in seconds (0 if none)."
    )
    median_duration_seconds: float = strawberry.field(
        description="Median time from creation to last activity, in seconds (0 if none)."
    )


@strawberry.enum(description="Why a question is a knowledge gap, and what that is read from.")
class KnowledgeGapReason(StrEnum):
    DOWN_RATED = "DOWN_RATED"
    REGENERATED = "REGENERATED"
    ABANDONED = "ABANDONED"


describe_values(
    KnowledgeGapReason,
    {
        "DOWN_RATED": "An answer to it was rated DOWN (message feedback, `messageFeedbackSet`).",
        "REGENERATED": "It has two or more assistant answers: sibling replies (branches: a regenerated answer).",
        "ABANDONED": "A run was asked to answer it and no assistant answer with text exists (the run failed, was "
        "cancelled or expired, or its empty answer was deleted).",
    },
)


@strawberry.type(description="A question (a user message) whose answers did not satisfy.")
class KnowledgeGap:
    question: Message = strawberry.field(description="The user message.")
    reasons: list[KnowledgeGapReason] = strawberry.field(description="Why it is a gap (at least one).")
    answer_count: int = strawberry.field(description="Assistant answers to it (not deleted).")
    down_ratings: int = strawberry.field(description="DOWN ratings on those answers.")


async def topics(info: Info, principal: Principal, window: Window, first: int) -> list[InsightTopic]:
    limit = page_size(first, 10, 50)
    found = await insight_service.topics(info.context.db, principal, window, limit)
    return [
        InsightTopic(
            keyword=topic.keyword,
            conversation_count=topic.conversations,
            message_count=topic.messages,
            examples=[Conversation.from_row(row) for row in rows],
        )
        for topic, rows in found
    ]


async def conversation_length(info: Info, principal: Principal, window: Window) -> ConversationLength:
    row = await insight_service.conversation_length(info.context.db, principal, window)
    return ConversationLength(
        conversations=row["conversations"],
        average_messages=row["average_messages"],
        median_messages=row["median_messages"],
        average_duration_seconds=row["average_seconds"],
        median_duration_seconds=row["median_seconds"],
    )


async def knowledge_gaps(info: Info, principal: Principal, window: Window, first: int) -> list[KnowledgeGap]:
    limit = page_size(first, 10, 50)
    rows = await insight_service.knowledge_gaps(info.context.db, principal, window, limit)
    paths = await path_ids(info.context.db, principal.tenant_id, rows)
    gaps = []
    for row, path in zip(rows, paths, strict=True):
        reasons = []
        if row["down"] > 0:
            reasons.append(KnowledgeGapReason.DOWN_RATED)
        if row["answers"] > 1:
            reasons.append(KnowledgeGapReason.REGENERATED)
        if row["abandoned"]:
            reasons.append(KnowledgeGapReason.ABANDONED)
        gaps.append(
            KnowledgeGap(
                question=Message.from_row(row, path),
                reasons=reasons,
                answer_count=row["answers"],
                down_ratings=row["down"],
            )
        )
    return gaps
