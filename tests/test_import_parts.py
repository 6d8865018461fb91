"""Imports keep non-text content as message parts (issue 17 item 1, issue 22 items 3 and 6): ChatGPT code,
execution output, browsing, images and a thinking model's thoughts; Claude thinking, tool_use, tool_result
and attachments. Exports write the parts back, and an export imported again exports the same parts."""

from __future__ import annotations

from typing import Any

from tests.harness import Actor

IMPORT_REPORT = """mutation($i: ConversationImportInput!) { conversationImportReport(input: $i) {
  imported failed messageCount warnings failures { message } conversations { id messageCount } } }"""
EXPORT = "query($id: ID!) { conversationExport(id: $id) }"
PARTS = """
  __typename
  ... on TextPart { text }
  ... on ImagePart { url fileId mimeType }
  ... on FilePart { name fileId url mimeType }
  ... on ToolCallPart { id name arguments }
  ... on ToolResultPart { toolCallId content isError }
  ... on ReasoningPart { text }"""
MESSAGES = (
    """query($id: ID!) { conversation(id: $id) { messages(first: 100) { edges { node {
  role content parent: parentId id parts {"""
    + PARTS
    + "} } } } } }"
)


def _node(
    node_id: str, parent: str | None, children: list[str], message: dict[str, Any] | None
) -> dict[str, Any]:
    return {"id": node_id, "parent": parent, "children": children, "message": message}


def _msg(node_id: str, role: str, content: dict[str, Any], t: float, **extra: Any) -> dict[str, Any]:
    return {
        "id": node_id,
        "author": {"role": role, "name": extra.pop("name", None), "metadata": {}},
        "create_time": t,
        "content": content,
        "status": "finished_successfully",
        "metadata": extra.pop("metadata", {}),
        "recipient": extra.pop("recipient", "all"),
        **extra,
    }


# A 2025 ChatGPT export in its real shape: a thinking model's `thoughts` and `reasoning_recap` nodes before the
# answer, a code-interpreter call and its execution output, a browsing result, and an uploaded image.
CHATGPT = [
    {
        "title": "Thinking, tools and a picture",
        "create_time": 1733000000.0,
        "update_time": 1733000100.0,
        "conversation_id": "gpt-parts-1",
        "id": "gpt-parts-1",
        "default_model_slug": "o3",
        "current_node": "answer2",
        "mapping": {
            "root": _node("root", None, ["q1"], None),
            "q1": _node(
                "q1",
                "root",
                ["thoughts1"],
                _msg(
                    "q1",
                    "user",
                    {
                        "content_type": "multimodal_text",
                        "parts": [
                            {
                                "content_type": "image_asset_pointer",
                                "asset_pointer": "file-service://file-xyz",
                                "size_bytes": 1000,
                                "width": 10,
                                "height": 10,
                            },
                            "How many apples are in this picture, squared?",
                        ],
                    },
                    1733000001.0,
                ),
            ),
            "thoughts1": _node(
                "thoughts1",
                "q1",
                ["recap1"],
                _msg(
                    "thoughts1",
                    "assistant",
                    {
                        "content_type": "thoughts",
                        "thoughts": [{"summary": "Counting", "content": "I see three apples."}],
                        "source_analysis_msg_id": "x",
                    },
                    1733000002.0,
                    metadata={"model_slug": "o3"},
                ),
            ),
            "recap1": _node(
                "recap1",
                "thoughts1",
                ["code1"],
                _msg(
                    "recap1",
                    "assistant",
                    {"content_type": "reasoning_recap", "content": "Thought for 4 seconds"},
                    1733000003.0,
                    metadata={"model_slug": "o3"},
                ),
            ),
            "code1": _node(
                "code1",
                "recap1",
                ["out1"],
                _msg(
                    "code1",
                    "assistant",
                    {"content_type": "code", "language": "python", "text": "print(3 ** 2)"},
                    1733000004.0,
                    recipient="python",
                    metadata={"model_slug": "o3"},
                ),
            ),
            "out1": _node(
                "out1",
                "code1",
                ["answer1"],
                _msg(
                    "out1",
                    "tool",
                    {"content_type": "execution_output", "text": "9"},
                    1733000005.0,
                    name="python",
                ),
            ),
            "answer1": _node(
                "answer1",
                "out1",
                ["browse1"],
                _msg(
                    "answer1",
                    "assistant",
                    {"content_type": "text", "parts": ["Three apples, squared: 9."]},
                    1733000006.0,
                    metadata={"model_slug": "o3"},
                ),
            ),
            "browse1": _node(
                "browse1",
                "answer1",
                ["answer2"],
                _msg(
                    "browse1",
                    "tool",
                    {
                        "content_type": "tether_browsing_display",
                        "result": "Apples: 2,500 varieties",
                        "summary": "",
                    },
                    1733000007.0,
                    name="browser",
                ),
            ),
            "answer2": _node(
                "answer2",
                "browse1",
                [],
                _msg(
                    "answer2",
                    "assistant",
                    {"content_type": "text", "parts": ["There are about 2,500 varieties."]},
                    1733000008.0,
                    metadata={"model_slug": "o3"},
                ),
            ),
        },
    }
]

# A Claude export in its real shape: a thinking block, a tool_use and its tool_result, text, and an attachment.
CLAUDE = [
    {
        "uuid": "claude-parts-1",
        "name": "Weather",
        "created_at": "2025-03-01T10:00:00.000000Z",
        "updated_at": "2025-03-01T10:01:00.000000Z",
        "account": {"uuid": "acc"},
        "chat_messages": [
            {
                "uuid": "h1",
                "sender": "human",
                "text": "Weather in Paris? See my notes.",
                "content": [{"type": "text", "text": "Weather in Paris? See my notes."}],
                "created_at": "2025-03-01T10:00:00.000000Z",
                "attachments": [
                    {
                        "file_name": "notes.txt",
                        "file_size": 12,
                        "file_type": "text/plain",
                        "extracted_content": "bring umbrella",
                    }
                ],
                "files": [],
                "parent_message_uuid": "00000000-0000-4000-8000-000000000000",
            },
            {
                "uuid": "a1",
                "sender": "assistant",
                "text": "",
                "content": [
                    {"type": "thinking", "thinking": "The user wants the weather; use the tool."},
                    {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "Paris"}},
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_01",
                        "name": "get_weather",
                        "content": [{"type": "text", "text": "18 C, light rain"}],
                        "is_error": False,
                    },
                    {"type": "text", "text": "It is 18 C with light rain: take the umbrella."},
                ],
                "created_at": "2025-03-01T10:00:30.000000Z",
                "attachments": [],
                "files": [],
                "parent_message_uuid": "h1",
            },
        ],
    }
]


def _import(actor: Actor, fmt: str, data: Any) -> dict[str, Any]:
    report: dict[str, Any] = actor.client.ok(IMPORT_REPORT, {"i": {"format": fmt, "data": data}})[
        "conversationImportReport"
    ]
    assert (report["imported"], report["failed"]) == (1, 0), report
    return report


def _messages(actor: Actor, conversation_id: str) -> list[dict[str, Any]]:
    edges = actor.client.ok(MESSAGES, {"id": conversation_id})["conversation"]["messages"]["edges"]
    return [e["node"] for e in edges]


def test_chatgpt_thoughts_code_output_browsing_and_images_become_parts(admin: Actor) -> None:
    report = _import(admin, "CHATGPT", CHATGPT)
    conversation = report["conversations"][0]
    # The two reasoning nodes are not messages of their own any more: 8 nodes, 6 messages.
    assert conversation["messageCount"] == 6
    messages = _messages(admin, conversation["id"])
    assert [(m["role"], m["content"], m["parts"]) for m in messages] == [
        (
            "USER",
            "How many apples are in this picture, squared?",
            [
                {
                    "__typename": "ImagePart",
                    "url": "file-service://file-xyz",
                    "fileId": None,
                    "mimeType": None,
                },
                {"__typename": "TextPart", "text": "How many apples are in this picture, squared?"},
            ],
        ),
        (
            "ASSISTANT",
            "```python\nprint(3 ** 2)\n```",
            [
                {"__typename": "ReasoningPart", "text": "Counting\n\nI see three apples."},
                {"__typename": "ReasoningPart", "text": "Thought for 4 seconds"},
                {
                    "__typename": "ToolCallPart",
                    "id": "code1",
                    "name": "python",
                    "arguments": '{"code": "print(3 ** 2)", "language": "python"}',
                },
            ],
        ),
        (
            "TOOL",
            "9",
            [{"__typename": "ToolResultPart", "toolCallId": "code1", "content": "9", "isError": False}],
        ),
        (
            "ASSISTANT",
            "Three apples, squared: 9.",
            [{"__typename": "TextPart", "text": "Three apples, squared: 9."}],
        ),
        (
            "TOOL",
            "Apples: 2,500 varieties",
            [
                {
                    "__typename": "ToolResultPart",
                    "toolCallId": "answer1",
                    "content": "Apples: 2,500 varieties",
                    "isError": False,
                }
            ],
        ),
        (
            "ASSISTANT",
            "There are about 2,500 varieties.",
            [{"__typename": "TextPart", "text": "There are about 2,500 varieties."}],
        ),
    ]
    # The answer that took the reasoning replies to the question (the reasoning nodes' place in the tree).
    assert messages[1]["parent"] == messages[0]["id"]
    # Reasoning is never in `content` (what search finds and runs read).
    assert not any("three apples" in m["content"] for m in messages)


def test_a_thoughts_node_without_an_answer_below_stays_as_a_reasoning_message(admin: Actor) -> None:
    conversation = {**CHATGPT[0], "conversation_id": "gpt-parts-2", "id": "gpt-parts-2"}
    mapping = dict(conversation["mapping"])
    mapping["thoughts1"] = {**mapping["thoughts1"], "children": []}
    conversation["mapping"] = {k: mapping[k] for k in ("root", "q1", "thoughts1")}
    conversation["current_node"] = "thoughts1"
    report = _import(admin, "CHATGPT", [conversation])
    messages = _messages(admin, report["conversations"][0]["id"])
    assert [(m["role"], m["content"], m["parts"]) for m in messages][1] == (
        "ASSISTANT",
        "",
        [{"__typename": "ReasoningPart", "text": "Counting\n\nI see three apples."}],
    )


def test_chatgpt_uploaded_files_become_file_parts(admin: Actor) -> None:
    conversation = {
        "title": "A file",
        "create_time": 1733000000.0,
        "conversation_id": "gpt-parts-files",
        "id": "gpt-parts-files",
        "mapping": {
            "root": _node("root", None, ["u"], None),
            "u": _node(
                "u",
                "root",
                [],
                _msg(
                    "u",
                    "user",
                    {"content_type": "text", "parts": ["Summarise this"]},
                    1733000001.0,
                    metadata={
                        "attachments": [
                            {
                                "id": "file-1",
                                "name": "report.pdf",
                                "size": 1000,
                                "mime_type": "application/pdf",
                            }
                        ]
                    },
                ),
            ),
        },
    }
    report = _import(admin, "CHATGPT", [conversation])
    [message] = _messages(admin, report["conversations"][0]["id"])
    assert (message["content"], message["parts"]) == (
        "Summarise this",
        [
            {"__typename": "TextPart", "text": "Summarise this"},
            {
                "__typename": "FilePart",
                "name": "report.pdf",
                "fileId": None,
                "url": None,
                "mimeType": "application/pdf",
            },
        ],
    )


def test_claude_thinking_tool_use_tool_result_and_attachments_become_parts(admin: Actor) -> None:
    report = _import(admin, "CLAUDE", CLAUDE)
    messages = _messages(admin, report["conversations"][0]["id"])
    assert [(m["role"], m["content"], m["parts"]) for m in messages] == [
        (
            "USER",
            "Weather in Paris? See my notes.",
            [
                {"__typename": "TextPart", "text": "Weather in Paris? See my notes."},
                {
                    "__typename": "FilePart",
                    "name": "notes.txt",
                    "fileId": None,
                    "url": None,
                    "mimeType": "text/plain",
                },
            ],
        ),
        (
            "ASSISTANT",
            "18 C, light rain\n\nIt is 18 C with light rain: take the umbrella.",
            [
                {"__typename": "ReasoningPart", "text": "The user wants the weather; use the tool."},
                {
                    "__typename": "ToolCallPart",
                    "id": "toolu_01",
                    "name": "get_weather",
                    "arguments": '{"city": "Paris"}',
                },
                {
                    "__typename": "ToolResultPart",
                    "toolCallId": "toolu_01",
                    "content": "18 C, light rain",
                    "isError": False,
                },
                {"__typename": "TextPart", "text": "It is 18 C with light rain: take the umbrella."},
            ],
        ),
    ]


def _export(actor: Actor, conversation_id: str) -> dict[str, Any]:
    document: dict[str, Any] = actor.client.ok(EXPORT, {"id": conversation_id})["conversationExport"]
    return document


def _comparable(document: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [(m["role"], m["content"], m.get("parts")) for m in document["messages"]]


def test_exports_write_parts_back_and_a_reimport_exports_the_same(admin: Actor, make_tenant: Any) -> None:
    for fmt, data in (("CHATGPT", CHATGPT), ("CLAUDE", CLAUDE)):
        conversation = _import(admin, fmt, data)["conversations"][0]["id"]
        exported = _export(admin, conversation)
        with_parts = [m for m in exported["messages"] if "parts" in m]
        assert with_parts, fmt
        # A plain-text message is exported as before, without `parts`.
        assert any("parts" not in m for m in exported["messages"]) == (fmt == "CHATGPT")
        assert {p["type"] for m in with_parts for p in m["parts"]} >= {
            "tool_call",
            "tool_result",
            "reasoning",
        }
        other = make_tenant()
        again = _import(other, "THREADLINE", exported)["conversations"][0]["id"]
        assert _comparable(_export(other, again)) == _comparable(exported)


def test_parts_a_file_gets_wrong_are_dropped_with_a_warning_and_the_text_kept(admin: Actor) -> None:
    broken = [dict(CLAUDE[0], uuid="claude-parts-bad")]
    deep: Any = {}
    for _ in range(40):
        deep = {"x": deep}
    assistant = dict(broken[0]["chat_messages"][1])
    assistant["content"] = [
        {"type": "tool_use", "id": "t", "name": "f", "input": deep},
        {"type": "text", "text": "done"},
    ]
    broken[0]["chat_messages"] = [broken[0]["chat_messages"][0], assistant]
    report = _import(admin, "CLAUDE", broken)
    assert any("content parts not kept" in w and "nest" in w for w in report["warnings"])
    messages = _messages(admin, report["conversations"][0]["id"])
    assert (messages[1]["content"], messages[1]["parts"]) == (
        "done",
        [{"__typename": "TextPart", "text": "done"}],
    )


def test_a_merge_re_import_brings_the_parts_of_changed_and_new_messages(admin: Actor) -> None:
    newer = CLAUDE[0]
    older = {
        **newer,
        "chat_messages": [
            newer["chat_messages"][0],
            {**newer["chat_messages"][1], "content": [{"type": "text", "text": "Working on it."}]},
        ],
    }
    first = _import(admin, "CLAUDE", [older])["conversations"][0]["id"]
    follow_up = {
        "uuid": "a2",
        "sender": "assistant",
        "text": "",
        "content": [
            {"type": "thinking", "thinking": "Nothing to add."},
            {"type": "text", "text": "Anything else?"},
        ],
        "created_at": "2025-03-01T10:00:40.000000Z",
        "attachments": [],
        "files": [],
        "parent_message_uuid": "a1",
    }
    grown = {**newer, "chat_messages": [*newer["chat_messages"], follow_up]}
    report = admin.client.ok(IMPORT_REPORT, {"i": {"format": "CLAUDE", "data": [grown]}})[
        "conversationImportReport"
    ]
    assert report["conversations"][0]["id"] == first
    messages = _messages(admin, first)
    assert [m["parts"][0]["__typename"] for m in messages] == ["TextPart", "ReasoningPart", "ReasoningPart"]
    assert [p["__typename"] for p in messages[1]["parts"]] == [
        "ReasoningPart",
        "ToolCallPart",
        "ToolResultPart",
        "TextPart",
    ]
    assert messages[2]["content"] == "Anything else?"
