"""Hostile feedback: bounds that hold without costing more than the bound, and refusals that say nothing of
messages the caller may not read."""

from __future__ import annotations

import httpx

from tests.api import create_conversation, start_thread
from tests.harness import Actor, ServerThread

FEEDBACK = """mutation($m: ID!, $r: [String!]) {
  messageFeedbackSet(messageId: $m, rating: UP, reasons: $r) { id feedback { reasons } } }"""
# A request the old rule (each reason looked up in the list of those kept so far) would not finish in hours,
# holding the event loop all that time: a failure here is a timeout.
TIMEOUT = 60


def test_a_million_distinct_reasons_are_refused_at_the_eleventh(server: ServerThread, admin: Actor) -> None:
    root = start_thread(admin, create_conversation(admin), "rate me")
    reasons = [f"r{n}" for n in range(1_000_000)]
    response = httpx.post(
        f"{server.url}/graphql",
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
