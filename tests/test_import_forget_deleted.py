"""Deleted imported messages leave nothing of their text on the import identity (issue 22, and "content deleted or
erased must not survive anywhere"): the ChatGPT node digest of a deleted message (a hash of its source bytes) and
the fingerprint of the conversation's bytes (a hash of them all) each confirmed a guess of the deleted text. They are
forgotten when the message is deleted or erased; re-imports still leave it deleted, skip nothing they should not
and add what is new."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.harness import Actor, Loop
from tests.test_import_merge import CHATGPT_V1, cli_import, outline, summary
from tests.test_import_merge_ahead import first_export, grown, write
from tests.test_porting_import import sql
from threadline.db import Database
from threadline.ids import Kind, encode_id
from threadline.porting import chatgpt_nodes
from threadline.porting import repository as porting_repo

DELETE = "mutation($id: ID!) { messageDelete(id: $id) { id content deletedAt } }"


def source(loop: Loop, dsn: str) -> tuple[dict[str, str], bytes | None]:
    (row,) = sql(loop, dsn, "SELECT node_digests, fingerprint FROM import_source")
    fingerprint = row["fingerprint"]
    digests = json.loads(row["node_digests"]) if row["node_digests"] is not None else {}
    return digests, bytes(fingerprint) if fingerprint is not None else None


def message_of(loop: Loop, dsn: str, key: str) -> Any:
    (row,) = sql(loop, dsn, "SELECT id, content, deleted_at FROM message WHERE import_key = $1", key)
    return row


def test_a_deleted_imported_message_leaves_no_digest_and_no_fingerprint_and_stays_deleted(
    admin: Actor, dsn: str, loop: Loop, tmp_path: Path
) -> None:
    v1 = first_export()
    assert summary(cli_import(dsn, admin, write(tmp_path / "v1.json", v1))) == (1, 0, 0, 0, 4, 0, 0)
    digests, fingerprint = source(loop, dsn)
    assert len(digests["a-1"]) == chatgpt_nodes.RAW_DIGEST_HEX and fingerprint is not None
    (conversation,) = sql(loop, dsn, "SELECT id FROM conversation")
    cid = encode_id(Kind.CONVERSATION, conversation["id"])

    deleted = admin.client.ok(DELETE, {"id": encode_id(Kind.MESSAGE, message_of(loop, dsn, "a-1")["id"])})
    assert deleted["messageDelete"]["content"] == ""
    after, fingerprint = source(loop, dsn)
    assert after["a-1"] == chatgpt_nodes.FORGOTTEN  # known, nothing of its text
    assert {k: d for k, d in after.items() if k != "a-1"} == {k: d for k, d in digests.items() if k != "a-1"}
    assert fingerprint is None

    # The very same bytes again: nothing comes back, and nothing of the deleted text is kept again.
    assert summary(cli_import(dsn, admin, write(tmp_path / "again.json", v1))) == (0, 0, 1, 0, 0, 0, 0)
    assert message_of(loop, dsn, "a-1")["content"] == ""
    again, fingerprint = source(loop, dsn)
    assert again == after and fingerprint is None

    # A grown export: only what is new is added, the deleted message stays deleted and forgotten.
    v2 = grown(v1, "a-2", [("u-3", "user", "Thanks!"), ("a-3", "assistant", "You're welcome.")])
    merged = cli_import(dsn, admin, write(tmp_path / "v2.json", v2))
    assert summary(merged) == (0, 1, 0, 0, 2, 2, 0)
    assert merged["warnings"] == []
    row = message_of(loop, dsn, "a-1")
    assert row["content"] == "" and row["deleted_at"] is not None
    assert outline(loop, dsn, cid) == [
        CHATGPT_V1[0],
        (1, "ASSISTANT", ""),
        *CHATGPT_V1[2:],
        (4, "USER", "Thanks!"),
        (5, "ASSISTANT", "You're welcome."),
    ]
    grown_digests, fingerprint = source(loop, dsn)
    assert grown_digests["a-1"] == chatgpt_nodes.FORGOTTEN and fingerprint is None
    assert set(grown_digests) == {*digests, "u-3", "a-3"}

    # An edit of another message in the source is still found and merged.
    v3 = json.loads(json.dumps(v2))
    v3["mapping"]["u-2"]["message"]["content"]["parts"] = ["And of Spain, please?"]
    assert summary(cli_import(dsn, admin, write(tmp_path / "v3.json", v3))) == (0, 1, 0, 0, 0, 0, 1)
    assert message_of(loop, dsn, "u-2")["content"] == "And of Spain, please?"
    assert message_of(loop, dsn, "a-1")["content"] == ""
    assert source(loop, dsn)[0]["a-1"] == chatgpt_nodes.FORGOTTEN


def test_erased_imported_messages_are_forgotten_by_the_import_identity_too(
    admin: Actor, dsn: str, loop: Loop, tmp_path: Path
) -> None:
    """The erasure path (`userErase`'s redaction of what a user wrote in others' conversations) goes through
    `porting.repository.redact_messages`, as a delete goes through the tombstone."""
    cli_import(dsn, admin, write(tmp_path / "v1.json", first_export()))
    ids = [message_of(loop, dsn, key)["id"] for key in ("u-1", "a-2")]

    async def redact() -> None:
        db = await Database.connect(dsn, 1, 1)
        try:
            async with db.transaction() as tx:
                (tenant,) = await tx.fetch("SELECT tenant_id FROM import_source")
                await porting_repo.redact_messages(tx, tenant["tenant_id"], ids)
        finally:
            await db.close()

    loop.run(redact())
    digests, fingerprint = source(loop, dsn)
    assert digests["u-1"] == digests["a-2"] == chatgpt_nodes.FORGOTTEN
    assert len(digests["a-1"]) == chatgpt_nodes.RAW_DIGEST_HEX
    assert fingerprint is None


def test_digests_kept_again_by_a_reimport_forget_the_deleted_messages(
    admin: Actor, dsn: str, loop: Loop, tmp_path: Path
) -> None:
    """A conversation whose import kept no node digests (imported before they were, or past MAX_DIGESTED_NODES)
    gets them from its next re-import: not of the messages deleted since, and no fingerprint of its bytes."""
    v1 = first_export()
    cli_import(dsn, admin, write(tmp_path / "v1.json", v1))
    sql(loop, dsn, "UPDATE import_source SET node_digests = NULL")
    admin.client.ok(DELETE, {"id": encode_id(Kind.MESSAGE, message_of(loop, dsn, "a-1")["id"])})
    assert summary(cli_import(dsn, admin, write(tmp_path / "again.json", v1))) == (0, 0, 1, 0, 0, 0, 0)
    digests, fingerprint = source(loop, dsn)
    assert digests["a-1"] == chatgpt_nodes.FORGOTTEN and len(digests["u-1"]) == chatgpt_nodes.RAW_DIGEST_HEX
    assert fingerprint is None
    # And from a merge that reads the rows whole.
    sql(loop, dsn, "UPDATE import_source SET node_digests = NULL")
    v2 = grown(v1, "a-2", [("u-3", "user", "Thanks!")])
    assert summary(cli_import(dsn, admin, write(tmp_path / "v2.json", v2))) == (0, 1, 0, 0, 1, 1, 0)
    digests, fingerprint = source(loop, dsn)
    assert digests["a-1"] == chatgpt_nodes.FORGOTTEN
    assert fingerprint is None
    assert message_of(loop, dsn, "a-1")["content"] == ""
