"""Authorization attack on the OpenAI-style gateway (/v1): whose conversation a `session_id` names."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from tests.api import create_conversation, join, start_thread
from tests.harness import Actor, ServerThread

TREE = "query($c: ID!) { conversation(id: $c) { messageCount threads { nodes { root { id content } } } } }"


def complete(server: ServerThread, actor: Actor, session_id: str, content: str) -> httpx.Response:
    body = {"model": "echo", "messages": [{"role": "user", "content": content}], "session_id": session_id}
    return httpx.post(
        f"{server.url}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {actor.api_key}"},
        timeout=30,
    )


def count(actor: Actor, cid: str) -> Any:
    return actor.client.ok(TREE, {"c": cid})["conversation"]["messageCount"]


def test_a_session_id_names_the_callers_own_conversation_before_one_they_can_merely_read(
    server: ServerThread, admin: Actor, make_user: Callable[..., Actor]
) -> None:
    """Clients pick session ids, so two users may use the same one. An admin (who may read every conversation)
    or a manager (their team's) calling with their own session must not have their prompt stored in, and
    answered from the history of, a colleague's conversation that happens to share the id."""
    manager = make_user(admin, role="MANAGER", team="red")
    colleague = make_user(admin, team="red")
    for caller in (admin, manager):
        session = f"chat-{caller.user_id[4:12]}"
        own = create_conversation(caller, "mine", sessionId=session)
        start_thread(caller, own, "my earlier question")
        theirs = create_conversation(colleague, "theirs", sessionId=session)
        start_thread(colleague, theirs, "a colleague's private question")  # the more recently active one
        response = complete(server, caller, session, "my new question")
        assert response.status_code == 200, response.text
        assert "private" not in response.text
        assert count(colleague, theirs) == 1
        assert count(caller, own) == 3


def test_a_session_id_names_the_callers_own_conversation_before_one_they_were_invited_to(
    server: ServerThread, admin: Actor, make_user: Callable[..., Actor]
) -> None:
    """A colleague invites the caller into a conversation with the session id the caller's client uses: the
    caller's prompts stay in their own conversation (not stored where the colleague reads them), whether they
    joined as a MEMBER (who could write there) or a VIEWER (who would be refused)."""
    for role in ("MEMBER", "VIEWER"):
        caller, colleague = make_user(admin), make_user(admin)
        own = create_conversation(caller, "mine", sessionId="default")
        start_thread(caller, own, "my earlier question")
        theirs = create_conversation(colleague, "theirs", sessionId="default")
        join(colleague, caller, theirs, role)
        start_thread(colleague, theirs, "the colleague's question")  # the more recently active one
        response = complete(server, caller, "default", "my private question")
        assert response.status_code == 200, response.text
        assert count(colleague, theirs) == 1
        assert count(caller, own) == 3
