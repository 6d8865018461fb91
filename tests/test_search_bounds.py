"""Search arguments are bounded before any SQL runs: an over-long value is BAD_USER_INPUT naming its limit."""

from __future__ import annotations

from typing import Any

from tests.api import create_conversation
from tests.harness import Actor

SEARCH = """query($i: ConversationSearchInput!) { search(input: $i) {
  totalCount edges { node { conversation { id aiProvider } } } } }"""


def found(actor: Actor, **input: Any) -> list[str]:
    return [e["node"]["conversation"]["id"] for e in actor.client.ok(SEARCH, {"i": input})["search"]["edges"]]


def test_ai_provider_filter_is_bounded_as_conversation_create_bounds_it(admin: Actor) -> None:
    provider = "p" * 64  # the longest a conversation may carry
    wanted = create_conversation(admin, "at the limit", aiProvider=provider)
    create_conversation(admin, "other", aiProvider="echo")

    assert found(admin, aiProvider=provider) == [wanted]
    assert found(admin, aiProvider=f"  {provider.upper()}  ") == [wanted]  # trimmed, case ignored
    assert found(admin, query="limit", aiProvider=provider) == [wanted]

    for too_long in ("p" * 65, "p" * 4_000_000):
        error = admin.client.error(SEARCH, {"i": {"aiProvider": too_long}})
        assert error["extensions"] == {"code": "BAD_USER_INPUT", "argument": "aiProvider", "limit": 64}
        assert error["message"] == f"aiProvider is limited to 64 characters (got {len(too_long)})"
        assert admin.client.error(SEARCH, {"i": {"query": "limit", "aiProvider": too_long}})["extensions"][
            "code"
        ] == ("BAD_USER_INPUT")
