"""Embeddings at run time: the configured model, query vectors, the indexer, its progress, and `similar`."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from dataclasses import dataclass

import asyncpg

from threadline.auth.principal import Principal
from threadline.db import Database, Executor
from threadline.embeddings import repository as repo
from threadline.embeddings.embedders import Embedder, EmbeddingError, QueryEmbeddings, build_embedder
from threadline.embeddings.indexer import Indexer
from threadline.embeddings.repository import Model, NearConversation, VectorScan, vector_text
from threadline.errors import ErrorCode, ThreadlineError, forbidden
from threadline.search.repository import SearchFilters
from threadline.settings import Settings

# Vector candidates of a search: the nearest chunks, grouped into at most this many conversations.
CANDIDATE_CHUNKS = 200
CANDIDATE_CONVERSATIONS = 100
# `similar`: a conversation is represented by the mean of its latest chunks.
CENTROID_CHUNKS = 64
SIMILAR_CHUNKS = 200
SIMILAR_FIRST_DEFAULT = 10
SIMILAR_FIRST_MAX = 50


def model_id(name: str) -> int:
    """A stable 31-bit number per model name: vectors of different models never mix, and the partial HNSW index
    of a model survives restarts without a registry table."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=4).digest(), "big") & 0x7FFFFFFF


def _unavailable(exc: EmbeddingError) -> ThreadlineError:
    return ThreadlineError(ErrorCode.UNAVAILABLE, f"Semantic search is unavailable: {exc}", retryAfter=5)


class Embeddings:
    """The process's embedder with its model, query-vector cache and (when started) indexer."""

    def __init__(self, db: Database, settings: Settings, embedder: Embedder) -> None:
        self.db = db
        self.settings = settings
        self.embedder = embedder
        self.queries = QueryEmbeddings(embedder)
        self.indexer: Indexer | None = None
        self._model: Model | None = None
        self._lock = asyncio.Lock()

    async def model(self) -> Model:
        """The model, its dimensions asked of the embedder once when not configured, its index ensured."""
        if self._model is not None:
            return self._model
        async with self._lock:
            if self._model is None:
                dimensions = int(getattr(self.embedder, "dimensions", 0) or 0)
                if not dimensions:
                    (probe,) = await self.embedder.embed(["dimensions"])
                    if probe is None:
                        raise EmbeddingError("the embedder returned no vector for a probe")
                    dimensions = len(probe)
                if not 1 <= dimensions <= 2000:
                    raise EmbeddingError(f"{dimensions} dimensions: the HNSW index takes 1 to 2,000")
                name = self.embedder.name
                model = Model(name, model_id(name), dimensions)
                await repo.ensure_model_index(self.db, model)
                await repo.requeue_for_new_model(self.db, model)
                self._model = model
        return self._model

    async def available_model(self) -> Model:
        """`model()` for a request: UNAVAILABLE when the provider cannot be asked the model's size."""
        try:
            return await self.model()
        except EmbeddingError as exc:
            raise _unavailable(exc) from exc

    async def query_vector(self, text: str) -> tuple[Model, str | None]:
        """The model and the query's vector as pgvector text (None when it has nothing to embed). UNAVAILABLE
        when the embedder cannot answer (the search is not silently degraded to keywords)."""
        try:
            vector = await self.queries.vector(text)
            model = await self.model()
        except EmbeddingError as exc:
            raise _unavailable(exc) from exc
        return model, vector_text(vector) if vector is not None else None

    def start_indexer(self) -> None:
        self.indexer = Indexer(self.db, self.settings, self.embedder, self.model)
        self.indexer.start()

    async def close(self) -> None:
        if self.indexer is not None:
            await self.indexer.stop()
        await self.embedder.close()


def start(db: Database, settings: Settings, index: bool = True) -> Embeddings | None:
    """Embeddings for a server or worker process (None when off), with its indexer running when `index`."""
    embedder = build_embedder(settings)
    if embedder is None:
        return None
    embeddings = Embeddings(db, settings, embedder)
    if index:
        embeddings.start_indexer()
    return embeddings


async def semantic_candidates(
    tx: Executor,
    principal: Principal,
    filters: SearchFilters,
    embeddings: Embeddings,
    text: str,
    excluded: str | None = None,
) -> list[NearConversation]:
    """Conversations nearest to `text` for the caller and filters, nearest first. Messages matching the tsquery
    `excluded` are left out."""
    model, vector = await embeddings.query_vector(text)
    if vector is None:
        return []
    nearest = await repo.nearest_conversations(
        tx,
        principal,
        filters,
        model,
        vector,
        chunks=CANDIDATE_CHUNKS,
        conversations=CANDIDATE_CONVERSATIONS,
        min_similarity=embeddings.settings.embeddings_min_similarity,
        excluded=excluded,
        scan=VectorScan(embeddings.settings.embeddings_vector_scan),
    )
    return nearest.conversations


@dataclass(frozen=True)
class IndexStatus:
    model: str
    dimensions: int
    indexed_messages: int
    indexed_chunks: int
    pending: int
    leased: int
    failed: int


async def index_status(
    db: Database, principal: Principal, embeddings: Embeddings | None
) -> IndexStatus | None:
    """The tenant's indexing progress (admins only); None when embeddings are off."""
    if not principal.is_admin:
        raise forbidden("Only tenant admins may read the embedding index status")
    if embeddings is None:
        return None
    model = await embeddings.available_model()
    queue = await repo.queue_counts(db, embeddings.settings.embeddings_max_attempts, principal.tenant_id)
    indexed = await repo.indexed_counts(db, principal.tenant_id, model)
    return IndexStatus(
        model.name,
        model.dimensions,
        indexed["messages"],
        indexed["chunks"],
        queue["pending"],
        queue["leased"],
        queue["failed"],
    )


async def _similar(
    db: Database,
    principal: Principal,
    embeddings: Embeddings | None,
    column: str,
    value: uuid.UUID,
    first: int,
) -> list[asyncpg.Record]:
    """Rows nearest to the centroid of a conversation or message (`column`) the caller resolved, other than it."""
    if embeddings is None:
        return []
    model = await embeddings.available_model()
    nearest = repo.similar_conversations if column == "conversation_id" else repo.similar_messages
    async with db.transaction() as tx:
        center = await repo.centroid(tx, principal.tenant_id, model, column, value, CENTROID_CHUNKS)
        if center is None:
            return []
        return await nearest(
            tx,
            principal,
            model,
            center,
            value,
            chunks=SIMILAR_CHUNKS,
            first=first,
            scan=VectorScan(embeddings.settings.embeddings_vector_scan),
        )


async def similar_conversations(
    db: Database, principal: Principal, embeddings: Embeddings | None, conversation_id: uuid.UUID, first: int
) -> list[asyncpg.Record]:
    """Conversations the caller may read nearest to a conversation they may read (the caller resolved it)."""
    return await _similar(db, principal, embeddings, "conversation_id", conversation_id, first)


async def similar_messages(
    db: Database, principal: Principal, embeddings: Embeddings | None, message_id: uuid.UUID, first: int
) -> list[asyncpg.Record]:
    """Messages the caller may read nearest to a message they may read (the caller resolved it)."""
    return await _similar(db, principal, embeddings, "message_id", message_id, first)
