"""Hostile feedback: bounds that hold without costing more than the bound, and refusals that say nothing of
messages the caller may not read."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.api import create_conversation, start_thread
from tests.harness import Actor, ServerThread, test_settings

FEEDBACK = """mutation($m: ID!, $r: [String!]) {
  messageFeedbackSet(messageId: $m, rating: UP, reasons: $r) { id feedback { reasons } } }"""
# A request the old rule (each reason looked up in the list of those kept so far) would not finish in hours,
# holding the event loop all that time: a failure here is a timeout.
TIMEOUT = 60


@pytest.fixture(scope="module")
def roomy(dsn: str) -> Iterator[ServerThread]:
    """A server taking a million values in one request's variables (THREADLINE_QUERY_MAX_INPUT_VALUES refuses them
    before any resolver at its default): the resolver's own bound is what is tested."""
    srv = ServerThread(test_settings(dsn, migrate_on_start=False, query_max_input_values=2_000_000))
    srv.start()
    yield srv
    srv.stop()


def test_a_million_distinct_reasons_are_refused_at_the_eleventh(roomy: ServerThread, admin: Actor) -> None:
    root = start_thread(admin, create_conversation(admin), "rate me")
    reasons = [f"r{n}" for n in range(1_000_000)]
    response = httpx.post(
        f"{roomy.url}/graphql",
        json={"query": FEEDBACK, "variables": {"m": root, "r": reasons}},
        headers={"Authorization": f"Bearer {admin.api_key}"},
        timeout=TIMEOUT,
    )
    (error,) = response.json()["errors"]
    extensions = {k: v for k, v in error["extensions"].items() if k != "requestId"}
    assert (error["message"], extensions) == (
        "at most 10 reasons are allowed",
        {"code": "BAD_USER_INPUT", "argument": "reasons", "limit": 10},
    )
    # Duplicates still count once, in the order given.
    kept = admin.client.ok(FEEDBACK, {"m": root, "r": [" b", "a", "b ", *["a"] * 1000]})
    assert kept["messageFeedbackSet"]["feedback"]["reasons"] == ["b", "a"]


# Mutations of these areas that take a message id and check the caller may read its conversation.
BY_MESSAGE = {
    "messageFeedbackSet": "mutation($m: ID!) { messageFeedbackSet(messageId: $m, rating: UP) { id } }",
    "conversationFork": "mutation($m: ID!) { conversationFork(messageId: $m) { id } }",
    "messageMetadataSet": 'mutation($m: ID!) { messageMetadataSet(id: $m, metadata: {a: "b"}) { id } }',
    "bookmarkSet": "mutation($m: ID!) { bookmarkSet(messageId: $m) { id } }",
    "bookmarkRemove": "mutation($m: ID!) { bookmarkRemove(messageId: $m) }",
}


@pytest.mark.parametrize("name", list(BY_MESSAGE))
def test_a_message_of_a_conversation_one_may_not_read_is_refused_as_an_unknown_one(
    admin: Actor, make_user: Callable[..., Actor], name: str
) -> None:
    """A colleague outside the conversation, given one of its message ids, got "Conversation not found" where an
    unknown id gets "Message not found": the answer told that the message exists."""
    outsider = make_user(admin)
    secret = start_thread(admin, create_conversation(admin, "secret"), "secret root")
    unknown = "msg_" + "0" * 32
    answers = [outsider.client.error(BY_MESSAGE[name], {"m": m}) for m in (secret, unknown)]
    assert [(a["message"], a["extensions"]["code"]) for a in answers] == [
        ("Message not found", "NOT_FOUND")
    ] * 2


# The message operations of threads that read the message first (threads.service `_own_message`,
# `readable_message`): the same answer for a message one may not read as for an unknown id.
BY_MESSAGE_IN_THREADS = {
    "messageEdit": 'mutation($m: ID!) { messageEdit(id: $m, content: "x") { id } }',
    "messageDelete": "mutation($m: ID!) { messageDelete(id: $m) { id } }",
    "message": "query($m: ID!) { message(id: $m) { id } }",
    "threadTree": "query($m: ID!) { threadTree(rootId: $m) { nodes { id } } }",
}


@pytest.mark.parametrize("name", list(BY_MESSAGE_IN_THREADS))
def test_a_message_one_may_not_read_is_unknown_to_the_thread_operations_too(
    admin: Actor, make_user: Callable[..., Actor], name: str
) -> None:
    outsider = make_user(admin)
    secret = start_thread(admin, create_conversation(admin, "secret"), "secret root")
    unknown = "msg_" + "0" * 32
    answers = [outsider.client.error(BY_MESSAGE_IN_THREADS[name], {"m": m}) for m in (secret, unknown)]
    assert [(a["message"], a["extensions"]["code"]) for a in answers] == [
        ("Message not found", "NOT_FOUND")
    ] * 2
