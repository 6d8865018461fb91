"""conversationImport is all or nothing past planning too: a conversation the database refuses while it is being
stored refuses the whole input, new conversations and merges into earlier imports alike. Before, it answered
BAD_USER_INPUT "... the other N were imported" with those N written. conversationImportReport keeps importing
every conversation it can."""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import asyncpg
import pytest

from tests.harness import Actor, Loop
from tests.test_import_bulk import poisoned_messages, tenant_of
from tests.test_porting_import import IMPORT, IMPORT_REPORT, sql

READ = """query($c: ID!) { conversation(id: $c) { messages(first: 10) { edges { node { content } } } } }"""


def _claude(ident: str, *texts: str) -> dict[str, Any]:
    return {
        "uuid": ident,
        "name": ident,
        "chat_messages": [
            {"uuid": f"{ident}-{n}", "sender": "human" if n % 2 == 0 else "assistant", "text": text}
            for n, text in enumerate(texts)
        ],
    }


@pytest.fixture
def poison(loop: Loop, dsn: str) -> Iterator[None]:
    with poisoned_messages(loop, dsn):
        yield


PAUSE_KEY = 424_242_001


async def paused_import(
    dsn: str, call: Callable[[], Any], during: Callable[[asyncpg.Connection, int], Awaitable[Any]]
) -> tuple[Any, Any]:
    """`call()` (an import, in a thread) held at its first message whose text starts with 'pause' by a lock the test
    holds; `during(watcher, pid)` runs while it is held (pid: the import's backend), then the import goes on.
    Returns what `during` returned and what `call` did."""
    holder = await asyncpg.connect(dsn)
    watcher = await asyncpg.connect(dsn)
    try:
        await holder.execute(
            f"""CREATE FUNCTION test_atomic_pause() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN PERFORM pg_advisory_xact_lock({PAUSE_KEY}); RETURN NEW; END $$;
                CREATE TRIGGER test_atomic_pause BEFORE INSERT ON message FOR EACH ROW
                    WHEN (NEW.content LIKE 'pause%') EXECUTE FUNCTION test_atomic_pause()"""
        )
        await holder.execute("SELECT pg_advisory_lock($1)", PAUSE_KEY)
        running = asyncio.get_running_loop().run_in_executor(None, call)
        pid = None
        for _ in range(600):  # until the import waits on the lock (a bound, not a timing assertion)
            pid = await watcher.fetchval(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objid = $1 AND NOT granted",
                PAUSE_KEY,
            )
            if pid is not None:
                break
            await asyncio.sleep(0.1)
        assert pid is not None, "the import never reached its paused message"
        seen = await during(watcher, pid)
        await holder.execute("SELECT pg_advisory_unlock($1)", PAUSE_KEY)
        return seen, await running
    finally:
        await holder.execute("DROP TRIGGER IF EXISTS test_atomic_pause ON message")
        await holder.execute("DROP FUNCTION IF EXISTS test_atomic_pause()")
        await holder.close()
        await watcher.close()


def _stored(loop: Loop, dsn: str, admin: Actor, prefix: str) -> list[tuple[str, int]]:
    rows = sql(
        loop,
        dsn,
        """SELECT c.title, (SELECT count(*) FROM message m WHERE m.conversation_id = c.id) AS n
           FROM conversation c WHERE c.tenant_id = $1 AND c.title LIKE $2 ORDER BY c.title""",
        tenant_of(admin),
        f"{prefix}%",
    )
    return [(r["title"], r["n"]) for r in rows]


def test_a_conversation_the_database_refuses_refuses_the_whole_import(
    admin: Actor, loop: Loop, dsn: str, poison: None
) -> None:
    prefix = f"atomic-{uuid.uuid4()}"
    earlier = _claude(f"{prefix}-0", "a question", "an answer")
    (first,) = admin.client.ok(IMPORT, {"i": {"format": "CLAUDE", "data": [earlier]}})["conversationImport"]
    # The same conversation grown (a merge), a new one, and one the database refuses.
    data = [
        _claude(f"{prefix}-0", "a question", "an answer", "a follow-up"),
        _claude(f"{prefix}-1", "fine"),
        _claude(f"{prefix}-2", "also fine", "poison pill"),
        _claude(f"{prefix}-3", "fine too"),
    ]
    error = admin.client.error(IMPORT, {"i": {"format": "CLAUDE", "data": data}})
    assert error["extensions"]["code"] == "BAD_USER_INPUT", error
    assert error["message"].startswith(
        "1 conversation(s) could not be stored, so none was imported: item 2: "
    ), error
    assert "poisoned message" in error["message"], error
    assert [f["externalId"] for f in error["extensions"]["failures"]] == [f"{prefix}-2"]
    # Nothing of it stayed: no new conversation, and the earlier import was not merged into.
    assert _stored(loop, dsn, admin, prefix) == [(f"{prefix}-0", 2)]
    edges = admin.client.ok(READ, {"c": first["id"]})["conversation"]["messages"]["edges"]
    assert [e["node"]["content"] for e in edges] == ["a question", "an answer"]
    # The report variant imports what it can, and names the refused one.
    report = admin.client.ok(IMPORT_REPORT, {"i": {"format": "CLAUDE", "data": data}})[
        "conversationImportReport"
    ]
    assert (report["imported"], report["failed"]) == (2, 1), report
    assert _stored(loop, dsn, admin, prefix) == [(f"{prefix}-0", 3), (f"{prefix}-1", 1), (f"{prefix}-3", 1)]


def test_an_all_or_nothing_import_that_stores_everything_commits_it(
    admin: Actor, loop: Loop, dsn: str
) -> None:
    """The single transaction commits: every conversation of a multi-batch input is there, and its events went
    out (the conversations are listed and readable at once)."""
    prefix = f"whole-{uuid.uuid4()}"
    data = [_claude(f"{prefix}-{i:03}", f"question {i}", f"answer {i}") for i in range(100)]
    imported = admin.client.ok(IMPORT, {"i": {"format": "CLAUDE", "data": data}})["conversationImport"]
    assert len(imported) == 100
    assert _stored(loop, dsn, admin, prefix) == [(f"{prefix}-{i:03}", 2) for i in range(100)]


def test_an_all_or_nothing_import_holds_no_tenant_wide_lock_of_its_words_until_it_commits(
    admin: Actor, loop: Loop, dsn: str
) -> None:
    """The search words of a batch are committed before the batch, outside the import's transaction, as for a
    report import: left inside, every live write in the tenant adding the same word waited for the whole import
    (found in review). Checked while the import is held inside its second batch by a lock the test holds."""
    prefix = f"words-{uuid.uuid4()}"
    word = "zq" + uuid.uuid4().hex[:12]
    data = [_claude(f"{prefix}-{i:03}", f"question {i}") for i in range(60)]
    data[0]["name"] = f"{word} first"
    data[55] = _claude(f"{prefix}-055", "pause here")  # in the second batch (50 a batch)

    async def words(watcher: asyncpg.Connection, pid: int) -> Any:
        return await watcher.fetchval(
            "SELECT count(*) FROM search_term WHERE tenant_id = $1 AND term = $2", tenant_of(admin), word
        )

    call = functools.partial(admin.client.raw, IMPORT, {"i": {"format": "CLAUDE", "data": data}})

    seen, body = loop.run(paused_import(dsn, call, words))
    assert seen == 1  # committed while the import is still open
    assert "errors" not in body, body
    assert len(body["data"]["conversationImport"]) == 60
