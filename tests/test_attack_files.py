"""Hostile file ids: deciding who may read a file costs the same however many conversations hold it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from tests.api import START, create_conversation, join
from tests.harness import Actor, ServerThread

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


def attach(actor: Actor, conversation: str, file_id: str) -> dict[str, Any]:
    message = {
        "content": "see attached",
        "parts": [{"text": "see"}, {"file": {"name": "a.png", "fileId": file_id}}],
    }
    return actor.client.raw(START, {"c": conversation, "i": message})


def test_a_file_held_in_many_conversations_is_refused_after_the_same_statements(
    server: ServerThread, admin: Actor, make_user: Callable[..., Actor]
) -> None:
    """Each conversation holding the file was checked in turn (a statement or two each) before NOT_FOUND: one
    attachment attempt, or one download, by someone who may read none of them cost statements by the thousand."""
    headers = {"Authorization": f"Bearer {admin.api_key}"}
    file_id = httpx.post(f"{server.url}/files", files={"file": ("a.png", PNG)}, headers=headers).json()["id"]
    stranger = make_user(admin)
    own = create_conversation(stranger, "mine")
    counts = []
    held = 0
    for holders in (1, 20):
        while held < holders:
            last = create_conversation(admin)
            assert "errors" not in attach(admin, last, file_id)
            held += 1
        refused = attach(stranger, own, file_id)
        assert [e["extensions"]["code"] for e in refused["errors"]] == ["NOT_FOUND"]
        counts.append(refused["extensions"]["sqlStatements"])
    assert counts[0] == counts[1], counts
    assert (
        httpx.get(
            f"{server.url}/files/{file_id}", headers={"Authorization": f"Bearer {stranger.api_key}"}
        ).status_code
        == 404
    )
    # Invited to the last of them, the stranger reads the file and may attach it.
    join(admin, stranger, last)
    download = httpx.get(
        f"{server.url}/files/{file_id}", headers={"Authorization": f"Bearer {stranger.api_key}"}
    )
    assert (download.status_code, download.content) == (200, PNG)
    assert "errors" not in attach(stranger, own, file_id)
