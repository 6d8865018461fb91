"""All SQL of embeddings: the indexer's queue, chunk vectors, nearest neighbours for search and `similar`.

The queue is written by triggers on `message` (see the embeddings migration); the indexer claims from it with
FOR UPDATE SKIP LOCKED under a lease, so any number of indexers share it and a dead one's batch is taken over
when its lease ends. Vectors are sent as pgvector text (`[x,y,...]`): no client-side codec.

`model_id` and `dimensions` are integers this package computes, formatted into DDL and into the casts a
partial HNSW index needs to match (`embedding::vector(d)` and `model_id = n` as constants).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
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
    db: Executor,
    worker: str,
    batch: int,
    lease_seconds: float,
    settle_seconds: float,
    max_attempts: int,
    keyless: bool = False,
) -> list[asyncpg.Record]:
    """Lease up to `batch` queued messages (oldest change first) not changed within `settle_seconds`. A `keyless`
    indexer (no master key in its process) takes no message of a tenant with data keys: it would embed the sealed
    text as it is stored; an indexer with the key takes those."""
    return await db.fetch(
        """UPDATE embedding_queue q SET leased_until = now() + make_interval(secs => $3), worker = $1,
                  attempts = q.attempts + 1
           FROM (SELECT e.message_id FROM embedding_queue e
                 WHERE (e.leased_until IS NULL OR e.leased_until < now()) AND e.attempts < $5
                       AND e.enqueued_at <= now() - make_interval(secs => $4)
                       AND NOT ($6 AND EXISTS (SELECT 1 FROM data_key k WHERE k.tenant_id = e.tenant_id))
                 ORDER BY e.enqueued_at LIMIT $2 FOR UPDATE SKIP LOCKED) c
           WHERE q.message_id = c.message_id
           RETURNING q.message_id, q.tenant_id, q.version, q.attempts""",
        worker,
        batch,
        lease_seconds,
        settle_seconds,
        max_attempts,
        keyless,
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
# What one readable chunk an HNSW walk has to pass costs against one chunk an exact scan reads and compares,
# fitted at 1,000,000 chunks of 256 dimensions (bench/RESULTS.md, "Members' vector candidates"): a member reading
# 2% / 4% / 6% / 10% / 20% of them took 19 / 37 / 58 / 92 / 180 ms exactly and 72 / 56 / 46 / 43 / 45 ms by the
# walk; with 12 the choice flips at ~5% (sqrt(12 * 200 * 1,000,000) = 49,000 chunks), where both cost ~50 ms.
INDEX_TUPLE_COST = 12.0
# An iterative scan stops after this many tuples (pgvector's default) or 4x the tuples it is expected to visit,
# whichever is more, and at most HNSW_MAX_SCAN_TUPLES: a bound on the CPU of one search.
HNSW_SCAN_TUPLES = 20_000
HNSW_MAX_SCAN_TUPLES = 200_000
# The vector statements plan with the cost of a random page read from cache, not disk (PostgreSQL's default 4):
# vector search at scale wants its vectors and index in memory (pgvector's advice, bench/RESULTS.md), and with 4 an
# exact scan of a member's chunks reads every conversation of the tenant (a hash join) instead of looking up
# their 1,000 (10 ms against 2 at 1,000,000 messages). When an index scan was chosen, sorting is off for its
# statement, so the plan walks the index (the choice is `choose_scan`'s, not the planner's guess at a filtered
# walk). A statement's other sorts stay where nothing else can do them, and may change plan: the search's chunks
# are grouped in Python (`group_chunks`; grouped in SQL, a sortless plan scanned 50,000 conversations per chunk),
# `similar`'s few are grouped and ordered in SQL (measured at 1,000,000 messages: 23 ms as an admin).
CACHED_RANDOM_PAGE_COST = "1.1"


class VectorScan(StrEnum):
    """How a statement finds the chunks nearest to a vector among those the caller may read."""

    AUTO = "auto"  # chosen per statement from the planner's estimates (`choose_scan`)
    EXACT = "exact"  # every readable chunk compared, then sorted: cost grows with what the caller reads
    INDEX = "index"  # the model's HNSW index walked (iteratively) past chunks the caller may not read


def distance_sql(model: Model, scan: VectorScan) -> str:
    """The distance of chunk `e` to the vector in $1. The exact form is not the HNSW index's expression (no
    `vector(d)` cast), so the planner cannot walk the index for it: it compares the readable chunks it joined.

    $1 is sent as text and cast in SQL (as `store` sends vectors): a parameter of type vector would need a
    client codec for it, which asyncpg derives from the text codec and cannot when encryption at rest has
    replaced that with its binary decoder."""
    if scan is VectorScan.EXACT:
        return "e.embedding <=> $1::text::vector"
    cast = model.cast()
    return f"e.embedding::{cast} <=> $1::text::{cast}"


@dataclass(frozen=True)
class ScanChoice:
    scan: VectorScan
    readable: float  # the planner's estimate of the chunks the statement may consider
    total: float  # ... and of the model's chunks (the HNSW index holds every tenant's)
    max_tuples: int  # the iterative index scan's bound


def choose_scan(readable: float, total: float, chunks: int) -> ScanChoice:
    """An exact scan costs about `readable` comparisons; an index scan visits about chunks * total / readable
    tuples (one in total / readable is readable) at INDEX_TUPLE_COST each: the cheaper one, by estimates."""
    readable, total = max(readable, 1.0), max(total, readable, 1.0)
    visits = chunks * total / readable
    max_tuples = int(min(HNSW_MAX_SCAN_TUPLES, max(HNSW_SCAN_TUPLES, 4 * visits)))
    scan = VectorScan.EXACT if readable <= INDEX_TUPLE_COST * visits else VectorScan.INDEX
    return ScanChoice(scan, readable, total, max_tuples)


async def estimate_scan(
    tx: Executor, model: Model, statement: str, params: list[Any], chunks: int
) -> ScanChoice:
    """`choose_scan` for the chunks `statement` (a SELECT over message_embedding e with its filters) yields, from
    one EXPLAIN (planning only, nothing is read): its estimated rows, and the model's."""
    plan = await tx.fetchval(
        f"""EXPLAIN (FORMAT JSON) SELECT 1 FROM ({statement}) r
            UNION ALL SELECT 1 FROM message_embedding WHERE model_id = {int(model.id)}""",
        *params,
    )
    # EXPLAIN's json column: decoded by the pool's codec, text on a bare connection.
    top = (json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"]
    branches = top.get("Plans", []) if top.get("Node Type") == "Append" else []
    if len(branches) != 2:
        # The planner proved a branch empty and left it out (filters that no row can meet): nothing to walk for.
        return ScanChoice(VectorScan.EXACT, 0.0, float(top.get("Plan Rows", 0.0)), HNSW_SCAN_TUPLES)
    return choose_scan(float(branches[0]["Plan Rows"]), float(branches[1]["Plan Rows"]), chunks)


async def tune_vector_scan(tx: Executor, max_tuples: int = HNSW_SCAN_TUPLES) -> None:
    """The HNSW scan goes on past filtered-out rows (another tenant's, unreadable conversations) until the
    statement's LIMIT is met or `max_tuples` were visited, instead of returning fewer (pgvector 0.8 iterative
    scans); results come in approximately increasing distance and are sorted again."""
    await tx.execute(
        f"""SELECT set_config('hnsw.iterative_scan', 'relaxed_order', true),
                   set_config('hnsw.ef_search', '{int(HNSW_EF_SEARCH)}', true),
                   set_config('hnsw.max_scan_tuples', '{int(max_tuples)}', true)"""
    )


async def fetch_scanned(
    tx: Executor, choice: ScanChoice, sql: str, params: list[Any]
) -> list[asyncpg.Record]:
    """`sql`, a statement over the chunks of `choice`'s scan, with its planner settings (CACHED_RANDOM_PAGE_COST;
    for an index scan, the iterative walk and sorting off), restored after it for the transaction's other
    statements."""
    if choice.scan is VectorScan.INDEX:
        await tune_vector_scan(tx, choice.max_tuples)
    restore = await tx.fetchval(
        """SELECT format('SELECT set_config(''random_page_cost'', %L, true), set_config(''enable_sort'', %L, true)',
                         current_setting('random_page_cost'), current_setting('enable_sort')),
                  set_config('random_page_cost', $1, true),
                  set_config('enable_sort', CASE WHEN $2 THEN 'off' ELSE current_setting('enable_sort') END, true)""",
        CACHED_RANDOM_PAGE_COST,
        choice.scan is VectorScan.INDEX,
    )
    rows = await tx.fetch(sql, *params)
    await tx.fetchval(restore)
    return rows


@dataclass(frozen=True)
class NearConversation:
    conversation_id: uuid.UUID
    last_activity_at: datetime
    message_id: uuid.UUID  # its chunk nearest to the query's
    similarity: float  # of that chunk (cosine, 1 is equal)


@dataclass(frozen=True)
class Nearest:
    """Vector candidates, nearest first; how the chunks were found (the last scan), and whether an index scan
    fell short of its LIMIT and was done again exactly."""

    conversations: list[NearConversation]
    choice: ScanChoice
    retried: bool


def group_chunks(
    rows: list[asyncpg.Record], conversations: int, min_similarity: float
) -> list[NearConversation]:
    """Chunks (conversation_id, message_id, last_activity_at, distance) grouped by conversation: each by its
    nearest chunk, nearest first, then most recent activity, then id (all descending), at most `conversations`,
    none below `min_similarity`. An index scan's chunks come in about increasing distance, so this sorts again."""
    best: dict[uuid.UUID, asyncpg.Record] = {}
    for r in rows:
        held = best.get(r["conversation_id"])
        if held is None or r["distance"] < held["distance"]:
            best[r["conversation_id"]] = r
    near = [
        NearConversation(
            r["conversation_id"], r["last_activity_at"], r["message_id"], 1.0 - float(r["distance"])
        )
        for r in best.values()
        if 1.0 - float(r["distance"]) >= min_similarity
    ]
    near.sort(key=lambda n: (n.similarity, n.last_activity_at, n.conversation_id), reverse=True)
    return near[:conversations]


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
    scan: VectorScan = VectorScan.AUTO,
) -> Nearest:
    """Readable, filtered conversations holding the `chunks` chunks nearest to `query` (pgvector text), nearest
    first. Messages matching the tsquery `excluded` (the query's -words) are left out.

    The chunks are found by an exact scan or the HNSW index, chosen from estimates (`scan` AUTO) or as given.
    An index scan that stops at its bound before meeting its LIMIT (the estimate was off, or the caller reads
    fewer chunks than that) is done again exactly: recall is never traded silently."""
    params: list[Any] = [query]
    where = conversation_filters(principal, filters, params)
    window = message_window(filters, params)
    if excluded is not None:
        params.append(excluded)
        window += f" AND NOT coalesce(m.search_vector @@ ${len(params)}::tsquery, false)"
    join_message = "JOIN message m ON m.id = e.message_id AND m.tenant_id = c.tenant_id" if window else ""
    params.append(principal.tenant_id)
    readable = f"""FROM message_embedding e JOIN conversation c ON c.id = e.conversation_id {join_message}
            WHERE e.tenant_id = ${len(params)} AND e.model_id = {int(model.id)} AND {where} {window}"""
    if scan is VectorScan.AUTO:
        # $1 (the query vector) is not in this statement: an unused parameter still needs a type.
        choice = await estimate_scan(tx, model, f"SELECT $1::text AS v {readable}", params, chunks)
    else:
        choice = ScanChoice(scan, 0.0, 0.0, HNSW_SCAN_TUPLES)  # as configured (tests force each path)
    params.append(chunks)

    async def run(choice: ScanChoice) -> list[asyncpg.Record]:
        distance = distance_sql(model, choice.scan)
        sql = f"""SELECT e.conversation_id, e.message_id, c.last_activity_at, {distance} AS distance
                {readable}
                ORDER BY {distance} LIMIT ${len(params)}"""
        return await fetch_scanned(tx, choice, sql, params)

    rows = await run(choice)
    retried = choice.scan is VectorScan.INDEX and len(rows) < chunks
    if retried:
        choice = replace(choice, scan=VectorScan.EXACT)
        rows = await run(choice)
    return Nearest(group_chunks(rows, conversations, min_similarity), choice, retried)


async def conversations_by_id(
    db: Executor, principal: Principal, ids: list[uuid.UUID]
) -> list[asyncpg.Record]:
    """The conversations of `ids` the caller may read now (the candidates were read by earlier statements)."""
    params: list[Any] = [ids]
    where = visibility_sql(principal, params)
    return await db.fetch(
        f"SELECT {CONVERSATION_COLUMNS} FROM conversation c WHERE {where} AND c.id = ANY($1::uuid[])", *params
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
    scan: VectorScan = VectorScan.AUTO,
) -> list[asyncpg.Record]:
    """Readable rows of `rows` ("conversation c" or "message m", selected with their columns) nearest to
    `query`, by their `key` column of message_embedding (conversation_id or message_id), other than `exclude`:
    the `chunks` nearest chunks in readable, listed conversations, grouped by row, nearest first. The chunks are
    found as `nearest_conversations` finds them (an exact scan or the index, an index walk that falls short of
    `chunks` done again exactly)."""
    params: list[Any] = [query]
    where = visibility_sql(principal, params)
    params.extend([principal.tenant_id, exclude, LISTED_STATUSES])
    n = len(params)
    readable = f"""FROM message_embedding e JOIN conversation c ON c.id = e.conversation_id
                WHERE e.tenant_id = ${n - 2} AND e.model_id = {int(model.id)} AND e.{key} <> ${n - 1}
                      AND c.status = ANY(${n}::varchar[]) AND {where}"""
    if scan is VectorScan.AUTO:
        choice = await estimate_scan(tx, model, f"SELECT $1::text AS v {readable}", params, chunks)
    else:
        choice = ScanChoice(scan, 0.0, 0.0, HNSW_SCAN_TUPLES)
    params.extend([chunks, first])
    table, alias = rows.split()
    columns = CONVERSATION_COLUMNS if table == "conversation" else MESSAGE_COLUMNS
    alive = "" if table == "conversation" else "WHERE m.deleted_at IS NULL"

    async def run(choice: ScanChoice) -> list[asyncpg.Record]:
        distance = distance_sql(model, choice.scan)
        sql = f"""WITH nearest AS MATERIALIZED (
                SELECT e.{key}, {distance} AS distance
                {readable}
                ORDER BY {distance} LIMIT ${n + 1})
            SELECT {columns}, (SELECT count(*) FROM nearest) AS found
            FROM (SELECT {key}, min(distance) AS distance FROM nearest GROUP BY {key}) n
            JOIN {rows} ON {alias}.id = n.{key} AND {alias}.tenant_id = ${n - 2}
            {alive}
            ORDER BY n.distance, {alias}.id LIMIT ${n + 2}"""
        return await fetch_scanned(tx, choice, sql, params)

    found = await run(choice)
    if choice.scan is VectorScan.INDEX and (int(found[0]["found"]) if found else 0) < chunks:
        found = await run(replace(choice, scan=VectorScan.EXACT))
    return found


async def similar_conversations(
    tx: Executor,
    principal: Principal,
    model: Model,
    query: str,
    exclude: uuid.UUID,
    *,
    chunks: int,
    first: int,
    scan: VectorScan = VectorScan.AUTO,
) -> list[asyncpg.Record]:
    """Readable, not deleted conversations other than `exclude`, nearest to `query` first."""
    return await _nearest(
        tx,
        principal,
        model,
        query,
        exclude,
        "conversation_id",
        "conversation c",
        chunks=chunks,
        first=first,
        scan=scan,
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
    scan: VectorScan = VectorScan.AUTO,
) -> list[asyncpg.Record]:
    """Readable, not deleted messages (in conversations not deleted) other than `exclude`, nearest first."""
    return await _nearest(
        tx, principal, model, query, exclude, "message_id", "message m", chunks=chunks, first=first, scan=scan
    )
