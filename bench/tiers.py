"""Cold tier: compression ratio and restore time of a 10,000-message conversation (issue 20 item 4).

One conversation whose thread grows to `--messages` nodes (a random recursive tree, ~200-character messages of
natural-looking text: words drawn with a Zipf law from a 2,000-word vocabulary, as chat text repeats its words),
seeded with COPY, then in the same run:

- the hot form's size: every moved table's total relation size (heap, TOAST and indexes; the database holds
  only this conversation), and the rows' own bytes (`pg_column_size`, what `tierStorage.hotBytes` reports);
- the cold form's size: the compressed document; ratios hot / cold;
- freezing time (`threadline tiers run`'s pass, in process);
- restore time: `tiers.restore` alone, and the first `threadTree` of the whole thread through the API on a cold
  conversation (restore included) against the same query on the hot one (the baseline), medians of `--rounds`.

The tree read back after each restore is checked byte for byte against the hot one.

    .venv/bin/python bench/tiers.py [--messages 10000] [--rounds 3] [--random-letters]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fixtures import (  # noqa: E402
    UNTHROTTLED,
    Database,
    Server,
    create_tenant,
    random_content,
    seed_tree,
    start_conversation,
)

TREE = "query($r: ID!) { threadTree(rootId: $r) { totalCount nodes { id parentId depth role content createdAt } } }"


def zipf_text(rng: random.Random, vocabulary: list[str], weights: list[float], size: int = 200) -> str:
    words: list[str] = []
    length = 0
    while length < size:
        word = rng.choices(vocabulary, weights)[0]
        words.append(word)
        length += len(word) + 1
    text = " ".join(words)[:size]
    return text[0].upper() + text[1:] + "."


def vocabulary(rng: random.Random, size: int = 2000) -> tuple[list[str], list[float]]:
    words = sorted(
        {
            "".join(
                rng.choice("etaoinshrdlcumwfgypbvkjxqz"[: rng.randint(8, 26)])
                for _ in range(rng.randint(2, 10))
            )
            for _ in range(size * 2)
        }
    )[:size]
    rng.shuffle(words)
    return words, [1 / (rank + 1) for rank in range(len(words))]


def tree_read(client: httpx.Client, root: str) -> tuple[float, bytes]:
    started = time.perf_counter()
    response = client.post("/graphql", json={"query": TREE, "variables": {"r": root}})
    elapsed = time.perf_counter() - started
    assert response.status_code == 200 and b'"errors"' not in response.content, response.text[:500]
    return elapsed, response.content


async def sizes(dsn: str) -> dict[str, int]:
    """Total relation size of every table a cold document takes rows from (tiers' plan, read from the schema)."""
    from threadline.db import Database as Pool
    from threadline.tiers.document_repository import read_plan

    db = await Pool.connect(dsn, 1, 1)
    try:
        tables = [t.name for t in (await read_plan(db)).tables]
    finally:
        await db.close()
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("VACUUM ANALYZE")
        return {
            table: int(await conn.fetchval("SELECT pg_total_relation_size($1::regclass)", table))
            for table in tables
        }
    finally:
        await conn.close()


async def freeze(dsn: str, tenant_id: Any) -> tuple[float, Any]:
    from threadline.db import Database as Pool
    from threadline.tiers.job import run_pass

    db = await Pool.connect(dsn, 1, 2)
    try:
        started = time.perf_counter()
        done = await run_pass(db, tenant_id=tenant_id, older_than_days=0)
        elapsed = time.perf_counter() - started
        assert len(done.frozen) == 1, done
        return elapsed, done.frozen[0]
    finally:
        await db.close()


async def restore_alone(dsn: str, tenant_id: Any, conversation_id: Any) -> float:
    from threadline.db import Database as Pool
    from threadline.tiers.service import restore

    db = await Pool.connect(dsn, 1, 2)
    try:
        started = time.perf_counter()
        assert await restore(db, tenant_id, conversation_id)
        return time.perf_counter() - started
    finally:
        await db.close()


async def deep_round(dsn: str, tenant_id: Any, conversation_id: Any) -> tuple[float, int, float]:
    """Freeze, move to deep storage (lzma), then an explicit restore with its progress rows:
    (deepen seconds, deep document bytes, explicit restore seconds)."""
    from threadline.db import Database as Pool
    from threadline.tiers.job import run_pass
    from threadline.tiers.service import restore

    db = await Pool.connect(dsn, 1, 3)
    try:
        await db.execute("UPDATE conversation_tier SET restored_at = NULL")
        assert len((await run_pass(db, tenant_id=tenant_id, older_than_days=0)).frozen) == 1
        started = time.perf_counter()
        assert (await run_pass(db, tenant_id=tenant_id, deep_after_days=0)).deepened == 1
        deepen = time.perf_counter() - started
        size = int(await db.fetchval("SELECT octet_length(document) FROM conversation_tier WHERE deep"))
        started = time.perf_counter()
        assert await restore(db, tenant_id, conversation_id, explicit=True)
        return deepen, size, time.perf_counter() - started
    finally:
        await db.close()


async def document_bytes(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(
            await conn.fetchval(
                "SELECT octet_length(document) FROM conversation_tier WHERE document IS NOT NULL"
            )
        )
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--random-letters", action="store_true", help="random letters (near incompressible)")
    args = parser.parse_args()

    import fixtures

    rng = random.Random(20)
    if not args.random_letters:
        words, weights = vocabulary(rng)
        fixtures.random_content = lambda r, size=200: zipf_text(r, words, weights, size)  # type: ignore[assignment]
    else:
        fixtures.random_content = random_content

    database = Database()
    dsn = database.start()
    server = None
    try:
        caller = create_tenant(dsn)
        server = Server(dsn, env=UNTHROTTLED)
        client = httpx.Client(base_url=server.url, headers=caller.headers, timeout=300)
        from threadline.ids import Kind, decode_id

        conversation, root = start_conversation(client)
        empty = asyncio.run(sizes(dsn))  # the tables with one message: their fixed pages, not counted
        seed_tree(dsn, caller, root, args.messages)
        conversation_id = decode_id(conversation, Kind.CONVERSATION)
        hot_sizes = {t: size - empty[t] for t, size in asyncio.run(sizes(dsn)).items() if size > empty[t]}
        hot_total = sum(hot_sizes.values())
        tree_read(client, root)  # warm
        hot_samples = []
        for _ in range(max(args.rounds, 3)):
            elapsed, hot_body = tree_read(client, root)
            hot_samples.append(elapsed)

        freeze_samples, first_read, alone = [], [], []
        row_bytes = cold_bytes = 0
        for n in range(args.rounds):
            elapsed, frozen = asyncio.run(freeze(dsn, caller.tenant_id))
            freeze_samples.append(elapsed)
            row_bytes, cold_bytes = frozen.hot_bytes, asyncio.run(document_bytes(dsn))
            if n % 2 == 0:
                elapsed, body = tree_read(client, root)  # restore in the server, then the read
                first_read.append(elapsed)
                assert body == hot_body, "the tree read back differs"
            else:
                alone.append(asyncio.run(restore_alone(dsn, caller.tenant_id, conversation_id)))
                _, body = tree_read(client, root)
                assert body == hot_body, "the tree read back differs"
        if not alone:
            asyncio.run(freeze(dsn, caller.tenant_id))
            alone.append(asyncio.run(restore_alone(dsn, caller.tenant_id, conversation_id)))

        deepen_s, deep_bytes, deep_restore_s = asyncio.run(deep_round(dsn, caller.tenant_id, conversation_id))
        _, body = tree_read(client, root)
        assert body == hot_body, "the tree read back from deep storage differs"

        hot_ms = statistics.median(hot_samples) * 1000
        first_ms = statistics.median(first_read) * 1000
        alone_ms = statistics.median(alone) * 1000
        freeze_ms = statistics.median(freeze_samples) * 1000
        text = "random letters" if args.random_letters else "Zipf text over 2,000 words"
        print(f"conversation: {args.messages} messages, ~200 characters each ({text}), one thread")
        print(
            f"hot form, growth of the moved tables' total relation size (heap+TOAST+indexes): {hot_total:,} bytes"
        )
        for table, size in hot_sizes.items():
            print(f"  {table}: {size:,}")
        print(f"hot rows' own bytes (pg_column_size; tierStorage.hotBytes): {row_bytes:,} bytes")
        print(f"cold document (zlib): {cold_bytes:,} bytes")
        print(f"compression ratio, hot total / cold: {hot_total / cold_bytes:.1f}x")
        print(f"compression ratio, hot rows / cold: {row_bytes / cold_bytes:.1f}x")
        print(
            f"deep storage document (lzma): {deep_bytes:,} bytes: hot total / deep {hot_total / deep_bytes:.1f}x"
        )
        print(
            f"freeze (one pass, one conversation): {freeze_ms:.0f} ms; to deep storage: {deepen_s * 1000:.0f} ms"
        )
        print(
            f"explicit restore from deep storage (conversationRestore's, with progress): {deep_restore_s * 1000:.0f} ms"
        )
        print(f"restore alone (tiers.restore): {alone_ms:.0f} ms")
        print(f"threadTree of the whole thread via the API, hot (baseline): {hot_ms:.0f} ms")
        print(
            f"threadTree on the cold conversation (restore + read): {first_ms:.0f} ms = {first_ms / hot_ms:.1f}x the hot read"
        )
        print("read back identical after every restore: yes")
    finally:
        if server is not None:
            server.stop()
        database.stop()


if __name__ == "__main__":
    main()
