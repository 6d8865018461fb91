"""messageReply throughput: 8 concurrent clients replying in one conversation, vs a raw SQL baseline.

    .venv/bin/python bench/message_reply.py [--quick]

Each client replies to a random message of the growing thread (so replies race on shared parents,
the thread row and the conversation row). The server runs in its own process; clients are
asyncio HTTP clients with one connection each. The raw baseline runs the same writes a reply
makes (lock parent, insert, bump the parent's child count, thread and conversation counters)
as plain asyncpg transactions on 8 connections. Counters are checked at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
import uuid

import asyncpg
import httpx

from fixtures import (
    UNTHROTTLED,
    Caller,
    Database,
    Server,
    create_tenant,
    graphql,
    percentile_ms,
    random_content,
    start_conversation,
)
from threadline.ids import Kind, decode_id
from threadline.threads.paths import encode_rank

CLIENTS = 8

REPLY = """mutation($p: ID!, $c: String!) { messageReply(parentId: $p, input: {content: $c}) { id depth } }"""


async def api_replies(
    server: Server, caller: Caller, root: str, per_client: int
) -> tuple[float, list[float], int]:
    ids = [root]
    latencies: list[float] = []
    failures = 0

    async def client(n: int) -> None:
        nonlocal failures
        rng = random.Random(n)
        async with httpx.AsyncClient(base_url=server.url, headers=caller.headers, timeout=60) as http:
            for _ in range(per_client):
                payload = {"query": REPLY, "variables": {"p": rng.choice(ids), "c": random_content(rng)}}
                start = time.perf_counter()
                response = await http.post("/graphql", json=payload)
                latencies.append(time.perf_counter() - start)
                body = response.json()
                if body.get("errors"):
                    failures += 1
                else:
                    ids.append(body["data"]["messageReply"]["id"])

    start = time.perf_counter()
    await asyncio.gather(*(client(n) for n in range(CLIENTS)))
    return time.perf_counter() - start, latencies, failures


async def raw_replies(
    dsn: str, caller: Caller, conversation_id: uuid.UUID, root_id: uuid.UUID, per_client: int
) -> tuple[float, list[float]]:
    ids = [root_id]
    latencies: list[float] = []
    pool = await asyncpg.create_pool(dsn, min_size=CLIENTS, max_size=CLIENTS)
    assert pool is not None

    async def client(n: int) -> None:
        rng = random.Random(100 + n)
        for _ in range(per_client):
            parent_id = rng.choice(ids)
            content = random_content(rng)
            start = time.perf_counter()
            async with pool.acquire() as conn, conn.transaction():
                parent = await conn.fetchrow(
                    "SELECT root_id, depth, path, child_count FROM message WHERE tenant_id = $1 AND id = $2 FOR UPDATE",
                    caller.tenant_id,
                    parent_id,
                )
                assert parent is not None
                message_id = uuid.uuid4()
                await conn.execute(
                    """INSERT INTO message (id, tenant_id, conversation_id, root_id, parent_id, depth, path,
                           child_count, role, content, author_id)
                       VALUES ($1, $2, $3, $4, $5, $6, $7, 0, 'USER', $8, $9)""",
                    message_id,
                    caller.tenant_id,
                    conversation_id,
                    parent["root_id"],
                    parent_id,
                    parent["depth"] + 1,
                    bytes(parent["path"]) + encode_rank(parent["child_count"]),
                    content,
                    caller.user_id,
                )
                await conn.execute(
                    "UPDATE message SET child_count = child_count + 1 WHERE id = $1", parent_id
                )
                await conn.execute(
                    "UPDATE thread SET reply_count = reply_count + 1, last_activity_at = now() WHERE id = $1",
                    parent["root_id"],
                )
                await conn.execute(
                    """UPDATE conversation SET message_count = message_count + 1, last_activity_at = now()
                       WHERE id = $1""",
                    conversation_id,
                )
            latencies.append(time.perf_counter() - start)
            ids.append(message_id)

    try:
        start = time.perf_counter()
        await asyncio.gather(*(client(n) for n in range(CLIENTS)))
        return time.perf_counter() - start, latencies
    finally:
        await pool.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer replies (a smoke test of the bench)")
    args = parser.parse_args()
    per_client = 25 if args.quick else 150

    database = Database()
    dsn = database.start()
    # The write load is the point here: the default mutation budget (1,200 a minute per user) would throttle it.
    server = Server(dsn, env=UNTHROTTLED)
    try:
        caller = create_tenant(dsn)
        with httpx.Client(base_url=server.url, headers=caller.headers, timeout=60) as client:
            api_conversation, api_root = start_conversation(client)
            raw_conversation, raw_root = start_conversation(client)
            warm_conversation, warm_root = start_conversation(client)
        asyncio.run(api_replies(server, caller, warm_root, 5))  # connections, caches, plans

        raw_seconds, raw_latencies = asyncio.run(
            raw_replies(
                dsn,
                caller,
                decode_id(raw_conversation, Kind.CONVERSATION),
                decode_id(raw_root, Kind.MESSAGE),
                per_client,
            )
        )
        seconds, latencies, failures = asyncio.run(api_replies(server, caller, api_root, per_client))

        total = CLIENTS * per_client
        with httpx.Client(base_url=server.url, headers=caller.headers, timeout=60) as client:
            counts = graphql(
                client,
                """query($c: ID!, $r: ID!) { conversation(id: $c) { messageCount }
                   thread(rootId: $r) { replyCount } threadTree(rootId: $r) { totalCount } }""",
                {"c": api_conversation, "r": api_root},
            )
        expected = {
            "conversation": {"messageCount": total + 1 - failures},
            "thread": {"replyCount": total - failures},
            "threadTree": {"totalCount": total + 1 - failures},
        }
        api_rate = (total - failures) / seconds
        raw_rate = total / raw_seconds
        print(f"messageReply, {CLIENTS} concurrent clients on one conversation, {total} replies")
        print(
            f"  API: {api_rate:7.1f} replies/s, p50 {percentile_ms(latencies, 0.5):6.1f} ms,"
            f" p99 {percentile_ms(latencies, 0.99):6.1f} ms, {failures} failed"
        )
        print(
            f"  raw: {raw_rate:7.1f} replies/s, p50 {percentile_ms(raw_latencies, 0.5):6.1f} ms,"
            f" p99 {percentile_ms(raw_latencies, 0.99):6.1f} ms (asyncpg, the same row writes)"
        )
        print(f"  ratio raw/API throughput: {raw_rate / api_rate:.2f}")
        print(
            f"  counters after the run: {'correct' if counts == expected else f'WRONG: {counts} != {expected}'}"
        )
    finally:
        server.stop()
        database.stop()


if __name__ == "__main__":
    main()
