"""Query fields of embeddings."""

from __future__ import annotations

import strawberry

from threadline.embeddings import service
from threadline.embeddings.types import EmbeddingIndex
from threadline.graphql.context import Info


@strawberry.type
class EmbeddingQuery:
    @strawberry.field(
        description="The embedding indexer's progress for the caller's tenant (admins only; FORBIDDEN otherwise); "
        "null when the server has no embeddings provider (THREADLINE_EMBEDDINGS)."
    )
    async def embedding_index(self, info: Info) -> EmbeddingIndex | None:
        principal = await info.context.principal()
        embeddings = getattr(info.context.services, "embeddings", None)
        status = await service.index_status(info.context.db, principal, embeddings)
        return EmbeddingIndex.from_status(status) if status is not None else None
