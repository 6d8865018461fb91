"""Message content parts (issue 17 item 1): posting parts, reading them back, the text projection, bounds."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from tests.api import create_conversation, reply, snapshot, start_thread, stream_cursor
from tests.harness import Actor, Loop
from tests.ws import WsClient

PARTS = """fragment P on MessagePart {
  __typename
  ... on TextPart { text }
  ... on ImagePart { url fileId mimeType }
  ... on FilePart { name fileId url mimeType }
  ... on ToolCallPart { id name arguments }
  ... on ToolResultPart { toolCallId content isError }
  ... on ReasoningPart { text }
}"""
START = (
    "mutation($c: ID!, $i: MessageInput!) { threadStart(conversationId: $c, input: $i) { id content parts { ...P } } }"
    + PARTS
)
REPLY = (
    "mutation($p: ID!, $i: MessageInput!) { messageReply(parentId: $p, input: $i) { id content role parts { ...P } } }"
    + PARTS
)
MESSAGE = "query($id: ID!) { message(id: $id) { content parts { ...P } } }" + PARTS
TREE = "query($r: ID!) { threadTree(rootId: $r) { nodes { content parts { ...P } } } }" + PARTS
EDIT = "mutation($id: ID!, $c: String!) { messageEdit(id: $id, content: $c) { id } }"
DELETE = "mutation($id: ID!) { messageDelete(id: $id) { id } }"

RICH = [
    {"reasoning": "The user wants weather; call the tool."},
    {"text": "Let me look that up."},
    {"toolCall": {"id": "call_1", "name": "get_weather", "arguments": '{"city": "Paris"}'}},
    {"image": {"url": "https://example.com/a.png", "mimeType": "image/png"}},
    {"image": {"fileId": "file_abc"}},
    {"file": {"name": "notes.pdf", "fileId": "file_def", "mimeType": "application/pdf"}},
]
RICH_OUT = [
    {"__typename": "ReasoningPart", "text": "The user wants weather; call the tool."},
    {"__typename": "TextPart", "text": "Let me look that up."},
    {"__typename": "ToolCallPart", "id": "call_1", "name": "get_weather", "arguments": '{"city": "Paris"}'},
    {"__typename": "ImagePart", "url": "https://example.com/a.png", "fileId": None, "mimeType": "image/png"},
    {"__typename": "ImagePart", "url": None, "fileId": "file_abc", "mimeType": None},
    {
        "__typename": "FilePart",
        "name": "notes.pdf",
        "fileId": "file_def",
        "url": None,
        "mimeType": "application/pdf",
    },
]


def _root(actor: Actor) -> str:
    return start_thread(actor, create_conversation(actor), "what is the weather in Paris?")


def test_a_plain_text_message_has_one_text_part(admin: Actor) -> None:
    root = _root(admin)
    assert admin.client.ok(MESSAGE, {"id": root})["message"] == {
        "content": "what is the weather in Paris?",
        "parts": [{"__typename": "TextPart", "text": "what is the weather in Paris?"}],
    }


def test_parts_are_stored_in_order_and_content_is_their_plain_text_without_reasoning(admin: Actor) -> None:
    root = _root(admin)
    made = admin.client.ok(REPLY, {"p": root, "i": {"role": "ASSISTANT", "parts": RICH}})["messageReply"]
    assert made["content"] == "Let me look that up."
    assert made["parts"] == RICH_OUT
    assert admin.client.ok(MESSAGE, {"id": made["id"]})["message"]["parts"] == RICH_OUT
    nodes = admin.client.ok(TREE, {"r": root})["threadTree"]["nodes"]
    assert [n["parts"] for n in nodes] == [
        [{"__typename": "TextPart", "text": "what is the weather in Paris?"}],
        RICH_OUT,
    ]


def test_a_tool_result_message_has_its_output_as_content(admin: Actor) -> None:
    root = _root(admin)
    call = reply_parts(admin, root, "ASSISTANT", [{"toolCall": {"id": "c1", "name": "f", "arguments": "{}"}}])
    assert call["content"] == ""
    result = reply_parts(
        admin, call["id"], "TOOL", [{"toolResult": {"toolCallId": "c1", "content": "18 C", "isError": False}}]
    )
    assert result["content"] == "18 C"
    assert result["parts"] == [
        {"__typename": "ToolResultPart", "toolCallId": "c1", "content": "18 C", "isError": False}
    ]


def reply_parts(actor: Actor, parent: str, role: str, parts: list[dict[str, Any]]) -> dict[str, Any]:
    made: dict[str, Any] = actor.client.ok(REPLY, {"p": parent, "i": {"role": role, "parts": parts}})[
        "messageReply"
    ]
    return made


def test_a_single_text_part_is_plain_text(admin: Actor) -> None:
    root = _root(admin)
    made = reply_parts(admin, root, "USER", [{"text": "just words"}])
    assert made["content"] == "just words"
    assert made["parts"] == [{"__typename": "TextPart", "text": "just words"}]


def test_thread_start_takes_parts(admin: Actor) -> None:
    conversation = create_conversation(admin)
    made = admin.client.ok(
        START,
        {
            "c": conversation,
            "i": {"parts": [{"text": "look"}, {"image": {"url": "https://example.com/x.jpg"}}]},
        },
    )["threadStart"]
    assert made["content"] == "look"
    assert made["parts"] == [
        {"__typename": "TextPart", "text": "look"},
        {"__typename": "ImagePart", "url": "https://example.com/x.jpg", "fileId": None, "mimeType": None},
    ]


def test_an_edit_replaces_the_text_and_keeps_the_other_parts(admin: Actor) -> None:
    root = _root(admin)
    made = reply_parts(admin, root, "USER", [{"text": "before"}, {"image": {"fileId": "f1"}}])
    admin.client.ok(EDIT, {"id": made["id"], "c": "after"})
    assert admin.client.ok(MESSAGE, {"id": made["id"]})["message"] == {
        "content": "after",
        "parts": [
            {"__typename": "TextPart", "text": "after"},
            {"__typename": "ImagePart", "url": None, "fileId": "f1", "mimeType": None},
        ],
    }


def test_an_edit_of_a_tool_result_replaces_its_output_and_keeps_its_call(
    admin: Actor, loop: Loop, dsn: str
) -> None:
    """A TOOL message's text is its result's content: an edit replaces it there (the call id stays), and the earlier
    output is nowhere (it stayed in the result part, in `Message.parts` and the context of later runs)."""
    root = _root(admin)
    call = reply_parts(admin, root, "ASSISTANT", [{"toolCall": {"id": "c1", "name": "f", "arguments": "{}"}}])
    result = reply_parts(
        admin,
        call["id"],
        "TOOL",
        [
            {"toolResult": {"toolCallId": "c1", "content": "secret zebra", "isError": False}},
            {"toolResult": {"toolCallId": "c2", "content": "second secret", "isError": True}},
        ],
    )
    admin.client.ok(EDIT, {"id": result["id"], "c": "public word"})
    assert admin.client.ok(MESSAGE, {"id": result["id"]})["message"] == {
        "content": "public word",
        "parts": [
            {"__typename": "ToolResultPart", "toolCallId": "c1", "content": "public word", "isError": False},
            {"__typename": "ToolResultPart", "toolCallId": "c2", "content": "", "isError": True},
        ],
    }
    rows = snapshot(loop, dsn)["message"]
    assert not any("secret zebra" in repr(row) or "second secret" in repr(row) for row in rows)


def test_a_deleted_message_has_no_parts_left_in_the_database(admin: Actor, loop: Loop, dsn: str) -> None:
    root = _root(admin)
    made = reply_parts(admin, root, "ASSISTANT", [{"reasoning": "secret thought"}, {"text": "answer"}])
    admin.client.ok(DELETE, {"id": made["id"]})
    assert admin.client.ok(MESSAGE, {"id": made["id"]})["message"] == {"content": "", "parts": []}
    rows = snapshot(loop, dsn)["message"]
    assert not any("secret thought" in repr(row) for row in rows)


def test_a_text_reply_still_works_without_parts(admin: Actor) -> None:
    root = _root(admin)
    message = reply(admin, root, "plain")
    assert admin.client.ok(MESSAGE, {"id": message})["message"]["content"] == "plain"


# --- bounds -----------------------------------------------------------------------------------------


def _refused(actor: Actor, parent: str, parts: list[dict[str, Any]], loop: Loop, dsn: str) -> dict[str, Any]:
    before = snapshot(loop, dsn)
    error = actor.client.error(REPLY, {"p": parent, "i": {"role": "ASSISTANT", "parts": parts}})
    assert snapshot(loop, dsn) == before
    return error


def test_too_many_parts_are_refused(admin: Actor, loop: Loop, dsn: str) -> None:
    root = _root(admin)
    error = _refused(admin, root, [{"text": f"p{i}"} for i in range(65)], loop, dsn)
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["extensions"]["limit"] == 64


def test_parts_over_the_message_size_are_refused(admin: Actor, loop: Loop, dsn: str) -> None:
    root = _root(admin)
    big = "x" * (600 * 1024)
    error = _refused(admin, root, [{"text": big}, {"reasoning": big}], loop, dsn)
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["extensions"]["limit"] == 1024 * 1024


def test_deeply_nested_tool_arguments_are_refused(admin: Actor, loop: Loop, dsn: str) -> None:
    root = _root(admin)
    deep = "[" * 33 + "]" * 33
    error = _refused(admin, root, [{"toolCall": {"id": "c", "name": "f", "arguments": deep}}], loop, dsn)
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["extensions"]["limit"] == 32
    # 32 levels are fine.
    ok = "[" * 32 + "]" * 32
    assert reply_parts(admin, root, "ASSISTANT", [{"toolCall": {"id": "c", "name": "f", "arguments": ok}}])


def test_tool_arguments_must_be_json(admin: Actor, loop: Loop, dsn: str) -> None:
    root = _root(admin)
    error = _refused(admin, root, [{"toolCall": {"id": "c", "name": "f", "arguments": "{oops"}}], loop, dsn)
    assert error["extensions"]["code"] == "BAD_USER_INPUT"


def test_an_image_needs_exactly_one_of_url_and_file_id(admin: Actor, loop: Loop, dsn: str) -> None:
    root = _root(admin)
    for image in ({}, {"url": "https://x", "fileId": "f"}):
        error = _refused(admin, root, [{"image": image}], loop, dsn)
        assert error["extensions"]["code"] == "BAD_USER_INPUT"


def test_script_urls_are_refused(admin: Actor, loop: Loop, dsn: str) -> None:
    root = _root(admin)
    for part in (
        {"image": {"url": " JavaScript:alert(1)"}},
        {"file": {"name": "x", "url": "vbscript:msgbox"}},
    ):
        assert _refused(admin, root, [part], loop, dsn)["extensions"]["code"] == "BAD_USER_INPUT"


def test_a_part_input_sets_exactly_one_field(admin: Actor, loop: Loop, dsn: str) -> None:
    root = _root(admin)
    before = snapshot(loop, dsn)
    body = admin.client.execute(REPLY, {"p": root, "i": {"parts": [{"text": "a", "reasoning": "b"}]}})
    assert body["errors"]
    assert snapshot(loop, dsn) == before


def test_empty_parts_and_empty_content_are_refused(admin: Actor, loop: Loop, dsn: str) -> None:
    root = _root(admin)
    assert _refused(admin, root, [], loop, dsn)["extensions"]["code"] == "BAD_USER_INPUT"
    assert _refused(admin, root, [{"text": "  "}], loop, dsn)["extensions"]["code"] == "BAD_USER_INPUT"


def test_parts_read_in_a_list_cost_one_statement(admin: Actor) -> None:
    root = _root(admin)
    for i in range(5):
        reply_parts(admin, root, "ASSISTANT", [{"reasoning": f"r{i}"}, {"text": f"t{i}"}])
    few = admin.client.statements(TREE, {"r": root})
    for i in range(5):
        reply_parts(admin, root, "ASSISTANT", [{"reasoning": f"r{i}"}, {"text": f"t{i}"}])
    assert admin.client.statements(TREE, {"r": root}) == few


def test_arguments_are_kept_as_written(admin: Actor) -> None:
    root = _root(admin)
    text = '{ "b": 1,  "a": [1, 2] }'
    made = reply_parts(admin, root, "ASSISTANT", [{"toolCall": {"id": "c", "name": "f", "arguments": text}}])
    assert made["parts"][0]["arguments"] == text
    assert json.loads(text) == {"b": 1, "a": [1, 2]}


FORK = (
    """mutation($m: ID!) { conversationFork(messageId: $m, mode: THREAD) {
  messages(first: 10) { edges { node { content parts { ...P } } } } } }"""
    + PARTS
)


def test_a_fork_keeps_the_parts(admin: Actor) -> None:
    root = _root(admin)
    made = reply_parts(admin, root, "ASSISTANT", RICH)
    fork = admin.client.ok(FORK, {"m": made["id"]})["conversationFork"]
    nodes = [e["node"] for e in fork["messages"]["edges"]]
    assert [n["parts"] for n in nodes] == [
        [{"__typename": "TextPart", "text": "what is the weather in Paris?"}],
        RICH_OUT,
    ]


LIVE = (
    """subscription($c: ID!, $s: String) { conversationEvents(conversationId: $c, since: $s) {
  type ... on ThreadActivityEvent { changedMessage { content parts { ...P } } } } }"""
    + PARTS
)


def test_live_events_carry_the_parts(admin: Actor, ws: Callable[..., WsClient]) -> None:
    conversation = create_conversation(admin)
    root = start_thread(admin, conversation, "question")
    client = ws(admin)
    client.subscribe(LIVE, {"c": conversation, "s": stream_cursor(admin)})
    reply_parts(admin, root, "ASSISTANT", RICH)
    while True:
        event = client.next_event()["conversationEvents"]
        if event["type"] == "thread.activity":
            break
    assert event["changedMessage"] == {"content": "Let me look that up.", "parts": RICH_OUT}


EDIT_AS_BRANCH = (
    "mutation($id: ID!, $c: String!) { messageEdit(id: $id, content: $c, asBranch: true) { content parts { ...P } } }"
    + PARTS
)


def test_an_edit_as_a_branch_keeps_the_other_parts(admin: Actor) -> None:
    root = _root(admin)
    made = reply_parts(admin, root, "USER", [{"text": "before"}, {"image": {"fileId": "f1"}}])
    branch = admin.client.ok(EDIT_AS_BRANCH, {"id": made["id"], "c": "after"})["messageEdit"]
    assert branch == {
        "content": "after",
        "parts": [
            {"__typename": "TextPart", "text": "after"},
            {"__typename": "ImagePart", "url": None, "fileId": "f1", "mimeType": None},
        ],
    }
