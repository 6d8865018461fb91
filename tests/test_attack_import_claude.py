"""Claude exports as claude.ai writes them, and as a messy user sends them: tool results that name no call, and
fields of the wrong JSON type. Each conversation imports whole, repaired where it must be."""

from __future__ import annotations

from typing import Any

from tests.harness import Actor
from threadline.porting import claude

REPORT = """mutation($i: ConversationImportInput!) { conversationImportReport(input: $i) {
  imported skipped failed messagesUpdated warnings failures { index message } conversations { id } } }"""
MESSAGES = """query($c: ID!) { conversation(id: $c) { messages(first: 10) { edges { node { role content
  parts { __typename
    ... on TextPart { text }
    ... on ReasoningPart { text }
    ... on ToolCallPart { id name arguments }
    ... on ToolResultPart { toolCallId content isError } } } } } } }"""
ROOT = "00000000-0000-4000-8000-000000000000"


def report(actor: Actor, data: Any) -> dict[str, Any]:
    found: dict[str, Any] = actor.client.ok(REPORT, {"i": {"format": "CLAUDE", "data": data}})[
        "conversationImportReport"
    ]
    return found


def messages(actor: Actor, conversation_id: str) -> list[dict[str, Any]]:
    edges = actor.client.ok(MESSAGES, {"c": conversation_id})["conversation"]["messages"]["edges"]
    return [e["node"] for e in edges]


def test_tool_results_without_a_tool_use_id_answer_the_calls_before_them_and_keep_every_part(
    admin: Actor,
) -> None:
    # claude.ai's export: tool_use blocks without `id`, tool_result blocks without `tool_use_id` (with the name).
    answer = {
        "uuid": "a1",
        "sender": "assistant",
        "text": "",
        "parent_message_uuid": "h1",
        "created_at": "2025-03-01T10:01:00Z",
        "content": [
            {"type": "thinking", "thinking": "Search, then read the weather."},
            {"type": "tool_use", "name": "web_search", "input": {"query": "Lisbon museums"}},
            {"type": "tool_use", "name": "weather", "input": {"city": "Lisbon"}},
            {"type": "tool_result", "name": "weather", "content": [{"type": "text", "text": "sunny"}]},
            {"type": "tool_result", "name": "web_search", "content": [{"type": "text", "text": "MAAT"}]},
            {"type": "tool_result", "name": "other", "content": "no call", "is_error": True},
            {"type": "text", "text": "Visit MAAT: it is sunny."},
        ],
    }
    question = {
        "uuid": "h1",
        "sender": "human",
        "text": "Lisbon?",
        "parent_message_uuid": ROOT,
        "created_at": "2025-03-01T10:00:00Z",
    }
    data = [{"uuid": "claude-tools", "name": "Tools", "chat_messages": [question, answer]}]
    r = report(admin, data)
    # Before the fix: "message a1: content parts not kept (parts[3].toolCallId must not be empty)": the calls,
    # their arguments and the reasoning were lost, only the text projection stayed.
    assert (r["imported"], r["warnings"]) == (1, [])
    (_, reply) = messages(admin, r["conversations"][0]["id"])
    assert reply["parts"] == [
        {"__typename": "ReasoningPart", "text": "Search, then read the weather."},
        {"__typename": "ToolCallPart", "id": "a1#1", "name": "web_search", "arguments": '{"query": "Lisbon museums"}'},
        {"__typename": "ToolCallPart", "id": "a1#2", "name": "weather", "arguments": '{"city": "Lisbon"}'},
        {"__typename": "ToolResultPart", "toolCallId": "a1#2", "content": "sunny", "isError": False},
        {"__typename": "ToolResultPart", "toolCallId": "a1#1", "content": "MAAT", "isError": False},
        {"__typename": "ToolResultPart", "toolCallId": "a1#5", "content": "no call", "isError": True},
        {"__typename": "TextPart", "text": "Visit MAAT: it is sunny."},
    ]  # fmt: skip
    again = report(admin, data)
    assert (again["imported"], again["skipped"], again["messagesUpdated"]) == (0, 1, 0)


def test_attachments_and_files_of_the_wrong_type_are_ignored_with_a_warning_and_the_conversation_imports(
    admin: Actor,
) -> None:
    def message(uuid: str, text: str, **odd: Any) -> dict[str, Any]:
        return {"uuid": uuid, "sender": "human", "text": text, "created_at": "2025-03-01T10:00:00Z", **odd}

    data = [
        {
            "uuid": "claude-odd-types",
            "chat_messages": [
                message("m1", "one", attachments=5, files=True),
                message("m2", "two", attachments={"file_name": "a.txt"}, files="b.txt"),
                message("m3", "three", attachments=[{"file_name": "c.txt", "file_size": True}], files=None),
            ],
        }
    ]
    r = report(admin, data)
    # Before the fix: "could not be read: TypeError: 'int' object is not iterable", the conversation refused.
    assert (r["imported"], r["failed"]) == (1, 0)
    assert r["warnings"] == [
        "claude-odd-types: message m1: `attachments` is not an array, ignored",
        "claude-odd-types: message m1: `files` is not an array, ignored",
        "claude-odd-types: message m2: `attachments` is not an array, ignored",
        "claude-odd-types: message m2: `files` is not an array, ignored",
    ]
    assert [m["content"] for m in messages(admin, r["conversations"][0]["id"])] == ["one", "two", "three"]


class _Hashed(str):
    """A message id that counts how often it is hashed (each dict or set look-up of it)."""

    hashed = 0

    def __hash__(self) -> int:
        _Hashed.hashed += 1
        return str.__hash__(self)


def test_replies_under_a_long_chain_of_empty_messages_find_their_kept_ancestor_once() -> None:
    k = 2000
    chain = [_Hashed(f"e{i}") for i in range(k)]
    entries: list[dict[str, Any]] = [
        {"uuid": "q", "sender": "human", "text": "question", "parent_message_uuid": ROOT}
    ]
    entries += [
        {"uuid": key, "sender": "assistant", "text": "", "parent_message_uuid": chain[i - 1] if i else "q"}
        for i, key in enumerate(chain)
    ]
    entries += [
        {"uuid": _Hashed(f"r{i}"), "sender": "human", "text": f"reply {i}", "parent_message_uuid": chain[-1]}
        for i in range(k)
    ]
    _Hashed.hashed = 0
    conversation = claude.parse({"uuid": "claude-empty-chain", "chat_messages": entries})
    assert len(conversation.messages) == k + 1
    assert {m.parent_key for m in conversation.messages[1:]} == {"q"}
    # Before the fix each reply walked the whole chain again: k * k look-ups (4 million here; 20,000 empty messages
    # and 20,000 replies took 95 s of the server's CPU).
    assert _Hashed.hashed < 100 * k


def test_a_chain_of_empty_messages_under_a_question_imports_with_its_replies_answering_the_question(
    admin: Actor,
) -> None:
    k = 300
    entries: list[dict[str, Any]] = [
        {"uuid": "q", "sender": "human", "text": "question", "parent_message_uuid": ROOT}
    ]
    entries += [
        {
            "uuid": f"e{i}",
            "sender": "assistant",
            "text": " ",
            "parent_message_uuid": f"e{i - 1}" if i else "q",
        }
        for i in range(k)
    ]
    entries += [
        {"uuid": f"r{i}", "sender": "human", "text": f"reply {i}", "parent_message_uuid": f"e{k - 1}"}
        for i in range(k)
    ]
    r = report(admin, [{"uuid": "claude-empty-chain", "chat_messages": entries}])
    assert (r["imported"], len(r["warnings"])) == (1, 1)
    assert r["warnings"][0].startswith(f"claude-empty-chain: {k} empty message(s) skipped")
    found = messages(admin, r["conversations"][0]["id"])
    assert len(found) == 10  # the first page: the question and its first replies, one level below it
    assert [m["content"] for m in found[:3]] == ["question", "reply 0", "reply 1"]


class _Compared(str):
    """A tool name that counts how often it is compared by value."""

    compared = 0

    def __eq__(self, other: object) -> bool:
        _Compared.compared += 1
        return str.__eq__(self, other)

    __hash__ = str.__hash__


def test_results_answering_no_call_of_their_name_take_the_latest_call_without_a_search_each() -> None:
    k = 3000
    blocks = [{"type": "tool_use", "name": _Compared("search"), "input": {"n": n}} for n in range(k)]
    blocks += [{"type": "tool_result", "name": _Compared("other"), "content": f"r{n}"} for n in range(k)]
    entry = {"uuid": "m", "sender": "assistant", "text": "done", "content": blocks}
    _Compared.compared = 0
    (message,) = claude.parse({"uuid": "claude-many-results", "chat_messages": [entry]}).messages
    assert message.parts is not None
    results = [p["tool_call_id"] for p in message.parts if p["type"] == "tool_result"]
    assert results == [f"m#{n}" for n in range(k - 1, -1, -1)]  # each the latest call not answered yet
    # Before the fix each result looked through every call not answered yet for one of its name: k * k / 2
    # comparisons (4.5 million here; 100,000 calls and results fit in one 8 MB request: minutes of CPU).
    assert _Compared.compared < 10 * k
