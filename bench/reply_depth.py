"""Reply cost by depth: replies at depth 1 (the baseline) vs replies deep in a chain, in one transaction and live.

    .venv/bin/python bench/reply_depth.py [--quick] [--chain N] [--live-replies K]

1. One transaction, as a gateway call stores a session's new messages (gateway.recorder) or a run its tool round
   trips: `threads.service.add_reply` in-process, against the embedded PostgreSQL. First N replies all to the
   thread's root (each at depth 1: the baseline, a thread growing as wide as the chain grows deep), then, in another
   thread, N replies each to the previous one (depth 1..N). Printed for each: ms and SQL statements per reply over
   its first 50 and its last 50 replies, and the ratio of the chain's deep replies to the baseline's last ones.
2. Live, over the API: `messageReply` to a server in its own process (bench/server.py), one reply per request and
   transaction, K replies to a message at depth 1, 100 and THREADLINE_THREAD_MAX_DEPTH - 1 of a chain seeded with
   COPY (depths interleaved, so drift hits each alike): median ms per reply and the server's statements per reply,
   and the ratio to depth 1.

Each conversation has a second member, so every reply also publishes an unread.update, as in a shared conversation.
To measure the code as it was at another commit, run the same script with PYTHONPATH=<git archive of its src>/src.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fixtures import UNTHROTTLED, Caller, Database, Server, create_tenant, graphql  # noqa: E402
from threadline.ids import Kind, encode_id  # noqa: E402
from threadline.threads.paths import encode_rank  # noqa: E402

EDGE = 50  # replies averaged at each end of a run
REPLY = (
    "mutation($p: ID!, $c: String!) { messageReply(parentId: $p, input: {content: $c}) { id depth path } }"
)


async def _conversation(conn: asyncpg.Connection, caller: Caller, member: uuid.UUID) -> uuid.UUID:
    conversation_id = uuid.uuid4()
    await conn.execute(
        """INSERT INTO conversation (id, tenant_id, owner_id, title, description, tags, status,
               max_history_messages, message_count, token_count)
           VALUES ($1, $2, $3, 'depth', '', '{}', 'ACTIVE', 20, 0, 0)""",
        conversation_id,
        caller.tenant_id,
        caller.user_id,
    )
    for user_id, role in ((caller.user_id, "OWNER"), (member, "MEMBER")):
        await conn.execute(
            "INSERT INTO participant (id, tenant_id, conversation_id, user_id, role) VALUES ($1, $2, $3, $4, $5)",
            uuid.uuid4(),
            caller.tenant_id,
            conversation_id,
            user_id,
            role,
        )
    return conversation_id


async def _member(conn: asyncpg.Connection, caller: Caller) -> uuid.UUID:
    user_id = uuid.uuid4()
    await conn.execute(
        "INSERT INTO app_user (id, tenant_id, email, display_name, role) VALUES ($1, $2, $3, 'member', 'MEMBER')",
        user_id,
        caller.tenant_id,
        f"member-{user_id.hex[:8]}@example.com",
    )
    return user_id


def in_one_transaction(dsn: str, caller: Caller, replies: int) -> dict[str, tuple[list[float], list[int]]]:
    """{"wide": ..., "chain": ...}: each reply's seconds and statements, in order."""
    from threadline.auth.principal import Principal, Role
    from threadline.db import Database as Pool
    from threadline.db import sql_statement_count
    from threadline.settings import Settings
    from threadline.threads import repository as threads
    from threadline.threads import service

    async def work() -> dict[str, tuple[list[float], list[int]]]:
        settings = Settings.from_env()
        db = await Pool.connect(dsn, 1, 2)
        conn = await asyncpg.connect(dsn)
        try:
            member = await _member(conn, caller)
            principal = Principal(caller.tenant_id, caller.user_id, Role.ADMIN, None)
            out = {}
            for shape in ("warm-up", "wide", "chain"):
                conversation_id = await _conversation(conn, caller, member)
                root = await service.start_thread(
                    db, settings, principal, conversation_id, service.MessageDraft(content="root")
                )
                seconds: list[float] = []
                statements: list[int] = []
                async with db.transaction() as tx:
                    parent = await threads.message(tx, caller.tenant_id, root["id"], lock=True)
                    assert parent is not None
                    for n in range(EDGE if shape == "warm-up" else replies):
                        if shape != "chain":  # the root again, with its child count as it is now (untimed)
                            parent = await threads.message(tx, caller.tenant_id, root["id"], lock=True)
                            assert parent is not None
                        draft = service.MessageDraft(content=f"reply {n} " + "x" * 200)
                        before = sql_statement_count()
                        start = time.perf_counter()
                        row, path = await service.add_reply(
                            tx, settings, caller.tenant_id, parent, draft, caller.user_id
                        )
                        seconds.append(time.perf_counter() - start)
                        statements.append(sql_statement_count() - before)
                        assert len(path) == row["depth"] + 1 and path[-1] == row["id"]
                        if shape == "chain":
                            parent = row
                out[shape] = (seconds, statements)
            return out
        finally:
            await conn.close()
            await db.close()

    return asyncio.run(work())


def seed_chain(dsn: str, caller: Caller, depth: int) -> dict[int, str]:
    """A thread whose messages each reply to the previous one, to `depth` levels (COPY, as bench.fixtures.seed_tree
    writes: the application's paths and counters); the public ids of its messages by depth."""

    async def work() -> dict[int, str]:
        conn = await asyncpg.connect(dsn)
        try:
            member = await _member(conn, caller)
            conversation_id = await _conversation(conn, caller, member)
            ids = [uuid.uuid4() for _ in range(depth + 1)]
            start = await conn.fetchval("SELECT now()")
            records = [
                (
                    ids[d],
                    caller.tenant_id,
                    conversation_id,
                    ids[0],
                    ids[d - 1] if d else None,
                    d,
                    encode_rank(0) * d,
                    1 if d < depth else 0,
                    "ASSISTANT" if d % 2 else "USER",
                    f"message at depth {d} " + "x" * 200,
                    caller.user_id,
                    start + timedelta(milliseconds=d),
                )
                for d in range(depth + 1)
            ]
            await conn.copy_records_to_table(
                "message",
                records=records,
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
            await conn.execute(
                """INSERT INTO thread (id, tenant_id, conversation_id, reply_count, last_seq, created_at, last_activity_at)
                   SELECT $1, $2, $3, $4, max(seq), $5, $5 FROM message WHERE root_id = $1""",
                ids[0],
                caller.tenant_id,
                conversation_id,
                depth,
                start,
            )
            await conn.execute(
                "UPDATE conversation SET message_count = $2 WHERE id = $1", conversation_id, depth + 1
            )
            await conn.execute("ANALYZE message")
            return {d: encode_id(Kind.MESSAGE, ids[d]) for d in range(depth + 1)}
        finally:
            await conn.close()

    return asyncio.run(work())


def live_replies(
    server: Server, caller: Caller, parents: dict[int, str], per_depth: int
) -> dict[int, tuple[list[float], list[int]]]:
    """`per_depth` messageReply calls to each parent, interleaved by depth: seconds and server statements of each."""
    out: dict[int, tuple[list[float], list[int]]] = {d: ([], []) for d in parents}
    with httpx.Client(base_url=server.url, headers=caller.headers, timeout=60) as client:
        for parent in parents.values():  # warm-up: connections, plans, caches
            graphql(client, REPLY, {"p": parent, "c": "warm-up"})
        for n in range(per_depth):
            for d, parent in parents.items():
                before = server.sql_statements()
                start = time.perf_counter()
                reply = graphql(client, REPLY, {"p": parent, "c": f"reply {n} " + "x" * 200})["messageReply"]
                seconds = time.perf_counter() - start
                out[d][1].append(server.sql_statements() - before)
                out[d][0].append(seconds)
                assert reply["depth"] == d + 1 and len(reply["path"]) == d + 2, reply
    return out


def _ms(samples: list[float]) -> float:
    return sum(samples) / len(samples) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--quick", action="store_true", help="a shorter chain, fewer live replies (a smoke test)"
    )
    parser.add_argument(
        "--chain", type=int, help="replies in the one-transaction runs (default 1000; quick 200)"
    )
    parser.add_argument(
        "--live-replies", type=int, help="messageReply calls per depth (default 40; quick 10)"
    )
    args = parser.parse_args()
    replies = args.chain or (200 if args.quick else 1000)
    per_depth = args.live_replies or (10 if args.quick else 40)

    from threadline.settings import Settings

    max_depth = Settings.from_env().thread_max_depth
    replies = min(replies, max_depth)
    database = Database()
    dsn = database.start()
    try:
        caller = create_tenant(dsn)

        runs = in_one_transaction(dsn, caller, replies)
        wide_s, wide_q = runs["wide"]
        chain_s, chain_q = runs["chain"]
        print(f"One transaction, {replies} replies (add_reply in-process), ms / statements per reply:")
        print(
            f"  baseline, all at depth 1:  first {EDGE} {_ms(wide_s[:EDGE]):6.2f} ms / {statistics.mean(wide_q[:EDGE]):.1f}"
            f"   last {EDGE} {_ms(wide_s[-EDGE:]):6.2f} ms / {statistics.mean(wide_q[-EDGE:]):.1f}"
            f"   total {sum(wide_s):.2f} s"
        )
        print(
            f"  chain, depth 1..{replies}:      first {EDGE} {_ms(chain_s[:EDGE]):6.2f} ms / {statistics.mean(chain_q[:EDGE]):.1f}"
            f"   last {EDGE} {_ms(chain_s[-EDGE:]):6.2f} ms / {statistics.mean(chain_q[-EDGE:]):.1f}"
            f"   total {sum(chain_s):.2f} s"
        )
        print(
            f"  chain's last {EDGE} / baseline's last {EDGE}: {_ms(chain_s[-EDGE:]) / _ms(wide_s[-EDGE:]):.2f}"
            f"   chain's last {EDGE} / its first {EDGE}: {_ms(chain_s[-EDGE:]) / _ms(chain_s[:EDGE]):.2f}"
        )

        ids = seed_chain(dsn, caller, max_depth - 1)
        depths = sorted({1, min(100, max_depth - 1), max_depth - 1})
        server = Server(dsn, env=UNTHROTTLED)
        try:
            live = live_replies(server, caller, {d: ids[d] for d in depths}, per_depth)
        finally:
            server.stop()
        base = statistics.median(live[depths[0]][0])
        print(
            f"Live messageReply (own transaction each), {per_depth} per depth, median ms / statements per reply:"
        )
        for d in depths:
            seconds, statements = live[d]
            median = statistics.median(seconds)
            print(
                f"  reply at depth {d + 1:>5}: {median * 1000:6.2f} ms / {statistics.mean(statements):.1f}"
                f"   / depth 2: {median / base:.2f}"
            )
    finally:
        database.stop()


if __name__ == "__main__":
    main()
