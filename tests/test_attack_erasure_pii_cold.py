"""`threadline pii backfill` under a masking policy reaches cold conversations (tiers/): before, their messages
stayed unmasked inside the cold document, and the logged events carrying them (the event log is never moved
into documents) stayed unmasked too, replayed from cursor "0" to every reader."""

from __future__ import annotations

import json
import random
import string
from typing import Any

import asyncpg

from tests.api import create_conversation, join, reply, start_thread
from tests.harness import Actor, Loop
from tests.test_tiers import freeze
from tests.ws import CONVERSATION_EVENTS
from threadline.db import Database
from threadline.privacy.backfill import backfill
from threadline.tiers.document import decompress

MESSAGE = "query($id: ID!) { message(id: $id) { content } }"
STORAGE = "query($c: ID!) { conversation(id: $c) { storage { tier } } }"


async def _tables_holding(dsn: str, needle: str) -> list[str]:
    """Every table with a row whose text holds `needle`, cold documents read decompressed."""
    conn = await asyncpg.connect(dsn)
    try:
        tables = [
            r["t"]
            for r in await conn.fetch("SELECT tablename AS t FROM pg_tables WHERE schemaname = 'public'")
        ]
        found = [
            t
            for t in tables
            if await conn.fetchval(f'SELECT count(*) FROM "{t}" x WHERE x::text LIKE $1', f"%{needle}%")
        ]
        for row in await conn.fetch(
            "SELECT document, codec FROM conversation_tier WHERE document IS NOT NULL"
        ):
            if needle.encode() in decompress(bytes(row["document"]), row["codec"]):
                found.append("conversation_tier (document)")
        return sorted(found)
    finally:
        await conn.close()


def test_a_masking_backfill_masks_the_pii_of_cold_conversations_and_of_their_logged_events(
    admin: Actor, make_user: Any, ws: Any, loop: Loop, dsn: str
) -> None:
    email = "".join(random.choice(string.ascii_lowercase) for _ in range(10)) + "@example.com"
    reader = make_user(admin)
    conversation = create_conversation(admin, "support")
    join(admin, reader, conversation)
    root = start_thread(admin, conversation, f"write to me at {email} please")
    answer = reply(admin, root, "noted", "ASSISTANT")
    assert {"message", "stream_event"} <= set(loop.run(_tables_holding(dsn, email)))
    freeze(loop, dsn, admin)
    assert admin.client.ok(STORAGE, {"c": conversation})["conversation"]["storage"]["tier"] == "COLD"
    cold = loop.run(_tables_holding(dsn, email))
    assert "message" not in cold and {"conversation_tier (document)", "stream_event"} <= set(cold)

    assert admin.client.ok("mutation { tenantPiiPolicySet(policy: MASK_ON_WRITE) }")

    async def run_backfill() -> Any:
        db = await Database.connect(dsn, 1, 2)
        try:
            return await backfill(db)
        finally:
            await db.close()

    report = loop.run(run_backfill())
    assert loop.run(_tables_holding(dsn, email)) == []
    assert (report.restored, report.messages, report.masked) == (1, 2, 1)
    assert admin.client.ok(MESSAGE, {"id": root})["message"]["content"] == "write to me at [EMAIL] please"
    assert admin.client.ok(MESSAGE, {"id": answer})["message"]["content"] == "noted"

    # A reader replaying the log from its start gets the masked text only.
    client = ws(reader)
    client.subscribe(CONVERSATION_EVENTS, {"c": conversation, "s": "0"})
    replayed = []
    while not any(e["type"] == "thread.activity" for e in replayed):
        replayed += client.events(1)
    assert [e["type"] for e in replayed if e["type"].startswith("thread.")] == [
        "thread.new",
        "thread.activity",
    ]
    assert email not in json.dumps(replayed)
    assert "write to me at [EMAIL] please" in json.dumps(replayed)

    # Nothing is left to restore or scan.
    again = loop.run(run_backfill())
    assert (again.restored, again.messages) == (0, 0)
