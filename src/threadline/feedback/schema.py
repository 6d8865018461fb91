"""Mutation fields of message feedback."""

from __future__ import annotations

from typing import Annotated

import strawberry

from threadline.feedback import service
from threadline.feedback.types import FeedbackRating
from threadline.graphql.arguments import given
from threadline.graphql.context import Info
from threadline.ids import Kind, decode_id
from threadline.threads.service import path_ids
from threadline.threads.types import Message


@strawberry.type
class FeedbackMutation:
    @strawberry.mutation(
        description="Rate a message you may read (NOT_FOUND otherwise): one rating per user and message, a new one "
        "replaces it; `rating: null` removes yours. Read it back in `Message.feedback` (yours) and "
        "`Message.feedbackSummary` (everyone's counts)."
    )
    async def message_feedback_set(
        self,
        info: Info,
        message_id: Annotated[strawberry.ID, strawberry.argument(description="The message (`Message.id`).")],
        rating: Annotated[
            FeedbackRating | None, strawberry.argument(description="UP or DOWN; null removes your feedback.")
        ] = strawberry.UNSET,
        reasons: Annotated[
            list[str] | None,
            strawberry.argument(
                description="Why (e.g. `inaccurate`, `helpful`): at most 10, each 1 to 64 characters, trimmed, "
                "duplicates dropped."
            ),
        ] = None,
        comment: Annotated[
            str | None, strawberry.argument(description="Free text, at most 2,000 characters.")
        ] = None,
    ) -> Message:
        rating = given(rating, "rating", "removes your feedback")
        principal = await info.context.principal()
        db = info.context.db
        row = await service.set_feedback(
            db,
            principal,
            decode_id(message_id, Kind.MESSAGE),
            rating.value if rating is not None else None,
            reasons,
            comment,
        )
        (path,) = await path_ids(db, principal.tenant_id, [row])
        return Message.from_row(row, path)
