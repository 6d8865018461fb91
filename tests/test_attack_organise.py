"""Hostile organisation entries in imports: what a file asks to restore costs what it restores, not what it
repeats."""

from __future__ import annotations

import uuid
from typing import Any

from tests.api import create_conversation, start_thread
from tests.harness import Actor

EXPORT = "query($id: ID!) { conversationExport(id: $id) }"
IMPORT = """mutation($d: JSON!) { conversationImportReport(input: {format: THREADLINE, data: $d}) {
  conversations { id } warnings } }"""
BOOKMARKS = "query($c: ID) { bookmarks(conversationId: $c) { nodes { note message { content } } } }"


def imported(actor: Actor, document: dict[str, Any], bookmarks: list[Any]) -> tuple[int, list[str], str]:
    """Statements, warnings and the new conversation of an import of `document` as a new conversation."""
    data = {
        **document,
        "conversation_id": f"cnv_{uuid.uuid4().hex}",
        "organisation": {"bookmarks": bookmarks},
    }
    body = actor.client.raw(IMPORT, {"d": data})
    assert "errors" not in body, body
    report = body["data"]["conversationImportReport"]
    return int(body["extensions"]["sqlStatements"]), report["warnings"], report["conversations"][0]["id"]


def test_a_bookmark_repeated_in_an_import_is_restored_once_at_the_cost_of_one(admin: Actor) -> None:
    """Each entry cost a transaction of five statements: 8 MiB of one repeated entry, 2 million statements."""
    cid = create_conversation(admin, "talk")
    root = start_thread(admin, cid, "hello")
    document = admin.client.ok(EXPORT, {"id": cid})["conversationExport"]
    imported(admin, document, [{"message_id": root, "note": "warm-up"}])
    once, warned_once, _ = imported(
        admin, document, [{"message_id": root, "note": "one"}, {"message_id": "msg_gone"}]
    )
    repeated = [{"message_id": root, "note": f"note {n}"} for n in range(5000)] + [
        {"message_id": "msg_gone"}
    ] * 5000
    many, warned, conversation = imported(admin, document, repeated)
    assert many == once
    gone = "bookmark on 'msg_gone' not restored: no such message in the import"
    assert [w.split(": ", 1)[1] for w in warned] == [w.split(": ", 1)[1] for w in warned_once] == [gone]
    # One bookmark, with the note given last (as setting it again would).
    nodes = admin.client.ok(BOOKMARKS, {"c": conversation})["bookmarks"]["nodes"]
    assert nodes == [{"note": "note 4999", "message": {"content": "hello"}}]


def test_bookmarks_on_messages_missing_from_an_import_are_named_a_few_and_counted(admin: Actor) -> None:
    """A warning per unknown message id: the report grew several times the size of the file."""
    cid = create_conversation(admin, "talk")
    start_thread(admin, cid, "hello")
    document = admin.client.ok(EXPORT, {"id": cid})["conversationExport"]
    _, warned, _ = imported(admin, document, [{"message_id": f"m{n}"} for n in range(5000)])
    assert [w.split(": ", 1)[1] for w in warned] == [
        *(f"bookmark on 'm{n}' not restored: no such message in the import" for n in range(16)),
        "4984 more bookmarks not restored: no such messages in the import",
    ]
