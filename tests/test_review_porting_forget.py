"""Review of 6eb60bf and 2ece92a: a conversation holding a message deleted here keeps no fingerprint of the bytes
of an export holding its text, however the merge that follows reads its rows."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Actor, Loop
from tests.test_import_forget_deleted import DELETE, message_of, source
from tests.test_import_merge import cli_import, summary
from tests.test_import_merge_ahead import _import, first_export, grown, write
from tests.test_porting_import import sql
from threadline.ids import Kind, encode_id
from threadline.porting import bulk_repository, chatgpt_nodes, merging, service
from threadline.porting import repository as porting_repo


def without(conversation: dict[str, Any], node_id: str) -> dict[str, Any]:
    """The export without a node of a chain, its child attached to its parent."""
    out = copy.deepcopy(conversation)
    mapping = out["mapping"]
    node = mapping.pop(node_id)
    parent = mapping[node["parent"]]
    parent["children"] = [c for c in parent["children"] if c != node_id] + node["children"]
    for child in node["children"]:
        mapping[child]["parent"] = node["parent"]
    return out


def test_a_deleted_message_whose_node_left_the_export_and_came_back_keeps_no_fingerprint(
    admin: Actor, dsn: str, loop: Loop, tmp_path: Path
) -> None:
    """The node of the deleted message leaves the next export (its forgotten mark goes with its digest), then
    comes back: the merge reads the rows whole and marks it forgotten again, but the fingerprint of the bytes
    holding its text was kept (only `seen`'s marks and rows read before the lock were looked at)."""
    v1 = first_export()
    cli_import(dsn, admin, write(tmp_path / "v1.json", v1))
    admin.client.ok(DELETE, {"id": encode_id(Kind.MESSAGE, message_of(loop, dsn, "a-1")["id"])})
    assert source(loop, dsn)[1] is None

    assert summary(cli_import(dsn, admin, write(tmp_path / "v2.json", without(v1, "a-1"))))[3] == 0
    digests, fingerprint = source(loop, dsn)
    assert "a-1" not in digests and fingerprint is None

    assert summary(cli_import(dsn, admin, write(tmp_path / "v3.json", v1)))[3:] == (0, 0, 0, 0)
    digests, fingerprint = source(loop, dsn)
    assert digests["a-1"] == chatgpt_nodes.FORGOTTEN
    assert fingerprint is None  # the bytes hold the deleted text
    row = message_of(loop, dsn, "a-1")
    assert row["content"] == "" and row["deleted_at"] is not None


def test_a_message_deleted_after_a_grown_export_was_looked_at_leaves_no_fingerprint(
    admin: Actor, dsn: str, loop: Loop, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The digests a merge starts from are read before the conversation's lock: a message deleted in between (not
    among the few rows a merge of new nodes reads) left its mark, and the merge kept the fingerprint of bytes
    holding its text."""
    v1 = first_export()
    cli_import(dsn, admin, write(tmp_path / "v1.json", v1))
    target = encode_id(Kind.MESSAGE, message_of(loop, dsn, "u-1")["id"])
    pending = service.Importer._merge_pending
    deleted: list[Any] = []

    async def meanwhile(self: service.Importer, *args: Any, **kwargs: Any) -> None:
        if not deleted:
            deleted.append(await asyncio.to_thread(admin.client.ok, DELETE, {"id": target}))
        await pending(self, *args, **kwargs)

    monkeypatch.setattr(service.Importer, "_merge_pending", meanwhile)
    v2 = grown(v1, "a-2", [("u-3", "user", "Thanks!"), ("a-3", "assistant", "You're welcome.")])
    merged = loop.run(_import(dsn, admin.api_key, write(tmp_path / "v2.json", v2)))
    assert (merged["merged"], merged["messagesAdded"]) == (1, 2)
    digests, fingerprint = source(loop, dsn)
    assert digests["u-1"] == chatgpt_nodes.FORGOTTEN and "a-3" in digests
    assert fingerprint is None
    assert message_of(loop, dsn, "u-1")["content"] == ""


def test_a_message_deleted_after_an_unchanged_export_was_looked_at_leaves_no_fingerprint(
    admin: Actor, dsn: str, loop: Loop, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Other bytes with the same nodes (a new title) are found unchanged from the digests read before; a message
    deleted before their fingerprint is kept (no lock, no transaction) must not get the fingerprint back."""
    v1 = first_export()
    cli_import(dsn, admin, write(tmp_path / "v1.json", v1))
    target = encode_id(Kind.MESSAGE, message_of(loop, dsn, "u-1")["id"])
    real = bulk_repository.set_fingerprints

    async def meanwhile(*args: Any, **kwargs: Any) -> None:
        await asyncio.to_thread(admin.client.ok, DELETE, {"id": target})
        await real(*args, **kwargs)

    monkeypatch.setattr(bulk_repository, "set_fingerprints", meanwhile)
    retitled = {**v1, "title": "Capitals of Europe"}
    again = loop.run(_import(dsn, admin.api_key, write(tmp_path / "v2.json", retitled)))
    assert (again["merged"], again["skipped"]) == (0, 1)
    digests, fingerprint = source(loop, dsn)
    assert digests["u-1"] == chatgpt_nodes.FORGOTTEN
    assert fingerprint is None


def test_a_message_deleted_while_its_conversation_is_merged_stays_forgotten(
    admin: Actor, dsn: str, loop: Loop, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A delete takes the message's lock, not the conversation's: one that commits after a merge read the rows
    (a-1 not deleted then) and before the merge stores its digests leaves its mark, which the merge keeps. (The
    merge reads the rows whole for a changed node that holds no message, and writes none.)"""
    v1 = first_export()
    cli_import(dsn, admin, write(tmp_path / "v1.json", v1))
    target = encode_id(Kind.MESSAGE, message_of(loop, dsn, "a-1")["id"])
    real = merging.merge_many
    deleted: list[Any] = []

    async def meanwhile(*args: Any, **kwargs: Any) -> None:
        await real(*args, **kwargs)
        if not deleted:
            deleted.append(await asyncio.to_thread(admin.client.ok, DELETE, {"id": target}))

    monkeypatch.setattr(merging, "merge_many", meanwhile)
    v2 = copy.deepcopy(v1)
    v2["mapping"]["sys-0"]["message"]["weight"] = 0.5
    merged = loop.run(_import(dsn, admin.api_key, write(tmp_path / "v2.json", v2)))
    assert deleted and (merged["merged"], merged["skipped"], merged["failed"]) == (0, 1, 0)
    digests, fingerprint = source(loop, dsn)
    assert digests["a-1"] == chatgpt_nodes.FORGOTTEN
    assert fingerprint is None
    assert message_of(loop, dsn, "a-1")["content"] == ""


ANONYMISE = "mutation($u: ID!) { userAnonymise(userId: $u) { userId } }"


def test_an_anonymised_importer_leaves_no_digest_of_their_source_text(
    admin: Actor, make_user: Callable[..., Actor], dsn: str, loop: Loop, tmp_path: Path
) -> None:
    """`userAnonymise` masks the PII in what the user wrote, their imported messages included; the import identity
    (now the pseudonym's, who has no credentials: nobody imports as them again) kept the digests of those
    messages' source bytes and the fingerprint of the whole item, each a way to confirm a guess of the PII."""
    member = make_user(admin)
    v1 = copy.deepcopy(first_export())
    v1["mapping"]["u-1"]["message"]["content"]["parts"] = [
        "Mail me at jane.doe@example.com: capital of France?"
    ]
    assert summary(cli_import(dsn, member, write(tmp_path / "v1.json", v1)))[0] == 1
    digests, fingerprint = source(loop, dsn)
    assert len(digests["u-1"]) == chatgpt_nodes.RAW_DIGEST_HEX and fingerprint is not None

    admin.client.ok(ANONYMISE, {"u": member.user_id})
    assert "jane.doe@example.com" not in message_of(loop, dsn, "u-1")["content"]
    digests, fingerprint = source(loop, dsn)
    assert not any(digests.values()) and fingerprint is None


def test_a_message_deleted_before_a_reimport_keeps_digests_again_stays_forgotten(
    admin: Actor, dsn: str, loop: Loop, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A conversation whose import kept no digests gets them from a re-import that finds it unchanged (rows read
    without a lock or a transaction): a message deleted after those rows were read is forgotten in them too."""
    v1 = first_export()
    cli_import(dsn, admin, write(tmp_path / "v1.json", v1))
    sql(loop, dsn, "UPDATE import_source SET node_digests = NULL, fingerprint = NULL")
    target = encode_id(Kind.MESSAGE, message_of(loop, dsn, "u-1")["id"])
    real = porting_repo.set_node_digests

    async def meanwhile(*args: Any, **kwargs: Any) -> None:
        await asyncio.to_thread(admin.client.ok, DELETE, {"id": target})
        await real(*args, **kwargs)

    monkeypatch.setattr(porting_repo, "set_node_digests", meanwhile)
    again = loop.run(_import(dsn, admin.api_key, write(tmp_path / "again.json", v1)))
    assert (again["merged"], again["skipped"]) == (0, 1)
    digests, fingerprint = source(loop, dsn)
    assert digests["u-1"] == chatgpt_nodes.FORGOTTEN and len(digests["a-1"]) == chatgpt_nodes.RAW_DIGEST_HEX
    assert fingerprint is None
