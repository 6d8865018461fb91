"""The bulk write path of imports (issue 15 item 2): many conversations per transaction, search vectors built
set-based. A large file gives the trees, counters and search of row-by-row writes; a re-import of a grown export
adds exactly its new messages; a failed or killed batch leaves nothing half-written; re-imports duplicate nothing.
Files are generated in ChatGPT's export shape (mapping of nodes, two branches from an edited first question)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg

from tests.api import create_conversation, reply, start_thread
from tests.harness import Actor, Loop
from tests.test_porting_cli import THREADLINE, report_of, run
from tests.test_porting_import import assert_tree_is_consistent, outline, sql
from threadline.ids import Kind, decode_id, encode_id

WORDS = ["Die Häuser sind gelaufen", "a list sorted in reverse", "ECONNRESET in the proxy", "Zürich café"]
SEARCH = """query($q: String!) { search(input: {query: $q}, first: 100) {
  totalCount nodes { conversation { id title } message { content } } } }"""
TREE = """query($c: ID!) { conversation(id: $c) { messageCount threads(first: 100) { nodes {
  replyCount root { id } } } } }"""


def node(key: str, parent: str | None, children: list[str], role: str, text: str, t: float) -> dict[str, Any]:
    return {
        "id": key,
        "message": {
            "id": key,
            "author": {"role": role, "name": None, "metadata": {}},
            "create_time": t,
            "content": {"content_type": "text", "parts": [text]},
            "status": "finished_successfully",
            "metadata": {"model_slug": "gpt-4o" if role == "assistant" else None},
            "recipient": "all",
        },
        "parent": parent,
        "children": children,
    }


def text(index: int, n: int) -> str:
    """Varied words (stemmed differently by language), a marker word per conversation; one message is empty
    (ChatGPT's readers leave empty nodes out, their replies go to the message before)."""
    if n == 3:
        return ""
    return f"{WORDS[(index + n) % len(WORDS)]} marker{index} turn {n}"


def chatgpt(index: int, per_branch: int, grown: int = 0) -> dict[str, Any]:
    """A conversation of two branches under a hidden root (the first question edited), `per_branch` messages
    each, plus `grown` more at the end of each branch (a later export of the same conversation)."""
    mapping: dict[str, Any] = {}
    root = f"c{index}-root"
    heads = []
    t0 = 1_700_000_000.0 + index * 1000
    n = 0
    for b in range(2):
        keys = [f"c{index}-b{b}-m{k}" for k in range(per_branch + grown)]
        heads.append(keys[0])
        previous = root
        for k, key in enumerate(keys):
            children = [keys[k + 1]] if k + 1 < len(keys) else []
            role = "user" if k % 2 == 0 else "assistant"
            mapping[key] = node(key, previous, children, role, text(index, k + 100 * b), t0 + n)
            previous = key
            n += 1
    mapping[root] = {"id": root, "message": None, "parent": None, "children": heads}
    cid = str(uuid.UUID(int=index + 1))
    return {
        "title": f"Chat {index}",
        "create_time": t0,
        "update_time": t0 + n,
        "mapping": mapping,
        "current_node": heads[-1],
        "id": cid,
        "conversation_id": cid,
    }


def write(path: Path, conversations: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps(conversations))
    return path


def import_file(dsn: str, actor: Actor, path: Path) -> dict[str, Any]:
    result = run(dsn, "import", str(path), "--format", "chatgpt", "--api-key", actor.api_key, "--quiet")
    assert result.returncode in (0, 1), result.stderr
    return report_of(result)


def tenant_of(actor: Actor) -> uuid.UUID:
    return decode_id(actor.tenant_id, Kind.TENANT)


def assert_whole(loop: Loop, dsn: str, actor: Actor) -> int:
    """Every imported conversation of the tenant is whole: its counter is its rows, each thread counts its
    replies, its source names it once, nothing imported lies outside one. Returns how many there are."""
    tenant = tenant_of(actor)
    broken = sql(
        loop,
        dsn,
        """SELECT c.id FROM conversation c JOIN import_source s ON s.conversation_id = c.id
           WHERE c.tenant_id = $1 AND (c.message_count <> (SELECT count(*) FROM message m WHERE m.conversation_id = c.id)
               OR EXISTS (SELECT 1 FROM thread t WHERE t.conversation_id = c.id
                          AND t.reply_count <> (SELECT count(*) - 1 FROM message m WHERE m.root_id = t.id))
               OR (SELECT count(*) FROM thread t WHERE t.conversation_id = c.id)
                  <> (SELECT count(*) FROM message m WHERE m.conversation_id = c.id AND m.parent_id IS NULL))""",
        tenant,
    )
    assert broken == []
    orphans = sql(
        loop,
        dsn,
        """SELECT count(*) AS n FROM message m WHERE m.tenant_id = $1 AND m.import_key IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM import_source s WHERE s.conversation_id = m.conversation_id)""",
        tenant,
    )
    assert orphans[0]["n"] == 0
    (row,) = sql(loop, dsn, "SELECT count(*) AS n FROM import_source WHERE tenant_id = $1", tenant)
    return int(row["n"])


async def _vectors_differ(dsn: str, tenant: uuid.UUID) -> tuple[int, int]:
    """(rows whose vector differs from the one the row-by-row trigger computes, rows with a vector): the trigger
    is made to recompute every row (an UPDATE OF deleted_at fires it), compared, then rolled back."""
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute(
                "CREATE TEMP TABLE bulk_vectors AS SELECT id, search_vector FROM message WHERE tenant_id = $1",
                tenant,
            )
            await conn.execute("UPDATE message SET deleted_at = deleted_at WHERE tenant_id = $1", tenant)
            differ = await conn.fetchval(
                """SELECT count(*) FROM message m JOIN bulk_vectors b ON b.id = m.id
                   WHERE m.search_vector IS DISTINCT FROM b.search_vector"""
            )
            with_vector = await conn.fetchval(
                "SELECT count(*) FROM bulk_vectors WHERE search_vector IS NOT NULL"
            )
            raise _Undo((differ, with_vector))
    except _Undo as undo:
        return undo.result
    finally:
        await conn.close()


class _Undo(Exception):
    def __init__(self, result: tuple[int, int]) -> None:
        self.result = result


def live_twin(actor: Actor, index: int, per_branch: int) -> str:
    """The same conversation as `chatgpt(index, per_branch)`, written message by message through the API."""
    conversation = create_conversation(actor, f"Chat {index}")
    for b in range(2):
        parent = None
        for k in range(per_branch):
            role = "USER" if k % 2 == 0 else "ASSISTANT"
            content = text(index, k + 100 * b)
            if not content:
                continue
            if parent is None:
                parent = start_thread(actor, conversation, content, role)
            else:
                parent = reply(actor, parent, content, role)
    return conversation


def test_a_large_file_gives_the_trees_counters_and_search_of_row_by_row_writes(
    admin: Actor, loop: Loop, dsn: str, tmp_path: Path
) -> None:
    # A stemming language other than the default: the bulk path must build vectors with the tenant's.
    admin.client.ok('mutation { searchLanguageSet(language: "german") { language } }')
    per_branch = 20
    conversations = [chatgpt(i, per_branch) for i in range(240)]  # several batches of many conversations
    report = import_file(dsn, admin, write(tmp_path / "conversations.json", conversations))
    assert (report["imported"], report["skipped"], report["failed"]) == (240, 0, 0)
    per_conversation = 2 * per_branch - 1  # one empty message left out
    assert report["messages"] == 240 * per_conversation
    assert assert_whole(loop, dsn, admin) == 240
    ids = {
        r["title"]: encode_id(Kind.CONVERSATION, r["id"])
        for r in sql(loop, dsn, "SELECT id, title FROM conversation WHERE tenant_id = $1", tenant_of(admin))
    }
    for title in ("Chat 0", "Chat 7", "Chat 99"):
        assert_tree_is_consistent(loop, dsn, ids[title])

    # Every vector is the one the per-row trigger computes (with German stems).
    differ, with_vector = loop.run(_vectors_differ(dsn, tenant_of(admin)))
    assert (differ, with_vector) == (0, 240 * per_conversation)

    # Through the API, against the same conversation written row by row: tree, counters, search.
    twin = live_twin(admin, 7, per_branch)
    imported = ids["Chat 7"]
    assert [(d, r, c) for d, r, c in outline(loop, dsn, imported)] == outline(loop, dsn, twin)
    shapes = [admin.client.ok(TREE, {"c": c})["conversation"] for c in (imported, twin)]
    assert shapes[0]["messageCount"] == shapes[1]["messageCount"] == per_conversation
    for shape in shapes:
        assert sorted(t["replyCount"] for t in shape["threads"]["nodes"]) == [per_branch - 2, per_branch - 1]
    for query in ("marker7", "haus marker7", "gelauf marker7", "ECONNRESET marker7", "zürich marker7"):
        found = admin.client.ok(SEARCH, {"q": query})["search"]
        by_conversation = {n["conversation"]["id"]: n["message"]["content"] for n in found["nodes"]}
        assert set(by_conversation) == {imported, twin}, query
        assert by_conversation[imported] == by_conversation[twin]
    # English stemming would not find "Häuser" by "Haus": the tenant's language was used.
    for index in (0, 42, 239):
        found = admin.client.ok(SEARCH, {"q": f"Haus marker{index}"})["search"]["nodes"]
        assert [n["conversation"]["title"] for n in found] == [f"Chat {index}"]
        assert "Häuser" in found[0]["message"]["content"]

    # Importing the same file again writes nothing.
    again = import_file(dsn, admin, tmp_path / "conversations.json")
    assert (again["imported"], again["skipped"], again["messages"]) == (0, 240, 0)
    assert assert_whole(loop, dsn, admin) == 240


def test_a_merge_reimport_of_a_grown_export_adds_exactly_the_new_messages(
    admin: Actor, make_user: Any, loop: Loop, dsn: str, tmp_path: Path
) -> None:
    first = import_file(dsn, admin, write(tmp_path / "v1.json", [chatgpt(i, 10) for i in range(30)]))
    assert (first["imported"], first["messages"]) == (30, 30 * 19)
    # Days later: every conversation went on (three more messages at the end of each branch), five are new.
    grown = [chatgpt(i, 10, grown=3) for i in range(30)] + [chatgpt(i, 10) for i in range(30, 35)]
    report = import_file(dsn, admin, write(tmp_path / "v2.json", grown))
    assert (report["imported"], report["merged"], report["skipped"], report["failed"]) == (5, 30, 0, 0)
    assert (report["messagesAdded"], report["messagesUpdated"]) == (30 * 6, 0)
    assert report["messages"] == 30 * 6 + 5 * 19
    assert {m["messagesAdded"] for m in report["merges"]} == {6}
    assert assert_whole(loop, dsn, admin) == 35
    (dupes,) = sql(
        loop,
        dsn,
        """SELECT count(*) AS n FROM (SELECT conversation_id, import_key FROM message WHERE tenant_id = $1
           GROUP BY 1, 2 HAVING count(*) > 1) d""",
        tenant_of(admin),
    )
    assert dupes["n"] == 0
    # Each merged tree is the tree a first import of the grown export makes (another user's own import).
    other = make_user(admin)
    fresh = import_file(dsn, other, tmp_path / "v2.json")
    assert (fresh["imported"], fresh["messages"]) == (35, 35 * 19 + 30 * 6)
    owned = {
        (r["owner_id"], r["title"]): encode_id(Kind.CONVERSATION, r["id"])
        for r in sql(
            loop, dsn, "SELECT id, owner_id, title FROM conversation WHERE tenant_id = $1", tenant_of(admin)
        )
    }
    mine, theirs = decode_id(admin.user_id, Kind.USER), decode_id(other.user_id, Kind.USER)
    for index in (0, 17, 29, 33):
        merged = owned[(mine, f"Chat {index}")]
        assert outline(loop, dsn, merged) == outline(loop, dsn, owned[(theirs, f"Chat {index}")])
        assert_tree_is_consistent(loop, dsn, merged)
    differ, with_vector = loop.run(_vectors_differ(dsn, tenant_of(admin)))
    assert (differ, with_vector) == (0, 2 * (35 * 19 + 30 * 6))
    # The same grown export once more: nothing new, nothing written.
    again = import_file(dsn, admin, tmp_path / "v2.json")
    assert (again["imported"], again["merged"], again["skipped"], again["messages"]) == (0, 0, 35, 0)
    assert assert_whole(loop, dsn, admin) == 70


@contextmanager
def poisoned_messages(loop: Loop, dsn: str) -> Iterator[None]:
    """While open, the database refuses any message whose text starts with 'poison': a refusal only it makes (no
    reader can foresee it)."""
    sql(
        loop,
        dsn,
        """CREATE FUNCTION test_refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN IF NEW.content LIKE 'poison%' THEN RAISE EXCEPTION 'poisoned message'; END IF; RETURN NEW; END $$""",
    )
    sql(
        loop,
        dsn,
        """CREATE TRIGGER test_refuse_poison BEFORE INSERT ON message
           FOR EACH ROW EXECUTE FUNCTION test_refuse_poison()""",
    )
    try:
        yield
    finally:
        sql(loop, dsn, "DROP TRIGGER test_refuse_poison ON message")
        sql(loop, dsn, "DROP FUNCTION test_refuse_poison()")


def test_a_failed_batch_leaves_nothing_half_written_and_only_its_culprit_fails(
    admin: Actor, loop: Loop, dsn: str, tmp_path: Path
) -> None:
    conversations = [chatgpt(i, 5) for i in range(20)]
    conversations[7]["mapping"]["c7-b1-m2"]["message"]["content"]["parts"] = ["poison pill"]
    # A refusal only the database makes (a check no reader can foresee), in the middle of one batch.
    with poisoned_messages(loop, dsn):
        report = import_file(dsn, admin, write(tmp_path / "conversations.json", conversations))
    assert (report["imported"], report["failed"], report["messages"]) == (19, 1, 19 * 9)
    (failure,) = report["failures"]
    assert failure["external_id"] == str(uuid.UUID(int=8))
    assert "poisoned message" in failure["message"]
    assert assert_whole(loop, dsn, admin) == 19
    titles = {
        r["title"]
        for r in sql(loop, dsn, "SELECT title FROM conversation WHERE tenant_id = $1", tenant_of(admin))
    }
    assert "Chat 7" not in titles and len(titles) == 19
    # Nothing of it stayed: the same file again imports it, and only it.
    again = import_file(dsn, admin, tmp_path / "conversations.json")
    assert (again["imported"], again["skipped"], again["failed"]) == (1, 19, 0)
    assert assert_whole(loop, dsn, admin) == 20


def test_a_killed_import_leaves_whole_conversations_and_a_rerun_completes_it(
    admin: Actor, loop: Loop, dsn: str, tmp_path: Path
) -> None:
    conversations = [chatgpt(i, 5) for i in range(40)]
    done = import_file(dsn, admin, write(tmp_path / "first.json", conversations[:10]))
    assert done["imported"] == 10
    path = write(tmp_path / "all.json", conversations)

    async def killed_mid_batch() -> None:
        holder = await asyncpg.connect(dsn)
        try:
            async with holder.transaction():
                # New threads cannot be written while this lock is held: the import's batch stops after its
                # conversations and messages went in, before its threads, inside its transaction.
                await holder.execute("LOCK TABLE thread IN SHARE MODE")
                env = {**os.environ, "DATABASE_URL": dsn}
                env.pop("THREADLINE_API_KEY", None)
                cli = subprocess.Popen(
                    [
                        *THREADLINE,
                        "import",
                        str(path),
                        "--format",
                        "chatgpt",
                        "--api-key",
                        admin.api_key,
                        "--quiet",
                    ],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                # Watched from outside the holder's transaction (pg_stat_activity is a snapshot per transaction).
                watcher = await asyncpg.connect(dsn)
                try:
                    for _ in range(1200):  # a bound, not a timing assertion: the batch reaches the lock
                        waiting = await watcher.fetchval(
                            """SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'
                               AND application_name LIKE 'threadline-import%' AND query LIKE 'COPY "thread"%'"""
                        )
                        if waiting or cli.poll() is not None:
                            break
                        await asyncio.sleep(0.05)
                    assert waiting == 1
                finally:
                    cli.send_signal(signal.SIGKILL)
                    cli.wait()
                    await watcher.close()
        finally:
            await holder.close()
        # The killed client's transaction ends (its backend finds the socket closed once the lock is gone).
        for _ in range(1200):
            conn = await asyncpg.connect(dsn)
            try:
                left = await conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'threadline-import%'"
                )
            finally:
                await conn.close()
            if not left:
                return
            await asyncio.sleep(0.05)
        raise AssertionError("the killed import's backend did not end")

    loop.run(killed_mid_batch())
    assert assert_whole(loop, dsn, admin) == 10
    (messages,) = sql(loop, dsn, "SELECT count(*) AS n FROM message WHERE tenant_id = $1", tenant_of(admin))
    assert messages["n"] == 10 * 9
    rerun = import_file(dsn, admin, path)
    assert (rerun["imported"], rerun["skipped"], rerun["failed"], rerun["messages"]) == (30, 10, 0, 30 * 9)
    assert assert_whole(loop, dsn, admin) == 40
