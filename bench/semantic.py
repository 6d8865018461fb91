"""Semantic and hybrid search: retrieval quality on the labelled set, indexer throughput, latency at scale.

    .venv/bin/python bench/semantic.py                        # quality + throughput + latency over 100,000 messages
    .venv/bin/python bench/semantic.py --messages 1000000 --conversations 50000   # the issue's scale
    .venv/bin/python bench/semantic.py --skip-latency         # quality and throughput only
    .venv/bin/python bench/semantic.py --local --local-model PATH   # the same with all-MiniLM-L6-v2 (no latency)

Quality: bench/retrieval_set.jsonl (built by bench/retrieval_set.py: 3,000 messages, 150 PARAPHRASE queries that
share no content word with their target, 150 EXACT queries) is loaded into a fresh database, embedded by the real
indexer, and every query runs through the search service (the code behind the GraphQL field) in KEYWORD,
SEMANTIC and HYBRID mode as the tenant admin. recall@10: the target conversation is among the first 10 results;
MRR@10: the mean of 1/rank (0 past 10). Measured twice: through the HNSW index as served, then with exact nearest
neighbours (the index dropped). The embedder is the deterministic test embedder, so the figures measure the fusion
of the keyword and the vector lists, not a language model.

Throughput: the indexer (claim, chunk, embed, store, per batch of 64) over the 3,000 messages, against a fake
OpenAI-compatible endpoint over HTTP (tests/embeddings_fake.py, in this process) and with the in-process test
embedder; the raw baseline is the embedder alone on the same texts.

Latency: N synthetic messages (sentences of the same synonym groups) made set-based inside PostgreSQL and the test
embedder's vectors of them summed there by pgvector (bench/seeding.py: no row passes through Python; a sample is
checked against concept_vector), the HNSW index built after; p50/p95 of each mode against the raw baselines (the
bare GIN lookup, the bare HNSW ORDER BY ... LIMIT), measured in the same run. Each query is timed in every variant in
turn: the modes as served, HYBRID with its two candidate lists found one after the other, and SEMANTIC and HYBRID with
the vector candidates always from the index walk (THREADLINE_EMBEDDINGS_VECTOR_SCAN=index). Then (--recall-queries)
the vector candidates as served and index-forced against exact nearest neighbours: recall@20 and @100.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import random
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO))

from seeding import check_test_vectors, drop_seed_tables, seed_test_vectors, seed_threads  # noqa: E402
from tests.embeddings_fake import FakeEmbeddings  # noqa: E402

from threadline.auth.principal import Principal, Role  # noqa: E402
from threadline.db import Database  # noqa: E402
from threadline.db.embedded import EmbeddedPostgres  # noqa: E402
from threadline.db.migrate import apply_migrations  # noqa: E402
from threadline.embeddings.chunking import chunks  # noqa: E402
from threadline.embeddings.concepts import SYNONYMS, concept_vector  # noqa: E402
from threadline.embeddings.embedders import ConceptEmbedder, OpenAIEmbedder  # noqa: E402
from threadline.embeddings.repository import (  # noqa: E402
    Model,
    VectorScan,
    nearest_conversations,
    vector_text,
)
from threadline.embeddings.service import (  # noqa: E402
    CANDIDATE_CHUNKS,
    CANDIDATE_CONVERSATIONS,
    Embeddings,
)
from threadline.search import service as search_service  # noqa: E402
from threadline.search.repository import SearchFilters  # noqa: E402
from threadline.search.service import Retrieval, SearchRequest  # noqa: E402
from threadline.settings import Settings  # noqa: E402
from threadline.threads.paths import encode_rank  # noqa: E402

SET = Path(__file__).with_name("retrieval_set.jsonl")
QUALITY_DB = "threadline_bench_semantic_quality"
SCALE_DB = "threadline_bench_semantic_scale"
NOW = datetime(2026, 11, 1, tzinfo=UTC)
MODES = (Retrieval.KEYWORD, Retrieval.SEMANTIC, Retrieval.HYBRID)
FILTERS = SearchFilters(statuses=("ACTIVE", "ARCHIVED"))
DIMENSIONS = 256
SHARED_BUFFERS = "2GB"


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def fresh_database(admin_dsn: str, name: str) -> str:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    base, sep, rest = admin_dsn.partition("?")
    dsn = f"{base.rpartition('/')[0]}/{name}{sep}{rest}"
    await apply_migrations(dsn)
    return dsn


async def tenant_with_users(conn: asyncpg.Connection) -> dict[str, uuid.UUID]:
    """A tenant `bench` with an admin and a member: their ids as tenant, admin and member."""
    tenant, admin, member = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    await conn.execute("INSERT INTO tenant (id, name, settings) VALUES ($1, 'bench', '{}'::jsonb)", tenant)
    await conn.copy_records_to_table(
        "app_user",
        records=[
            (admin, tenant, "admin@bench.example", "admin", "ADMIN", None),
            (member, tenant, "member@bench.example", "member", "MEMBER", None),
        ],
        columns=["id", "tenant_id", "email", "display_name", "role", "team"],
    )
    return {"tenant": tenant, "admin": admin, "member": member}


async def load(
    conn: asyncpg.Connection, conversations: list[tuple[str, list[str]]], members: int = 50
) -> dict[str, Any]:
    """One tenant, an admin and a member (who owns every `members`-th conversation); each conversation one thread
    of its messages in order. Returns ids and the maps from the set's names to database ids."""
    made = await tenant_with_users(conn)
    tenant, admin, member = made["tenant"], made["admin"], made["member"]
    conv_rows, participants, message_rows, threads = [], [], [], []
    names: dict[str, uuid.UUID] = {}
    rng = random.Random(7)
    for n, (name, texts) in enumerate(conversations):
        cid = uuid.uuid4()
        names[name] = cid
        owner = member if n % members == 0 else admin
        at = NOW - timedelta(seconds=rng.uniform(0, 365 * 86400))
        root = parent = uuid.uuid4()
        path = b""
        for depth, text in enumerate(texts):
            mid = root if depth == 0 else uuid.uuid4()
            at += timedelta(seconds=30)
            message_rows.append(
                (
                    mid,
                    tenant,
                    cid,
                    root,
                    None if depth == 0 else parent,
                    depth,
                    path,
                    1 if depth < len(texts) - 1 else 0,
                    "USER",
                    text,
                    owner,
                    at,
                )
            )
            parent, path = mid, path + encode_rank(0)
        threads.append((root, tenant, cid, len(texts) - 1, at, at))
        conv_rows.append((cid, tenant, owner, f"Notes {n}", "", [], "ACTIVE", len(texts), 0, at, at, at))
        participants.append((uuid.uuid4(), tenant, cid, owner, "OWNER"))
    await conn.copy_records_to_table(
        "conversation",
        records=conv_rows,
        columns=[
            "id",
            "tenant_id",
            "owner_id",
            "title",
            "description",
            "tags",
            "status",
            "message_count",
            "token_count",
            "created_at",
            "updated_at",
            "last_activity_at",
        ],
    )
    await conn.copy_records_to_table(
        "participant", records=participants, columns=["id", "tenant_id", "conversation_id", "user_id", "role"]
    )
    for start in range(0, len(message_rows), 100_000):
        await conn.copy_records_to_table(
            "message",
            records=message_rows[start : start + 100_000],
            columns=[
                "id",
                "tenant_id",
                "conversation_id",
                "root_id",
                "parent_id",
                "depth",
                "path",
                "child_count",
                "role",
                "content",
                "author_id",
                "created_at",
            ],
        )
    await conn.copy_records_to_table(
        "thread",
        records=threads,
        columns=["id", "tenant_id", "conversation_id", "reply_count", "created_at", "last_activity_at"],
    )
    return {"tenant": tenant, "admin": admin, "member": member, "conversations": names}


def settings_for(dsn: str, **more: Any) -> Settings:
    return dataclasses.replace(
        Settings.from_env(),
        database_url=dsn,
        embeddings_batch=64,
        embeddings_rate=0.0,
        embeddings_settle_seconds=0.0,
        **more,
    )


async def index_all(embeddings: Embeddings) -> tuple[int, float]:
    """Runs the indexer's batches until the queue is empty: (messages, seconds)."""
    embeddings.start_indexer()
    indexer = embeddings.indexer
    assert indexer is not None
    await indexer.stop()  # batches are driven here, one after another, not by its loop
    await embeddings.model()
    started, done = time.perf_counter(), 0
    while claimed := await indexer.index_batch():
        done += claimed
    return done, time.perf_counter() - started


async def labelled_database(
    admin_dsn: str,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], Any, str]:
    """The labelled set's messages and queries, the messages loaded into a fresh database (vacuumed): ids, DSN."""
    rows = [json.loads(line) for line in SET.read_text().splitlines()]
    messages = [r for r in rows if r["type"] == "message"]
    queries = [r for r in rows if r["type"] == "query"]
    grouped: dict[str, list[str]] = {}
    for m in messages:
        grouped.setdefault(m["conversation"], []).append(m["text"])
    dsn = await fresh_database(admin_dsn, QUALITY_DB)
    conn = await asyncpg.connect(dsn)
    try:
        ids = await load(conn, list(grouped.items()))
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()
    return messages, queries, ids, dsn


async def quality(admin_dsn: str) -> None:
    messages, queries, ids, dsn = await labelled_database(admin_dsn)
    db = await Database.connect(dsn, 1, 4)
    fake = FakeEmbeddings(dimensions=DIMENSIONS)
    fake.start()
    try:
        texts = [m["text"] for m in messages]
        started = time.perf_counter()
        for i in range(0, len(texts), 64):
            [concept_vector(t, DIMENSIONS) for t in texts[i : i + 64]]
        raw_local = time.perf_counter() - started
        remote_embedder = OpenAIEmbedder(fake.url, "fake-embed", None, DIMENSIONS, 30.0)
        started = time.perf_counter()
        for i in range(0, len(texts), 64):
            await remote_embedder.embed(texts[i : i + 64])
        raw_remote = time.perf_counter() - started
        remote = Embeddings(db, settings_for(dsn), remote_embedder)
        n_remote, s_remote = await index_all(remote)
        await remote.close()
        local = Embeddings(db, settings_for(dsn), ConceptEmbedder(DIMENSIONS))
        n_local, s_local = await index_all(local)  # a new model: every message is queued again for it
        print(f"\nindexer throughput over {len(texts):,} messages (batches of 64, one indexer, unthrottled):")
        print(
            f"  fake OpenAI-compatible endpoint over HTTP: {n_remote / s_remote:,.0f} messages/s "
            f"(embedder alone {len(texts) / raw_remote:,.0f}/s: indexer/raw time {s_remote / raw_remote:.2f}x)"
        )
        print(
            f"  test embedder in process:                  {n_local / s_local:,.0f} messages/s "
            f"(embedder alone {len(texts) / raw_local:,.0f}/s: indexer/raw time {s_local / raw_local:.2f}x)"
        )
        assert n_remote == n_local == len(texts), (n_remote, n_local)
        # Plans for the table as it now is (the load's ANALYZE saw no vectors): with a few thousand rows the
        # planner sorts them exactly; the HNSW graph of the test embedder's sparse vectors (most pairs orthogonal)
        # navigates poorly, so a plan flipping to it mid-run would blur what this measures: the fusion.
        await db.execute("ANALYZE message_embedding")

        admin = Principal(ids["tenant"], ids["admin"], Role.ADMIN, None)
        await score(
            db, admin, local, ids["conversations"], queries, len(texts), "through the HNSW index, as served"
        )
        # The same with exact nearest neighbours (the index dropped: the planner sorts the tenant's vectors): the
        # test embedder's sparse vectors (most pairs orthogonal, distance exactly 1) leave HNSW's graph few paths
        # to follow, so the served figures above mix the fusion with an approximation dense model vectors do not
        # suffer as much; these isolate the fusion.
        await db.execute(f"DROP INDEX message_embedding_hnsw_{(await local.model()).id}")
        await score(db, admin, local, ids["conversations"], queries, len(texts), "exact nearest neighbours")
        await write_cost(dsn, ids)
        await local.close()
    finally:
        fake.stop()
        await db.close()


async def quality_local(admin_dsn: str, model: str) -> None:
    """The labelled set with the local model (THREADLINE_EMBEDDINGS=local): indexer throughput against the model
    alone on the same texts, then recall@10 and MRR@10 through the HNSW index and exactly."""
    from threadline.embeddings.local import LocalEmbedder

    messages, queries, ids, dsn = await labelled_database(admin_dsn)
    db = await Database.connect(dsn, 1, 4)
    embedder = LocalEmbedder(model)
    try:
        texts = [m["text"] for m in messages]
        load_before = os.getloadavg()
        started = time.perf_counter()
        for i in range(0, len(texts), 64):
            await embedder.embed(texts[i : i + 64])
        raw = time.perf_counter() - started
        local = Embeddings(db, settings_for(dsn), embedder)
        n, seconds = await index_all(local)
        load_after = os.getloadavg()
        assert n == len(texts), (n, len(texts))
        print(f"\nindexer throughput over {len(texts):,} messages (batches of 64, one indexer, unthrottled):")
        print(
            f"  {embedder.name} in process: {n / seconds:,.1f} messages/s "
            f"(model alone {len(texts) / raw:,.1f}/s: indexer/raw time {seconds / raw:.2f}x); "
            f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after, {os.cpu_count()} cores"
        )
        # The set's messages are ~8 words: long messages cost per chunk of the model's full window.
        long_chunks = [c.text for c in chunks((REPO / "README.md").read_text(), embedder.chunk_chars)][:64]
        started = time.perf_counter()
        await embedder.embed(long_chunks)
        long_seconds = time.perf_counter() - started
        print(
            f"  model alone on {len(long_chunks)} chunks of README.md ({embedder.chunk_chars} characters, ~170 "
            f"tokens): {len(long_chunks) / long_seconds:,.1f} chunks/s; load average {os.getloadavg()[0]:.2f}"
        )
        await db.execute("ANALYZE message_embedding")
        admin = Principal(ids["tenant"], ids["admin"], Role.ADMIN, None)
        by_name = ids["conversations"]
        await score(db, admin, local, by_name, queries, len(texts), "through the HNSW index", embedder.name)
        await db.execute(f"DROP INDEX message_embedding_hnsw_{(await local.model()).id}")
        await score(db, admin, local, by_name, queries, len(texts), "exact nearest neighbours", embedder.name)
        await local.close()
    finally:
        await db.close()


async def score(
    db: Database,
    admin: Principal,
    local: Embeddings,
    by_name: dict[str, uuid.UUID],
    queries: list[dict[str, Any]],
    messages: int,
    how: str,
    embedder: str = "test embedder",
) -> None:
    kinds = sorted({q["kind"] for q in queries})
    scores: dict[tuple[Retrieval, str], list[tuple[float, float]]] = {}
    for mode in MODES:
        for q in queries:
            request = SearchRequest(query=q["query"], filters=FILTERS, limit=10, retrieval=mode)
            page = await search_service.search(db, admin, request, local)
            ranked = [h.conversation["id"] for h in page.hits[:10]]
            target = by_name[q["conversation"]]
            rank = ranked.index(target) + 1 if target in ranked else None
            scores.setdefault((mode, q["kind"]), []).append(
                (1.0 if rank else 0.0, 1.0 / rank if rank else 0.0)
            )
    print(f"\nretrieval quality, {len(queries)} queries over {messages:,} messages ({embedder}, {how}):")
    print(
        f"  {'mode':9}"
        + "".join(f" {k + ' R@10':>16} {k + ' MRR':>15}" for k in kinds)
        + f" {'all R@10':>9} {'all MRR':>8}"
    )
    overall: dict[Retrieval, tuple[float, float]] = {}
    for mode in MODES:
        line = f"  {mode.value:9}"
        every: list[tuple[float, float]] = []
        for kind in kinds:
            values = scores[(mode, kind)]
            every += values
            line += f" {sum(v[0] for v in values) / len(values):16.3f} {sum(v[1] for v in values) / len(values):15.3f}"
        overall[mode] = (sum(v[0] for v in every) / len(every), sum(v[1] for v in every) / len(every))
        print(line + f" {overall[mode][0]:9.3f} {overall[mode][1]:8.3f}")
    hybrid = overall[Retrieval.HYBRID]
    beats = all(hybrid[i] > overall[m][i] for m in (Retrieval.KEYWORD, Retrieval.SEMANTIC) for i in (0, 1))
    print(f"  HYBRID beats KEYWORD and SEMANTIC on recall@10 and MRR: {'yes' if beats else 'NO'}")


async def write_cost(dsn: str, ids: dict[str, Any], rounds: int = 600, block: int = 25) -> None:
    """What the embedding triggers add to every message write (with or without a provider): one message inserted
    and then edited, one transaction each, in blocks of `block` with the triggers on, then off, alternating (a
    trigger switched invalidates cached plans: the first write of each block is not counted)."""
    conn = await asyncpg.connect(dsn)
    triggers = ("message_embedding_enqueue", "message_embedding_stale")
    conversation = next(iter(ids["conversations"].values()))
    timings: dict[tuple[str, bool], list[float]] = {}
    try:
        for n in range(rounds * 2):
            on = (n // block) % 2 == 0
            if n % block == 0:
                for trigger in triggers:
                    await conn.execute(
                        f"ALTER TABLE message {'ENABLE' if on else 'DISABLE'} TRIGGER {trigger}"
                    )
            mid = uuid.uuid4()
            started = time.perf_counter()
            await conn.execute(
                """INSERT INTO message (id, tenant_id, conversation_id, root_id, depth, path, role, content, created_at)
                   VALUES ($1, $2, $3, $1, 0, ''::bytea, 'USER', 'Purchase an inexpensive laptop', now())""",
                mid,
                ids["tenant"],
                conversation,
            )
            inserted = time.perf_counter()
            await conn.execute("UPDATE message SET content = 'Buy a cheap computer' WHERE id = $1", mid)
            edited = time.perf_counter()
            if n % block:
                timings.setdefault(("insert", on), []).append((inserted - started) * 1e6)
                timings.setdefault(("edit", on), []).append((edited - inserted) * 1e6)
    finally:
        for trigger in triggers:
            await conn.execute(f"ALTER TABLE message ENABLE TRIGGER {trigger}")
        await conn.close()
    print(
        f"\nmessage writes, {rounds} with the embedding triggers and {rounds} without, in blocks of {block} (median us):"
    )
    for kind in ("insert", "edit"):
        off, on = p(timings[(kind, False)], 0.5), p(timings[(kind, True)], 0.5)
        print(f"  {kind:6} off {off:7.0f}  on {on:7.0f}  ratio {on / off:.2f}x")


async def timed(fn: Callable[[], Awaitable[Any]], repeat: int) -> list[float]:
    await fn()
    out = []
    for _ in range(repeat):
        started = time.perf_counter()
        await fn()
        out.append((time.perf_counter() - started) * 1000)
    return out


async def reused(admin_dsn: str) -> tuple[str, dict[str, uuid.UUID], int] | None:
    """The scale database of an earlier run, if it is complete: its dsn, ids and messages."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", SCALE_DB):
            return None
    finally:
        await conn.close()
    base, sep, rest = admin_dsn.partition("?")
    dsn = f"{base.rpartition('/')[0]}/{SCALE_DB}{sep}{rest}"
    conn = await asyncpg.connect(dsn)
    try:
        users = {r["role"]: r for r in await conn.fetch("SELECT id, tenant_id, role FROM app_user")}
        done = await conn.fetchval(
            "SELECT count(*) FROM pg_indexes WHERE indexname LIKE 'message_embedding_hnsw_%'"
        )
        count = await conn.fetchval("SELECT count(*) FROM message_embedding")
    finally:
        await conn.close()
    if not done or set(users) != {"ADMIN", "MEMBER"}:
        return None
    ids = {
        "tenant": users["ADMIN"]["tenant_id"],
        "admin": users["ADMIN"]["id"],
        "member": users["MEMBER"]["id"],
    }
    return dsn, ids, int(count)


async def latency(
    admin_dsn: str,
    messages: int,
    conversations: int,
    queries: int,
    reuse: bool,
    scattered: bool,
    recall_queries: int,
) -> None:
    rng = random.Random(11)
    per = max(1, messages // conversations)
    earlier = await reused(admin_dsn) if reuse else None
    if earlier is not None:
        dsn, ids, count = earlier
        db = await Database.connect(dsn, 2, 4)
        embeddings = Embeddings(db, settings_for(dsn), ConceptEmbedder(DIMENSIONS))
        model = await embeddings.model()
        print(f"\nlatency over {count:,} messages of an earlier run (--reuse)")
        await measure(db, embeddings, model, ids, rng, queries, recall_queries)
        return
    dsn = await fresh_database(admin_dsn, SCALE_DB)
    db = await Database.connect(dsn, 2, 4)
    embeddings = Embeddings(db, settings_for(dsn), ConceptEmbedder(DIMENSIONS))
    model = await embeddings.model()  # its partial HNSW index, dropped for the bulk load and rebuilt after
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"DROP INDEX message_embedding_hnsw_{model.id}")
        # The vectors are stored below, set-based: nothing to queue for an indexer.
        await conn.execute("ALTER TABLE message DISABLE TRIGGER message_embedding_enqueue")
        started = time.perf_counter()
        async with conn.transaction():
            ids = await tenant_with_users(conn)
            count = await seed_threads(
                conn, ids["tenant"], ids["admin"], ids["member"], per * conversations, conversations, NOW
            )
        await conn.execute("ALTER TABLE message ENABLE TRIGGER message_embedding_enqueue")
        loaded = time.perf_counter()
        async with conn.transaction():
            stored = await seed_test_vectors(conn, ids["tenant"], per, model.id, DIMENSIONS, scattered)
        worst = await check_test_vectors(conn, model.id, DIMENSIONS)
        await drop_seed_tables(conn)
        assert stored == count, (stored, count)
        vectors = time.perf_counter()
        # As the indexer does at a model's first use, here after the bulk load (the pool's statement timeout would
        # stop a long build): the same definition, with room for the whole graph in memory.
        await conn.execute("SET maintenance_work_mem = '6GB'")
        await conn.execute("SET max_parallel_maintenance_workers = 1")
        await conn.execute(
            f"CREATE INDEX message_embedding_hnsw_{model.id} ON message_embedding USING hnsw "
            f"((embedding::{model.cast()}) vector_cosine_ops) WHERE model_id = {model.id}"
        )
        await conn.execute("VACUUM ANALYZE")
        print(
            f"\nlatency over {count:,} messages in {conversations:,} conversations "
            f"({'vectors scattered' if scattered else 'vectors stored by conversation'}): seeded (INSERT ... SELECT) in "
            f"{loaded - started:.0f} s, test-embedder vectors computed in SQL and stored in {vectors - loaded:.0f} s "
            f"(a sample of 200 within {worst:.1e} of concept_vector), HNSW index and VACUUM ANALYZE in "
            f"{time.perf_counter() - vectors:.0f} s"
        )
    finally:
        await conn.close()
    await measure(db, embeddings, model, ids, rng, queries, recall_queries)


async def measure(
    db: Database,
    embeddings: Embeddings,
    model: Model,
    ids: dict[str, Any],
    rng: random.Random,
    queries: int,
    recall_queries: int,
) -> None:
    try:
        admin = Principal(ids["tenant"], ids["admin"], Role.ADMIN, None)
        member = Principal(ids["tenant"], ids["member"], Role.MEMBER, None)
        pool = [w for g in SYNONYMS for w in g if "_" not in w]
        sample = [" ".join(rng.sample(pool, rng.randint(2, 4))) for _ in range(queries)]
        vectors_q = [vector_text(v) for v in [concept_vector(q, DIMENSIONS) for q in sample] if v is not None]
        cast = model.cast()

        async def raw_vector(v: str) -> None:
            async with db.transaction() as tx:
                await tx.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
                await tx.fetch(
                    f"SELECT message_id FROM message_embedding WHERE model_id = {model.id} "
                    f"ORDER BY embedding::{cast} <=> $1::{cast} LIMIT 10",
                    v,
                )

        async def raw_text(q: str) -> None:
            await db.fetch(
                """SELECT id FROM message WHERE tenant_id = $1
                       AND search_vector @@ threadline_search_query('english', $2)
                   ORDER BY ts_rank(search_vector, threadline_search_query('english', $2)) DESC LIMIT 20""",
                ids["tenant"],
                q,
            )

        for q in sample:  # every mode's pages and index pages read once before anything is timed
            for mode in MODES:
                request = SearchRequest(query=q, filters=FILTERS, limit=20, retrieval=mode)
                await search_service.search(db, admin, request, embeddings)
        base_vector = [t for v in vectors_q for t in await timed(lambda v=v: raw_vector(v), 1)]
        base_text = [t for q in sample for t in await timed(lambda q=q: raw_text(q), 1)]
        print(
            f"  raw HNSW top-10 (no tenant, visibility or grouping): p50 {p(base_vector, 0.5):.1f} ms, p95 {p(base_vector, 0.95):.1f} ms"
        )
        print(
            f"  raw GIN ranked lookup:                                p50 {p(base_text, 0.5):.1f} ms, p95 {p(base_text, 0.95):.1f} ms"
        )
        print(
            f"  {'search (first: 20)':22} {'admin p50':>9} {'p95':>7} {'member p50':>10} {'p95':>7} {'p50 / raw':>9}"
        )
        # Variants, each query timed in every variant in turn (so a change of the machine's load falls on all
        # of them alike): the three modes as served; HYBRID with the keyword and vector candidates found one
        # after the other in one transaction (not side by side); and the vector candidates always found by the
        # HNSW index walked past what the caller may not read (THREADLINE_EMBEDDINGS_VECTOR_SCAN=index), which
        # is what the planner chose for this member before the scan was chosen by estimates.
        walking = Embeddings(
            db, dataclasses.replace(embeddings.settings, embeddings_vector_scan="index"), embeddings.embedder
        )
        variants: list[tuple[str, Retrieval, bool, Embeddings]] = [
            (m.value, m, True, embeddings) for m in MODES
        ]
        variants.append(("HYBRID one after other", Retrieval.HYBRID, False, embeddings))
        variants.append(("SEMANTIC index walk", Retrieval.SEMANTIC, True, walking))
        variants.append(("HYBRID index walk", Retrieval.HYBRID, True, walking))
        times: dict[tuple[str, str], list[float]] = {}
        for who, principal in (("admin", admin), ("member", member)):
            for q in sample:
                for label, mode, concurrent, used in variants:
                    search_service.CONCURRENT_CANDIDATES = concurrent
                    request = SearchRequest(query=q, filters=FILTERS, limit=20, retrieval=mode)
                    times.setdefault((label, who), []).extend(
                        await timed(
                            lambda pr=principal, r=request, e=used: search_service.search(db, pr, r, e), 1
                        )
                    )
        for label, mode, _, _ in variants:
            adm, mem = times[(label, "admin")], times[(label, "member")]
            raw = base_text if mode is Retrieval.KEYWORD else base_vector
            print(
                f"  {label:22} {p(adm, 0.5):9.1f} {p(adm, 0.95):7.1f} "
                f"{p(mem, 0.5):10.1f} {p(mem, 0.95):7.1f} {p(adm, 0.5) / p(raw, 0.5):9.1f}"
            )
        search_service.CONCURRENT_CANDIDATES = True
        await vector_recall(db, embeddings, model, admin, member, sample[:recall_queries])
    finally:
        await db.close()


async def vector_recall(
    db: Database,
    embeddings: Embeddings,
    model: Model,
    admin: Principal,
    member: Principal,
    sample: list[str],
) -> None:
    """The vector candidates of each caller as served (scan chosen from estimates), and through the index walk
    forced, against exact nearest neighbours (every readable chunk compared): recall@20 and @100 of their
    conversations, and the time of the vector statement(s) alone."""
    if not sample:
        return
    print(
        f"\n  vector candidates against exact nearest neighbours, {len(sample)} queries (conversations found):"
    )
    print(
        f"  {'caller, scan':30} {'chosen':>7} {'recall@20':>9} {'recall@100':>10} {'p50 ms':>7} {'p95 ms':>7}"
    )
    min_similarity = embeddings.settings.embeddings_min_similarity
    for who, principal in (("admin", admin), ("member", member)):
        found: dict[VectorScan, list[tuple[list[uuid.UUID], float, VectorScan]]] = {}
        for q in sample:
            vector = concept_vector(q, DIMENSIONS)
            assert vector is not None
            for scan in (VectorScan.EXACT, VectorScan.AUTO, VectorScan.INDEX):
                async with search_service.planned(db) as tx:
                    started = time.perf_counter()
                    near = await nearest_conversations(
                        tx,
                        principal,
                        FILTERS,
                        model,
                        vector_text(vector),
                        chunks=CANDIDATE_CHUNKS,
                        conversations=CANDIDATE_CONVERSATIONS,
                        min_similarity=min_similarity,
                        scan=scan,
                    )
                    ms = (time.perf_counter() - started) * 1000
                ids = [c.conversation_id for c in near.conversations]
                found.setdefault(scan, []).append((ids, ms, near.choice.scan))
        for scan in (VectorScan.AUTO, VectorScan.INDEX, VectorScan.EXACT):
            recalls: dict[int, list[float]] = {20: [], 100: []}
            for (exact, _, _), (ids, _, _) in zip(found[VectorScan.EXACT], found[scan], strict=True):
                for k in recalls:
                    want = set(exact[:k])
                    recalls[k].append(len(want & set(ids[:k])) / len(want) if want else 1.0)
            times = [ms for _, ms, _ in found[scan]]
            chosen = sorted({c.value for _, _, c in found[scan]})
            label = f"{who}, {'as served (auto)' if scan is VectorScan.AUTO else scan.value + ' forced'}"
            print(
                f"  {label:30} {'/'.join(chosen):>7} {sum(recalls[20]) / len(sample):9.3f} "
                f"{sum(recalls[100]) / len(sample):10.3f} {p(times, 0.5):7.1f} {p(times, 0.95):7.1f}"
            )


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--conversations", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=50, help="distinct queries timed per mode and caller")
    parser.add_argument(
        "--recall-queries",
        type=int,
        default=20,
        help="queries whose vector candidates are compared with exact nearest neighbours (0: none)",
    )
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--skip-quality", action="store_true", help="latency only (no quality or throughput)")
    parser.add_argument(
        "--reuse", action="store_true", help="measure the latency on the last run's data again"
    )
    parser.add_argument(
        "--scattered-vectors",
        action="store_true",
        help="store the vectors in hash order, not by conversation (the worst case for a member's search)",
    )
    parser.add_argument(
        "--shared-buffers",
        default=SHARED_BUFFERS,
        help=f"PostgreSQL's buffer cache (default {SHARED_BUFFERS})",
    )
    parser.add_argument("--data-dir", type=Path, default=REPO / "bench" / ".data" / "semantic")
    parser.add_argument(
        "--local",
        action="store_true",
        help="quality and throughput with THREADLINE_EMBEDDINGS=local (all-MiniLM-L6-v2) instead",
    )
    parser.add_argument(
        "--local-model",
        default="",
        help="the model's directory or model.zip (default: the installed wheel's)",
    )
    args = parser.parse_args()
    server = EmbeddedPostgres(args.data_dir)
    admin_dsn = server.start()
    conn = await asyncpg.connect(admin_dsn)
    try:
        # The embedded default (128 MB) is sized for test runs; vectors and their HNSW index want a production-like
        # buffer cache (as bench/search.py gives its million messages).
        tuned = await conn.fetchval("SHOW shared_buffers") == args.shared_buffers
        if not tuned:
            await conn.execute(f"ALTER SYSTEM SET shared_buffers = '{args.shared_buffers}'")
    finally:
        await conn.close()
    if not tuned:
        server.stop()
        admin_dsn = server.start()
    try:
        if args.local:
            await quality_local(admin_dsn, args.local_model)
        elif not args.skip_quality:
            await quality(admin_dsn)
        if not args.skip_latency and not args.local:
            await latency(
                admin_dsn,
                args.messages,
                args.conversations,
                args.queries,
                args.reuse,
                args.scattered_vectors,
                args.recall_queries,
            )
    finally:
        server.stop()


if __name__ == "__main__":
    asyncio.run(main())
