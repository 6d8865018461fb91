"""Search at scale: load N messages in M conversations with COPY, then time searches, tags and insights.

    .venv/bin/python bench/search.py                      # 1,000,000 messages in 50,000 conversations
    .venv/bin/python bench/search.py --messages 200000 --conversations 10000
    .venv/bin/python bench/search.py --reuse              # measure again without reloading

The data lives in its own embedded PostgreSQL under bench/.data/search (gitignored). Searches run
through the service layer (the code behind the GraphQL fields, minus HTTP and JSON), as the tenant
admin (whole tenant visible: the worst case) and as a member (own and shared conversations). The raw
baseline of each search is the bare ranked GIN lookup on messages (no visibility, no grouping per
conversation, no snippet), measured in the same run; the ratio says what the product costs on top.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import itertools
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

from threadline.auth.principal import Principal, Role  # noqa: E402
from threadline.db import Database  # noqa: E402
from threadline.db.embedded import EmbeddedPostgres  # noqa: E402
from threadline.db.migrate import apply_migrations  # noqa: E402
from threadline.search import insight_service, tag_service  # noqa: E402
from threadline.search import service as search_service  # noqa: E402
from threadline.search.repository import SearchFilters  # noqa: E402
from threadline.search.service import SearchRequest  # noqa: E402
from threadline.threads.paths import encode_rank  # noqa: E402

DB_NAME = "threadline_bench_search"
SHARED_BUFFERS = "2GB"
COMMON = """the a to of and in is it you that for on with this be are as was can have not error
server request user data file code test build deploy release config database query cache memory
timeout connection network service client api token model prompt response stream message thread
function method class module package version update install run debug log trace stack exception
retry rollback migration index table schema column key value list array string number object json
python rust go node docker kubernetes cluster pod container image volume secret env variable path
branch commit merge review issue bug fix feature patch upgrade latency throughput queue worker job
schedule cron backup restore replica primary shard partition lock transaction commit rollback
deploying deployed tests testing failed failing works working slow fast broken running""".split()
TAGS = [
    "ops",
    "prod",
    "staging",
    "bug",
    "feature",
    "design",
    "infra",
    "frontend",
    "backend",
    "data",
    "ml",
    "security",
    "billing",
    "support",
    "research",
    "docs",
    "perf",
    "mobile",
    "api",
    "legal",
]
PROVIDERS = ["openai", "anthropic", "echo", "mistral", None]
CODE_TOKENS = ["ECONNRESET", "src/payments/ledger.py", "get_user_by_id", "ERR_SSL_PROTOCOL", "0xDEADBEEF"]
PHRASE = "connection pool exhausted"
NOW = datetime(2026, 11, 1, tzinfo=UTC)


def vocabulary(size: int, rng: random.Random) -> list[str]:
    syllables = [c + v for c in "bcdfghklmnprstvz" for v in "aeiou"]
    words = list(dict.fromkeys(COMMON))
    while len(words) < size:
        words.append("".join(rng.choice(syllables) for _ in range(rng.randint(2, 4))))
    return list(dict.fromkeys(words))


def zipf_cumulative(n: int) -> list[float]:
    return list(itertools.accumulate(1.0 / (rank + 1) for rank in range(n)))


class Corpus:
    def __init__(self, seed: int = 7) -> None:
        self.rng = random.Random(seed)
        self.words = vocabulary(20_000, self.rng)
        self.cumulative = zipf_cumulative(len(self.words))
        self.total = self.cumulative[-1]

    def word(self) -> str:
        return self.words[bisect.bisect_left(self.cumulative, self.rng.random() * self.total)]

    def text(self, low: int, high: int) -> str:
        words = [self.word() for _ in range(self.rng.randint(low, high))]
        roll = self.rng.random()
        if roll < 0.0005:
            words.insert(self.rng.randrange(len(words) + 1), self.rng.choice(CODE_TOKENS))
        elif roll < 0.0025:
            words.insert(self.rng.randrange(len(words) + 1), PHRASE)
        return " ".join(words)


async def load(conn: asyncpg.Connection, messages: int, conversations: int) -> dict[str, Any]:
    corpus = Corpus()
    rng = corpus.rng
    tenant = uuid.uuid4()
    await conn.execute("INSERT INTO tenant (id, name, settings) VALUES ($1, 'bench', '{}'::jsonb)", tenant)
    users = []
    for i in range(100):
        role = "ADMIN" if i == 0 else "MANAGER" if i <= 4 else "MEMBER"
        team = None if i == 0 else f"team{i % 4}"
        users.append((uuid.uuid4(), tenant, f"u{i}@bench.example", f"user {i}", role, team))
    await conn.copy_records_to_table(
        "app_user", records=users, columns=["id", "tenant_id", "email", "display_name", "role", "team"]
    )
    per_conversation = messages // conversations
    conv_rows, participants, message_rows, threads = [], [], [], []
    for _ in range(conversations):
        cid, owner = uuid.uuid4(), rng.choice(users[1:])[0]
        created = NOW - timedelta(seconds=rng.uniform(0, 365 * 86400))
        tags = sorted(
            {TAGS[min(int(rng.paretovariate(1.2)) - 1, len(TAGS) - 1)] for _ in range(rng.randint(0, 3))}
        )
        at = created
        tokens = 0
        roots = max(1, per_conversation // 10)
        for t in range(roots):
            size = per_conversation // roots + (1 if t < per_conversation % roots else 0)
            root = parent = uuid.uuid4()
            path = b""
            for depth in range(size):
                mid = root if depth == 0 else uuid.uuid4()
                at += timedelta(seconds=rng.uniform(5, 900))
                assistant = depth % 2 == 1
                prompt, completion = (
                    (rng.randint(50, 2000), rng.randint(20, 800)) if assistant else (None, None)
                )
                tokens += (prompt or 0) + (completion or 0)
                message_rows.append(
                    (
                        mid,
                        tenant,
                        cid,
                        root,
                        None if depth == 0 else parent,
                        depth,
                        path,
                        1 if depth < size - 1 else 0,
                        "ASSISTANT" if assistant else "USER",
                        corpus.text(8, 60),
                        None if assistant else owner,
                        "gpt-bench" if assistant else None,
                        prompt,
                        completion,
                        at,
                    )
                )
                parent, path = mid, path + encode_rank(0)
            threads.append((root, tenant, cid, size - 1, at, at))
        conv_rows.append(
            (
                cid,
                tenant,
                owner,
                " ".join(corpus.word() for _ in range(rng.randint(2, 6))).capitalize(),
                corpus.text(0, 20),
                tags,
                "ACTIVE",
                rng.choice(PROVIDERS),
                per_conversation,
                tokens,
                created,
                at,
                at,
            )
        )
        participants.append((uuid.uuid4(), tenant, cid, owner, "OWNER"))
        if rng.random() < 0.1:
            other = rng.choice(users[1:])[0]
            if other != owner:
                participants.append((uuid.uuid4(), tenant, cid, other, "MEMBER"))
    # Rows arrive in time order in a live system, so the heap is in time order too.
    conv_rows.sort(key=lambda r: r[10])
    message_rows.sort(key=lambda r: r[14])
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
            "ai_provider",
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
                "model",
                "prompt_tokens",
                "completion_tokens",
                "created_at",
            ],
        )
    await conn.copy_records_to_table(
        "thread",
        records=threads,
        columns=["id", "tenant_id", "conversation_id", "reply_count", "created_at", "last_activity_at"],
    )
    return {"tenant": tenant, "admin": users[0][0], "member": users[5][0], "member_team": users[5][5]}


# Indexes rebuilt after the bulk load (what pg_restore does too): same definitions as the migration.
REBUILT = {
    "message_search": "CREATE INDEX message_search ON message USING gin (search_vector)",
    "conversation_search": "CREATE INDEX conversation_search ON conversation USING gin (search_vector)",
}


async def prepare(dsn: str, messages: int, conversations: int, reuse: bool) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS bench_meta (key text PRIMARY KEY, value text)")
        meta = {r["key"]: r["value"] for r in await conn.fetch("SELECT key, value FROM bench_meta")}
        if reuse and meta.get("size") == f"{messages}/{conversations}":
            print(f"reusing the loaded data set ({messages:,} messages)")
            return {k: (uuid.UUID(v) if k != "member_team" and k != "size" else v) for k, v in meta.items()}
        if await conn.fetchval("SELECT count(*) FROM tenant"):
            raise SystemExit(
                "the bench database already holds data: delete bench/.data/search or pass --reuse"
            )
        await conn.execute("SET maintenance_work_mem = '512MB'")
        for name in REBUILT:
            await conn.execute(f"DROP INDEX IF EXISTS {name}")
        started = time.perf_counter()
        async with conn.transaction():
            ids = await load(conn, messages, conversations)
        loaded = time.perf_counter()
        for sql in REBUILT.values():
            await conn.execute(sql)
        await conn.execute("VACUUM ANALYZE")
        print(
            f"loaded {messages:,} messages in {conversations:,} conversations with COPY in {loaded - started:.0f} s "
            f"(search vectors computed by the triggers), indexes and VACUUM ANALYZE {time.perf_counter() - loaded:.0f} s"
        )
        ids["size"] = f"{messages}/{conversations}"
        await conn.executemany(
            "INSERT INTO bench_meta (key, value) VALUES ($1, $2)", [(k, str(v)) for k, v in ids.items()]
        )
        return ids
    finally:
        await conn.close()


def searches() -> list[tuple[str, dict[str, Any]]]:
    recent = NOW - timedelta(days=30)
    return [
        ("very common word", {"query": "error"}),
        ("common word", {"query": "deploy"}),
        ("medium word", {"query": "rollback"}),
        ("stemmed word", {"query": "deploying"}),
        ("two words", {"query": "database timeout"}),
        ("three words", {"query": "cache memory latency"}),
        ("phrase", {"query": f'"{PHRASE}"'}),
        ("phrase + word", {"query": f'"{PHRASE}" retry'}),
        ("OR", {"query": "kubernetes OR docker"}),
        ("exclusion", {"query": "deploy -staging"}),
        ("word + tag", {"query": "database", "tags": ["ops"]}),
        ("word + last 30 days", {"query": "database", "since": recent}),
        (
            "word + tag + date + provider",
            {"query": "error", "tags": ["prod"], "since": recent, "ai_provider": "openai"},
        ),
        ("rare code token", {"query": "ECONNRESET"}),
        ("rare path", {"query": "src/payments/ledger.py"}),
        ("rare identifier", {"query": "get_user_by_id"}),
        ("no match", {"query": "xylophonequartz"}),
        ("typo (fuzzy fallback)", {"query": "kubernets deploymnt"}),
        ("no words, tag filter", {"query": "", "tags": ["security"]}),
        ("word + minMessages", {"query": "timeout", "min_messages": 20}),
    ]


def request(spec: dict[str, Any]) -> SearchRequest:
    filters = SearchFilters(
        statuses=("ACTIVE", "ARCHIVED"),
        tags=spec.get("tags"),
        ai_provider=spec.get("ai_provider"),
        min_messages=spec.get("min_messages"),
        since=spec.get("since"),
    )
    return SearchRequest(query=spec["query"], filters=filters, limit=20)


async def timed(fn: Callable[[], Awaitable[Any]], repeat: int) -> list[float]:
    await fn()
    out = []
    for _ in range(repeat):
        started = time.perf_counter()
        await fn()
        out.append((time.perf_counter() - started) * 1000)
    return out


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def measure(db: Database, ids: dict[str, Any], repeat: int) -> None:
    admin = Principal(ids["tenant"], ids["admin"], Role.ADMIN, None)
    member = Principal(ids["tenant"], ids["member"], Role.MEMBER, ids["member_team"])
    print(
        f"\n{'search':32} {'admin p50':>9} {'p95':>7} {'member p50':>10} {'p95':>7} {'raw p50':>8} {'ratio':>6} {'hits':>6}"
    )
    everything: dict[str, list[float]] = {"admin": [], "member": []}
    for name, spec in searches():
        req = request(spec)
        rows: dict[str, list[float]] = {}
        hits = 0
        for who, principal in (("admin", admin), ("member", member)):
            rows[who] = await timed(lambda pr=principal, r=req: search_service.search(db, pr, r), repeat)
            everything[who] += rows[who]
        page = await search_service.search(db, admin, req)
        hits = len(page.hits)
        raw = (
            await timed(lambda q=spec["query"]: raw_search(db, ids["tenant"], q), repeat)
            if spec["query"]
            else [0.0]
        )
        ratio = p(rows["admin"], 0.5) / p(raw, 0.5) if p(raw, 0.5) else float("nan")
        print(
            f"{name:32} {p(rows['admin'], 0.5):9.1f} {p(rows['admin'], 0.95):7.1f} {p(rows['member'], 0.5):10.1f} "
            f"{p(rows['member'], 0.95):7.1f} {p(raw, 0.5):8.1f} {ratio:6.1f} {hits:>6}"
        )
    for who, values in everything.items():
        print(
            f"all searches as {who}: p50 {p(values, 0.5):.1f} ms, p95 {p(values, 0.95):.1f} ms ({len(values)} runs)"
        )
    print()
    corpus = Corpus()
    long_queries = {
        "10,000 chars, 1,000+ distinct words": " ".join(corpus.words[100:2100])[:10_000],
        "10,000 chars, one word repeated": ("error " * 2000)[:10_000],
        "10,000 chars of quotes and operators": ('"error -" OR ' * 1000)[:10_000],
    }
    for name, text in long_queries.items():
        t = await timed(lambda r=request({"query": text}): search_service.search(db, admin, r), repeat)
        print(f"{name} as admin: p50 {p(t, 0.5):.1f} ms, p95 {p(t, 0.95):.1f} ms")
    print()
    window = insight_service.window(NOW - timedelta(days=30), NOW)
    for who, principal in (("admin", admin), ("member", member)):
        t = await timed(lambda pr=principal: tag_service.tag_counts(db, pr, 100), repeat)
        print(f"tags as {who}: p50 {p(t, 0.5):.1f} ms, p95 {p(t, 0.95):.1f} ms")

        async def insights(pr: Principal = principal) -> None:
            await insight_service.conversation_totals(db, pr, window)
            await insight_service.conversations_per_day(db, pr, window)
            await insight_service.message_activity(db, pr, window)
            await insight_service.popular_tags(db, pr, window, 10)
            await insight_service.providers(db, pr, window)

        t = await timed(insights, repeat)
        print(f"insights (every field, 30 days) as {who}: p50 {p(t, 0.5):.1f} ms, p95 {p(t, 0.95):.1f} ms")


async def raw_search(db: Database, tenant: uuid.UUID, query: str) -> None:
    await db.fetch(
        """SELECT id FROM message WHERE tenant_id = $1
               AND search_vector @@ threadline_search_query('english', $2)
           ORDER BY ts_rank(search_vector, threadline_search_query('english', $2)) DESC LIMIT 20""",
        tenant,
        query,
    )


async def sizes(db: Database) -> None:
    print("\nrelation             table MB   indexes MB   search index MB")
    for table, index in (
        ("message", "message_search"),
        ("conversation", "conversation_search"),
        ("search_term", "search_term_trigrams"),
    ):
        row = await db.fetchrow(
            """SELECT pg_table_size($1::regclass) AS t, pg_indexes_size($1::regclass) AS i,
                      pg_relation_size($2::regclass) AS s""",
            table,
            index,
        )
        assert row is not None
        print(f"{table:18} {row['t'] / 2**20:10.1f} {row['i'] / 2**20:12.1f} {row['s'] / 2**20:17.1f}")


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--conversations", type=int, default=50_000)
    parser.add_argument(
        "--repeat", type=int, default=20, help="timed runs per measurement (after one warm-up)"
    )
    parser.add_argument("--reuse", action="store_true", help="measure the data set already loaded")
    parser.add_argument("--data-dir", type=Path, default=REPO / "bench" / ".data" / "search")
    args = parser.parse_args()

    server = EmbeddedPostgres(args.data_dir)
    admin_dsn = server.start()
    conn = await asyncpg.connect(admin_dsn)
    try:
        # The embedded default (128 MB) is sized for a laptop's test runs; a server holding a million
        # messages gets a production-like buffer cache.
        tuned = await conn.fetchval("SHOW shared_buffers") == SHARED_BUFFERS
        if not tuned:
            await conn.execute(f"ALTER SYSTEM SET shared_buffers = '{SHARED_BUFFERS}'")
    finally:
        await conn.close()
    if not tuned:
        server.stop()
        admin_dsn = server.start()
    try:
        conn = await asyncpg.connect(admin_dsn)
        try:
            if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DB_NAME):
                await conn.execute(f'CREATE DATABASE "{DB_NAME}"')
        finally:
            await conn.close()
        base, sep, rest = admin_dsn.partition("?")
        dsn = f"{base.rpartition('/')[0]}/{DB_NAME}{sep}{rest}"
        await apply_migrations(dsn)
        ids = await prepare(dsn, args.messages, args.conversations, args.reuse)
        db = await Database.connect(dsn, 1, 2)
        try:
            await measure(db, ids, args.repeat)
            await sizes(db)
        finally:
            await db.close()
    finally:
        server.stop()


if __name__ == "__main__":
    asyncio.run(main())
