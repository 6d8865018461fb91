"""Hostile typing indicators: only where one may write."""

from __future__ import annotations

import pytest

from tests.api import create_conversation
from tests.harness import Actor

TYPING = "mutation($c: ID!, $t: Boolean!) { typingSet(conversationId: $c, isTyping: $t) }"


@pytest.mark.parametrize(
    ("change", "status"), [("conversationArchive", "archived"), ("conversationDelete", "deleted")]
)
def test_no_one_starts_typing_in_an_archived_or_deleted_conversation(
    admin: Actor, change: str, status: str
) -> None:
    """Nothing can be written there until it is restored, yet typingSet announced `typing.update` to its readers."""
    conversation = create_conversation(admin)
    assert admin.client.ok(TYPING, {"c": conversation, "t": True}) == {"typingSet": True}
    admin.client.ok(f"mutation($c: ID!) {{ {change}(id: $c) {{ id }} }}", {"c": conversation})
    error = admin.client.error(TYPING, {"c": conversation, "t": True})
    assert (error["extensions"]["code"], error["message"]) == (
        "CONFLICT",
        f"The conversation is {status}; restore it before writing to it",
    )
    # Stopping an indicator is still answered.
    assert admin.client.ok(TYPING, {"c": conversation, "t": False}) == {"typingSet": False}
