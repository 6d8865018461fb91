"""GraphQL types of embeddings: the indexer's progress for a tenant."""

from __future__ import annotations

import strawberry

from threadline.embeddings.service import IndexStatus


@strawberry.type(
    description="How far the background indexer has embedded the tenant's messages for semantic search (admins)."
)
class EmbeddingIndex:
    model: str = strawberry.field(description="The embedding model, as `provider:model[@dimensions]`.")
    dimensions: int = strawberry.field(description="Dimensions of its vectors.")
    indexed_messages: int = strawberry.field(description="Messages with vectors of this model.")
    indexed_chunks: int = strawberry.field(
        description="Vectors stored: one per chunk of about 1,200 characters (long messages have several)."
    )
    pending: int = strawberry.field(
        description="Messages waiting to be embedded: new, edited or imported, and not yet indexed."
    )
    in_progress: int = strawberry.field(description="Of those, messages an indexer is embedding now.")
    failed: int = strawberry.field(
        description="Messages given up on after THREADLINE_EMBEDDINGS_MAX_ATTEMPTS failed tries (an edit queues a "
        "message again)."
    )

    @classmethod
    def from_status(cls, status: IndexStatus) -> EmbeddingIndex:
        return cls(
            model=status.model,
            dimensions=status.dimensions,
            indexed_messages=status.indexed_messages,
            indexed_chunks=status.indexed_chunks,
            pending=status.pending,
            in_progress=status.leased,
            failed=status.failed,
        )
