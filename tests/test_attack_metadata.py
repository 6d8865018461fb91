"""Hostile metadata writes: a deleted message stays without metadata."""

from __future__ import annotations

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
