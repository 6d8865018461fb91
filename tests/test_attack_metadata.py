"""Hostile metadata writes and imports: a deleted message stays without metadata; a file of many keys costs
no more than a few of them."""

from __future__ import annotations

import uuid

from tests.api import create_conversation, start_thread
from tests.harness import Actor

SET = 'mutation($m: ID!) { messageMetadataSet(id: $m, metadata: {note: "back again"}) { id } }'
TREE = "query($r: ID!) { threadTree(rootId: $r) { nodes { content metadata } } }"
EXPORT = "query($id: ID!) { conversationExport(id: $id) }"


def test_a_deleted_message_cannot_be_given_metadata_again(admin: Actor) -> None:
    """Its metadata goes with its content; the author (or owner) could give the tombstone new metadata, shown in
    every read and export of it."""
    conversation = create_conversation(admin)
    root = start_thread(admin, conversation, "said and taken back")
    admin.client.ok("mutation($m: ID!) { messageDelete(id: $m) { id } }", {"m": root})
    error = admin.client.error(SET, {"m": root})
    assert (error["extensions"]["code"], error["message"]) == (
        "CONFLICT",
        "A deleted message has no metadata; it cannot be given any",
    )
    assert admin.client.ok(TREE, {"r": root})["threadTree"]["nodes"] == [{"content": "", "metadata": {}}]
    document = admin.client.ok(EXPORT, {"id": conversation})["conversationExport"]
    assert "metadata" not in document["messages"][0]


IMPORT = """mutation($d: JSON!) { conversationImportReport(input: {format: THREADLINE, data: $d}) {
  conversations { id } warnings } }"""


def test_an_import_names_a_few_dropped_metadata_keys_and_counts_the_rest(admin: Actor) -> None:
    """A warning per dropped key: 100,000 one-character keys (1.3 MB of file) made a report of 14 MB."""
    conversation = create_conversation(admin)
    start_thread(admin, conversation, "hello")
    document = admin.client.ok(EXPORT, {"id": conversation})["conversationExport"]
    message = {**document["messages"][0], "metadata": {str(n): "" for n in range(100_000)}}
    data = {**document, "conversation_id": f"cnv_{uuid.uuid4().hex}", "messages": [message]}
    report = admin.client.ok(IMPORT, {"d": data})["conversationImportReport"]
    warnings = [w.split(": ", 2)[2] for w in report["warnings"]]
    assert warnings == [
        *(f"metadata key '{n}' was dropped (out of bounds)" for n in range(16, 32)),
        "99968 more metadata keys were dropped (out of bounds)",
    ]
    (imported,) = report["conversations"]
    tree = admin.client.ok(
        "query($c: ID!) { conversation(id: $c) { threads { nodes { root { metadata } } } } }",
        {"c": imported["id"]},
    )
    (thread,) = tree["conversation"]["threads"]["nodes"]
    assert thread["root"]["metadata"] == {str(n): "" for n in range(16)}
