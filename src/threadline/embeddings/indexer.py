"""The background indexer: embeds queued messages (new, edited, imported) chunk by chunk, per model.

The run-worker pattern: batches are leased with FOR UPDATE SKIP LOCKED (any number of indexers, in servers
or `threadline worker`), a batch is stored only if its messages did not change meanwhile, a failed batch is
retried later (at most THREADLINE_EMBEDDINGS_MAX_ATTEMPTS times), and a killed indexer's lease runs out so
another takes the batch over. Throttled to THREADLINE_EMBEDDINGS_RATE messages per second. Deletions need no
indexer: triggers remove vectors in the deleting transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable

import asyncpg
from prometheus_client import Counter, Gauge

from threadline import crypto
from threadline.db import Database
from threadline.embeddings import repository as repo
from threadline.embeddings.chunking import Chunk, chunks
from threadline.embeddings.embedders import Embedder, EmbeddingError
from threadline.embeddings.repository import ChunkVector, Model, vector_text
from threadline.observability.metrics import REGISTRY
from threadline.settings import Settings

log = logging.getLogger("threadline.embeddings")
RETRY_SECONDS_MAX = 300.0
# How often the queue gauge is refreshed from the database (a count over the queue).
QUEUE_COUNT_SECONDS = 5.0

INDEXED = Counter(
    "threadline_embedding_messages_indexed",
    "Messages embedded and stored by the indexers.",
    registry=REGISTRY,
)
CHUNKS = Counter(
    "threadline_embedding_chunks_indexed", "Chunk vectors stored by the indexers.", registry=REGISTRY
)
FAILURES = Counter(
    "threadline_embedding_batch_failures", "Batches the embedder failed (retried later).", registry=REGISTRY
)
QUEUE = Gauge(
    "threadline_embedding_queue",
    "Messages waiting to be embedded (all tenants; `failed`: given up after the attempts allowed), as of the "
    "indexer's last count.",
    ["state"],
    registry=REGISTRY,
    multiprocess_mode="livemostrecent",
)


def _backoff(claimed: list[asyncpg.Record]) -> float:
    """Seconds before a failed batch is tried again: 2, 4, 8, ... by its attempts, at most RETRY_SECONDS_MAX."""
    return float(min(RETRY_SECONDS_MAX, 2.0 ** max(r["attempts"] for r in claimed)))


class Indexer:
    def __init__(
        self, db: Database, settings: Settings, embedder: Embedder, model: Callable[[], Awaitable[Model]]
    ) -> None:
        self.db = db
        self.settings = settings
        self.embedder = embedder
        self.model = model  # the model, its index ensured (service.Embeddings.model)
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.indexed = 0
        self._task: asyncio.Task[None] | None = None
        self._counted_at = 0.0
        self._claimed: list[asyncpg.Record] = []  # the batch in flight

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="threadline-embedding-indexer")
        log.info("embedding indexer %s: %s", self.id, self.embedder.name)

    async def stop(self) -> None:
        """Stops at once; a batch in flight is released for the next indexer (its attempt counted). If even
        that fails (the database is away), the batch is taken over when its lease ends, as a killed one's is."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._claimed:
            with contextlib.suppress(Exception):
                await repo.release(self.db, self.id, self._claimed, 0.0)
            self._claimed = []

    async def _loop(self) -> None:
        s = self.settings
        while True:
            started = time.monotonic()
            try:
                done = await self.index_batch()
                await self._count_queue()
            except asyncio.CancelledError:
                raise
            except EmbeddingError as exc:  # the model's size could not be asked (the provider is down)
                log.warning("embedding indexer: %s; trying again", exc)
                done = 0
            except Exception:  # noqa: BLE001 - e.g. the database restarting: try again at the next tick
                log.exception("embedding indexer: batch failed")
                done = 0
            if done == 0:
                await asyncio.sleep(s.embeddings_poll_seconds)
            elif s.embeddings_rate > 0:
                await asyncio.sleep(max(0.0, done / s.embeddings_rate - (time.monotonic() - started)))

    async def _count_queue(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._counted_at < QUEUE_COUNT_SECONDS:
            return
        self._counted_at = now
        counts = await repo.queue_counts(self.db, self.settings.embeddings_max_attempts)
        for state in ("pending", "leased", "failed"):
            QUEUE.labels(state).set(counts[state])

    async def index_batch(self) -> int:
        """Claims, embeds and stores one batch; returns how many messages it claimed (0: nothing queued)."""
        s = self.settings
        model = await self.model()
        claimed = await repo.claim(
            self.db,
            self.id,
            s.embeddings_batch,
            s.embeddings_lease_seconds,
            s.embeddings_settle_seconds,
            s.embeddings_max_attempts,
            keyless=crypto.active() is None,
        )
        if not claimed:
            return 0
        self._claimed = claimed  # kept when cancelled: stop() releases it
        try:
            count = await self._index(model, claimed)
        except Exception:
            self._claimed = []
            raise
        self._claimed = []
        return count

    async def _index(self, model: Model, claimed: list[asyncpg.Record]) -> int:
        rows = await repo.message_texts(self.db, claimed)
        try:
            stored = await self._embed(model, rows)
            failed: list[asyncpg.Record] = []
        except EmbeddingError as exc:
            FAILURES.inc()
            if not exc.refused or len(rows) == 1:
                log.warning("embedding indexer: %s; %d messages retried later", exc, len(claimed))
                await repo.release(self.db, self.id, claimed, _backoff(claimed))
                return len(claimed)
            # One message the provider refuses (too long for it, say) must not sink the others of its batch.
            log.warning("embedding indexer: %s; embedding the %d messages one by one", exc, len(rows))
            stored, failed_ids = [], set()
            for row in rows:
                try:
                    stored += await self._embed(model, [row])
                except EmbeddingError:
                    failed_ids.add(row["id"])
            failed = [r for r in claimed if r["message_id"] in failed_ids]
        if failed:
            log.warning("embedding indexer: %d refused messages retried later", len(failed))
            await repo.release(self.db, self.id, failed, _backoff(failed))
        done = [r for r in claimed if r not in failed]
        count = await repo.store(self.db, model, done, stored) if done else 0
        INDEXED.inc(count)
        CHUNKS.inc(len(stored))
        self.indexed += count
        return len(claimed)

    def _chunks(self, rows: list[asyncpg.Record]) -> list[tuple[asyncpg.Record, Chunk]]:
        fits = self.embedder.fitters([row["content"] for row in rows])
        size = self.embedder.chunk_chars
        return [
            (row, chunk)
            for row, fit in zip(rows, fits, strict=True)
            for chunk in chunks(row["content"], size, fit)
        ]

    async def _embed(self, model: Model, rows: list[asyncpg.Record]) -> list[ChunkVector]:
        # Cutting the batch's messages into chunks tokenises them (the local model): not on the event loop.
        pieces = await asyncio.get_running_loop().run_in_executor(None, self._chunks, rows)
        vectors = await self.embedder.embed([chunk.text for _, chunk in pieces])
        if any(v is not None and len(v) != model.dimensions for v in vectors):
            raise EmbeddingError(f"the embedder answered vectors of another size than {model.dimensions}")
        return [
            ChunkVector(
                row["tenant_id"],
                row["id"],
                row["conversation_id"],
                chunk.index,
                chunk.start,
                chunk.end,
                vector_text(vector),
            )
            for (row, chunk), vector in zip(pieces, vectors, strict=True)
            if vector is not None
        ]
