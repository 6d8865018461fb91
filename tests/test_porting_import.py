"""Import over the API: ChatGPT and Claude exports become correct trees, re-imports duplicate nothing."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import asyncpg

from tests.api import create_conversation, join, start_thread
from tests.harness import Actor, Client, Loop
from threadline.ids import Kind, decode_id
from threadline.threads.paths import encode_rank

FIXTURES = Path(__file__).parent / "fixtures"

IMPORT_REPORT = """mutation($i: ConversationImportInput!) { conversationImportReport(input: $i) {
  imported skipped failed messageCount warnings failures { index externalId message }
  conversations { id title status aiProvider model messageCount createdAt lastActivityAt } } }"""
IMPORT = (
    """mutation($i: ConversationImportInput!) { conversationImport(input: $i) { id title messageCount } }"""
)


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def import_report(actor: Actor, fmt: str, data: Any, **extra: Any) -> dict[str, Any]:
    return actor.client.ok(IMPORT_REPORT, {"i": {"format": fmt, "data": data, **extra}})[
        "conversationImportReport"
    ]


async def _fetch(dsn: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


def sql(loop: Loop, dsn: str, query: str, *args: Any) -> list[asyncpg.Record]:
    return loop.run(_fetch(dsn, query, *args))


def tree_rows(loop: Loop, dsn: str, conversation_id: str) -> list[asyncpg.Record]:
    """Messages depth-first per thread (threads oldest first), as the export orders them."""
    return sql(
        loop,
        dsn,
        """SELECT m.*, r.created_at AS root_created FROM message m JOIN message r ON r.id = m.root_id
           WHERE m.conversation_id = $1 ORDER BY r.created_at, r.seq, m.root_id, m.path""",
        decode_id(conversation_id, Kind.CONVERSATION),
    )


def assert_tree_is_consistent(loop: Loop, dsn: str, conversation_id: str) -> None:
    """Every invariant the threads domain keeps for live writes holds for the stored rows."""
    rows = tree_rows(loop, dsn, conversation_id)
    by_id = {r["id"]: r for r in rows}
    children: dict[uuid.UUID, list[asyncpg.Record]] = {}
    for r in rows:
        if r["parent_id"] is not None:
            children.setdefault(r["parent_id"], []).append(r)
    for r in rows:
        kids = sorted(children.get(r["id"], []), key=lambda k: bytes(k["path"]))
        assert r["child_count"] == len(kids)
        for rank, kid in enumerate(kids):
            assert bytes(kid["path"]) == bytes(r["path"]) + encode_rank(rank)
            assert kid["depth"] == r["depth"] + 1
            assert kid["root_id"] == r["root_id"]
        if r["parent_id"] is None:
            assert (r["root_id"], bytes(r["path"]), r["depth"]) == (r["id"], b"", 0)
        else:
            assert r["parent_id"] in by_id
    threads = sql(
        loop,
        dsn,
        "SELECT * FROM thread WHERE conversation_id = $1",
        decode_id(conversation_id, Kind.CONVERSATION),
    )
    roots = [r for r in rows if r["parent_id"] is None]
    assert {t["id"] for t in threads} == {r["id"] for r in roots}
    for t in threads:
        members = [r for r in rows if r["root_id"] == t["id"]]
        assert t["reply_count"] == len(members) - 1
        assert t["last_seq"] == max(r["seq"] for r in members)
        assert t["last_activity_at"] == max(r["created_at"] for r in members)
    (conv,) = sql(
        loop, dsn, "SELECT * FROM conversation WHERE id = $1", decode_id(conversation_id, Kind.CONVERSATION)
    )
    assert conv["message_count"] == len(rows)


def outline(loop: Loop, dsn: str, conversation_id: str) -> list[tuple[int, str, str]]:
    """(depth, role, content) depth-first: the shape of the tree, readable in an assertion."""
    return [(r["depth"], r["role"], r["content"]) for r in tree_rows(loop, dsn, conversation_id)]


def test_chatgpt_export_becomes_trees_with_every_branch(admin: Actor, loop: Loop, dsn: str) -> None:
    report = import_report(admin, "CHATGPT", fixture("chatgpt/conversations.json"))
    assert (report["imported"], report["skipped"], report["failed"]) == (5, 0, 0)
    titles = [c["title"] for c in report["conversations"]]
    assert titles == [
        "Sorting in Python",
        "Untitled conversation",
        "Empty mapping",
        "No mapping at all",
        "Pictures, tools and a broken tree",
    ]
    branches = report["conversations"][0]
    assert (branches["aiProvider"], branches["model"], branches["messageCount"]) == ("openai", "gpt-4o", 7)
    assert branches["createdAt"] == "2023-11-14T22:13:20+00:00"
    # The hidden system node is skipped; the edited first question starts a second thread; the
    # regenerated answer is a sibling branch, oldest first.
    assert outline(loop, dsn, branches["id"]) == [
        (0, "USER", "How do I sort a list?"),
        (1, "ASSISTANT", "Use sorted(xs)."),
        (1, "ASSISTANT", "Call xs.sort() or sorted(xs)."),
        (2, "USER", "Show me code."),
        (3, "ASSISTANT", "Here:\n\n```python\nxs = [3, 1, 2]\nprint(sorted(xs))\n```\n"),
        (0, "USER", "How do I sort a list in reverse?"),
        (1, "ASSISTANT", "sorted(xs, reverse=True)"),
    ]
    for conversation in report["conversations"]:
        assert_tree_is_consistent(loop, dsn, conversation["id"])
    models = [r["model"] for r in tree_rows(loop, dsn, branches["id"])]
    assert models == [None, "gpt-4", "gpt-4o", None, "gpt-4o", None, "gpt-4o"]
    times = [r["created_at"].timestamp() for r in tree_rows(loop, dsn, branches["id"])]
    assert times == [
        1700000010.0,
        1700000020.0,
        1700000030.0,
        1700000040.0,
        1700000050.0,
        1700000100.0,
        1700000110.0,
    ]


def test_chatgpt_null_title_missing_times_and_empty_mappings(admin: Actor, loop: Loop, dsn: str) -> None:
    report = import_report(admin, "CHATGPT", fixture("chatgpt/conversations.json"))
    untitled, empty, no_mapping = report["conversations"][1:4]
    # Parts are joined; a message without create_time takes its parent's or the conversation's time.
    assert outline(loop, dsn, untitled["id"]) == [(0, "USER", "Hello\nthere"), (1, "ASSISTANT", "Hi!")]
    first = tree_rows(loop, dsn, untitled["id"])[0]
    assert first["created_at"].timestamp() == 1700001000.5
    assert (empty["messageCount"], no_mapping["messageCount"]) == (0, 0)
    assert (
        "chatgpt-conv-no-mapping: the conversation has no mapping: imported without messages"
        in report["warnings"]
    )
    assert "chatgpt-conv-empty-mapping: the conversation has no visible messages" in report["warnings"]


def test_chatgpt_multimodal_parts_tools_missing_parents_and_cycles(
    admin: Actor, loop: Loop, dsn: str
) -> None:
    report = import_report(admin, "CHATGPT", fixture("chatgpt/conversations.json"))
    pictures = report["conversations"][4]
    assert outline(loop, dsn, pictures["id"]) == [
        # The image is an image part now (Message.parts); the text is the parts' text (issue 17 item 1).
        (0, "USER", "What is in this picture?"),
        (1, "ASSISTANT", "```\nprint(1 + 1)\n```"),
        (2, "TOOL", "2"),
        (0, "USER", "My parent is gone"),
        (0, "USER", "Loop A"),
        (1, "ASSISTANT", "Loop B"),
    ]
    assert (
        "chatgpt-conv-multimodal: node orphan: parent ghost is missing; the node starts a new thread"
        in report["warnings"]
    )
    assert (
        "chatgpt-conv-multimodal: node loop-a: its parents form a cycle; the cycle was cut here"
        in report["warnings"]
    )
    attachments = sql(
        loop,
        dsn,
        """SELECT a.data FROM message_attachment a JOIN message m ON m.id = a.message_id
           WHERE m.conversation_id = $1""",
        decode_id(pictures["id"], Kind.CONVERSATION),
    )
    assert [json.loads(a["data"]) for a in attachments] == [
        {
            "type": "image",
            "pointer": "file-service://file-abc",
            "size_bytes": 2048,
            "width": 640,
            "height": 480,
        }
    ]


def test_chatgpt_split_export_imports_every_shard(admin: Actor, loop: Loop, dsn: str) -> None:
    shards = [
        fixture("chatgpt-split/conversations-000.json"),
        fixture("chatgpt-split/conversations-001.json"),
    ]
    titles = [c["title"] for shard in shards for c in import_report(admin, "CHATGPT", shard)["conversations"]]
    assert titles == ["First shard", "Second shard"]


def test_claude_export_keeps_branches_blocks_and_files(admin: Actor, loop: Loop, dsn: str) -> None:
    report = import_report(admin, "CLAUDE", fixture("claude/conversations.json"))
    assert (report["imported"], report["failed"]) == (2, 0)
    branches, linear = report["conversations"]
    assert (branches["title"], branches["aiProvider"]) == ("Trip planning", "anthropic")
    assert linear["title"] == "Untitled conversation"
    assert outline(loop, dsn, branches["id"]) == [
        (0, "USER", "Plan a weekend in Lisbon"),
        (1, "ASSISTANT", "Day 1: Belem. Day 2: Alfama."),
        # Tool use and result are parts now (Message.parts); the text holds the result's text (issue 17 item 1).
        (1, "ASSISTANT", "MAAT, Gulbenkian\n\nVisit MAAT and the Gulbenkian."),
        (2, "USER", "Thanks!"),
    ]
    # Older exports have no parent links: one linear chain in file order.
    assert outline(loop, dsn, linear["id"]) == [
        (0, "USER", "Write a haiku"),
        (1, "ASSISTANT", "Old pond / a frog jumps in / the sound of water"),
        (2, "USER", "Another"),
    ]
    for conversation in report["conversations"]:
        assert_tree_is_consistent(loop, dsn, conversation["id"])
    types = sql(
        loop,
        dsn,
        """SELECT a.data ->> 'type' AS type FROM message_attachment a JOIN message m ON m.id = a.message_id
           WHERE m.conversation_id = $1 ORDER BY m.created_at, a.position""",
        decode_id(branches["id"], Kind.CONVERSATION),
    )
    # Thinking, tool use and tool results are content parts now (tests/test_import_parts.py); files stay too.
    assert [t["type"] for t in types] == ["file", "file"]


def test_reimporting_the_same_file_creates_no_duplicates(admin: Actor, loop: Loop, dsn: str) -> None:
    data = fixture("chatgpt/conversations.json")
    first = import_report(admin, "CHATGPT", data)
    second = import_report(admin, "CHATGPT", data)
    assert (second["imported"], second["skipped"], second["messageCount"]) == (0, 5, 0)
    assert [c["id"] for c in second["conversations"]] == [c["id"] for c in first["conversations"]]
    again = admin.client.ok(IMPORT, {"i": {"format": "CHATGPT", "data": data}})["conversationImport"]
    assert [c["id"] for c in again] == [c["id"] for c in first["conversations"]]
    (count,) = sql(loop, dsn, "SELECT count(*) AS n FROM conversation")
    assert count["n"] == 5


def test_imported_conversations_belong_to_the_importer_and_user_messages_are_theirs(
    admin: Actor, make_user: Any, loop: Loop, dsn: str
) -> None:
    member = make_user(admin)
    report = import_report(member, "CLAUDE", fixture("claude/conversations.json"))
    conversation = report["conversations"][0]
    viewer = member.client.ok(
        "query($id: ID!) { conversation(id: $id) { owner { id } participants { role user { id } } } }",
        {"id": conversation["id"]},
    )["conversation"]
    assert viewer == {
        "owner": {"id": member.user_id},
        "participants": [{"role": "OWNER", "user": {"id": member.user_id}}],
    }
    authors = {(r["role"], r["author_id"]) for r in tree_rows(loop, dsn, conversation["id"])}
    assert authors == {("USER", decode_id(member.user_id, Kind.USER)), ("ASSISTANT", None)}


def test_invalid_conversations_are_reported_and_the_others_imported(
    admin: Actor, loop: Loop, dsn: str
) -> None:
    data = [{"title": "no id here", "mapping": {}}, fixture("chatgpt-split/conversations-000.json")[0], 42]
    report = import_report(admin, "CHATGPT", data)
    assert (report["imported"], report["failed"]) == (1, 2)
    assert report["failures"] == [
        {
            "index": 0,
            "externalId": None,
            "message": "not a ChatGPT conversation: it has no id or conversation_id (keys: mapping, title)",
        },
        {"index": 2, "externalId": None, "message": "a ChatGPT conversation must be a JSON object, not int"},
    ]


def test_conversation_import_is_all_or_nothing(admin: Actor, loop: Loop, dsn: str) -> None:
    data = [fixture("chatgpt-split/conversations-000.json")[0], {"id": "x", "mapping": "oops"}]
    error = admin.client.error(IMPORT, {"i": {"format": "CHATGPT", "data": data}})
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert (
        error["message"]
        == "1 conversation(s) cannot be imported, so none was: item 1: `mapping` must be an object of nodes"
    )
    assert error["extensions"]["failures"] == [
        {"index": 1, "externalId": None, "message": "`mapping` must be an object of nodes"}
    ]
    (count,) = sql(loop, dsn, "SELECT count(*) AS n FROM message")
    assert count["n"] == 0


def test_a_message_over_the_size_limit_keeps_its_conversation_and_its_whole_text_as_a_file(
    admin: Actor, loop: Loop, dsn: str
) -> None:
    """Issue 22 item 7 (it refused the conversation before): see tests/test_import_fidelity.py for more."""
    huge = "x" * (1024 * 1024 + 1)
    data = fixture("chatgpt-split/conversations-000.json")
    data[0]["mapping"]["m2"]["message"]["content"]["parts"] = [huge]
    data += fixture("chatgpt-split/conversations-001.json")
    report = import_report(admin, "CHATGPT", data)
    assert (report["imported"], report["failed"]) == (2, 0)
    assert report["warnings"] == [
        "chatgpt-split-1: message m2: 1048577 bytes, over the limit of 1048576 bytes (THREADLINE_MESSAGE_MAX_BYTES): "
        "its first 1048392 bytes are its text, the whole text the attached file message-m2.txt"
    ]
    assert [c["title"] for c in report["conversations"]] == ["First shard", "Second shard"]
    (row,) = sql(
        loop,
        dsn,
        "SELECT m.content, f.filename, b.size FROM message m JOIN message_file mf ON "
        "mf.message_id = m.id JOIN file f ON f.id = mf.file_id JOIN file_blob b ON b.id = f.blob_id",
    )
    assert (row["filename"], row["size"], row["content"][:1048392]) == (
        "message-m2.txt",
        1048577,
        "x" * 1048392,
    )


def test_unknown_format_is_refused_by_the_schema(admin: Actor) -> None:
    error = admin.client.error(IMPORT, {"i": {"format": "GEMINI", "data": []}})
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert "GEMINI" in error["message"]


def test_a_file_of_another_format_is_reported_per_conversation(admin: Actor) -> None:
    report = import_report(admin, "CHATGPT", fixture("claude/conversations.json"))
    assert report["failed"] == 2
    assert report["failures"][0]["message"].startswith(
        "not a ChatGPT conversation: it has no id or conversation_id"
    )


def test_import_needs_credentials(anonymous: Client) -> None:
    assert anonymous.code(IMPORT, {"i": {"format": "CHATGPT", "data": []}}) == "UNAUTHENTICATED"


def test_import_into_a_conversation_needs_write_access(
    admin: Actor, make_user: Any, loop: Loop, dsn: str
) -> None:
    viewer = make_user(admin)
    target = create_conversation(admin, "shared")
    join(admin, viewer, target, role="VIEWER")
    data = fixture("chatgpt-split/conversations-000.json")
    assert (
        viewer.client.code(IMPORT, {"i": {"format": "CHATGPT", "data": data, "conversationId": target}})
        == "FORBIDDEN"
    )
    outsider = make_user(admin)
    assert (
        outsider.client.code(IMPORT, {"i": {"format": "CHATGPT", "data": data, "conversationId": target}})
        == "NOT_FOUND"
    )
    (count,) = sql(loop, dsn, "SELECT count(*) AS n FROM message")
    assert count["n"] == 0


def test_import_into_an_existing_conversation_adds_its_threads(admin: Actor, loop: Loop, dsn: str) -> None:
    target = create_conversation(admin, "mine")
    start_thread(admin, target, "already here")
    data = fixture("chatgpt-split/conversations-000.json")
    imported = admin.client.ok(IMPORT, {"i": {"format": "CHATGPT", "data": data, "conversationId": target}})
    assert imported["conversationImport"] == [{"id": target, "title": "mine", "messageCount": 3}]
    assert_tree_is_consistent(loop, dsn, target)
    # Readers of the conversation hear about the new thread as they would for threadStart.
    events = sql(
        loop,
        dsn,
        "SELECT payload FROM stream_event WHERE conversation_id = $1 AND type = 'thread.new' ORDER BY id",
        decode_id(target, Kind.CONVERSATION),
    )
    announced = [json.loads(e["payload"]) for e in events]
    assert [(p["message"]["content"], p["replyCount"]) for p in announced] == [
        ("already here", 0),
        ("One", 1),
    ]
