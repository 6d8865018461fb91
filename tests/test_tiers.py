"""Storage tiers (issue 20 item 4): a conversation goes cold (one compressed document, its rows gone from the
hot tables), keeps its metadata, counts and title search hot, reads back identical (the Threadline export, byte
for byte), comes back before a write, once under concurrent readers, and erasure reaches into it. Through the
API, and at the SQL level."""

from __future__ import annotations

import asyncio
import json
import uuid
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import asyncpg

from tests.api import create_conversation, join, reply, start_thread
from tests.harness import Actor, Loop, ServerThread
from threadline.ids import Kind, decode_id
from threadline.tiers.document import as_json

EXPORT = "query($id: ID!) { conversationExport(id: $id) }"
EDIT = "mutation($m: ID!, $x: String!) { messageEdit(id: $m, content: $x) { id } }"
FEEDBACK = """mutation($m: ID!, $r: FeedbackRating, $c: String) {
  messageFeedbackSet(messageId: $m, rating: $r, comment: $c) { id } }"""
BOOKMARK = "mutation($m: ID!, $n: String) { bookmarkSet(messageId: $m, note: $n) { id } }"
ARCHIVE = "mutation($id: ID!) { conversationArchive(id: $id) { status } }"
SUMMARY = """query($id: ID!) { conversation(id: $id) { title status messageCount tokenCount
  threads(first: 10) { totalCount edges { node { replyCount root { id content } } } } } }"""
LIST = "{ conversations(first: 50) { edges { node { id title messageCount tokenCount status } } } }"
SEARCH = """query($q: String!) { search(input: {query: $q}) { totalCount edges { node {
  conversation { id title messageCount } } } } }"""
TREE = "query($r: ID!) { threadTree(rootId: $r) { totalCount nodes { id content parentId depth } } }"
MESSAGE = "query($id: ID!) { message(id: $id) { id content conversationId } }"
ERASE = "mutation($u: ID!) { userErase(userId: $u) { userId } }"
REPLY_MUTATION = "mutation($p: ID!, $i: MessageInput!) { messageReply(parentId: $p, input: $i) { id } }"
POLICY = "mutation($d: Int) { tierPolicySet(coldAfterDays: $d) { coldAfterDays } }"
STORAGE = "{ tierStorage { conversations rows hotBytes coldBytes savedBytes } }"


def uid(public_id: str, kind: Kind) -> uuid.UUID:
    return decode_id(public_id, kind)


def freeze(loop: Loop, dsn: str, actor: Actor) -> list[uuid.UUID]:
    """Passes of the background job over the actor's tenant, everything idle counting as old enough, until every
    candidate was looked at: a pass skips conversations another transaction holds (SKIP LOCKED), such as the
    server's enrichment jobs, so it goes on until no candidate is locked and a pass freezes nothing more."""
    from threadline.db import Database
    from threadline.tiers.job import run_pass

    tenant = uid(actor.tenant_id, Kind.TENANT)
    candidates = """SELECT c.id FROM conversation c WHERE c.tenant_id = $1 AND c.status IN ('ACTIVE', 'ARCHIVED')
        AND NOT EXISTS (SELECT 1 FROM conversation_tier t WHERE t.conversation_id = c.id AND t.document IS NOT NULL)"""

    busy = """SELECT to_regclass('enrichment_job') IS NOT NULL AND EXISTS (SELECT 1 FROM enrichment_job
        WHERE tenant_id = $1 AND (status = 'RUNNING' OR (status = 'QUEUED' AND run_after <= now())))"""

    async def work() -> list[uuid.UUID]:
        db = await Database.connect(dsn, 1, 2)
        frozen: list[uuid.UUID] = []
        try:
            # The server's enrichment jobs read (so restore) the conversations they title: let those due finish.
            for _ in range(100):
                if not await db.fetchval(busy, tenant):
                    break
                await asyncio.sleep(0.1)
            for _ in range(300):
                done = await run_pass(db, tenant_id=tenant, older_than_days=0)
                frozen.extend(f.conversation_id for f in done.frozen)
                async with db.transaction() as tx:
                    waiting = len(await tx.fetch(candidates, tenant))
                    free = len(await tx.fetch(candidates + " FOR UPDATE SKIP LOCKED", tenant))
                if not done.frozen and waiting == free:
                    return frozen
                await asyncio.sleep(0.1)
            raise AssertionError("conversations stayed locked")
        finally:
            await db.close()

    return loop.run(work())


def sql(loop: Loop, dsn: str, query: str, *args: Any) -> list[asyncpg.Record]:
    async def work() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(dsn)
        try:
            return list(await conn.fetch(query, *args))
        finally:
            await conn.close()

    return loop.run(work())


def hot_rows(loop: Loop, dsn: str, conversation_id: uuid.UUID) -> dict[str, int]:
    """Rows of the conversation in the hot tables that move (messages, threads, runs and what hangs off them)."""
    rows = sql(
        loop,
        dsn,
        """SELECT (SELECT count(*) FROM message WHERE conversation_id = $1) AS message,
                  (SELECT count(*) FROM thread WHERE conversation_id = $1) AS thread,
                  (SELECT count(*) FROM run WHERE conversation_id = $1) AS run,
                  (SELECT count(*) FROM message_edit e JOIN message m ON m.id = e.message_id
                     WHERE m.conversation_id = $1) AS message_edit,
                  (SELECT count(*) FROM message_feedback f JOIN message m ON m.id = f.message_id
                     WHERE m.conversation_id = $1) AS message_feedback,
                  (SELECT count(*) FROM message_bookmark WHERE conversation_id = $1) AS message_bookmark""",
        conversation_id,
    )
    return dict(rows[0])


def cold_document(loop: Loop, dsn: str, conversation_id: uuid.UUID) -> dict[str, Any] | None:
    rows = sql(
        loop, dsn, "SELECT document, codec FROM conversation_tier WHERE conversation_id = $1", conversation_id
    )
    if not rows or rows[0]["document"] is None:
        return None
    assert rows[0]["codec"] in ("zlib", "lzma")
    return as_json(rows[0]["document"], rows[0]["codec"])


def export(actor: Actor, conversation_id: str) -> bytes:
    """The Threadline export, its export time blanked (the one value that differs from call to call)."""
    document = actor.client.ok(EXPORT, {"id": conversation_id})["conversationExport"]
    document["metadata"]["exported_at"] = None
    return json.dumps(document, sort_keys=True).encode()


def busy_conversation(owner: Actor, member: Actor, title: str) -> tuple[str, list[str]]:
    """A conversation with two threads, replies by two users, an edit, feedback and a bookmark."""
    conversation = create_conversation(owner, title)
    join(owner, member, conversation)
    first = start_thread(owner, conversation, "first question about glaciers")
    answer = reply(member, first, "an answer about ice")
    deeper = reply(owner, answer, "a follow-up")
    second = start_thread(member, conversation, "second thread by the member")
    reply(owner, second, "owner replies")
    owner.client.ok(EDIT, {"m": deeper, "x": "a follow-up, edited"})
    member.client.ok(FEEDBACK, {"m": answer, "r": "UP", "c": "good"})
    owner.client.ok(BOOKMARK, {"m": answer, "n": "keep this"})
    return conversation, [first, answer, deeper, second]


def test_a_cold_conversation_reads_back_identical_and_keeps_metadata_counts_and_title_search_hot(
    admin: Actor, make_user: Any, loop: Loop, dsn: str
) -> None:
    member = make_user(admin)
    conversation, messages = busy_conversation(admin, member, "Glacier survey notes")
    other = create_conversation(admin, "Something else")
    start_thread(admin, other, "stays hot? no: everything idle goes")
    admin.client.ok(ARCHIVE, {"id": conversation})
    before = export(admin, conversation)
    summary = admin.client.ok(SUMMARY, {"id": conversation})
    listed = admin.client.ok(LIST)
    cid = uid(conversation, Kind.CONVERSATION)
    hot = hot_rows(loop, dsn, cid)
    assert hot == {
        "message": 5,
        "thread": 2,
        "run": 0,
        "message_edit": 1,
        "message_feedback": 1,
        "message_bookmark": 1,
    }

    frozen = freeze(loop, dsn, admin)
    assert set(frozen) == {cid, uid(other, Kind.CONVERSATION)}
    # At the SQL level: every row gone from the hot tables, all of them inside one compressed document.
    assert hot_rows(loop, dsn, cid) == dict.fromkeys(hot, 0)
    document = cold_document(loop, dsn, cid)
    assert document is not None
    tables = document["tables"]
    assert {t: len(tables.get(t, [])) for t in hot} == hot
    assert "a follow-up, edited" in {m["content"] for m in tables["message"]}
    assert [e["content"] for e in tables["message_edit"]] == ["a follow-up"]
    assert "search_vector" not in tables["message"][0]
    # Derived rows are not stored: the embedding queue (and vectors) are redone when the messages come back.
    assert "embedding_queue" not in tables and "message_embedding" not in tables
    queued = "SELECT count(*) AS n FROM embedding_queue q JOIN message m ON m.id = q.message_id WHERE m.conversation_id = $1"

    # Hot while cold: the list, counts and title search, without bringing the content back.
    assert admin.client.ok(LIST) == listed
    found = admin.client.ok(SEARCH, {"q": "glacier survey"})["search"]
    assert [e["node"]["conversation"]["id"] for e in found["edges"]] == [conversation]
    assert found["edges"][0]["node"]["conversation"]["messageCount"] == 5
    assert cold_document(loop, dsn, cid) is not None
    stored = sql(
        loop,
        dsn,
        "SELECT hot_bytes, cold_bytes, row_count FROM conversation_tier WHERE conversation_id = $1",
        cid,
    )
    assert stored[0]["row_count"] == sum(len(rows) for rows in tables.values())
    assert 0 < stored[0]["cold_bytes"]
    # The users' current leaves (which branch each is on) went along too.
    assert len(tables["thread_current_leaf"]) >= 1

    # Any read brings it back: identical, byte for byte.
    assert export(admin, conversation) == before
    assert cold_document(loop, dsn, cid) is None
    assert hot_rows(loop, dsn, cid) == hot
    assert sql(loop, dsn, queued, cid)[0]["n"] == 5
    assert admin.client.ok(SUMMARY, {"id": conversation}) == summary
    # Restored rows are searchable again (the full-text vectors are rebuilt on the way back).
    hits = admin.client.ok(SEARCH, {"q": "glaciers"})["search"]
    assert [e["node"]["conversation"]["id"] for e in hits["edges"]] == [conversation]
    # The restore is remembered (the pass leaves it hot for the policy's days after it).
    restored = sql(
        loop, dsn, "SELECT restored_at, document FROM conversation_tier WHERE conversation_id = $1", cid
    )
    assert restored[0]["restored_at"] is not None and restored[0]["document"] is None


def test_a_message_or_thread_read_by_id_brings_its_conversation_back(
    admin: Actor, make_user: Any, loop: Loop, dsn: str
) -> None:
    member = make_user(admin)
    conversation, (first, answer, deeper, second) = busy_conversation(admin, member, "by id")
    tree = admin.client.ok(TREE, {"r": first})
    freeze(loop, dsn, admin)
    cid = uid(conversation, Kind.CONVERSATION)
    assert cold_document(loop, dsn, cid) is not None
    # The reader is a member: a message id alone is enough to find it.
    assert member.client.ok(MESSAGE, {"id": answer})["message"] == {
        "id": answer,
        "content": "an answer about ice",
        "conversationId": conversation,
    }
    assert cold_document(loop, dsn, cid) is None
    freeze(loop, dsn, admin)
    assert cold_document(loop, dsn, cid) is not None
    assert admin.client.ok(TREE, {"r": first}) == tree


def test_a_stranger_gets_not_found_and_the_conversation_stays_cold(
    admin: Actor, make_user: Any, make_tenant: Any, loop: Loop, dsn: str
) -> None:
    member = make_user(admin)
    conversation, (first, *_rest) = busy_conversation(admin, member, "private")
    outsider = make_user(admin)
    other_tenant = make_tenant()
    freeze(loop, dsn, admin)
    cid = uid(conversation, Kind.CONVERSATION)
    assert outsider.client.code(SUMMARY, {"id": conversation}) == "NOT_FOUND"
    assert other_tenant.client.code(SUMMARY, {"id": conversation}) == "NOT_FOUND"
    assert other_tenant.client.code(TREE, {"r": first}) == "NOT_FOUND"
    assert cold_document(loop, dsn, cid) is not None


def test_writes_to_a_cold_conversation_restore_it_first(
    admin: Actor, make_user: Any, loop: Loop, dsn: str
) -> None:
    member = make_user(admin)
    conversation, (first, answer, deeper, second) = busy_conversation(admin, member, "writes")
    cid = uid(conversation, Kind.CONVERSATION)

    freeze(loop, dsn, admin)
    late = reply(member, answer, "a reply to a cold message")  # by message id
    assert cold_document(loop, dsn, cid) is None
    nodes = admin.client.ok(TREE, {"r": first})["threadTree"]
    assert nodes["totalCount"] == 4
    assert [n["content"] for n in nodes["nodes"]] == [
        "first question about glaciers",
        "an answer about ice",
        "a follow-up, edited",
        "a reply to a cold message",
    ]
    assert nodes["nodes"][3]["id"] == late

    sql(loop, dsn, "UPDATE conversation_tier SET restored_at = NULL WHERE conversation_id = $1", cid)
    freeze(loop, dsn, admin)
    assert cold_document(loop, dsn, cid) is not None
    third = start_thread(admin, conversation, "a new thread in a cold conversation")  # by conversation id
    assert cold_document(loop, dsn, cid) is None
    summary = admin.client.ok(SUMMARY, {"id": conversation})["conversation"]
    assert summary["messageCount"] == 7
    assert summary["threads"]["totalCount"] == 3
    assert third in {e["node"]["root"]["id"] for e in summary["threads"]["edges"]}
    assert hot_rows(loop, dsn, cid)["message"] == 7


def test_concurrent_readers_restore_a_cold_conversation_once(
    admin: Actor, make_user: Any, loop: Loop, dsn: str, server: ServerThread
) -> None:
    member = make_user(admin)
    conversation, (first, *_rest) = busy_conversation(admin, member, "crowd")
    before = export(admin, conversation)
    cid = uid(conversation, Kind.CONVERSATION)
    freeze(loop, dsn, admin)

    def read(n: int) -> Any:
        actor = admin if n % 2 else member
        if n % 3 == 0:
            return actor.client.ok(TREE, {"r": first})["threadTree"]["totalCount"]
        return actor.client.ok(SUMMARY, {"id": conversation})["conversation"]["messageCount"]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(read, range(16)))
    assert results == [3 if n % 3 == 0 else 5 for n in range(16)]
    assert hot_rows(loop, dsn, cid)["message"] == 5  # no duplicate, nothing lost
    assert export(admin, conversation) == before


def test_erasing_a_user_removes_their_messages_from_a_cold_conversation(
    admin: Actor, make_user: Any, loop: Loop, dsn: str
) -> None:
    member = make_user(admin)
    marker = "secret-marker-" + uuid.uuid4().hex
    conversation = create_conversation(admin, "erasure")
    join(admin, member, conversation)
    root = start_thread(admin, conversation, "question")
    said = reply(member, root, f"the member says {marker}")
    member.client.ok(EDIT, {"m": said, "x": f"edited, still {marker}"})
    member.client.ok(FEEDBACK, {"m": root, "r": "DOWN", "c": f"comment {marker}"})
    cid = uid(conversation, Kind.CONVERSATION)
    freeze(loop, dsn, admin)
    document = cold_document(loop, dsn, cid)
    assert document is not None and marker in json.dumps(document)
    member_id = uid(member.user_id, Kind.USER)
    named = sql(loop, dsn, "SELECT user_ids FROM conversation_tier WHERE conversation_id = $1", cid)
    assert member_id in named[0]["user_ids"]

    admin.client.ok(ERASE, {"u": member.user_id})

    # Nowhere: not in a document (it was brought back, then redacted), not in any table.
    for row in sql(loop, dsn, "SELECT document FROM conversation_tier WHERE document IS NOT NULL"):
        assert marker.encode() not in zlib.decompress(row["document"])
    tables = [
        r["tablename"] for r in sql(loop, dsn, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    ]
    for table in tables:
        hits = sql(loop, dsn, f'SELECT count(*) AS n FROM "{table}" t WHERE t::text LIKE $1', f"%{marker}%")
        assert hits[0]["n"] == 0, table
    # And when it goes cold again, the document holds the tombstone, not the text, nor the user.
    sql(loop, dsn, "UPDATE conversation_tier SET restored_at = NULL WHERE conversation_id = $1", cid)
    freeze(loop, dsn, admin)
    document = cold_document(loop, dsn, cid)
    assert document is not None
    text = json.dumps(document)
    assert marker not in text and str(member_id) not in text
    assert len(document["tables"]["message"]) == 2


def test_deleting_a_cold_conversation_deletes_its_document(
    admin: Actor, make_user: Any, loop: Loop, dsn: str
) -> None:
    owner = make_user(admin)
    conversation = create_conversation(owner, "owned by the erased")
    start_thread(owner, conversation, "words of the owner")
    cid = uid(conversation, Kind.CONVERSATION)
    freeze(loop, dsn, admin)
    assert cold_document(loop, dsn, cid) is not None
    admin.client.ok(ERASE, {"u": owner.user_id})  # their conversations are hard-deleted
    assert (
        sql(loop, dsn, "SELECT count(*) AS n FROM conversation_tier WHERE conversation_id = $1", cid)[0]["n"]
        == 0
    )


def test_a_conversation_something_outside_refers_into_stays_hot(admin: Actor, loop: Loop, dsn: str) -> None:
    conversation = create_conversation(admin, "shared")
    root = start_thread(admin, conversation, "shared words")
    admin.client.ok("mutation($c: ID!) { shareLinkCreate(conversationId: $c) { id } }", {"c": conversation})
    forked = create_conversation(admin, "source of a fork")
    source = start_thread(admin, forked, "forked from here")
    admin.client.ok("mutation($m: ID!) { conversationFork(messageId: $m) { id } }", {"m": source})
    frozen = freeze(loop, dsn, admin)
    assert uid(conversation, Kind.CONVERSATION) not in frozen
    assert uid(forked, Kind.CONVERSATION) not in frozen
    assert admin.client.ok(TREE, {"r": root})["threadTree"]["totalCount"] == 1


def test_the_tenant_policy_decides_what_goes_cold_and_storage_saved_is_reported(
    admin: Actor, make_user: Any, loop: Loop, dsn: str
) -> None:
    from threadline.db import Database
    from threadline.tiers.job import run_pass

    member = make_user(admin)
    assert member.client.code(POLICY, {"d": 5}) == "FORBIDDEN"
    assert member.client.code(STORAGE) == "FORBIDDEN"
    error = admin.client.error(POLICY, {"d": 0})
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert admin.client.ok(POLICY, {"d": 30}) == {"tierPolicySet": {"coldAfterDays": 30}}
    assert admin.client.ok("{ tierPolicy { coldAfterDays } }") == {"tierPolicy": {"coldAfterDays": 30}}
    idle = create_conversation(admin, "idle for long")
    start_thread(admin, idle, "old words " * 50)
    archived = create_conversation(admin, "archived long ago")
    start_thread(admin, archived, "archived words")
    admin.client.ok(ARCHIVE, {"id": archived})
    recent = create_conversation(admin, "recent")
    start_thread(admin, recent, "fresh words")

    def one_pass() -> list[uuid.UUID]:
        async def work() -> list[uuid.UUID]:
            db = await Database.connect(dsn, 1, 2)
            try:
                return [f.conversation_id for f in (await run_pass(db, batch=1)).frozen]
            finally:
                await db.close()

        return loop.run(work())

    assert one_pass() == []  # nothing is 30 days old
    sql(
        loop,
        dsn,
        "UPDATE conversation SET last_activity_at = now() - interval '31 days' WHERE id = $1",
        uid(idle, Kind.CONVERSATION),
    )
    sql(
        loop,
        dsn,
        "UPDATE conversation SET updated_at = now() - interval '31 days' WHERE id = $1",
        uid(archived, Kind.CONVERSATION),
    )
    assert set(one_pass()) == {uid(idle, Kind.CONVERSATION), uid(archived, Kind.CONVERSATION)}
    assert one_pass() == []

    stored = sql(
        loop,
        dsn,
        """SELECT count(*) AS n, sum(row_count) AS rows, sum(hot_bytes) AS hot, sum(octet_length(document)) AS cold
           FROM conversation_tier WHERE document IS NOT NULL""",
    )[0]
    expected = {
        "conversations": 2,
        "rows": stored["rows"],
        "hotBytes": float(stored["hot"]),
        "coldBytes": float(stored["cold"]),
        "savedBytes": float(stored["hot"] - stored["cold"]),
    }
    assert admin.client.ok(STORAGE) == {"tierStorage": expected}
    assert admin.client.ok(
        "{ insights { coldStorage { conversations rows hotBytes coldBytes savedBytes } } }"
    ) == {"insights": {"coldStorage": expected}}
    assert member.client.ok("{ insights { coldStorage { conversations } } }") == {
        "insights": {"coldStorage": None}
    }
    assert admin.client.ok(POLICY, {"d": None}) == {"tierPolicySet": {"coldAfterDays": None}}


def test_threadline_tiers_run_report_and_restore_from_the_command_line(
    admin: Actor, loop: Loop, dsn: str
) -> None:
    import os
    import subprocess
    import sys

    conversation = create_conversation(admin, "for the command line")
    root = start_thread(admin, conversation, "words " * 100)
    reply(admin, root, "more words")
    env = {**os.environ, "DATABASE_URL": dsn}

    def cli(*args: str) -> dict[str, Any]:
        done = subprocess.run(
            [sys.executable, "-m", "threadline.cli", "tiers", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        loaded: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return loaded

    ran = cli("run", "--tenant", admin.tenant_id, "--older-than-days", "0")
    assert ran["frozen"] == 1 and ran["failed"] == 0 and 0 < ran["coldBytes"]
    report = cli("report", "--tenant", admin.tenant_id)
    assert report["conversations"] == 1 and report["rows"] > 2
    assert report["savedBytes"] == report["hotBytes"] - report["coldBytes"]
    assert cli("restore", conversation) == {"restored": True}
    assert cli("restore", conversation) == {"restored": False}
    assert cli("report", "--tenant", admin.tenant_id)["conversations"] == 0
    assert hot_rows(loop, dsn, uid(conversation, Kind.CONVERSATION))["message"] == 2


def test_a_conversation_list_reading_content_brings_cold_ones_back(
    admin: Actor, make_user: Any, loop: Loop, dsn: str
) -> None:
    member = make_user(admin)
    conversation, (first, *_rest) = busy_conversation(admin, member, "listed")
    empty = create_conversation(admin, "no messages")
    nested = """{ conversations(first: 10) { edges { node { title messageCount
      threads(first: 5) { totalCount edges { node { replyCount root { content } } } }
      messages(first: 10) { totalCount nodes { content } } runs(first: 5) { totalCount } } } } }"""
    before = admin.client.ok(nested)
    frozen = freeze(loop, dsn, admin)
    assert frozen == [uid(conversation, Kind.CONVERSATION)]  # an empty conversation has nothing to move
    assert admin.client.ok(nested) == before
    assert cold_document(loop, dsn, uid(conversation, Kind.CONVERSATION)) is None
    assert cold_document(loop, dsn, uid(empty, Kind.CONVERSATION)) is None
    listed = before["conversations"]["edges"]
    assert {e["node"]["title"]: e["node"]["messages"]["totalCount"] for e in listed} == {
        "listed": 5,
        "no messages": 0,
    }


def test_a_list_brings_back_a_bounded_number_of_cold_conversations_per_request(
    admin: Actor, loop: Loop, dsn: str
) -> None:
    from threadline.tiers.schema import RESTORES_PER_REQUEST

    for n in range(RESTORES_PER_REQUEST + 2):
        start_thread(admin, create_conversation(admin, f"cold {n}"), f"words of {n}")
    assert len(freeze(loop, dsn, admin)) == RESTORES_PER_REQUEST + 2
    nested = """{ conversations(first: 20) { edges { node { title messages(first: 5) { nodes { content } }
      threads(first: 5) { totalCount } runs(first: 5) { totalCount } } } } }"""
    error = admin.client.error(nested)
    assert error["extensions"]["code"] == "RATE_LIMITED" and error["extensions"]["retryAfter"] == 1
    still = sql(loop, dsn, "SELECT count(*) AS n FROM conversation_tier WHERE document IS NOT NULL")[0]["n"]
    assert still == 2  # the first ones came back; a retry brings the rest
    listed = admin.client.ok(nested)["conversations"]["edges"]
    assert sorted(e["node"]["messages"]["nodes"][0]["content"] for e in listed) == sorted(
        f"words of {n}" for n in range(RESTORES_PER_REQUEST + 2)
    )


def test_anonymising_a_user_masks_their_messages_in_a_cold_conversation(
    admin: Actor, make_user: Any, loop: Loop, dsn: str
) -> None:
    member = make_user(admin)
    email = f"someone.{uuid.uuid4().hex[:8]}@example.org"
    conversation = create_conversation(admin, "anonymise")
    join(admin, member, conversation)
    root = start_thread(admin, conversation, "question")
    reply(member, root, f"write to {email} today")
    cid = uid(conversation, Kind.CONVERSATION)
    freeze(loop, dsn, admin)
    assert email in json.dumps(cold_document(loop, dsn, cid))
    done = admin.client.ok(
        "mutation($u: ID!) { userAnonymise(userId: $u) { messages messagesMasked } }", {"u": member.user_id}
    )
    assert done["userAnonymise"] == {"messages": 1, "messagesMasked": 1}
    assert cold_document(loop, dsn, cid) is None
    contents = [
        r["content"] for r in sql(loop, dsn, "SELECT content FROM message WHERE conversation_id = $1", cid)
    ]
    assert sorted(contents) == ["question", "write to [EMAIL] today"]
    for row in sql(loop, dsn, "SELECT document FROM conversation_tier WHERE document IS NOT NULL"):
        assert email.encode() not in zlib.decompress(row["document"])


def test_runs_of_a_cold_conversation_read_back_by_id_and_a_new_run_restores_first(
    admin: Actor, make_user: Any, loop: Loop, dsn: str
) -> None:
    from tests.test_runs_support import create_run, on, read_run, runs_server, settle, wait_for

    server = runs_server(dsn, run_workers=1, echo_delay_seconds=0.0)
    server.start()
    try:
        owner = on(server, admin)
        conversation = create_conversation(owner, "runs")
        root = start_thread(owner, conversation, "hello there")
        done = wait_for(owner, create_run(owner, root)["id"])
        assert done["status"] == "COMPLETED" and done["output"]["content"]
        cid = uid(conversation, Kind.CONVERSATION)
        assert freeze(loop, dsn, admin) == [cid]
        tables = (cold_document(loop, dsn, cid) or {})["tables"]
        assert len(tables["run"]) == 1 and len(tables["run_step"]) >= 1 and len(tables["message"]) == 2
        assert read_run(owner, done["id"]) == done  # by the run's id: back, identical
        assert cold_document(loop, dsn, cid) is None

        sql(loop, dsn, "UPDATE conversation_tier SET restored_at = NULL WHERE conversation_id = $1", cid)
        assert freeze(loop, dsn, admin) == [cid]
        again = wait_for(owner, create_run(owner, root)["id"])  # runCreate on a cold message
        assert again["status"] == "COMPLETED" and again["message"] == {"id": root}
        assert hot_rows(loop, dsn, cid)["run"] == 2
        settle(loop, dsn, server.app.state.services.settings.run_queue)

        # A stranger of the tenant who knows the ids learns nothing (a lookup by id restores first).
        sql(loop, dsn, "UPDATE conversation_tier SET restored_at = NULL WHERE conversation_id = $1", cid)
        assert freeze(loop, dsn, admin) == [cid]
        stranger = make_user(admin)
        run_query = "query($id: ID!) { run(id: $id) { id } }"
        assert stranger.client.code(run_query, {"id": done["id"]}) == "NOT_FOUND"
        assert stranger.client.code(MESSAGE, {"id": root}) == "NOT_FOUND"
    finally:
        server.stop()


def deepen(loop: Loop, dsn: str, actor: Actor) -> int:
    """One pass that also moves every cold document of the tenant to deep storage."""
    from threadline.db import Database
    from threadline.tiers.job import run_pass

    async def work() -> int:
        db = await Database.connect(dsn, 1, 2)
        try:
            done = await run_pass(
                db, tenant_id=uid(actor.tenant_id, Kind.TENANT), older_than_days=0, deep_after_days=0
            )
            return done.deepened
        finally:
            await db.close()

    return loop.run(work())


STORED = "query($id: ID!) { conversation(id: $id) { title status messageCount storage { tier restore { state } } } }"
RESTORE = """mutation($id: ID!) { conversationRestore(id: $id) { status messageCount
  storage { tier restore { state rowsDone rowsTotal } } } }"""


def test_deep_storage_is_read_back_only_through_conversation_restore_which_reports_progress(
    admin: Actor, make_user: Any, loop: Loop, dsn: str
) -> None:
    member = make_user(admin)
    assert admin.client.ok("mutation { tierDeepPolicySet(deepAfterDays: 90) { deepAfterDays } }") == {
        "tierDeepPolicySet": {"deepAfterDays": 90}
    }
    assert (
        member.client.code("mutation { tierDeepPolicySet(deepAfterDays: 90) { deepAfterDays } }")
        == "FORBIDDEN"
    )
    conversation, (first, answer, *_rest) = busy_conversation(admin, member, "deep")
    before = export(admin, conversation)
    cid = uid(conversation, Kind.CONVERSATION)
    assert admin.client.ok(STORED, {"id": conversation})["conversation"]["storage"] == {
        "tier": "HOT",
        "restore": None,
    }
    freeze(loop, dsn, admin)
    assert admin.client.ok(STORED, {"id": conversation})["conversation"]["storage"]["tier"] == "COLD"
    assert deepen(loop, dsn, admin) == 1
    stored = sql(
        loop, dsn, "SELECT codec, deep, row_count FROM conversation_tier WHERE conversation_id = $1", cid
    )[0]
    assert stored["codec"] == "lzma" and stored["deep"] is True

    # Metadata stays readable; content is CONFLICT, by every path, and nothing comes back.
    assert admin.client.ok(STORED, {"id": conversation})["conversation"] == {
        "title": "deep",
        "status": "ACTIVE",
        "messageCount": 5,
        "storage": {"tier": "DEEP", "restore": None},
    }
    assert admin.client.code(SUMMARY, {"id": conversation}) == "CONFLICT"
    assert member.client.code(TREE, {"r": first}) == "CONFLICT"
    assert member.client.code(MESSAGE, {"id": answer}) == "CONFLICT"
    assert member.client.code(REPLY_MUTATION, {"p": answer, "i": {"content": "late"}}) == "CONFLICT"
    assert admin.client.code(EXPORT, {"id": conversation}) == "CONFLICT"
    assert member.client.code(RESTORE, {"id": conversation}) == "FORBIDDEN"  # owner or admin
    assert cold_document(loop, dsn, cid) is not None

    restored = admin.client.ok(RESTORE, {"id": conversation})["conversationRestore"]
    rows = stored["row_count"]
    assert restored == {
        "status": "ACTIVE",
        "messageCount": 5,
        "storage": {"tier": "HOT", "restore": {"state": "DONE", "rowsDone": rows, "rowsTotal": rows}},
    }
    assert export(admin, conversation) == before
    assert (
        admin.client.code(RESTORE, {"id": conversation}) == "CONFLICT"
    )  # ACTIVE and hot: nothing to restore

    # An archived conversation in deep storage: conversationRestore brings back both its content and its status.
    admin.client.ok(ARCHIVE, {"id": conversation})
    sql(loop, dsn, "UPDATE conversation_tier SET restored_at = NULL WHERE conversation_id = $1", cid)
    freeze(loop, dsn, admin)
    assert deepen(loop, dsn, admin) == 1
    assert admin.client.ok(RESTORE, {"id": conversation})["conversationRestore"]["status"] == "ACTIVE"
    assert hot_rows(loop, dsn, cid)["message"] == 5

    # Erasure reaches into deep storage without asking.
    sql(loop, dsn, "UPDATE conversation_tier SET restored_at = NULL WHERE conversation_id = $1", cid)
    freeze(loop, dsn, admin)
    assert deepen(loop, dsn, admin) == 1
    admin.client.ok(ERASE, {"u": member.user_id})
    contents = {
        r["content"] for r in sql(loop, dsn, "SELECT content FROM message WHERE conversation_id = $1", cid)
    }
    assert "an answer about ice" not in contents and "second thread by the member" not in contents


def test_a_restore_from_deep_storage_shows_its_progress_outside_its_transaction_and_nothing_else(
    admin: Actor, make_user: Any, loop: Loop, dsn: str, monkeypatch: Any
) -> None:
    from threadline.db import Database
    from threadline.tiers import repository as tier_repo
    from threadline.tiers import service as tier_service

    member = make_user(admin)
    conversation, _ = busy_conversation(admin, member, "progress")
    cid = uid(conversation, Kind.CONVERSATION)
    tenant = uid(admin.tenant_id, Kind.TENANT)
    freeze(loop, dsn, admin)
    assert deepen(loop, dsn, admin) == 1
    total = sql(loop, dsn, "SELECT row_count FROM conversation_tier WHERE conversation_id = $1", cid)[0][
        "row_count"
    ]
    monkeypatch.setattr(tier_service, "PROGRESS_BATCH", 2)
    seen: list[tuple[str, int, int, int]] = []
    insert_rows = tier_repo.insert_rows

    async def watched(tx: Any, query: str, rows_json: str) -> int:
        """Each batch, then what another connection sees: the progress row, and the conversation's messages."""
        inserted = await insert_rows(tx, query, rows_json)
        conn = await asyncpg.connect(dsn)
        try:
            state = await conn.fetchrow(
                "SELECT state, rows_done, rows_total FROM tier_restore WHERE conversation_id = $1", cid
            )
            messages = await conn.fetchval("SELECT count(*) FROM message WHERE conversation_id = $1", cid)
        finally:
            await conn.close()
        seen.append((state["state"], state["rows_done"], state["rows_total"], messages))
        return inserted

    monkeypatch.setattr(tier_repo, "insert_rows", watched)

    async def work() -> bool:
        db = await Database.connect(dsn, 1, 3)
        try:
            return await tier_service.restore(db, tenant, cid, explicit=True)
        finally:
            await db.close()

    assert loop.run(work()) is True
    assert len(seen) >= 4
    assert {s[0] for s in seen} == {"RESTORING"} and {s[2] for s in seen} == {total}
    done = [s[1] for s in seen]
    assert done == sorted(done) and done[0] == 0 and done[-1] < total  # each read sees the step before it
    assert {s[3] for s in seen} == {0}  # the rows themselves appear only with the commit
    final = sql(
        loop, dsn, "SELECT state, rows_done, rows_total FROM tier_restore WHERE conversation_id = $1", cid
    )[0]
    assert dict(final) == {"state": "DONE", "rows_done": total, "rows_total": total}
    assert hot_rows(loop, dsn, cid)["message"] == 5
