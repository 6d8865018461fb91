"""GraphQL types of message feedback."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

import asyncpg
import strawberry

from threadline.graphql.describe import describe_values


@strawberry.enum(description="A rating of a message.")
class FeedbackRating(StrEnum):
    UP = "UP"
    DOWN = "DOWN"


describe_values(FeedbackRating, {"UP": "Good (thumbs up).", "DOWN": "Bad (thumbs down)."})


@strawberry.type(description="A user's feedback on a message (`messageFeedbackSet`).")
class MessageFeedback:
    rating: FeedbackRating = strawberry.field(description="UP or DOWN.")
    reasons: list[str] = strawberry.field(
        description="Reasons given (at most 10, each at most 64 characters)."
    )
    comment: str = strawberry.field(description="Free text (at most 2,000 characters); empty unless given.")
    created_at: datetime = strawberry.field(description="When it was first given.")
    updated_at: datetime = strawberry.field(description="When it last changed.")

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> MessageFeedback:
        return cls(
            rating=FeedbackRating(row["rating"]),
            reasons=list(row["reasons"]),
            comment=row["comment"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
        )


@strawberry.type(description="How the readers of a message rated it.")
class FeedbackSummary:
    up: int = strawberry.field(description="UP ratings.")
    down: int = strawberry.field(description="DOWN ratings.")
