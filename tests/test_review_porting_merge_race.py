"""Merges racing other writers of the same conversation (review of 03a3c3f, 6eb60bf, 2ece92a). A merge through the
API read the conversation's rows before taking its lock and merged from them: a message deleted in between had
its tombstone given the newer export's text (as an edit), and new messages another import added in between were
added again. The hooks below only order the steps; the imports and the delete go through the real API."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable
from typing import Any

import pytest

from tests.harness import Actor, Loop
from tests.test_import_forget_deleted import DELETE, message_of
from tests.test_import_merge import REPORT, counts
from tests.test_import_merge_ahead import first_export, grown
from tests.test_porting_import import sql
from threadline.ids import Kind, encode_id
from threadline.porting import bulk_repository

ANSWER = "Paris is the capital of France."


def edited(conversation: dict[str, Any], node_id: str, text: str) -> dict[str, Any]:
    out = copy.deepcopy(conversation)
    out["mapping"][node_id]["message"]["content"]["parts"] = [text]
    return out


def api_import(actor: Actor, conversation: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = actor.client.ok(REPORT, {"i": {"format": "CHATGPT", "data": [conversation]}})[
        "conversationImportReport"
    ]
    return result


def after_first_read(monkeypatch: pytest.MonkeyPatch, meanwhile: Callable[[], Any]) -> None:
    """Run `meanwhile` (blocking: through the API, in a thread) right after the first merge's rows are read."""
    real = bulk_repository.merge_targets
    calls = [0]

    async def hooked(*args: Any, **kwargs: Any) -> Any:
        rows = await real(*args, **kwargs)
        calls[0] += 1
        if calls[0] == 1:
            await asyncio.to_thread(meanwhile)
        return rows

    monkeypatch.setattr(bulk_repository, "merge_targets", hooked)


def test_a_message_deleted_while_a_merge_is_under_way_stays_deleted(
    admin: Actor, loop: Loop, dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    v1 = first_export()
    assert counts(api_import(admin, v1))[:5] == (1, 0, 0, 0, 4)
    deleted = encode_id(Kind.MESSAGE, message_of(loop, dsn, "a-1")["id"])
    after_first_read(monkeypatch, lambda: admin.client.ok(DELETE, {"id": deleted}))

    report = api_import(admin, edited(v1, "a-1", ANSWER))
    row = message_of(loop, dsn, "a-1")
    assert row["deleted_at"] is not None
    assert row["content"] == ""  # not the newer export's text
    assert report["messagesUpdated"] == 0
    assert sql(loop, dsn, "SELECT count(*) AS n FROM message_edit")[0]["n"] == 0


def test_new_messages_another_import_added_meanwhile_are_not_added_twice(
    admin: Actor, loop: Loop, dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    v1 = first_export()
    api_import(admin, v1)
    v2 = grown(v1, "a-2", [("u-3", "user", "Thanks!"), ("a-3", "assistant", "You're welcome.")])
    other: list[dict[str, Any]] = []
    after_first_read(monkeypatch, lambda: other.append(api_import(admin, v2)))

    report = api_import(admin, v2)
    assert other[0]["messagesAdded"] == 2
    assert report["messagesAdded"] == 0
    keys = [r["import_key"] for r in sql(loop, dsn, "SELECT import_key FROM message ORDER BY import_key")]
    assert keys == sorted(["u-1", "a-1", "u-2", "a-2", "u-3", "a-3"])
    (conversation,) = sql(loop, dsn, "SELECT message_count FROM conversation")
    assert conversation["message_count"] == 6
