"""Import fidelity (issue 22 items 4, 5, 7, 8): order repaired, citations linked, long conversations kept,
empty messages, tools, models, provenance and mojibake, through the API and `threadline import`. Fixtures in
tests/fixtures/fidelity are in the real export shapes: a 2025 ChatGPT export (a reply dated 80 ms before its
question, browsing with `【3:0†source】` and `content_references` citations, DALL-E, an empty answer), a
Claude export (Windows-1252 mojibake, an empty answer, a reply before its question) and a long ChatGPT chat."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.harness import Actor, Loop, ServerThread, create_admin, test_settings
from tests.test_files import download
from tests.test_porting_cli import report_of, run
from tests.test_porting_import import FIXTURES, assert_tree_is_consistent, fixture, sql

REPORT = """mutation($i: ConversationImportInput!) { conversationImportReport(input: $i) {
  imported skipped merged failed messageCount messagesAdded warnings failures { message }
  conversations { id } } }"""
CONVERSATION = """query($id: ID!) { conversation(id: $id) {
  title model importedFrom { format sourceId importedAt }
  messages(first: 100) { edges { node { id parentId role content model createdAt metadata
    parts { __typename ... on TextPart { text } ... on ToolCallPart { id name arguments }
            ... on ToolResultPart { toolCallId content } ... on ImagePart { url }
            ... on FilePart { name fileId mimeType } } } } } } }"""
EXPORT = "query($id: ID!) { conversationExport(id: $id) }"

CHATGPT_ID = "f1de11e0-0000-4000-8000-00000000e1ff"
CLAUDE_ID = "c1a0de00-0000-4000-8000-00000000f1de"
LONG_ID = "f1de11e0-0000-4000-8000-0000000010f9"

CHATGPT_WARNINGS = [
    f"{CHATGPT_ID}: 1 empty message(s) skipped (no text, parts or files); their replies now answer the message "
    "before them: e1",
    f"{CHATGPT_ID}: 1 citation marker(s) have no source URL in the export and were left in the text",
    f"{CHATGPT_ID}: 1 reply was dated before the message answered (by up to 0.080 s): each now follows it by a "
    "microsecond, so no reply is listed before it: c1",
]
CLAUDE_WARNINGS = [
    f"{CLAUDE_ID}: 1 empty message(s) skipped (no text, parts or files); their replies now answer the message "
    "before them: a-1",
    f"{CLAUDE_ID}: mojibake (UTF-8 read as Windows-1252, such as 'Ã©' for 'é') repaired in 2 place(s): title, "
    "message h-1",
    f"{CLAUDE_ID}: 1 reply was dated before the message answered (by up to 0.080 s): each now follows it by a "
    "microsecond, so no reply is listed before it: a-2",
]
A2 = (
    "The Eiffel Tower is 330 m tall ([Eiffel Tower - Wikipedia](https://en.wikipedia.org/wiki/Eiffel_Tower)). "
    "It opened in 1889 ([Tour Eiffel](https://www.toureiffel.paris/en))."
)
# (key, parent key, role, content, model, createdAt, metadata, parts) in `Conversation.messages` order.
CHATGPT_MESSAGES = [
    ("u1", None, "USER", "How tall is the Eiffel Tower?", None, "2024-11-30T20:53:20.080000+00:00", {},
     [("TextPart", "How tall is the Eiffel Tower?")]),
    ("c1", "u1", "ASSISTANT", '```\nsearch("Eiffel Tower height")\n```', "gpt-4o",
     "2024-11-30T20:53:20.080001+00:00", {"recipient": "browser"},
     [("ToolCallPart", "c1", "browser", '{"code": "search(\\"Eiffel Tower height\\")"}')]),
    ("t1", "c1", "TOOL", "Eiffel Tower: 330 m, opened 1889", None, "2024-11-30T20:53:21+00:00",
     {"tool_name": "browser"}, [("ToolResultPart", "c1", "Eiffel Tower: 330 m, opened 1889")]),
    ("a2", "t1", "ASSISTANT", A2, "gpt-4o", "2024-11-30T20:53:22+00:00", {}, [("TextPart", A2)]),
    ("u2", "a2", "USER", "Draw it at dusk", None, "2024-11-30T20:53:30+00:00", {},
     [("TextPart", "Draw it at dusk")]),
    ("d1", "u2", "ASSISTANT", '{"prompt": "the Eiffel Tower at dusk", "size": "1024x1024"}', "gpt-4o",
     "2024-11-30T20:53:32+00:00", {"recipient": "dalle.text2im"},
     [("ToolCallPart", "d1", "dalle.text2im", '{"prompt": "the Eiffel Tower at dusk", "size": "1024x1024"}')]),
    ("t2", "d1", "TOOL", "", None, "2024-11-30T20:53:33+00:00", {"tool_name": "dalle.text2im"},
     [("ImagePart", "file-service://file-dusk")]),
    ("a3", "t2", "ASSISTANT", "Here it is, as the guide says【5:1†source】.", "gpt-4o",
     "2024-11-30T20:53:34+00:00", {}, [("TextPart", "Here it is, as the guide says【5:1†source】.")]),
]  # fmt: skip
CLAUDE_MESSAGES = [
    ("h-1", None, "USER", "Un café crème, s’il vous plaît", None, "2025-06-02T09:00:00.080000+00:00", {},
     [("TextPart", "Un café crème, s’il vous plaît")]),
    ("h-2", "h-1", "USER", "Are you there?", None, "2025-06-02T09:01:00.080000+00:00", {},
     [("TextPart", "Are you there?")]),
    ("a-2", "h-2", "ASSISTANT", "Oui! Here is your café crème.", None, "2025-06-02T09:01:00.080001+00:00", {},
     [("TextPart", "Oui! Here is your café crème.")]),
]  # fmt: skip


def _part(p: dict[str, Any]) -> tuple[Any, ...]:
    return (p["__typename"], *(v for k, v in p.items() if k != "__typename"))


def read(
    actor: Actor, conversation_id: str, loop: Loop, dsn: str
) -> tuple[dict[str, Any], list[tuple[Any, ...]]]:
    """The conversation over GraphQL, and its messages keyed by their source ids (from the stored rows)."""
    data = actor.client.ok(CONVERSATION, {"id": conversation_id})["conversation"]
    rows = sql(loop, dsn, "SELECT id, import_key FROM message")
    key_of = {f"msg_{r['id'].hex}": r["import_key"] for r in rows}
    messages = []
    for edge in data["messages"]["edges"]:
        m = edge["node"]
        messages.append(
            (
                key_of[m["id"]],
                key_of.get(m["parentId"]) if m["parentId"] else None,
                m["role"],
                m["content"],
                m["model"],
                m["createdAt"],
                m["metadata"],
                [_part(p) for p in m["parts"]],
            )
        )
    return data, messages


def import_api(actor: Actor, name: str, fmt: str) -> dict[str, Any]:
    report: dict[str, Any] = actor.client.ok(REPORT, {"i": {"format": fmt, "data": fixture(name)}})[
        "conversationImportReport"
    ]
    return report


def _origin(data: dict[str, Any], fmt: str, source_id: str) -> None:
    origin = data["importedFrom"]
    assert (origin["format"], origin["sourceId"]) == (fmt, source_id)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+\+00:00", origin["importedAt"])


def test_chatgpt_2025_export_through_the_api(admin: Actor, loop: Loop, dsn: str) -> None:
    report = import_api(admin, "fidelity/chatgpt-2025.json", "CHATGPT")
    assert (report["imported"], report["failed"], report["messageCount"]) == (1, 0, 8)
    assert report["warnings"] == CHATGPT_WARNINGS
    cid = report["conversations"][0]["id"]
    data, messages = read(admin, cid, loop, dsn)
    assert (data["title"], data["model"]) == ("Eiffel Tower", "gpt-4o")
    _origin(data, "CHATGPT", CHATGPT_ID)
    assert messages == CHATGPT_MESSAGES
    assert_tree_is_consistent(loop, dsn, cid)
    # The export says where it came from too.
    exported = admin.client.ok(EXPORT, {"id": cid})["conversationExport"]
    assert exported["conversation"]["imported_from"] == {
        "format": "chatgpt",
        "source_id": CHATGPT_ID,
        "imported_at": data["importedFrom"]["importedAt"],
    }


def test_claude_export_through_the_api(admin: Actor, loop: Loop, dsn: str) -> None:
    report = import_api(admin, "fidelity/claude-2025.json", "CLAUDE")
    assert (report["imported"], report["failed"], report["messageCount"]) == (1, 0, 3)
    assert report["warnings"] == CLAUDE_WARNINGS
    data, messages = read(admin, report["conversations"][0]["id"], loop, dsn)
    assert (data["title"], data["model"]) == ("Résumé for a café", None)
    _origin(data, "CLAUDE", CLAUDE_ID)
    assert messages == CLAUDE_MESSAGES


@pytest.mark.parametrize(
    ("name", "fmt", "source_id", "warnings", "expected"),
    [
        ("chatgpt-2025.json", "chatgpt", CHATGPT_ID, CHATGPT_WARNINGS, CHATGPT_MESSAGES),
        ("claude-2025.json", "claude", CLAUDE_ID, CLAUDE_WARNINGS, CLAUDE_MESSAGES),
    ],
)
def test_the_same_exports_through_the_cli(
    admin: Actor,
    loop: Loop,
    dsn: str,
    name: str,
    fmt: str,
    source_id: str,
    warnings: list[str],
    expected: list[Any],
) -> None:
    path = FIXTURES / "fidelity" / name
    result = run(dsn, "import", str(path), "--format", fmt, "--api-key", admin.api_key, "--quiet")
    assert result.returncode == 0, result.stderr
    report = report_of(result)
    assert (report["imported"], report["failed"], report["messages"]) == (1, 0, len(expected))
    assert report["warnings"] == warnings
    (row,) = sql(loop, dsn, "SELECT id FROM conversation")
    data, messages = read(admin, f"cnv_{row['id'].hex}", loop, dsn)
    _origin(data, fmt.upper(), source_id)
    assert messages == expected


def _normalised(document: dict[str, Any]) -> Any:
    """The document with each id replaced by its order of first appearance, and without the export time."""
    text = json.dumps({**document, "metadata": {**document["metadata"], "exported_at": None}})
    seen: dict[str, str] = {}
    return json.loads(
        re.sub(
            r"(cnv|msg|usr|fil)_[0-9a-f]{32}", lambda m: seen.setdefault(m.group(), f"id{len(seen)}"), text
        )
    )


@pytest.mark.parametrize(
    ("name", "fmt"),
    [("chatgpt-2025.json", "CHATGPT"), ("claude-2025.json", "CLAUDE"), ("chatgpt-long.json", "CHATGPT")],
)
def test_round_trip_export_import_export_is_identical_and_keeps_the_origin(
    admin: Actor, make_tenant: Any, name: str, fmt: str
) -> None:
    cid = import_api(admin, f"fidelity/{name}", fmt)["conversations"][0]["id"]
    first = admin.client.ok(EXPORT, {"id": cid})["conversationExport"]
    other = make_tenant()
    again = import_api_data(other, first)
    assert again["warnings"] == []
    second = other.client.ok(EXPORT, {"id": again["conversations"][0]["id"]})["conversationExport"]
    assert _normalised(second) == _normalised(first)
    # Where it came from is kept over the move: the origin, not the Threadline file it arrived in.
    origin = other.client.ok(CONVERSATION, {"id": again["conversations"][0]["id"]})["conversation"][
        "importedFrom"
    ]
    assert (origin["format"], origin["sourceId"]) == (
        fmt,
        first["conversation"]["imported_from"]["source_id"],
    )


def import_api_data(actor: Actor, data: Any) -> dict[str, Any]:
    report: dict[str, Any] = actor.client.ok(REPORT, {"i": {"format": "THREADLINE", "data": data}})[
        "conversationImportReport"
    ]
    assert (report["imported"], report["failed"]) == (1, 0), report
    return report


def test_a_native_conversation_has_no_origin_and_its_export_none(admin: Actor) -> None:
    from tests.api import create_conversation

    cid = create_conversation(admin, "Native")
    assert admin.client.ok(CONVERSATION, {"id": cid})["conversation"]["importedFrom"] is None
    assert "imported_from" not in admin.client.ok(EXPORT, {"id": cid})["conversationExport"]["conversation"]


def test_an_origin_a_file_gets_wrong_is_dropped_with_a_warning(admin: Actor) -> None:
    cid = import_api(admin, "fidelity/claude-2025.json", "CLAUDE")["conversations"][0]["id"]
    document = admin.client.ok(EXPORT, {"id": cid})["conversationExport"]
    document["conversation"]["imported_from"] = {"format": "myspace", "source_id": "x", "imported_at": "soon"}
    document["conversation_id"] = "cnv_" + "0" * 32
    report = admin.client.ok(REPORT, {"i": {"format": "THREADLINE", "data": document}})[
        "conversationImportReport"
    ]
    assert report["warnings"] == [
        f"cnv_{'0' * 32}: conversation.imported_from is not a known format, source id and time: dropped"
    ]
    data = admin.client.ok(CONVERSATION, {"id": report["conversations"][0]["id"]})["conversation"]
    assert data["importedFrom"] is None


# -- long conversations (item 7) ------------------------------------------------------------------------------

LIMITS = {"thread_max_depth": 3, "message_max_bytes": 256}
LONG_TEXT = ("é" + "long answer " * 50).strip()
LONG_HEAD = LONG_TEXT.encode()[:78].decode()
LONG_CONTENT = f"{LONG_HEAD}\n\n[cut: this message is 601 bytes, over the size limit; the whole text is in the attached file message-m5.txt]"
LONG_WARNINGS = [
    f"{LONG_ID}: message m3 is 3 replies deep, the limit (THREADLINE_THREAD_MAX_DEPTH): the conversation goes on "
    "in a new thread from each of its replies (m4)",
    f"{LONG_ID}: message m5: 601 bytes, over the limit of 256 bytes (THREADLINE_MESSAGE_MAX_BYTES): its first 78 "
    "bytes are its text, the whole text the attached file message-m5.txt",
]


@pytest.fixture
def limited(dsn: str) -> Iterator[ServerThread]:
    """A server whose threads nest at most 3 replies deep and whose messages hold at most 256 bytes."""
    srv = ServerThread(test_settings(dsn, migrate_on_start=False, **LIMITS))
    srv.start()
    yield srv
    srv.stop()


def _long_outline(actor: Actor, cid: str, loop: Loop, dsn: str) -> list[tuple[Any, ...]]:
    data, messages = read(actor, cid, loop, dsn)
    assert data["title"] == "A long chat"
    return [(key, parent, role, content) for key, parent, role, content, *_ in messages]


LONG_OUTLINE = [
    ("m0", None, "USER", "message 0"),
    ("m1", "m0", "ASSISTANT", "message 1"),
    ("m2", "m1", "USER", "message 2"),
    ("m3", "m2", "ASSISTANT", "message 3"),
    # The chain goes on as a new thread (a continuation) from the message that would pass the depth limit.
    ("m4", None, "USER", "message 4"),
    ("m5", "m4", "ASSISTANT", LONG_CONTENT),
    ("m6", "m5", "USER", "message 6"),
    ("m7", "m6", "ASSISTANT", "message 7"),
]


def _check_whole_text(actor: Actor, base_url: str, cid: str, loop: Loop, dsn: str) -> None:
    data, messages = read(actor, cid, loop, dsn)
    (m5,) = [m for m in messages if m[0] == "m5"]
    text_part, file_part = m5[7]
    assert text_part == ("TextPart", LONG_CONTENT)
    assert file_part[:2] == ("FilePart", "message-m5.txt") and file_part[3] == "text/plain"
    response = download(base_url, actor, file_part[2])
    assert response.status_code == 200
    assert response.content.decode("utf-8") == LONG_TEXT


def test_a_long_chat_over_the_depth_and_size_limits_is_kept_through_the_api(
    limited: ServerThread, loop: Loop, dsn: str
) -> None:
    actor = create_admin(loop, dsn, limited.url)
    report = actor.client.ok(
        REPORT, {"i": {"format": "CHATGPT", "data": fixture("fidelity/chatgpt-long.json")}}
    )["conversationImportReport"]
    assert (report["imported"], report["failed"], report["messageCount"]) == (1, 0, 8)
    assert report["warnings"] == LONG_WARNINGS
    cid = report["conversations"][0]["id"]
    assert _long_outline(actor, cid, loop, dsn) == LONG_OUTLINE
    assert_tree_is_consistent(loop, dsn, cid)
    _check_whole_text(actor, limited.url, cid, loop, dsn)


def test_a_long_chat_over_the_depth_and_size_limits_is_kept_through_the_cli(
    admin: Actor, server: ServerThread, loop: Loop, dsn: str
) -> None:
    env = {"THREADLINE_THREAD_MAX_DEPTH": "3", "THREADLINE_MESSAGE_MAX_BYTES": "256"}
    path = FIXTURES / "fidelity" / "chatgpt-long.json"
    result = run(
        dsn, "import", str(path), "--format", "chatgpt", "--api-key", admin.api_key, "--quiet", env=env
    )
    assert result.returncode == 0, result.stderr
    report = report_of(result)
    assert (report["imported"], report["failed"], report["messages"]) == (1, 0, 8)
    assert report["warnings"] == LONG_WARNINGS
    (row,) = sql(loop, dsn, "SELECT id FROM conversation")
    cid = f"cnv_{row['id'].hex}"
    assert _long_outline(admin, cid, loop, dsn) == LONG_OUTLINE
    assert_tree_is_consistent(loop, dsn, cid)
    _check_whole_text(admin, server.url, cid, loop, dsn)
    # Imported again: nothing changes, nothing is stored twice.
    again = report_of(
        run(dsn, "import", str(path), "--format", "chatgpt", "--api-key", admin.api_key, "--quiet", env=env)
    )
    assert (again["imported"], again["skipped"], again["merged"]) == (0, 1, 0)
    assert [r["n"] for r in sql(loop, dsn, "SELECT count(*) AS n FROM file")] == [1]


def test_a_merge_past_the_depth_limit_goes_on_as_a_new_thread(
    limited: ServerThread, loop: Loop, dsn: str
) -> None:
    actor = create_admin(loop, dsn, limited.url)
    whole = fixture("fidelity/chatgpt-long.json")
    first = json.loads(json.dumps(whole))
    mapping = first[0]["mapping"]
    for key in ("m4", "m5", "m6", "m7"):
        del mapping[key]
    mapping["m3"]["children"] = []
    created = actor.client.ok(REPORT, {"i": {"format": "CHATGPT", "data": first}})["conversationImportReport"]
    assert (created["imported"], created["messageCount"], created["warnings"]) == (1, 4, [])
    merged = actor.client.ok(REPORT, {"i": {"format": "CHATGPT", "data": whole}})["conversationImportReport"]
    assert (merged["merged"], merged["messagesAdded"]) == (1, 4)
    assert merged["warnings"] == LONG_WARNINGS
    cid = created["conversations"][0]["id"]
    assert _long_outline(actor, cid, loop, dsn) == LONG_OUTLINE
    assert_tree_is_consistent(loop, dsn, cid)
    _check_whole_text(actor, limited.url, cid, loop, dsn)


# -- re-importing a grown ChatGPT export through the CLI (the figure) ----------------------------------


def test_a_cli_re_import_of_a_grown_export_reads_only_the_new_nodes_and_merges_the_same(
    admin: Actor, make_tenant: Any, loop: Loop, dsn: str, tmp_path: Any
) -> None:
    """The file's earlier import kept a digest of each node: a newer export whose earlier nodes did not change is
    planned from its new nodes only (their warnings only: none about e1 or c1 this time), and the tree is the one
    the whole file gives; unchanged, it is skipped unread; with an earlier node edited, all of it is read again."""
    whole = fixture("fidelity/chatgpt-2025.json")
    first = json.loads(json.dumps(whole))
    mapping = first[0]["mapping"]
    del mapping["t2"], mapping["a3"]
    mapping["d1"]["children"] = []
    first[0]["current_node"] = "d1"
    v1, v2 = tmp_path / "v1.json", tmp_path / "v2.json"
    v1.write_text(json.dumps(first))
    v2.write_text(json.dumps(whole))

    def cli(path: Any) -> dict[str, Any]:
        result = run(dsn, "import", str(path), "--format", "chatgpt", "--api-key", admin.api_key, "--quiet")
        assert result.returncode == 0, result.stderr
        return report_of(result)

    created = cli(v1)
    assert (created["imported"], created["messages"]) == (1, 6)
    events_before = sql(loop, dsn, "SELECT coalesce(max(id), 0) AS id FROM stream_event")[0]["id"]
    merged = cli(v2)
    assert (merged["merged"], merged["messagesAdded"], merged["messagesUpdated"]) == (1, 2, 0)
    assert merged["warnings"] == [
        f"{CHATGPT_ID}: 1 citation marker(s) have no source URL in the export and were left in the text"
    ]
    (row,) = sql(loop, dsn, "SELECT id FROM conversation")
    cid = f"cnv_{row['id'].hex}"
    _, messages = read(admin, cid, loop, dsn)
    assert messages == CHATGPT_MESSAGES
    assert_tree_is_consistent(loop, dsn, cid)
    # The new branch tip is announced as a live reply, with its ancestors root first (as the tree has them): the
    # new message above it (t2) is named on its path, not announced by an event of its own.
    parent = {r["id"]: r["parent_id"] for r in sql(loop, dsn, "SELECT id, parent_id FROM message")}
    key = {r["id"]: r["import_key"] for r in sql(loop, dsn, "SELECT id, import_key FROM message")}
    announced = []
    for event in sql(
        loop,
        dsn,
        "SELECT payload FROM stream_event WHERE id > $1 AND type = 'thread.activity'",
        events_before,
    ):
        message = json.loads(event["payload"])["message"]
        chain, at = [], parent[uuid.UUID(message["id"][4:])]
        while at is not None:
            chain.insert(0, at)
            at = parent[at]
        assert message["path"] == [f"msg_{i.hex}" for i in chain] + [message["id"]]
        announced.append(key[uuid.UUID(message["id"][4:])])
    assert announced == ["a3"]
    # The owner is on the newer export's current node.
    (leaf,) = sql(
        loop, dsn, "SELECT m.import_key FROM thread_current_leaf b JOIN message m ON m.id = b.message_id"
    )
    assert leaf["import_key"] == "a3"

    again = cli(v2)
    assert (again["skipped"], again["merged"], again["warnings"]) == (1, 0, [])

    # An earlier message edited in the export: everything is read again (its warnings too) and the edit lands.
    edited = json.loads(json.dumps(whole))
    edited[0]["mapping"]["u2"]["message"]["content"]["parts"] = ["Draw it at dawn"]
    v3 = tmp_path / "v3.json"
    v3.write_text(json.dumps(edited))
    third = cli(v3)
    assert (third["merged"], third["messagesAdded"], third["messagesUpdated"]) == (1, 0, 1)
    assert third["warnings"] == CHATGPT_WARNINGS
    _, messages = read(admin, cid, loop, dsn)
    assert [m[3] for m in messages if m[0] == "u2"] == ["Draw it at dawn"]


def _hostile(depth: int = 300) -> list[dict[str, Any]]:
    """A node id PostgreSQL's jsonb cannot hold (NUL) on a hidden node, and content nested `depth` levels (300:
    past what orjson writes)."""
    deep: dict[str, Any] = {}
    for _ in range(depth):
        deep = {"x": deep}
    hidden = {"id": "s", "author": {"role": "system"}, "content": {"content_type": "text", "parts": [""]}}
    hidden["metadata"] = {"is_visually_hidden_from_conversation": True}
    weird = {"id": "m", "author": {"role": "user"}, "content": {"content_type": "weird", "data": deep}}
    return [
        {
            "id": "hostile-1",
            "title": "Hostile",
            "mapping": {
                "r": {"id": "r", "message": None, "parent": None, "children": ["a\x00b"]},
                "a\x00b": {"id": "a\x00b", "parent": "r", "children": ["m"], "message": hidden},
                "m": {"id": "m", "parent": "a\x00b", "children": [], "message": weird},
            },
        }
    ]


def test_odd_node_ids_and_deep_content_import_and_re_import_through_the_cli_and_the_api(
    admin: Actor, loop: Loop, dsn: str, tmp_path: Any
) -> None:
    path = tmp_path / "hostile.json"
    path.write_text(json.dumps(_hostile()))
    for expected in ((1, 0, 0), (0, 1, 0)):
        result = run(dsn, "import", str(path), "--format", "chatgpt", "--api-key", admin.api_key, "--quiet")
        assert result.returncode == 0, result.stderr
        report = report_of(result)
        assert (report["imported"], report["skipped"], report["failed"]) == expected
    (row,) = sql(
        loop, dsn, "SELECT m.content, a.data FROM message m JOIN message_attachment a ON a.message_id = m.id"
    )
    assert row["content"] == "[weird]"
    assert json.loads(row["data"]) == {
        "type": "weird",
        "data": {"truncated": True, "reason": "nested too deeply"},
    }
    # Through the API the request's own JSON depth limit refuses it first; within it, the same import works.
    error = admin.client.error(REPORT, {"i": {"format": "CHATGPT", "data": _hostile()}})
    assert (error["extensions"]["code"], error["extensions"]["limitName"]) == ("BAD_USER_INPUT", "jsonDepth")
    shallow = _hostile(depth=20)
    shallow[0]["id"] = "hostile-2"
    for expected in ((1, 0, 0), (0, 1, 0)):
        again = admin.client.ok(REPORT, {"i": {"format": "CHATGPT", "data": shallow}})[
            "conversationImportReport"
        ]
        assert (again["imported"], again["skipped"], again["failed"]) == expected


def test_a_conversation_refused_when_its_insert_comes_names_the_file_it_was_read_from(
    admin: Actor, dsn: str, tmp_path: Any
) -> None:
    """ChatGPT conversations are planned when inserted, after the next file may be read: a refusal still names
    its own file (the split export's first shard here), with its position."""
    bad = {"id": "broken-1", "title": "Broken", "mapping": ["not", "an", "object"]}
    good = fixture("chatgpt-split/conversations-001.json")
    (tmp_path / "conversations-000.json").write_text(json.dumps([bad]))
    (tmp_path / "conversations-001.json").write_text(json.dumps(good))
    result = run(dsn, "import", str(tmp_path), "--format", "chatgpt", "--api-key", admin.api_key, "--quiet")
    assert result.returncode == 1
    report = report_of(result)
    assert (report["imported"], report["failed"]) == (1, 1)
    (failure,) = report["failures"]
    assert (
        failure["index"],
        failure["external_id"],
        failure["message"],
        failure["offset"],
        failure["line"],
    ) == (
        0,
        "broken-1",
        "`mapping` must be an object of nodes",
        1,
        1,
    )
    assert failure["file"].endswith("conversations-000.json")


def test_a_long_chat_kept_over_the_limits_exports_imports_and_exports_the_same(
    limited: ServerThread, loop: Loop, dsn: str
) -> None:
    """Item 7's repairs survive the round trip: the continuation thread stays a thread, the cut message keeps
    its text and its file part (the file listed as a stored file), and nothing is reported the second time."""
    actor = create_admin(loop, dsn, limited.url)
    other = create_admin(loop, dsn, limited.url)
    data = fixture("fidelity/chatgpt-long.json")
    cid = actor.client.ok(REPORT, {"i": {"format": "CHATGPT", "data": data}})["conversationImportReport"][
        "conversations"
    ][0]["id"]
    first = actor.client.ok(EXPORT, {"id": cid})["conversationExport"]
    assert [m["parent_id"] is None for m in first["messages"]] == [True, *[False] * 3, True, *[False] * 3]
    (cut,) = [m for m in first["messages"] if m["content"] == LONG_CONTENT]
    assert [a["type"] for a in cut["attachments"]] == ["stored_file"]
    again = other.client.ok(REPORT, {"i": {"format": "THREADLINE", "data": first}})[
        "conversationImportReport"
    ]
    assert (again["imported"], again["warnings"]) == (1, [])
    second = other.client.ok(EXPORT, {"id": again["conversations"][0]["id"]})["conversationExport"]
    assert _normalised(second) == _normalised(first)
