"""LibreChat and Open WebUI exports import as ChatGPT and Claude ones do (issue 22 item 9): the same trees
(branches become siblings, empty messages left out with their replies moved up), content parts, the report,
re-imports that duplicate nothing and merge a grown export, the current branch where the format has one, and
hostile files refused or repaired with a clear word. Fixtures in tests/fixtures/librechat and
tests/fixtures/openwebui are in the real export shapes (made small by hand): v2 is v1 grown."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.harness import Actor, Loop
from tests.test_porting_cli import report_of, run
from tests.test_porting_import import FIXTURES, assert_tree_is_consistent, fixture, sql, tree_rows
from threadline.ids import Kind, decode_id, encode_id

REPORT = """mutation($i: ConversationImportInput!) { conversationImportReport(input: $i) {
  format imported skipped merged failed messageCount messagesAdded messagesUpdated warnings
  failures { index externalId message }
  merges { conversationId externalId messagesAdded messagesUpdated }
  conversations { id title status aiProvider model tags metadata messageCount createdAt } } }"""
IMPORT = """mutation($i: ConversationImportInput!) { conversationImport(input: $i) { id } }"""
PARTS = """parts { __typename
  ... on TextPart { text }
  ... on ImagePart { url fileId mimeType }
  ... on FilePart { name fileId url mimeType }
  ... on ToolCallPart { id name arguments }
  ... on ToolResultPart { toolCallId content isError }
  ... on ReasoningPart { text } }"""
MESSAGE = (
    """query($id: ID!) { message(id: $id) { role content model editedAt metadata edits { content }
  usage { promptTokens completionTokens imported } feedback { rating reasons comment } """
    + PARTS
    + " } }"
)
CURRENT = """query($r: ID!) { thread(rootId: $r) { currentLeaf { id } } }"""

LIBRECHAT_ID = "7c1e0000-0000-4000-8000-00000000c1a7"
CHAT_A = "0b1d5a7e-0000-4000-8000-00000000a11a"
CHAT_B = "0b1d5a7e-0000-4000-8000-00000000b22b"
CHAT_C = "0b1d5a7e-0000-4000-8000-00000000c33c"

# (depth, role, content) depth-first, siblings in branch order: the LibreChat v1 tree. The empty answer lc-a3
# is left out and "hello?" answers "lol" instead; lc-u3 ("lol") is an edit of "thanks": a sibling branch.
LIBRECHAT_V1 = [
    (0, "USER", "How do I activate a venv?"),
    (1, "ASSISTANT", "Run `source venv/bin/activate`."),
    (2, "USER", "thanks"),
    (3, "ASSISTANT", "You're welcome!"),
    (3, "ASSISTANT", "Happy coding! (edited)"),
    (2, "USER", "lol"),
    (3, "USER", "hello?"),
    (4, "ASSISTANT", "3 results\n\nHello! Still here."),
    (0, "USER", "What is this?"),
    (1, "ASSISTANT", "A cat, drawn again."),
]
LIBRECHAT_V2 = [
    (0, "USER", "How do I activate a venv?"),
    (1, "ASSISTANT", "Run `source venv/bin/activate` from the project folder."),
    (2, "USER", "thanks"),
    (3, "ASSISTANT", "You're welcome!"),
    (4, "USER", "one more thing"),
    (5, "ASSISTANT", "Sure, ask away."),
    (3, "ASSISTANT", "Happy coding! (edited)"),
    (2, "USER", "lol"),
    (3, "USER", "hello?"),
    (4, "ASSISTANT", "3 results\n\nHello! Still here."),
    (0, "USER", "What is this?"),
    (1, "ASSISTANT", "A cat, drawn again."),
]
LIBRECHAT_WARNING = (
    f"{LIBRECHAT_ID}: 1 empty message(s) skipped (no text, parts or files); their replies now answer the message "
    "before them: lc-a3"
)
# The Open WebUI chat "Capitals": two models answered the first question (siblings), the empty answer m4 is
# left out, and the first question edited into another one is a second thread.
CHAT_A_V1 = [
    (0, "USER", "Capital of France?"),
    (1, "ASSISTANT", "Paris."),
    (1, "ASSISTANT", "It is Paris."),
    (2, "USER", "And Spain?"),
    (3, "ASSISTANT", "Madrid."),
    (0, "USER", "Capital of Italy? See the map."),
    (1, "ASSISTANT", "Rome\n\nRome."),
]
CHAT_A_V2 = [
    (0, "USER", "Capital of France?"),
    (1, "ASSISTANT", "Paris, of course."),
    (1, "ASSISTANT", "It is Paris."),
    (2, "USER", "And Spain?"),
    (3, "ASSISTANT", "Madrid."),
    (4, "USER", "Thanks"),
    (5, "ASSISTANT", "You're welcome."),
    (0, "USER", "Capital of Italy? See the map."),
    (1, "ASSISTANT", "Rome\n\nRome."),
]


def report(actor: Actor, data: Any, fmt: str | None = None) -> dict[str, Any]:
    variables = {"i": {"data": data, **({"format": fmt} if fmt else {})}}
    result: dict[str, Any] = actor.client.ok(REPORT, variables)["conversationImportReport"]
    return result


def counts(r: dict[str, Any]) -> tuple[int, int, int, int, int, int, int]:
    keys = ("imported", "merged", "skipped", "failed", "messageCount", "messagesAdded", "messagesUpdated")
    return tuple(r[k] for k in keys)  # type: ignore[return-value]


def outline(loop: Loop, dsn: str, conversation_id: str) -> list[tuple[int, str, str]]:
    return [(r["depth"], r["role"], r["content"]) for r in tree_rows(loop, dsn, conversation_id)]


def ids(loop: Loop, dsn: str, conversation_id: str) -> dict[str, str]:
    """Source message id -> Message.id."""
    return {r["import_key"]: encode_id(Kind.MESSAGE, r["id"]) for r in tree_rows(loop, dsn, conversation_id)}


def message(actor: Actor, message_id: str) -> dict[str, Any]:
    found: dict[str, Any] = actor.client.ok(MESSAGE, {"id": message_id})["message"]
    return found


def leaf(actor: Actor, root_id: str) -> str:
    return str(actor.client.ok(CURRENT, {"r": root_id})["thread"]["currentLeaf"]["id"])


def _cli(dsn: str, actor: Actor, path: Path, *extra: str) -> Any:
    return run(dsn, "import", str(path), "--api-key", actor.api_key, "--quiet", *extra)


# -- LibreChat ------------------------------------------------------------------------------------------------


def test_librechat_tree_export_becomes_the_same_tree_with_parts_edits_and_usage(
    admin: Actor, loop: Loop, dsn: str
) -> None:
    r = report(admin, fixture("librechat/tree-v1.json"))  # no format: detected
    assert r["format"] == "LIBRECHAT"
    assert counts(r) == (1, 0, 0, 0, 10, 0, 0)
    assert r["warnings"] == [LIBRECHAT_WARNING]
    (conversation,) = r["conversations"]
    assert {k: conversation[k] for k in ("title", "status", "aiProvider", "model", "messageCount")} == {
        "title": "Python venv help",
        "status": "ACTIVE",
        "aiProvider": "openai",
        "model": "gpt-4o",
        "messageCount": 10,
    }
    assert conversation["metadata"] == {
        "endpoint": "openAI",
        "label": "Software Engineer",
        "instructions": "You are an expert software engineer.",
    }
    assert conversation["createdAt"] == "2024-05-01T16:35:11+00:00"
    cid = conversation["id"]
    assert outline(loop, dsn, cid) == LIBRECHAT_V1
    assert_tree_is_consistent(loop, dsn, cid)
    m = ids(loop, dsn, cid)
    assert set(m) == {
        "lc-u1",
        "lc-a1",
        "lc-u2",
        "lc-a2a",
        "lc-a2b",
        "lc-u3",
        "lc-u4",
        "lc-a4",
        "lc-u5",
        "lc-a5",
    }

    answer = message(admin, m["lc-a1"])
    assert answer["model"] == "gpt-4o"
    assert answer["metadata"] == {"sender": "Software Engineer"}
    assert answer["usage"] == {"promptTokens": 40, "completionTokens": 12, "imported": True}
    assert (answer["editedAt"], message(admin, m["lc-u1"])["usage"]) == (None, None)
    assert message(admin, m["lc-a2b"])["editedAt"] == "2024-05-02T09:00:00+00:00"
    # An agent's answer: its thinking, a tool call and its result, then the text (content: the projection).
    assert message(admin, m["lc-a4"])["parts"] == [
        {"__typename": "ReasoningPart", "text": "The user says hello again."},
        {
            "__typename": "ToolCallPart",
            "id": "call_lc_1",
            "name": "web_search",
            "arguments": '{"q":"greeting"}',
        },
        {"__typename": "ToolResultPart", "toolCallId": "call_lc_1", "content": "3 results", "isError": False},
        {"__typename": "TextPart", "text": "Hello! Still here."},
    ]
    assert message(admin, m["lc-u5"])["parts"] == [
        {"__typename": "TextPart", "text": "What is this?"},
        {"__typename": "ImagePart", "url": "/images/u1/cat.png", "fileId": None, "mimeType": "image/png"},
        {
            "__typename": "FilePart",
            "name": "notes.pdf",
            "fileId": None,
            "url": "/uploads/u1/notes.pdf",
            "mimeType": "application/pdf",
        },
    ]
    assert message(admin, m["lc-a5"])["parts"] == [
        {"__typename": "ImagePart", "url": "/images/u1/generated.png", "fileId": None, "mimeType": None},
        {"__typename": "TextPart", "text": "A cat, drawn again."},
    ]
    # The files stay attachments too (what the export said about them).
    rows = sql(
        loop,
        dsn,
        "SELECT a.data FROM message_attachment a JOIN message m ON m.id = a.message_id "
        "WHERE m.import_key = 'lc-u5' ORDER BY a.position",
    )
    assert [json.loads(r["data"]) if isinstance(r["data"], str) else r["data"] for r in rows] == [
        {
            "type": "image",
            "filename": "cat.png",
            "file_id": "f-1",
            "mime_type": "image/png",
            "pointer": "/images/u1/cat.png",
            "size_bytes": 2048,
        },
        {
            "type": "file",
            "filename": "notes.pdf",
            "file_id": "f-2",
            "mime_type": "application/pdf",
            "pointer": "/uploads/u1/notes.pdf",
            "size_bytes": 4096,
        },
    ]


def test_librechat_flat_export_is_the_same_conversation_as_its_tree_export(
    admin: Actor, loop: Loop, dsn: str
) -> None:
    flat = report(admin, fixture("librechat/flat-v1.json"), "LIBRECHAT")
    assert counts(flat) == (1, 0, 0, 0, 10, 0, 0)
    (conversation,) = flat["conversations"]
    assert outline(loop, dsn, conversation["id"]) == LIBRECHAT_V1
    # Same conversation, same message ids: the tree export of it is already imported.
    tree = report(admin, fixture("librechat/tree-v1.json"), "LIBRECHAT")
    assert counts(tree) == (0, 0, 1, 0, 0, 0, 0)
    assert [c["id"] for c in tree["conversations"]] == [conversation["id"]]
    assert sql(loop, dsn, "SELECT count(*) AS n FROM message")[0]["n"] == 10


def test_librechat_reimport_through_the_cli_is_idempotent_and_a_grown_export_merges(
    admin: Actor, loop: Loop, dsn: str
) -> None:
    first = _cli(dsn, admin, FIXTURES / "librechat" / "tree-v1.json")  # no --format: detected
    assert first.returncode == 0, first.stderr
    r = report_of(first)
    assert (r["format"], r["imported"], r["skipped"], r["merged"], r["failed"], r["messages"]) == (
        "librechat", 1, 0, 0, 0, 10
    )  # fmt: skip
    assert r["warnings"] == [LIBRECHAT_WARNING]
    (row,) = sql(loop, dsn, "SELECT id FROM conversation")
    cid = encode_id(Kind.CONVERSATION, row["id"])
    before = ids(loop, dsn, cid)

    again = report_of(_cli(dsn, admin, FIXTURES / "librechat" / "tree-v1.json", "--format", "librechat"))
    assert (again["imported"], again["skipped"], again["merged"], again["messages"]) == (0, 1, 0, 0)

    grown = _cli(dsn, admin, FIXTURES / "librechat" / "tree-v2.json")
    assert grown.returncode == 0, grown.stderr
    r2 = report_of(grown)
    assert (r2["imported"], r2["skipped"], r2["merged"], r2["messages"]) == (0, 0, 1, 2)
    assert r2["merges"] == [
        {"conversationId": cid, "externalId": LIBRECHAT_ID, "messagesAdded": 2, "messagesUpdated": 1}
    ]
    assert outline(loop, dsn, cid) == LIBRECHAT_V2
    assert_tree_is_consistent(loop, dsn, cid)
    after = ids(loop, dsn, cid)
    assert {k: after[k] for k in before} == before  # earlier messages keep their ids
    edited = message(admin, after["lc-a1"])
    assert edited["edits"] == [{"content": "Run `source venv/bin/activate`."}]
    assert edited["content"] == "Run `source venv/bin/activate` from the project folder."
    assert sql(loop, dsn, "SELECT count(*) AS n FROM conversation")[0]["n"] == 1


# -- Open WebUI -----------------------------------------------------------------------------------------------


def test_openwebui_export_becomes_trees_with_parts_feedback_and_current_branch(
    admin: Actor, loop: Loop, dsn: str
) -> None:
    r = report(admin, fixture("openwebui/chats-v1.json"))  # no format: detected
    assert r["format"] == "OPENWEBUI"
    assert counts(r) == (3, 0, 0, 0, 12, 0, 0)
    assert r["warnings"] == [
        f"{CHAT_A}: 1 empty message(s) skipped (no text, parts or files); their replies now answer the message "
        "before them: m4",
        f"{CHAT_B}: 1 empty message(s) skipped (no text, parts or files); their replies now answer the message "
        "before them: r4",
    ]
    a, b, c = r["conversations"]
    assert [(x["title"], x["status"], x["model"], x["tags"], x["messageCount"]) for x in (a, b, c)] == [
        ("Capitals", "ACTIVE", "llama3.1:8b", ["geography"], 7),
        ("Arithmetic", "ARCHIVED", "deepseek-r1:7b", [], 3),
        ("Old chat", "ACTIVE", "mistral:7b", [], 2),
    ]
    assert a["createdAt"] == "2024-05-29T16:26:40+00:00"
    assert outline(loop, dsn, a["id"]) == CHAT_A_V1
    assert outline(loop, dsn, b["id"]) == [
        (0, "USER", "What is 15 * 17?"),
        (1, "ASSISTANT", "255\n\n255"),
        (2, "USER", "Double it"),
    ]
    assert outline(loop, dsn, c["id"]) == [(0, "USER", "hi"), (1, "ASSISTANT", "Hello!")]
    for x in (a, b, c):
        assert_tree_is_consistent(loop, dsn, x["id"])

    m = ids(loop, dsn, a["id"])
    # currentId: the owner's current branch is where the Open WebUI user was.
    assert leaf(admin, m["m1"]) == m["m4b"]
    # ... and where currentId is an empty (left out) message, the message before it.
    mb = ids(loop, dsn, b["id"])
    assert leaf(admin, mb["r1"]) == mb["r3"]

    rated = message(admin, m["m2"])
    assert rated["feedback"] == {
        "rating": "UP",
        "reasons": ["Accurate information"],
        "comment": "short and right",
    }
    assert rated["usage"] == {"promptTokens": 10, "completionTokens": 2, "imported": True}
    assert (rated["model"], message(admin, m["m2b"])["model"]) == ("llama3.1:8b", "deepseek-r1:7b")
    assert message(admin, m["m2b"])["parts"] == [
        {"__typename": "ReasoningPart", "text": "France's capital\nis Paris"},
        {"__typename": "TextPart", "text": "It is Paris."},
    ]
    assert message(admin, m["i1"])["parts"] == [
        {"__typename": "TextPart", "text": "Capital of Italy? See the map."},
        {
            "__typename": "ImagePart",
            "url": "https://example.com/maps/italy.png",
            "fileId": None,
            "mimeType": None,
        },
    ]
    assert message(admin, m["i2"])["parts"] == [
        {
            "__typename": "ToolCallPart",
            "id": "call_ow_1",
            "name": "lookup_capital",
            "arguments": '{"country":"Italy"}',
        },
        {"__typename": "ToolResultPart", "toolCallId": "call_ow_1", "content": "Rome", "isError": False},
        {"__typename": "TextPart", "text": "Rome."},
    ]
    # Newer Open WebUI: the answer's steps as output items (the inline <details> copy is not read twice).
    assert message(admin, mb["r2"])["parts"] == [
        {"__typename": "ReasoningPart", "text": "15 * 17 = 150 + 105 = 255"},
        {
            "__typename": "ToolCallPart",
            "id": "call_calc",
            "name": "calculator",
            "arguments": '{"expr":"15*17"}',
        },
        {"__typename": "ToolResultPart", "toolCallId": "call_calc", "content": "255", "isError": False},
        {"__typename": "TextPart", "text": "255"},
    ]


def test_openwebui_grown_export_merges_moves_the_current_branch_and_identity_is_per_importer(
    admin: Actor, make_user: Any, loop: Loop, dsn: str
) -> None:
    first = report(admin, fixture("openwebui/chats-v1.json"), "OPENWEBUI")
    a = first["conversations"][0]["id"]
    again = report(admin, fixture("openwebui/chats-v1.json"), "OPENWEBUI")
    assert counts(again) == (0, 0, 3, 0, 0, 0, 0)
    assert [c["id"] for c in again["conversations"]] == [c["id"] for c in first["conversations"]]

    grown = report(admin, fixture("openwebui/chats-v2.json"))
    assert counts(grown) == (0, 1, 2, 0, 2, 2, 1)
    assert grown["merges"] == [
        {"conversationId": a, "externalId": CHAT_A, "messagesAdded": 2, "messagesUpdated": 1}
    ]
    assert outline(loop, dsn, a) == CHAT_A_V2
    assert_tree_is_consistent(loop, dsn, a)
    m = ids(loop, dsn, a)
    assert leaf(admin, m["m1"]) == m["m8"]
    assert message(admin, m["m2"])["edits"] == [{"content": "Paris."}]

    # Another user of the tenant importing their own copy gets their own conversations.
    other = make_user(admin)
    theirs = report(other, fixture("openwebui/chats-v1.json"))
    assert counts(theirs) == (3, 0, 0, 0, 12, 0, 0)
    assert not {c["id"] for c in theirs["conversations"]} & {c["id"] for c in first["conversations"]}


def test_openwebui_through_the_cli_reports_the_detected_format_and_merges(
    admin: Actor, loop: Loop, dsn: str
) -> None:
    done = _cli(dsn, admin, FIXTURES / "openwebui" / "chats-v1.json")
    assert done.returncode == 0, done.stderr
    r = report_of(done)
    assert (r["format"], r["imported"], r["messages"], r["failed"]) == ("openwebui", 3, 12, 0)
    grown = report_of(_cli(dsn, admin, FIXTURES / "openwebui" / "chats-v2.json"))
    assert (grown["merged"], grown["skipped"], grown["messagesAdded"], grown["messagesUpdated"]) == (
        1,
        2,
        2,
        1,
    )
    (row,) = sql(loop, dsn, "SELECT c.id FROM conversation c WHERE c.title = 'Capitals'")
    assert outline(loop, dsn, encode_id(Kind.CONVERSATION, row["id"])) == CHAT_A_V2


# -- Hostile files --------------------------------------------------------------------------------------------


def test_librechat_files_of_bad_shapes_are_refused_per_conversation_with_the_reason(
    admin: Actor, loop: Loop, dsn: str
) -> None:
    good = fixture("librechat/flat-v1.json")
    data = [
        good,
        {"conversationId": "lc-bad-1", "messages": {"not": "a list"}},
        {"title": "no id", "messages": []},
        "a string",
    ]
    r = report(admin, data, "LIBRECHAT")
    assert counts(r)[:4] == (1, 0, 0, 3)
    assert r["failures"] == [
        {"index": 1, "externalId": None, "message": "`messages` must be an array"},
        {
            "index": 2,
            "externalId": None,
            "message": "not a LibreChat conversation: it has no conversationId (keys: messages, title)",
        },
        {"index": 3, "externalId": None, "message": "a LibreChat export must be a JSON object, not str"},
    ]
    # All or nothing: the same input through conversationImport writes nothing at all.
    sql(loop, dsn, "DELETE FROM conversation")
    error = admin.client.error(IMPORT, {"i": {"format": "LIBRECHAT", "data": data}})
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert [f["index"] for f in error["extensions"]["failures"]] == [1, 2, 3]
    assert sql(loop, dsn, "SELECT count(*) AS n FROM message")[0]["n"] == 0


def test_librechat_bad_types_inside_a_conversation_are_repaired_and_reported(
    admin: Actor, loop: Loop, dsn: str
) -> None:
    np = "00000000-0000-0000-0000-000000000000"
    data = {
        "conversationId": "lc-odd",
        "title": 42,
        "recursive": False,
        "messages": [
            {"messageId": "q", "parentMessageId": np, "isCreatedByUser": "yes", "sender": "User", "text": "Q"},
            7,
            {"messageId": "a", "parentMessageId": "q", "isCreatedByUser": False, "text": ["not", "text"],
             "content": "oops", "createdAt": "not a date", "tokenCount": -5, "promptTokens": 10**12},
            {"messageId": "b", "parentMessageId": "c", "isCreatedByUser": False, "text": "B"},
            {"messageId": "c", "parentMessageId": "b", "isCreatedByUser": True, "text": "C"},
            {"messageId": "orphan", "parentMessageId": "gone", "isCreatedByUser": True, "text": "O",
             "content": [{"type": "tool_call"}, "x", {"type": "mystery", "blob": 1}]},
            {"messageId": "q", "parentMessageId": np, "isCreatedByUser": True, "text": "duplicate"},
        ],
    }  # fmt: skip
    r = report(admin, data, "LIBRECHAT")
    assert counts(r)[:4] == (1, 0, 0, 0)
    assert r["warnings"] == [
        "lc-odd: 1 messages entries are not objects, skipped",
        "lc-odd: message a: `text` is not a string, ignored",
        "lc-odd: message q: duplicate id, the later one was skipped",
        "lc-odd: 1 message(s) without a boolean isCreatedByUser: the role was taken from sender (User or not): q",
        "lc-odd: message orphan: parent gone is missing; the message starts a new thread",
        "lc-odd: message b: its parents form a cycle; the cycle was cut here",
    ]
    (conversation,) = r["conversations"]
    assert conversation["title"] == "Untitled conversation"
    rows = tree_rows(loop, dsn, conversation["id"])
    assert [(r["import_key"], r["depth"], r["role"], r["content"]) for r in rows] == [
        ("q", 0, "USER", "Q"),
        ("a", 1, "ASSISTANT", "oops"),
        ("b", 0, "ASSISTANT", "B"),
        ("c", 1, "USER", "C"),
        ("orphan", 0, "USER", "O"),
    ]
    assert [(r["prompt_tokens"], r["completion_tokens"]) for r in rows][1] == (None, None)
    assert_tree_is_consistent(loop, dsn, conversation["id"])


def test_openwebui_files_of_bad_shapes_are_refused_or_repaired_with_the_reason(
    admin: Actor, loop: Loop, dsn: str
) -> None:
    def chat(chat_id: str, history: Any) -> dict[str, Any]:
        return {"id": chat_id, "title": chat_id, "chat": {"history": history}}

    data = [
        {"id": "no-chat", "title": "x", "chat": "nope"},
        chat("bad-history", ["a"]),
        chat("bad-messages", {"messages": ["a"]}),
        chat(
            "repaired",
            {
                "currentId": "nowhere",
                "messages": {
                    "x": {"parentId": "y", "childrenIds": "y", "role": "user", "content": "X", "timestamp": "t"},
                    "y": {"parentId": "x", "childrenIds": [5, None], "role": "robot", "content": "Y"},
                    "z": {"parentId": "missing", "role": "user", "content": {"odd": True}},
                    "w": "not a message",
                    "v": {"parentId": None, "role": "assistant", "content": "V", "files": [
                        {"type": "image", "url": "data:image/png;base64," + "A" * 9000},
                        {"type": "image", "url": "javascript:alert(1)"},
                    ], "usage": {"prompt_tokens": True}, "annotation": {"rating": 5}},
                },
            },
        ),
    ]  # fmt: skip
    r = report(admin, data, "OPENWEBUI")
    assert counts(r)[:4] == (1, 0, 0, 3)
    assert [(f["index"], f["message"]) for f in r["failures"]] == [
        (0, "not an Open WebUI chat: it has no `chat` object (keys: chat, id, title)"),
        (1, "`chat.history` must be an object"),
        (2, "`chat.history.messages` must be an object of messages by id"),
    ]
    assert r["warnings"] == [
        "repaired: 1 history.messages entries are not objects, skipped",
        "repaired: message y: unknown role 'robot', imported as tool",
        "repaired: message z: `content` is not text, ignored",
        "repaired: message v: an inline image of 9022 characters was not kept",
        "repaired: message z: parent missing is missing; the message starts a new thread",
        "repaired: message x: its parents form a cycle; the cycle was cut here",
        "repaired: 1 empty message(s) skipped (no text, parts or files); their replies now answer the message "
        "before them: z",
        "repaired: the current message nowhere is not in the conversation; no current branch kept",
        "repaired: message v: content parts not kept (parts[1].url must not be a script URL); its text was kept",
    ]
    (conversation,) = r["conversations"]
    rows = tree_rows(loop, dsn, conversation["id"])
    assert sorted((r["import_key"], r["depth"], r["role"], r["content"]) for r in rows) == [
        ("v", 0, "ASSISTANT", "V"),
        ("x", 0, "USER", "X"),
        ("y", 1, "TOOL", "Y"),
    ]
    assert_tree_is_consistent(loop, dsn, conversation["id"])


def test_a_librechat_tree_nested_past_the_json_depth_limit_is_refused_whole(
    admin: Actor, loop: Loop, dsn: str, tmp_path: Path
) -> None:
    # The tree export nests two JSON levels per message: through the API the request's nesting bound refuses
    # it before anything is read; the CLI's reader refuses the one conversation and says where.
    depth = 1200  # past both the API's 64 levels and the JSON decoder's recursion limit
    opened = "".join(
        f'{{"messageId": "m{n}", "isCreatedByUser": {str(n % 2 == 0).lower()}, "text": "m{n}", "children": ['
        for n in range(depth)
    )
    body = '{"conversationId": "lc-deep", "recursive": true, "messages": [' + opened + "]}" * depth + "]}"
    query = json.dumps({"query": IMPORT, "variables": {"i": {"format": "LIBRECHAT", "data": "@"}}})
    response = admin.client.http.post(
        "/graphql",
        content=query.replace('"@"', body).encode(),
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert "nested deeper than 64 levels" in response.text
    path = tmp_path / "deep.json"
    path.write_text(body)
    done = _cli(dsn, admin, path, "--format", "librechat")
    assert done.returncode == 1
    (failure,) = report_of(done)["failures"]
    assert failure["message"].startswith("malformed JSON: too deeply nested at byte")
    assert sql(loop, dsn, "SELECT count(*) AS n FROM message")[0]["n"] == 0


def test_imported_sources_are_recorded_under_their_format(admin: Actor, loop: Loop, dsn: str) -> None:
    report(admin, fixture("librechat/tree-v1.json"))
    report(admin, fixture("openwebui/chats-v1.json"))
    rows = sql(
        loop, dsn, "SELECT source, external_id, conversation_id FROM import_source ORDER BY external_id"
    )
    assert [(r["source"], r["external_id"]) for r in rows] == [
        ("openwebui", CHAT_A),
        ("openwebui", CHAT_B),
        ("openwebui", CHAT_C),
        ("librechat", LIBRECHAT_ID),
    ]
    owned = sql(
        loop, dsn, "SELECT id FROM conversation WHERE owner_id = $1", decode_id(admin.user_id, Kind.USER)
    )
    assert {r["conversation_id"] for r in rows} == {r["id"] for r in owned}


def test_imported_librechat_and_openwebui_conversations_round_trip_through_the_threadline_format(
    admin: Actor,
) -> None:
    from tests.test_porting_export import _normalised, export

    librechat = report(admin, fixture("librechat/tree-v1.json"))["conversations"]
    openwebui = report(admin, fixture("openwebui/chats-v1.json"))["conversations"]
    for original in [*librechat, *openwebui]:
        first = export(admin, original["id"])
        copy = report(admin, first)  # no format: detected as THREADLINE
        assert (copy["format"], copy["imported"], copy["failed"]) == ("THREADLINE", 1, 0)
        second = export(admin, copy["conversations"][0]["id"])
        # Usage read from a file is not spend on this server: both token counts are 0.
        assert _normalised(second) == _normalised(first)
