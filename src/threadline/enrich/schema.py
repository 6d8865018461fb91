"""Mutation fields of titles, summaries and tag suggestions (the Conversation fields live on Conversation)."""

from __future__ import annotations

from typing import Annotated

import strawberry

from threadline.enrich import service
from threadline.enrich.types import EnrichmentJob, EnrichmentKind
from threadline.graphql.context import Info
from threadline.ids import Kind, decode_id


@strawberry.type
class EnrichmentMutation:
    @strawberry.mutation(
        description="Queue a conversation's title, summary or tag suggestion job now: a FAILED one tries again, a "
        "finished one makes its result again (`enrichment.job` events follow it). Needs write access to an ACTIVE "
        "conversation (NOT_FOUND if you cannot read it, FORBIDDEN if you only read it); CONFLICT while the job is "
        "QUEUED or RUNNING, and for TITLE when a user set the title (it is never replaced)."
    )
    async def conversation_enrichment_retry(
        self,
        info: Info,
        conversation_id: Annotated[strawberry.ID, strawberry.argument(description="The conversation.")],
        kind: Annotated[EnrichmentKind, strawberry.argument(description="Which job.")],
    ) -> EnrichmentJob:
        principal = await info.context.principal()
        row = await service.retry(
            info.context.db, principal, decode_id(conversation_id, Kind.CONVERSATION), kind.value
        )
        return EnrichmentJob.from_row(row)
