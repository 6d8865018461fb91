"""conversationFork on a 10,000-message thread vs a raw INSERT ... SELECT of the same rows, in the same run.

    .venv/bin/python bench/fork.py [--nodes 10000] [--rounds 7]

A random tree of `--nodes` messages (~200-byte contents, as bench/thread_tree.py seeds it) is forked whole
(mode THREAD) through the service the mutation calls: one transaction that counts the rows against the cap,
creates the conversation and its owner, copies every row with new ids, parents and root mapped to the copies
(one INSERT ... SELECT), and writes the thread row and the counters. The baseline, in the same database and
run, is the bare INSERT ... SELECT of the same rows into a new conversation: new ids and root only (parents
left unmapped), no conversation, cap, thread or counters, in a transaction of its own. Both go through the
message table's triggers and indexes (the search vector is computed for every copy). Rounds alternate the two
and the medians are compared; also a BRANCH fork of a deep message and a PATH_ONLY fork (a few rows).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from fixtures import Caller, Database, create_tenant, seed_tree
from threadline.auth.principal import Principal, Role
from threadline.conversations import service as conversations
from threadline.conversations.service import ConversationFields
from threadline.db import Database as Pool
from threadline.forks import service as forks
from threadline.ids import Kind, encode_id
from threadline.settings import Settings
from threadline.threads import service as threads
from threadline.threads.service import MessageDraft

RAW_COPY = """WITH fresh AS (SELECT gen_random_uuid() AS root)
    INSERT INTO message (id, tenant_id, conversation_id, root_id, parent_id, depth, path, child_count, role, content,
        author_id, model, prompt_tokens, completion_tokens, created_at, edited_at, deleted_at, usage_imported, metadata)
    SELECT CASE WHEN m.parent_id IS NULL THEN fresh.root ELSE gen_random_uuid() END, m.tenant_id, $3, fresh.root,
           m.parent_id, m.depth, m.path, m.child_count, m.role, m.content, m.author_id, m.model, m.prompt_tokens,
           m.completion_tokens, m.created_at, m.edited_at, m.deleted_at, m.usage_imported, m.metadata
    FROM message m, fresh WHERE m.tenant_id = $1 AND m.root_id = $2 ORDER BY m.seq"""


async def run(dsn: str, caller: Caller, nodes: int, rounds: int) -> None:
    principal = Principal(caller.tenant_id, caller.user_id, Role.ADMIN, None)
    settings = Settings(database_url=dsn)
    db = await Pool.connect(dsn, 1, 2)
    try:
        conversation = await conversations.create(db, settings, principal, ConversationFields(title="bench"))
        root = await threads.start_thread(db, settings, principal, conversation["id"], MessageDraft("root"))
        await asyncio.to_thread(seed_tree, dsn, caller, encode_id(Kind.MESSAGE, root["id"]), nodes)
        async with db.transaction() as tx:
            await tx.execute("ANALYZE message")
            deepest = await tx.fetchval(
                "SELECT id FROM message WHERE root_id = $1 ORDER BY depth DESC, seq LIMIT 1", root["id"]
            )
            middle = await tx.fetchval(
                "SELECT id FROM message WHERE root_id = $1 AND depth = 2 ORDER BY seq LIMIT 1", root["id"]
            )
        fork_times: list[float] = []
        raw_times: list[float] = []

        async def fork_whole() -> None:
            start = time.perf_counter()
            forked, _ = await forks.fork(db, settings, principal, root["id"], "THREAD", None)
            fork_times.append(time.perf_counter() - start)
            assert forked["message_count"] == nodes, forked["message_count"]

        async def raw_copy() -> None:
            target = await conversations.create(db, settings, principal, ConversationFields(title="raw"))
            start = time.perf_counter()
            async with db.transaction() as tx:
                copied = await tx.execute(RAW_COPY, caller.tenant_id, root["id"], target["id"])
            raw_times.append(time.perf_counter() - start)
            assert copied == f"INSERT 0 {nodes}", copied

        for n in range(rounds):  # alternating which goes first
            for step in (fork_whole, raw_copy) if n % 2 == 0 else (raw_copy, fork_whole):
                await step()
        others = {}
        for mode, message in (("BRANCH", middle), ("PATH_ONLY", deepest)):
            samples = []
            for _ in range(rounds):
                start = time.perf_counter()
                forked, _ = await forks.fork(db, settings, principal, message, mode, None)
                samples.append(time.perf_counter() - start)
            others[mode] = (statistics.median(samples), forked["message_count"])
    finally:
        await db.close()

    fork_ms = statistics.median(fork_times) * 1000
    raw_ms = statistics.median(raw_times) * 1000
    print(f"thread of {nodes} messages, {rounds} rounds (medians)")
    print(f"  conversationFork THREAD (service, one transaction): {fork_ms:.1f} ms")
    print(f"  raw INSERT ... SELECT of the same rows:             {raw_ms:.1f} ms")
    print(f"  ratio fork / raw: {fork_ms / raw_ms:.2f}x (target <= 2x)")
    for mode, (seconds, count) in others.items():
        print(f"  conversationFork {mode} ({count} messages): {seconds * 1000:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    database = Database()
    dsn = database.start()
    try:
        asyncio.run(run(dsn, create_tenant(dsn), args.nodes, args.rounds))
    finally:
        database.stop()


if __name__ == "__main__":
    main()
