"""A merge re-import of a grown ChatGPT export plans each grown conversation before its transaction (so that the
client's CPU work overlaps with the statements of the batches in flight), and uses that plan only if the rows read
under the conversation's lock give the same part of the export (issue 22 figure). Fixtures: tests/fixtures/merge,
grown by new nodes only (none the first import saw changed)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Actor, Loop, test_settings
from tests.test_import_bulk import node
from tests.test_import_merge import CHATGPT_V1, cli_import, outline, summary
from tests.test_porting_import import FIXTURES, assert_tree_is_consistent, sql
from threadline.auth.service import authenticate
from threadline.db import Database
from threadline.ids import Kind, encode_id
from threadline.porting import bulk_repository, chatgpt, service
from threadline.porting.jsonstream import JsonArrayReader
from threadline.porting.model import ImportFormat


def first_export() -> dict[str, Any]:
    (conversation,) = json.loads((FIXTURES / "merge" / "chatgpt-v1.json").read_bytes())
    assert isinstance(conversation, dict)
    return conversation


def grown(conversation: dict[str, Any], parent: str, texts: list[tuple[str, str, str]]) -> dict[str, Any]:
    """The export with a chain of new nodes (id, role, text) under `parent`, the last one current."""
    out = copy.deepcopy(conversation)
    mapping = out["mapping"]
    t = max(n["message"]["create_time"] or 0 for n in mapping.values() if n.get("message"))
    for node_id, role, text in texts:
        t += 10
        mapping[node_id] = node(node_id, parent, [], role, text, t)
        mapping[parent]["children"].append(node_id)
        parent = node_id
    out["current_node"] = parent
    return out


def write(path: Path, conversation: dict[str, Any]) -> Path:
    path.write_text(json.dumps([conversation]))
    return path


async def _import(dsn: str, api_key: str, path: Path) -> dict[str, Any]:
    """`threadline import`'s run of a file, in this process (its steps can be watched)."""
    settings = test_settings(dsn)
    db = await Database.connect(dsn, 1, 4)
    try:
        principal = await authenticate(db, settings, f"Bearer {api_key}")
        run = service.Importer(db, settings, principal, ImportFormat.CHATGPT, concurrency=2, lazy=True)
        with path.open("rb") as stream:
            for item in JsonArrayReader(stream, max_item_bytes=settings.import_item_max_bytes, defer=True):
                await run.submit(run.prepare(item))
        report: dict[str, Any] = (await run.finish()).as_dict()
        return report
    finally:
        await db.close()


@pytest.fixture
def steps(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The order of the plans made (`planned`) and of the merge transactions begun (`transaction`)."""
    seen: list[str] = []
    planned = service.Importer._planned
    pending = service.Importer._merge_pending

    def spy_planned(self: service.Importer, *args: Any, **kwargs: Any) -> Any:
        seen.append("planned")
        return planned(self, *args, **kwargs)

    async def spy_pending(self: service.Importer, *args: Any, **kwargs: Any) -> None:
        seen.append("transaction")
        await pending(self, *args, **kwargs)

    monkeypatch.setattr(service.Importer, "_planned", spy_planned)
    monkeypatch.setattr(service.Importer, "_merge_pending", spy_pending)
    return seen


def test_a_grown_conversation_is_planned_before_its_transaction(
    admin: Actor, dsn: str, loop: Loop, tmp_path: Path, steps: list[str]
) -> None:
    v1 = first_export()
    assert summary(cli_import(dsn, admin, write(tmp_path / "v1.json", v1))) == (1, 0, 0, 0, 4, 0, 0)
    (conversation,) = sql(loop, dsn, "SELECT id FROM conversation")
    cid = encode_id(Kind.CONVERSATION, conversation["id"])
    v2 = grown(v1, "a-2", [("u-3", "user", "Thanks!"), ("a-3", "assistant", "You're welcome.")])
    merged = loop.run(_import(dsn, admin.api_key, write(tmp_path / "v2.json", v2)))
    assert (merged["merged"], merged["messagesAdded"], merged["messagesUpdated"]) == (1, 2, 0)
    # Planned once, before the transaction (the rows read under the lock gave the same part).
    assert steps == ["planned", "transaction"]
    assert outline(loop, dsn, cid) == [
        *CHATGPT_V1,
        (4, "USER", "Thanks!"),
        (5, "ASSISTANT", "You're welcome."),
    ]
    assert_tree_is_consistent(loop, dsn, cid)
    assert summary(cli_import(dsn, admin, tmp_path / "v2.json")) == (0, 0, 1, 0, 0, 0, 0)


def test_a_plan_made_before_on_a_node_that_was_never_stored_is_made_again_under_the_lock(
    admin: Actor, dsn: str, loop: Loop, tmp_path: Path, steps: list[str]
) -> None:
    """The plan made before the transaction assumes the nodes the first import saw are stored. `sys-0` (an empty
    system message) was seen but never stored: a new branch under it is placed from what the rows say."""
    v1 = first_export()
    cli_import(dsn, admin, write(tmp_path / "v1.json", v1))
    (conversation,) = sql(loop, dsn, "SELECT id FROM conversation")
    cid = encode_id(Kind.CONVERSATION, conversation["id"])
    v2 = grown(v1, "sys-0", [("u-9", "user", "Another question"), ("a-9", "assistant", "Another answer")])
    merged = loop.run(_import(dsn, admin.api_key, write(tmp_path / "v2.json", v2)))
    assert (merged["merged"], merged["messagesAdded"], merged["messagesUpdated"]) == (1, 2, 0)
    assert steps == ["planned", "transaction", "planned"]
    # The new branch starts a thread of its own, as on a first import of v2 (sys-0 is not a message).
    assert outline(loop, dsn, cid) == [
        *CHATGPT_V1,
        (0, "USER", "Another question"),
        (1, "ASSISTANT", "Another answer"),
    ]
    assert_tree_is_consistent(loop, dsn, cid)


def test_a_merge_by_another_import_since_the_digests_were_read_adds_nothing_twice(
    admin: Actor, dsn: str, loop: Loop, tmp_path: Path
) -> None:
    """Node digests are read before the conversation's lock: when another import merged the same new nodes in
    between, those nodes are found stored under the lock, and the conversation is merged whole (by source id)."""
    v1 = first_export()
    cli_import(dsn, admin, write(tmp_path / "v1.json", v1))
    (source,) = sql(loop, dsn, "SELECT node_digests FROM import_source")
    v2 = grown(v1, "a-2", [("u-3", "user", "Thanks!"), ("a-3", "assistant", "You're welcome.")])
    assert summary(cli_import(dsn, admin, write(tmp_path / "v2.json", v2)))[1:6] == (1, 0, 0, 2, 2)
    # As seen by an import that read the digests before that merge committed.
    sql(loop, dsn, "UPDATE import_source SET node_digests = $1, fingerprint = NULL", source["node_digests"])
    again = cli_import(dsn, admin, tmp_path / "v2.json")
    assert summary(again) == (0, 0, 1, 0, 0, 0, 0)
    (conversation,) = sql(loop, dsn, "SELECT id, message_count FROM conversation")
    cid = encode_id(Kind.CONVERSATION, conversation["id"])
    assert conversation["message_count"] == 6
    assert outline(loop, dsn, cid) == [
        *CHATGPT_V1,
        (4, "USER", "Thanks!"),
        (5, "ASSISTANT", "You're welcome."),
    ]
    assert_tree_is_consistent(loop, dsn, cid)


def test_a_part_reaching_the_root_that_is_never_stored_is_worked_out_once(
    admin: Actor, dsn: str, loop: Loop, tmp_path: Path, steps: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The root node of an export has no message and is never stored: a part whose walk up reaches it (here the
    current node's, a message right under the root) is the same under the lock, so the plan made before is used
    without working the part out again, or asking what else is stored."""
    walks: list[str] = []

    def counted(name: str) -> None:
        real = getattr(chatgpt, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            walks.append(name)
            return real(*args, **kwargs)

        monkeypatch.setattr(chatgpt, name, call)

    counted("reduced")
    counted("stored_keys_needed")
    root = {"id": "root", "message": None, "parent": None, "children": ["u-1"]}
    v1 = {
        **{k: v for k, v in first_export().items() if k != "mapping"},
        "mapping": {
            "root": root,
            "u-1": node("u-1", "root", ["a-1"], "user", "What is the capital of Peru?", 1730000001.0),
            "a-1": node("a-1", "u-1", [], "assistant", "Lima.", 1730000002.0),
        },
        "current_node": "a-1",
    }
    assert summary(cli_import(dsn, admin, write(tmp_path / "v1.json", v1))) == (1, 0, 0, 0, 2, 0, 0)
    (conversation,) = sql(loop, dsn, "SELECT id FROM conversation")
    cid = encode_id(Kind.CONVERSATION, conversation["id"])
    v2 = grown(v1, "a-1", [("u-2", "user", "And of Chile?"), ("a-2", "assistant", "Santiago.")])
    v2["current_node"] = "u-1"
    merged = loop.run(_import(dsn, admin.api_key, write(tmp_path / "v2.json", v2)))
    assert (merged["merged"], merged["messagesAdded"], merged["messagesUpdated"]) == (1, 2, 0)
    assert steps == ["planned", "transaction"]
    assert walks == ["reduced"]
    assert outline(loop, dsn, cid) == [
        (0, "USER", "What is the capital of Peru?"),
        (1, "ASSISTANT", "Lima."),
        (2, "USER", "And of Chile?"),
        (3, "ASSISTANT", "Santiago."),
    ]
    assert_tree_is_consistent(loop, dsn, cid)


def test_the_rows_a_merge_reads_by_source_id_are_the_tenants_only(
    make_tenant: Any, dsn: str, loop: Loop, tmp_path: Path
) -> None:
    """bulk_repository.merge_targets_by_key finds a batch's rows by their conversations and checks the tenant on
    them (not in the scan): another tenant's conversation asked for by id gives nothing."""
    ours, theirs = make_tenant(), make_tenant()
    path = write(tmp_path / "v1.json", first_export())
    cli_import(dsn, ours, path)
    cli_import(dsn, theirs, path)
    rows = sql(loop, dsn, "SELECT id, tenant_id FROM conversation ORDER BY tenant_id")
    ids = [r["id"] for r in rows]
    keys = [["u-1", "a-1", "u-9"]] * 2

    async def by_key(tenant_id: Any) -> list[tuple[str, str]]:
        db = await Database.connect(dsn, 1, 2)
        try:
            found = await bulk_repository.merge_targets_by_key(db, tenant_id, ids, keys)
        finally:
            await db.close()
        return sorted((str(r["conversation_id"]), r["import_key"]) for r in found)

    for row in rows:
        assert loop.run(by_key(row["tenant_id"])) == [(str(row["id"]), "a-1"), (str(row["id"]), "u-1")]
