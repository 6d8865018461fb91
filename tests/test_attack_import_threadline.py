"""Threadline export files that say what no conversation of this server can hold: a history bound outside the
range a live write allows, a deleted message that still carries its text. Each imports, repaired and reported."""

from __future__ import annotations

import json
from typing import Any

from tests.harness import Actor

REPORT = """mutation($i: ConversationImportInput!) { conversationImportReport(input: $i) {
  imported failed warnings failures { index message } conversations { id maxHistoryMessages } } }"""
MESSAGES = """query($c: ID!) { conversation(id: $c) { messages(first: 10) { edges { node {
  content deletedAt metadata parts { __typename } } } } } }"""
EXPORT = "query($c: ID!) { conversationExport(id: $c) }"


def document(conversation_id: str, conversation: dict[str, Any], messages: list[Any]) -> dict[str, Any]:
    return {
        "conversation_id": conversation_id,
        "metadata": {"export_version": "1.0"},
        "conversation": {"title": conversation_id, **conversation},
        "messages": messages,
    }


def report(actor: Actor, data: Any) -> dict[str, Any]:
    found: dict[str, Any] = actor.client.ok(REPORT, {"i": {"format": "THREADLINE", "data": data}})[
        "conversationImportReport"
    ]
    return found


def test_a_history_bound_no_conversation_may_have_imports_as_the_default_with_a_warning(admin: Actor) -> None:
    hello = [{"id": "a", "role": "user", "content": "hello"}]
    bounds: list[Any] = [2**40, -1, 1_000_000, True, "50", 0, 7]
    data = [document(f"cnv_h{n}", {"max_history_messages": v}, hello) for n, v in enumerate(bounds)]
    r = report(admin, data)  # before the fix: 2**40 and True failed at the insert, -1 and 1000000 were kept
    assert (r["imported"], r["failed"]) == (7, 0)
    assert [c["maxHistoryMessages"] for c in r["conversations"]] == [20, 20, 20, 20, 20, 20, 7]
    assert r["warnings"] == [
        "cnv_h0: max_history_messages 1099511627776: maxHistoryMessages must be between 1 and 10000; the default "
        "was kept",
        "cnv_h1: max_history_messages -1: maxHistoryMessages must be between 1 and 10000; the default was kept",
        "cnv_h2: max_history_messages 1000000: maxHistoryMessages must be between 1 and 10000; the default was "
        "kept",
        "cnv_h3: max_history_messages 'True' is not a whole number; the default was kept",
        "cnv_h4: max_history_messages '50' is not a whole number; the default was kept",
        "cnv_h5: max_history_messages 0: maxHistoryMessages must be between 1 and 10000; the default was kept",
    ]


def test_a_deleted_message_of_a_file_is_imported_as_a_tombstone_without_what_it_carried(admin: Actor) -> None:
    secret = "zebra-secret"
    data = document(
        "cnv_tomb",
        {},
        [
            {"id": "a", "role": "user", "content": "hello"},
            {
                "id": "b",
                "parent_id": "a",
                "role": "assistant",
                "content": secret,
                "deleted_at": "2024-01-01T00:00:00Z",
                "parts": [{"type": "text", "text": secret}],
                "metadata": {"note": secret},
                "attachments": [{"type": "file", "filename": "a.txt", "extracted_content": secret}],
            },
        ],
    )
    r = report(admin, data)
    assert (r["imported"], r["warnings"]) == (
        1,
        ["cnv_tomb: message b: deleted, yet the file holds its content: not kept"],
    )
    conversation_id = r["conversations"][0]["id"]
    edges = admin.client.ok(MESSAGES, {"c": conversation_id})["conversation"]["messages"]["edges"]
    # Before the fix: the deleted message answered with its text and metadata, and every export carried them.
    assert [e["node"] for e in edges] == [
        {"content": "hello", "deletedAt": None, "metadata": {}, "parts": [{"__typename": "TextPart"}]},
        {"content": "", "deletedAt": "2024-01-01T00:00:00+00:00", "metadata": {}, "parts": []},
    ]
    exported = admin.client.ok(EXPORT, {"c": conversation_id})["conversationExport"]
    assert secret not in json.dumps(exported)
    # The tombstone goes round again unchanged, quietly.
    again = report(admin, {**exported, "conversation_id": "cnv_tomb_again"})
    assert (again["imported"], again["warnings"]) == (1, [])
