"""Merges racing other writers of the same conversation (review of 03a3c3f, 6eb60bf, 2ece92a). A merge through the
API read the conversation's rows before taking its lock and merged from them: a message deleted in between had
its tombstone given the newer export's text (as an edit), and new messages another import added in between were
added again. The hooks below only order the steps; the imports and the delete go through the real API."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Actor, Loop
from tests.test_import_forget_deleted import DELETE, message_of, source
from tests.test_import_merge import REPORT, cli_import, counts, summary
from tests.test_import_merge_ahead import _import, first_export, grown, write
from tests.test_porting_import import sql
from tests.test_tiers import freeze
from threadline.ids import Kind, encode_id
from threadline.porting import bulk_repository, service

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


def test_a_node_another_merge_changed_since_the_digests_were_read_is_stored_as_this_merge_wrote_it(
    admin: Actor, loop: Loop, dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review of 03a3c3f: a merge sends only the digests that differ from those it started from (`seen`, read before
    the conversation's lock). Here another import merged an edit of a-1 in between, and this merge (whole: u-2
    changed) wrote a-1 back as its export has it, the same as in `seen`: the other merge's digest of a-1 stayed
    stored, so a later export holding that other text was skipped as unchanged and a-1 kept the older text."""
    v1 = first_export()
    assert summary(cli_import(dsn, admin, write(tmp_path / "v1.json", v1))) == (1, 0, 0, 0, 4, 0, 0)
    first = source(loop, dsn)[0]
    other = write(tmp_path / "other.json", edited(v1, "a-1", ANSWER))
    pending = service.Importer._merge_pending
    reports: list[dict[str, Any]] = []

    async def meanwhile(self: service.Importer, *args: Any, **kwargs: Any) -> None:
        if not reports:  # `threadline import` of the other export, between this one's look and its lock
            reports.append(await asyncio.to_thread(cli_import, dsn, admin, other))
        await pending(self, *args, **kwargs)

    monkeypatch.setattr(service.Importer, "_merge_pending", meanwhile)
    mine = edited(v1, "u-2", "And of Spain, please?")
    merged = loop.run(_import(dsn, admin.api_key, write(tmp_path / "mine.json", mine)))
    monkeypatch.undo()
    assert summary(reports[0])[1:7] == (1, 0, 0, 0, 0, 1)
    assert (merged["merged"], merged["messagesUpdated"]) == (1, 2)  # u-2, and a-1 back to its text
    assert message_of(loop, dsn, "a-1")["content"] == "Paris."
    assert source(loop, dsn)[0]["a-1"] == first["a-1"]  # what is stored now

    # Both edits in one export: a-1 is merged, not skipped as unchanged.
    both = edited(mine, "a-1", ANSWER)
    assert summary(cli_import(dsn, admin, write(tmp_path / "both.json", both))) == (0, 1, 0, 0, 0, 0, 1)
    assert message_of(loop, dsn, "a-1")["content"] == ANSWER


def test_a_reimport_through_the_api_into_a_cold_conversation_adds_nothing_twice(
    admin: Actor, loop: Loop, dsn: str
) -> None:
    """A cold conversation (tiers/) has no message rows until it comes back, which its lock brings about: a merge
    that went by the rows read before the lock found none and added every message again."""
    v1 = first_export()
    api_import(admin, v1)
    (conversation,) = sql(loop, dsn, "SELECT id FROM conversation")
    assert freeze(loop, dsn, admin) == [conversation["id"]]

    report = api_import(admin, edited(v1, "a-1", ANSWER))
    assert counts(report) == (0, 1, 0, 0, 0, 0, 1)
    keys = [r["import_key"] for r in sql(loop, dsn, "SELECT import_key FROM message ORDER BY import_key")]
    assert keys == sorted(["u-1", "a-1", "u-2", "a-2"])
    assert message_of(loop, dsn, "a-1")["content"] == ANSWER
