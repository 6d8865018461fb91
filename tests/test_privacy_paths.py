"""PII masking on the other read and write paths (issue 20 item 2): subscription events and the event log,
exports, search snippets, imports and streamed output."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.api import create_conversation, join, reply, start_thread
from tests.harness import Actor, Loop
from tests.test_privacy_pii import CARD, EMAIL, MASKED, TEXT, everything_stored, set_policy, sql
from tests.ws import WsClient

EVENTS = """subscription($c: ID!) { conversationEvents(conversationId: $c) {
  type
  ... on ThreadNewEvent { thread { root { id content } } }
  ... on ThreadActivityEvent { changedMessage { id content } }
} }"""
EXPORT = "query($id: ID!) { conversationExport(id: $id) }"
IMPORT = "mutation($i: ConversationImportInput!) { conversationImport(input: $i) { id } }"
APPEND = "mutation($id: ID!, $d: String!) { messageAppend(id: $id, delta: $d) { id } }"
FINISH = "mutation($id: ID!) { messageFinish(id: $id) { id content chunks { content } } }"
SEARCH = '{ search(input: {query: "charge"}) { nodes { snippet message { content } } } }'


def test_mask_on_read_masks_subscription_events_and_the_event_log(
    admin: Actor, make_user: Any, ws: Callable[..., WsClient], loop: Loop, dsn: str
) -> None:
    author = make_user(admin)
    reader = make_user(admin)
    conversation = create_conversation(author)
    join(author, reader, conversation)
    set_policy(admin, "MASK_ON_READ")
    client = ws(reader)
    client.subscribe(EVENTS, {"c": conversation})
    client.expect_quiet(0.3)
    root = start_thread(author, conversation, TEXT)
    child = reply(author, root, f"and {EMAIL}")
    events = client.events(2, ignore=("presence.update", "unread.update", "branch.sibling", "branch.current"))
    client.close()
    assert events == [
        {"type": "thread.new", "thread": {"root": {"id": root, "content": MASKED}}},
        {"type": "thread.activity", "changedMessage": {"id": child, "content": "and [EMAIL]"}},
    ]
    # The log itself holds no original (a replay reaches any reader); the message rows keep it.
    payloads = "\n".join(r["p"] for r in sql(loop, dsn, "SELECT payload::text AS p FROM stream_event"))
    assert EMAIL not in payloads and CARD not in payloads and "[EMAIL]" in payloads
    # An edit rewrites the logged snapshots masked too.
    author.client.ok(
        "mutation($id: ID!, $c: String!) { messageEdit(id: $id, content: $c) { id } }",
        {"id": child, "c": f"now {EMAIL}!"},
    )
    payloads = "\n".join(r["p"] for r in sql(loop, dsn, "SELECT payload::text AS p FROM stream_event"))
    assert EMAIL not in payloads and "now [EMAIL]!" in payloads


def test_mask_on_read_masks_exports_markdown_and_search_snippets_of_others_messages(
    admin: Actor, make_user: Any
) -> None:
    author = make_user(admin)
    reader = make_user(admin)
    conversation = create_conversation(author)
    join(author, reader, conversation)
    set_policy(admin, "MASK_ON_READ")
    root = start_thread(author, conversation, TEXT)
    reply(reader, root, f"reader's own {EMAIL}")
    exported = reader.client.ok(EXPORT, {"id": conversation})["conversationExport"]
    assert [m["content"] for m in exported["messages"]] == [MASKED, f"reader's own {EMAIL}"]
    by_author = author.client.ok(EXPORT, {"id": conversation})["conversationExport"]
    assert [m["content"] for m in by_author["messages"]] == [TEXT, "reader's own [EMAIL]"]
    by_admin = admin.client.ok(EXPORT, {"id": conversation})["conversationExport"]
    assert [m["content"] for m in by_admin["messages"]] == [TEXT, f"reader's own {EMAIL}"]
    markdown = reader.client.ok(
        "query($id: ID!) { conversationExport(id: $id, format: MARKDOWN, allBranches: true) }",
        {"id": conversation},
    )["conversationExport"]
    assert MASKED in markdown and f"reader's own {EMAIL}" in markdown and CARD not in markdown
    (hit,) = reader.client.ok(SEARCH)["search"]["nodes"]
    assert hit["message"]["content"] == MASKED
    assert EMAIL not in hit["snippet"] and "4111" not in hit["snippet"] and "[EMAIL]" in hit["snippet"]
    (own_hit,) = author.client.ok(SEARCH)["search"]["nodes"]
    assert own_hit["message"]["content"] == TEXT and "<mark>charge</mark>" in own_hit["snippet"]


def test_mask_on_write_masks_imports(admin: Actor, loop: Loop, dsn: str) -> None:
    source = create_conversation(admin, "to import")
    root = start_thread(admin, source, TEXT)
    reply(admin, root, f"second {EMAIL}")
    document = admin.client.ok(EXPORT, {"id": source})["conversationExport"]
    admin.client.ok("mutation($c: ID!) { conversationDelete(id: $c) { id } }", {"c": source})
    sql(loop, dsn, "DELETE FROM conversation")
    sql(loop, dsn, "DELETE FROM stream_event")
    set_policy(admin, "MASK_ON_WRITE")
    (imported,) = admin.client.ok(IMPORT, {"i": {"format": "THREADLINE", "data": document}})[
        "conversationImport"
    ]
    exported = admin.client.ok(EXPORT, {"id": imported["id"]})["conversationExport"]
    assert [m["content"] for m in exported["messages"]] == [MASKED, "second [EMAIL]"]
    stored = everything_stored(loop, dsn)
    assert EMAIL not in stored and CARD not in stored


def test_mask_on_write_masks_streamed_output_even_across_pieces(admin: Actor, loop: Loop, dsn: str) -> None:
    set_policy(admin, "MASK_ON_WRITE")
    conversation = create_conversation(admin)
    root = start_thread(admin, conversation, "what is her address?")
    message = reply(admin, root, "It is", role="ASSISTANT")
    # The address arrives in two pieces: neither piece alone is an email.
    for delta in (" maria.gonzalez@exa", "mple.org, and the card is ", CARD):
        admin.client.ok(APPEND, {"id": message, "d": delta})
    finished = admin.client.ok(FINISH, {"id": message})["messageFinish"]
    assert finished["content"] == "It is [EMAIL], and the card is [CARD]"
    assert finished["chunks"] == []  # the pieces no longer add up to the content: dropped, as after an edit
    (row,) = sql(loop, dsn, "SELECT content, pii FROM message WHERE role = 'ASSISTANT'")
    assert row["content"] == "It is [EMAIL], and the card is [CARD]"
    stored = everything_stored(loop, dsn)
    # The card digits in any spacing ("4111" alone also turns up in the microseconds of timestamps).
    assert "gonzalez" not in stored and CARD not in stored
    assert "4111 1111" not in stored and "41111111" not in stored


def test_mask_on_read_masks_text_appended_after_the_message_was_scanned(admin: Actor, make_user: Any) -> None:
    """Appending clears the stored detections (they no longer fit the text): a reader gets the appended PII
    masked before the message is final, and after."""
    reader = make_user(admin)
    conversation = create_conversation(admin)
    join(admin, reader, conversation)
    set_policy(admin, "MASK_ON_READ")
    root = start_thread(admin, conversation, "what is her address?")
    message = reply(admin, root, f"It is {EMAIL}", role="ASSISTANT")
    admin.client.ok(APPEND, {"id": message, "d": f" or {CARD}"})
    read = "query($id: ID!) { message(id: $id) { content } }"
    assert reader.client.ok(read, {"id": message})["message"]["content"] == "It is [EMAIL] or [CARD]"
    admin.client.ok(FINISH, {"id": message})
    assert reader.client.ok(read, {"id": message})["message"]["content"] == "It is [EMAIL] or [CARD]"
    assert admin.client.ok(read, {"id": message})["message"]["content"] == f"It is {EMAIL} or {CARD}"


def test_mask_on_read_masks_the_events_an_import_into_a_conversation_logs(
    admin: Actor, make_user: Any, loop: Loop, dsn: str
) -> None:
    source = create_conversation(admin, "source")
    start_thread(admin, source, TEXT)
    document = admin.client.ok(EXPORT, {"id": source})["conversationExport"]
    admin.client.ok("mutation($c: ID!) { conversationDelete(id: $c) { id } }", {"c": source})
    sql(loop, dsn, "DELETE FROM conversation")
    sql(loop, dsn, "DELETE FROM stream_event")
    target = create_conversation(admin, "target")
    set_policy(admin, "MASK_ON_READ")
    admin.client.ok(IMPORT, {"i": {"format": "THREADLINE", "data": document, "conversationId": target}})
    payloads = [
        r["p"]
        for r in sql(loop, dsn, "SELECT payload::text AS p FROM stream_event WHERE type = 'thread.new'")
    ]
    assert len(payloads) == 1 and MASKED in payloads[0] and EMAIL not in payloads[0]
    # The rows keep the text (MASK_ON_READ), and the importing owner reads it.
    exported = admin.client.ok(EXPORT, {"id": target})["conversationExport"]
    assert [m["content"] for m in exported["messages"]] == [TEXT]
