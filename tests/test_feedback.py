"""Feedback on messages: one rating per user and message, the viewer's own and everyone's counts, insights per
model and provider, export and import in the Threadline format, erasure with the user. Through the API."""

from __future__ import annotations

from typing import Any

from tests.api import create_conversation, join, start_thread, stream_cursor
from tests.harness import Actor, ServerThread
from tests.ws import WsClient

SET = """mutation($m: ID!, $r: FeedbackRating, $why: [String!], $c: String) {
  messageFeedbackSet(messageId: $m, rating: $r, reasons: $why, comment: $c) {
    id feedback { rating reasons comment } feedbackSummary { up down } } }"""
READ = """query($id: ID!) { message(id: $id) { feedback { rating reasons comment } feedbackSummary { up down } } }"""
TREE = """query($r: ID!) { threadTree(rootId: $r) { nodes { content feedback { rating reasons comment }
  feedbackSummary { up down } } } }"""
REPLY = """mutation($p: ID!, $i: MessageInput!) { messageReply(parentId: $p, input: $i) { id } }"""
EXPORT = "query($id: ID!) { conversationExport(id: $id) }"
IMPORT = """mutation($i: ConversationImportInput!) { conversationImport(input: $i) { id metadata
  threads { edges { node { root { id } } } } } }"""
INSIGHTS = "{ insights { feedback { model provider up down } } }"


def answer(actor: Actor, parent: str, content: str, model: str) -> str:
    message = {"content": content, "role": "ASSISTANT", "model": model}
    return str(actor.client.ok(REPLY, {"p": parent, "i": message})["messageReply"]["id"])


def test_one_rating_per_user_and_message_replaced_and_removed(admin: Actor, make_user: Any) -> None:
    conversation = create_conversation(admin)
    root = start_thread(admin, conversation, "question")
    reply = answer(admin, root, "answer", "gpt-x")
    reader = make_user(admin)
    join(admin, reader, conversation, "VIEWER")

    first = admin.client.ok(
        SET, {"m": reply, "r": "UP", "why": [" helpful ", "helpful", "clear"], "c": "nice"}
    )
    assert first["messageFeedbackSet"] == {
        "id": reply,
        "feedback": {"rating": "UP", "reasons": ["helpful", "clear"], "comment": "nice"},
        "feedbackSummary": {"up": 1, "down": 0},
    }
    # A viewer may rate what they read; each sees their own feedback, everyone the counts.
    reader.client.ok(SET, {"m": reply, "r": "DOWN", "why": ["inaccurate"]})
    assert reader.client.ok(READ, {"id": reply})["message"] == {
        "feedback": {"rating": "DOWN", "reasons": ["inaccurate"], "comment": ""},
        "feedbackSummary": {"up": 1, "down": 1},
    }
    replaced = admin.client.ok(SET, {"m": reply, "r": "DOWN"})["messageFeedbackSet"]
    assert replaced["feedback"] == {"rating": "DOWN", "reasons": [], "comment": ""}
    assert replaced["feedbackSummary"] == {"up": 0, "down": 2}
    removed = admin.client.ok(SET, {"m": reply, "r": None})["messageFeedbackSet"]
    assert removed["feedback"] is None
    assert removed["feedbackSummary"] == {"up": 0, "down": 1}
    assert admin.client.ok(READ, {"id": root})["message"] == {
        "feedback": None,
        "feedbackSummary": {"up": 0, "down": 0},
    }


def test_feedback_on_a_message_you_cannot_read_is_not_found(
    admin: Actor, make_user: Any, make_tenant: Any
) -> None:
    conversation = create_conversation(admin)
    root = start_thread(admin, conversation, "private")
    for outsider in (make_user(admin), make_tenant()):
        error = outsider.client.error(SET, {"m": root, "r": "UP"})
        assert error["extensions"]["code"] == "NOT_FOUND"
    assert admin.client.ok(READ, {"id": root})["message"]["feedbackSummary"] == {"up": 0, "down": 0}


def test_feedback_bounds_are_bad_user_input(admin: Actor) -> None:
    conversation = create_conversation(admin)
    root = start_thread(admin, conversation)
    for variables, argument in (
        ({"why": [f"r{i}" for i in range(11)]}, "reasons"),
        ({"why": ["x" * 65]}, "reasons"),
        ({"why": ["  "]}, "reasons"),
        ({"c": "x" * 2001}, "comment"),
    ):
        error = admin.client.error(SET, {"m": root, "r": "UP", **variables})
        assert (error["extensions"]["code"], error["extensions"]["argument"]) == ("BAD_USER_INPUT", argument)
    assert admin.client.ok(READ, {"id": root})["message"]["feedback"] is None


def test_a_tree_read_loads_feedback_of_every_node_in_a_constant_number_of_statements(admin: Actor) -> None:
    conversation = create_conversation(admin)
    root = start_thread(admin, conversation)
    replies = [answer(admin, root, f"a{i}", "m") for i in range(3)]

    def statements() -> int:
        return admin.client.statements(TREE, {"r": root})

    before = statements()
    more = [answer(admin, replies[0], f"b{i}", "m") for i in range(5)]
    for message in replies + more:
        admin.client.ok(SET, {"m": message, "r": "UP"})
    assert statements() == before


def test_insights_count_feedback_per_model_and_provider(admin: Actor, make_user: Any) -> None:
    conversation = admin.client.ok(
        'mutation { conversationCreate(input: {title: "t", aiProvider: "openai"}) { id } }'
    )["conversationCreate"]["id"]
    root = start_thread(admin, conversation)
    a = answer(admin, root, "a", "gpt-a")
    b = answer(admin, root, "b", "gpt-b")
    c = answer(admin, root, "c", "gpt-a")
    other = make_user(admin)
    join(admin, other, conversation, "VIEWER")
    admin.client.ok(SET, {"m": a, "r": "UP"})
    admin.client.ok(SET, {"m": c, "r": "DOWN"})
    other.client.ok(SET, {"m": a, "r": "UP"})
    admin.client.ok(SET, {"m": b, "r": "DOWN"})
    assert admin.client.ok(INSIGHTS)["insights"]["feedback"] == [
        {"model": "gpt-a", "provider": "openai", "up": 2, "down": 1},
        {"model": "gpt-b", "provider": "openai", "up": 0, "down": 1},
    ]


def test_feedback_round_trips_through_a_threadline_export_and_import(admin: Actor, make_tenant: Any) -> None:
    conversation = create_conversation(admin)
    root = start_thread(admin, conversation, "q")
    a = answer(admin, root, "a", "m")
    b = answer(admin, root, "b", "m")
    admin.client.ok(SET, {"m": a, "r": "UP", "why": ["helpful"], "c": "thanks"})
    admin.client.ok(SET, {"m": b, "r": "DOWN", "why": ["wrong", "slow"]})
    document = admin.client.ok(EXPORT, {"id": conversation})["conversationExport"]
    feedback = [m.get("feedback") for m in document["messages"]]
    assert [f and (f["rating"], f["reasons"], f["comment"]) for f in feedback] == [
        None,
        ("up", ["helpful"], "thanks"),
        ("down", ["wrong", "slow"], ""),
    ]
    elsewhere = make_tenant()
    imported = elsewhere.client.ok(IMPORT, {"i": {"format": "THREADLINE", "data": document}})[
        "conversationImport"
    ]
    new_root = imported[0]["threads"]["edges"][0]["node"]["root"]["id"]
    expected = [
        {"content": "q", "feedback": None, "feedbackSummary": {"up": 0, "down": 0}},
        {
            "content": "a",
            "feedback": {"rating": "UP", "reasons": ["helpful"], "comment": "thanks"},
            "feedbackSummary": {"up": 1, "down": 0},
        },
        {
            "content": "b",
            "feedback": {"rating": "DOWN", "reasons": ["wrong", "slow"], "comment": ""},
            "feedbackSummary": {"up": 0, "down": 1},
        },
    ]
    assert elsewhere.client.ok(TREE, {"r": new_root})["threadTree"]["nodes"] == expected
    # Exported again, the feedback is the same.
    again = elsewhere.client.ok(EXPORT, {"id": imported[0]["id"]})["conversationExport"]
    assert [m.get("feedback") for m in again["messages"]] == feedback
    # Out-of-bounds feedback in a file is dropped with a warning, not refused.
    document["conversation_id"] = "cnv_other"
    document["messages"][1]["feedback"] = {"rating": "sideways"}
    report = elsewhere.client.ok(
        "mutation($i: ConversationImportInput!) { conversationImportReport(input: $i) { imported warnings } }",
        {"i": {"format": "THREADLINE", "data": document}},
    )["conversationImportReport"]
    assert report["imported"] == 1
    assert any("feedback out of bounds was dropped" in w for w in report["warnings"])


def test_erasing_a_user_erases_their_feedback(admin: Actor, make_user: Any) -> None:
    conversation = create_conversation(admin)
    root = start_thread(admin, conversation)
    reader = make_user(admin)
    join(admin, reader, conversation, "VIEWER")
    reader.client.ok(SET, {"m": root, "r": "DOWN", "c": "a comment of theirs"})
    admin.client.ok(SET, {"m": root, "r": "UP"})
    assert admin.client.ok(READ, {"id": root})["message"]["feedbackSummary"] == {"up": 1, "down": 1}
    admin.client.ok("mutation($u: ID!) { userErase(userId: $u) { userId } }", {"u": reader.user_id})
    assert admin.client.ok(READ, {"id": root})["message"]["feedbackSummary"] == {"up": 1, "down": 0}


EVENTS = """subscription($c: ID!, $s: String) { conversationEvents(conversationId: $c, since: $s) { type rootId
  ... on MessageFeedbackEvent { messageId up down } } }"""


def test_feedback_changes_reach_readers_as_counts(admin: Actor, make_user: Any, server: ServerThread) -> None:
    reader = make_user(admin)
    conversation = create_conversation(admin)
    root = start_thread(admin, conversation)
    reply = answer(admin, root, "a", "m")
    join(admin, reader, conversation, "VIEWER")
    watcher = WsClient(server.ws_url, reader.api_key)
    plain = WsClient(server.ws_url, reader.api_key)  # a client that does not select the new event type
    try:
        since = stream_cursor(admin)
        watcher.subscribe(EVENTS, {"c": conversation, "s": since})
        plain.subscribe(
            """subscription($c: ID!, $s: String) { conversationEvents(conversationId: $c, since: $s) { type } }""",
            {"c": conversation, "s": since},
        )
        admin.client.ok(SET, {"m": reply, "r": "UP", "c": "private words"})
        reader.client.ok(SET, {"m": reply, "r": "DOWN"})
        admin.client.ok(SET, {"m": reply, "r": None})
        ignore = ("presence.update", "unread.update")
        assert watcher.events(3, ignore=ignore) == [
            {"type": "message.feedback", "rootId": root, "messageId": reply, "up": 1, "down": 0},
            {"type": "message.feedback", "rootId": root, "messageId": reply, "up": 1, "down": 1},
            {"type": "message.feedback", "rootId": root, "messageId": reply, "up": 0, "down": 1},
        ]
        plain.expect_quiet(0.5, ignore=ignore)
    finally:
        watcher.close()
        plain.close()


def test_a_merge_re_import_brings_the_new_messages_feedback_and_metadata(
    admin: Actor, make_tenant: Any
) -> None:
    conversation = create_conversation(admin)
    root = start_thread(admin, conversation, "q")
    first = answer(admin, root, "a", "m")
    document = admin.client.ok(EXPORT, {"id": conversation})["conversationExport"]
    elsewhere = make_tenant()
    imported = elsewhere.client.ok(IMPORT, {"i": {"format": "THREADLINE", "data": document}})[
        "conversationImport"
    ]
    # The source grows by a rated, tagged message; the newer export is imported again and merged.
    later = admin.client.ok(REPLY, {"p": first, "i": {"content": "more", "metadata": {"turn": "2"}}})[
        "messageReply"
    ]["id"]
    admin.client.ok(SET, {"m": later, "r": "DOWN", "why": ["late"]})
    grown = admin.client.ok(EXPORT, {"id": conversation})["conversationExport"]
    merged = elsewhere.client.ok(IMPORT, {"i": {"format": "THREADLINE", "data": grown}})["conversationImport"]
    assert [c["id"] for c in merged] == [imported[0]["id"]]
    new_root = merged[0]["threads"]["edges"][0]["node"]["root"]["id"]
    nodes = elsewhere.client.ok(
        "query($r: ID!) { threadTree(rootId: $r) { nodes { content metadata feedback { rating reasons } } } }",
        {"r": new_root},
    )["threadTree"]["nodes"]
    assert nodes == [
        {"content": "q", "metadata": {}, "feedback": None},
        {"content": "a", "metadata": {}, "feedback": None},
        {"content": "more", "metadata": {"turn": "2"}, "feedback": {"rating": "DOWN", "reasons": ["late"]}},
    ]
