"""All SQL of embeddings: the indexer's queue, chunk vectors, nearest neighbours for search and `similar`.

The queue is written by triggers on `message` (see the embeddings migration); the indexer claims from it with
FOR UPDATE SKIP LOCKED under a lease, so any number of indexers share it and a dead one's batch is taken over
when its lease ends. Vectors are sent as pgvector text (`[x,y,...]`): no client-side codec.

`model_id` and `dimensions` are integers this package computes, formatted into DDL and into the casts a
partial HNSW index needs to match (`embedding::vector(d)` and `model_id = n` as constants).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg

from threadline.auth.principal import Principal
from threadline.conversations.repository import CONVERSATION_COLUMNS, visibility_sql
from threadline.db import Database, Executor
from threadline.search.repository import SearchFilters, conversation_filters, message_window
from threadline.threads.repository import MESSAGE_COLUMNS

# Statuses `similar` returns (never DELETED), as search does by default.
LISTED_STATUSES = ["ACTIVE", "ARCHIVED"]


@dataclass(frozen=True)
class Model:
    name: str
    id: int
    dimensions: int

    def cast(self) -> str:
        return f"vector({int(self.dimensions)})"


@dataclass(frozen=True)
class ChunkVector:
    tenant_id: uuid.UUID
    message_id: uuid.UUID
    conversation_id: uuid.UUID
    chunk: int
    start: int
    end: int
    vector: str  # pgvector text


def vector_text(vector: list[float]) -> str:
    return "[" + ",".join(format(x, ".7g") for x in vector) + "]"


async def ensure_model_index(db: Database, model: Model) -> None:
    """The model's partial HNSW index (cosine), built once; an advisory lock serialises concurrent starts."""
    name = f"message_embedding_hnsw_{model.id}"
    async with db.transaction() as tx:
        await tx.execute("SELECT pg_advisory_xact_lock(hashtext('threadline.embedding_index'))")
        await tx.execute(
            f"""CREATE INDEX IF NOT EXISTS {name} ON message_embedding
                USING hnsw ((embedding::{model.cast()}) vector_cosine_ops) WHERE model_id = {int(model.id)}"""
        )


# indexer ----------------------------------------------------------------------------------------------


async def claim(
    db: Executor, worker: str, batch: int, lease_seconds: float, settle_seconds: float, max_attempts: int
) -> list[asyncpg.Record]:
    """Lease up to `batch` queued messages (oldest change first) not changed within `settle_seconds`."""
    return await db.fetch(
        """UPDATE embedding_queue q SET leased_until = now() + make_interval(secs => $3), worker = $1,
                  attempts = q.attempts + 1
           FROM (SELECT message_id FROM embedding_queue
                 WHERE (leased_until IS NULL OR leased_until < now()) AND attempts < $5
                       AND enqueued_at <= now() - make_interval(secs => $4)
                 ORDER BY enqueued_at LIMIT $2 FOR UPDATE SKIP LOCKED) c
           WHERE q.message_id = c.message_id
           RETURNING q.message_id, q.tenant_id, q.version, q.attempts""",
        worker,
        batch,
        lease_seconds,
        settle_seconds,
        max_attempts,
    )


async def message_texts(db: Executor, claimed: list[asyncpg.Record]) -> list[asyncpg.Record]:
    """Content of the claimed messages still alive (tenant and id pairs: every row stays in its tenant)."""
    return await db.fetch(
        """SELECT m.id, m.tenant_id, m.conversation_id, m.content
           FROM unnest($1::uuid[], $2::uuid[]) AS k(tenant_id, id)
           JOIN message m ON m.tenant_id = k.tenant_id AND m.id = k.id
           WHERE m.deleted_at IS NULL""",
        [r["tenant_id"] for r in claimed],
        [r["message_id"] for r in claimed],
    )


async def store(db: Database, model: Model, claimed: list[asyncpg.Record], vectors: list[ChunkVector]) -> int:
    """Replace the vectors of the claimed messages whose queue version is unchanged, and unqueue them.

    The message rows are share-locked first: an edit or delete committed meanwhile has bumped the version (and
    its batch is left queued), and one still to come waits for this commit, so its trigger removes what is
    stored here. Returns how many messages were stored."""
    ids = [r["message_id"] for r in claimed]
    async with db.transaction() as tx:
        await tx.execute("SELECT 1 FROM message WHERE id = ANY($1::uuid[]) ORDER BY id FOR SHARE", ids)
        current = [
            r["message_id"]
            for r in await tx.fetch(
                """SELECT q.message_id FROM embedding_queue q
                   JOIN unnest($1::uuid[], $2::bigint[]) AS c(id, version)
                        ON q.message_id = c.id AND q.version = c.version
                   ORDER BY q.message_id FOR UPDATE OF q""",
                ids,
                [r["version"] for r in claimed],
            )
        ]
        if not current:
            return 0
        await tx.execute(
            "DELETE FROM message_embedding WHERE message_id = ANY($1::uuid[]) AND model_id = $2",
            current,
            model.id,
        )
        keep = set(current)
        rows = [v for v in vectors if v.message_id in keep]
        if rows:
            await tx.execute(
                """INSERT INTO message_embedding
                       (tenant_id, message_id, conversation_id, model_id, chunk, start_char, end_char, embedding)
                   SELECT t, m, c, $1, k, s, e, v::vector
                   FROM unnest($2::uuid[], $3::uuid[], $4::uuid[], $5::int[], $6::int[], $7::int[], $8::text[])
                        AS x(t, m, c, k, s, e, v)""",
                model.id,
                [v.tenant_id for v in rows],
                [v.message_id for v in rows],
                [v.conversation_id for v in rows],
                [v.chunk for v in rows],
                [v.start for v in rows],
                [v.end for v in rows],
                [v.vector for v in rows],
            )
        await tx.execute("DELETE FROM embedding_queue WHERE message_id = ANY($1::uuid[])", current)
    return len(current)


async def requeue_for_new_model(db: Executor, model: Model) -> int:
    """A model without a vector while another has some (the operator switched models): every live message is
    queued again, so the new model catches up. Returns how many were queued."""
    fresh = await db.fetchval(
        f"""SELECT NOT EXISTS (SELECT 1 FROM message_embedding WHERE model_id = {int(model.id)})
                   AND EXISTS (SELECT 1 FROM message_embedding WHERE model_id <> {int(model.id)})"""
    )
    if not fresh:
        return 0
    result = await db.execute(
        """INSERT INTO embedding_queue (message_id, tenant_id)
           SELECT id, tenant_id FROM message WHERE deleted_at IS NULL AND content <> ''
           ON CONFLICT (message_id) DO NOTHING"""
    )
    return int(str(result).rsplit(" ", 1)[-1])


async def release(db: Executor, worker: str, claimed: list[asyncpg.Record], retry_seconds: float) -> None:
    """A batch that failed to embed is tried again after `retry_seconds` (its attempts were counted)."""
    await db.execute(
        """UPDATE embedding_queue SET leased_until = now() + make_interval(secs => $3)
           WHERE message_id = ANY($2::uuid[]) AND worker = $1""",
        worker,
        [r["message_id"] for r in claimed],
        retry_seconds,
    )


async def queue_counts(db: Executor, max_attempts: int, tenant_id: uuid.UUID | None = None) -> asyncpg.Record:
    """Queued messages (of one tenant, or all): waiting, leased by an indexer now, and given up on."""
    params: list[Any] = [max_attempts]
    where = ""
    if tenant_id is not None:
        params.append(tenant_id)
        where = "WHERE tenant_id = $2"
    row = await db.fetchrow(
        f"""SELECT count(*) FILTER (WHERE attempts < $1) AS pending,
                   count(*) FILTER (WHERE leased_until > now() AND attempts < $1) AS leased,
                   count(*) FILTER (WHERE attempts >= $1) AS failed
            FROM embedding_queue {where}""",
        *params,
    )
    assert row is not None
    return row


async def indexed_counts(db: Executor, tenant_id: uuid.UUID, model: Model) -> asyncpg.Record:
    row = await db.fetchrow(
        """SELECT count(DISTINCT message_id) AS messages, count(*) AS chunks
           FROM message_embedding WHERE tenant_id = $1 AND model_id = $2""",
        tenant_id,
        model.id,
    )
    assert row is not None
    return row


# search -----------------------------------------------------------------------------------------------


# Candidates an HNSW scan gathers per round; with iterative scans it goes on for more rounds until the LIMIT is
# met, so a larger value only slows the common case (measured: 400 chunks took ~1.5x the time of 200 at ef 100).
HNSW_EF_SEARCH = 100


async def tune_vector_scan(tx: Executor) -> None:
    """The HNSW scan goes on past filtered-out rows (another tenant's, unreadable conversations) until the
    statement's LIMIT is met, instead of returning fewer (pgvector 0.8 iterative scans, bounded by
    hnsw.max_scan_tuples); results come in approximately increasing distance and are sorted again."""
    await tx.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
    await tx.execute(f"SET LOCAL hnsw.ef_search = {HNSW_EF_SEARCH}")


async def nearest_conversations(
    tx: Executor,
    principal: Principal,
    filters: SearchFilters,
    model: Model,
    query: str,
    *,
    chunks: int,
    conversations: int,
    min_similarity: float,
    excluded: str | None = None,
) -> list[asyncpg.Record]:
    """Readable, filtered conversations holding the chunks nearest to `query` (pgvector text), nearest first:
    conversation_id, last_activity_at, message_id (its nearest message) and similarity (cosine, 1 is equal).
    Messages matching the tsquery `excluded` (the query's -words) are left out."""
    params: list[Any] = [query]
    where = conversation_filters(principal, filters, params)
    window = message_window(filters, params)
    if excluded is not None:
        params.append(excluded)
        window += f" AND NOT coalesce(m.search_vector @@ ${len(params)}::tsquery, false)"
    join_message = "JOIN message m ON m.id = e.message_id AND m.tenant_id = c.tenant_id" if window else ""
    params.append(principal.tenant_id)
    tenant = f"${len(params)}"
    params.extend([chunks, 1.0 - min_similarity, conversations])
    n = len(params)
    cast = model.cast()
    return await tx.fetch(
        f"""WITH nearest AS MATERIALIZED (
                SELECT e.conversation_id, e.message_id, e.embedding::{cast} <=> $1::{cast} AS distance
                FROM message_embedding e JOIN conversation c ON c.id = e.conversation_id {join_message}
                WHERE e.tenant_id = {tenant} AND e.model_id = {int(model.id)} AND {where} {window}
                ORDER BY e.embedding::{cast} <=> $1::{cast} LIMIT ${n - 2})
            SELECT n.conversation_id, c.last_activity_at, 1 - min(n.distance) AS similarity,
                   (array_agg(n.message_id ORDER BY n.distance))[1] AS message_id
            FROM nearest n JOIN conversation c ON c.id = n.conversation_id AND c.tenant_id = {tenant}
            WHERE n.distance <= ${n - 1}
            GROUP BY n.conversation_id, c.last_activity_at
            ORDER BY similarity DESC, c.last_activity_at DESC, n.conversation_id DESC LIMIT ${n}""",
        *params,
    )


async def conversations_by_id(
    db: Executor, tenant_id: uuid.UUID, ids: list[uuid.UUID]
) -> list[asyncpg.Record]:
    return await db.fetch(
        f"SELECT {CONVERSATION_COLUMNS} FROM conversation c WHERE c.tenant_id = $1 AND c.id = ANY($2::uuid[])",
        tenant_id,
        ids,
    )


async def centroid(
    db: Executor, tenant_id: uuid.UUID, model: Model, column: str, value: uuid.UUID, chunks: int
) -> str | None:
    """The mean of the latest `chunks` vectors of a conversation or message (`column`), as pgvector text."""
    assert column in ("conversation_id", "message_id")
    result = await db.fetchval(
        f"""SELECT avg(v.embedding)::text FROM (
                SELECT e.embedding::{model.cast()} AS embedding FROM message_embedding e
                WHERE e.tenant_id = $1 AND e.model_id = {int(model.id)} AND e.{column} = $2
                ORDER BY e.id DESC LIMIT $3) v""",
        tenant_id,
        value,
        chunks,
    )
    return str(result) if result is not None else None


async def _nearest(
    tx: Executor,
    principal: Principal,
    model: Model,
    query: str,
    exclude: uuid.UUID,
    key: str,
    rows: str,
    *,
    chunks: int,
    first: int,
) -> list[asyncpg.Record]:
    """Readable rows of `rows` ("conversation c" or "message m", selected with their columns) nearest to
    `query`, by their `key` column of message_embedding (conversation_id or message_id), other than `exclude`:
    the `chunks` nearest chunks in readable, listed conversations, grouped by row, nearest first."""
    params: list[Any] = [query]
    where = visibility_sql(principal, params)
    params.extend([principal.tenant_id, exclude, LISTED_STATUSES, chunks, first])
    n = len(params)
    cast = model.cast()
    table, alias = rows.split()
    columns = CONVERSATION_COLUMNS if table == "conversation" else MESSAGE_COLUMNS
    alive = "" if table == "conversation" else "WHERE m.deleted_at IS NULL"
    return await tx.fetch(
        f"""WITH nearest AS MATERIALIZED (
                SELECT e.{key}, e.embedding::{cast} <=> $1::{cast} AS distance
                FROM message_embedding e JOIN conversation c ON c.id = e.conversation_id
                WHERE e.tenant_id = ${n - 4} AND e.model_id = {int(model.id)} AND e.{key} <> ${n - 3}
                      AND c.status = ANY(${n - 2}::varchar[]) AND {where}
                ORDER BY e.embedding::{cast} <=> $1::{cast} LIMIT ${n - 1})
            SELECT {columns}
            FROM (SELECT {key}, min(distance) AS distance FROM nearest GROUP BY {key}) n
            JOIN {rows} ON {alias}.id = n.{key} AND {alias}.tenant_id = ${n - 4}
            {alive}
            ORDER BY n.distance, {alias}.id LIMIT ${n}""",
        *params,
    )


async def similar_conversations(
    tx: Executor,
    principal: Principal,
    model: Model,
    query: str,
    exclude: uuid.UUID,
    *,
    chunks: int,
    first: int,
) -> list[asyncpg.Record]:
    """Readable, not deleted conversations other than `exclude`, nearest to `query` first."""
    return await _nearest(
        tx, principal, model, query, exclude, "conversation_id", "conversation c", chunks=chunks, first=first
    )


async def similar_messages(
    tx: Executor,
    principal: Principal,
    model: Model,
    query: str,
    exclude: uuid.UUID,
    *,
    chunks: int,
    first: int,
) -> list[asyncpg.Record]:
    """Readable, not deleted messages (in conversations not deleted) other than `exclude`, nearest first."""
    return await _nearest(
        tx, principal, model, query, exclude, "message_id", "message m", chunks=chunks, first=first
    )
