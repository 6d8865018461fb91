"""Re-importing a newer export merges into the earlier import; import identity is per importing user, and a
deleted import can be imported again (issue 22 items 1 and 2). Fixtures in tests/fixtures/merge are in the
real ChatGPT and Claude export shapes: v2 is v1 plus a new branch, new messages, and one edited message."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.api import reply
from tests.harness import Actor, Loop, ServerThread, create_admin, test_settings
from tests.test_porting_cli import report_of, run
from tests.test_porting_import import FIXTURES, assert_tree_is_consistent, fixture, sql, tree_rows
from tests.test_streaming import live
from tests.ws import CONVERSATION_EVENTS, WsClient
from threadline.ids import Kind, decode_id, encode_id

REPORT = """mutation($i: ConversationImportInput!) { conversationImportReport(input: $i) {
  imported skipped merged failed messageCount messagesAdded messagesUpdated warnings
  failures { index externalId message }
  merges { conversationId externalId messagesAdded messagesUpdated }
  conversations { id title status messageCount } } }"""
IMPORT = """mutation($i: ConversationImportInput!) { conversationImport(input: $i) { id messageCount } }"""
EDITS = """query($id: ID!) { message(id: $id) { content editedAt edits { content } } }"""

CHATGPT_ID = "6710c0de-0000-4000-8000-00000000c0de"
CLAUDE_ID = "c1a0de00-0000-4000-8000-0000000c1a0d"

# (depth, role, content) depth-first, siblings oldest first: the ChatGPT v2 tree.
CHATGPT_V1 = [
    (0, "USER", "What is the capital of France?"),
    (1, "ASSISTANT", "Paris."),
    (2, "USER", "And of Spain?"),
    (3, "ASSISTANT", "Madrid."),
]
CHATGPT_V2 = [
    (0, "USER", "What is the capital of France?"),
    (1, "ASSISTANT", "Paris is the capital of France."),
    (2, "USER", "And of Spain?"),
    (3, "ASSISTANT", "Madrid."),
    (4, "USER", "Thanks!"),
    (5, "ASSISTANT", "You're welcome."),
    (2, "USER", "And of Italy?"),
    (3, "ASSISTANT", "Rome."),
    (4, "USER", "And of Portugal?"),
    (5, "ASSISTANT", "Lisbon."),
]
CLAUDE_V2 = [
    (0, "USER", "Plan a weekend in Porto"),
    (1, "ASSISTANT", "Day 1: Ribeira. Day 2: Foz."),
    (2, "USER", "Thanks"),
    (3, "ASSISTANT", "Enjoy Porto!"),
    (1, "ASSISTANT", "Start with the Livraria Lello."),
]


def report(actor: Actor, fmt: str, name: str) -> dict[str, Any]:
    data = fixture(f"merge/{name}")
    result: dict[str, Any] = actor.client.ok(REPORT, {"i": {"format": fmt, "data": data}})[
        "conversationImportReport"
    ]
    return result


def counts(r: dict[str, Any]) -> tuple[int, int, int, int, int, int, int]:
    return (
        r["imported"],
        r["merged"],
        r["skipped"],
        r["failed"],
        r["messageCount"],
        r["messagesAdded"],
        r["messagesUpdated"],
    )


def keyed(loop: Loop, dsn: str, conversation_id: str) -> dict[str, Any]:
    """Source id -> stored row."""
    return {r["import_key"]: r for r in tree_rows(loop, dsn, conversation_id)}


def outline(loop: Loop, dsn: str, conversation_id: str) -> list[tuple[int, str, str]]:
    return [(r["depth"], r["role"], r["content"]) for r in tree_rows(loop, dsn, conversation_id)]


def test_chatgpt_newer_export_merges_new_branch_messages_and_edit_in_place(
    admin: Actor, loop: Loop, dsn: str
) -> None:
    first = report(admin, "CHATGPT", "chatgpt-v1.json")
    assert counts(first) == (1, 0, 0, 0, 4, 0, 0)
    (conversation,) = first["conversations"]
    cid = conversation["id"]
    assert outline(loop, dsn, cid) == CHATGPT_V1
    before = keyed(loop, dsn, cid)
    assert set(before) == {"u-1", "a-1", "u-2", "a-2"}
    events_before = sql(loop, dsn, "SELECT max(id) AS id FROM stream_event")[0]["id"] or 0

    second = report(admin, "CHATGPT", "chatgpt-v2.json")
    assert counts(second) == (0, 1, 0, 0, 6, 6, 1)
    assert second["merges"] == [
        {"conversationId": cid, "externalId": CHATGPT_ID, "messagesAdded": 6, "messagesUpdated": 1}
    ]
    assert [c["id"] for c in second["conversations"]] == [cid]
    assert second["conversations"][0]["messageCount"] == 10
    assert outline(loop, dsn, cid) == CHATGPT_V2
    assert_tree_is_consistent(loop, dsn, cid)

    after = keyed(loop, dsn, cid)
    # Earlier messages keep their ids; new ones hang under the right parents.
    for key, row in before.items():
        assert after[key]["id"] == row["id"]
    parent_of = {key: after[key]["parent_id"] for key in after}
    assert parent_of["u-4"] == after["a-2"]["id"]
    assert parent_of["a-4"] == after["u-4"]["id"]
    assert parent_of["u-2b"] == after["a-1"]["id"]
    assert parent_of["a-2b"] == after["u-2b"]["id"]
    assert parent_of["u-3"] == after["a-2b"]["id"]
    assert parent_of["a-3"] == after["u-3"]["id"]
    # The changed answer is an edit: the earlier text is kept in its history.
    edited = admin.client.ok(EDITS, {"id": encode_id(Kind.MESSAGE, after["a-1"]["id"])})["message"]
    assert edited["content"] == "Paris is the capital of France."
    assert edited["edits"] == [{"content": "Paris."}]
    assert edited["editedAt"] is not None
    unchanged = admin.client.ok(EDITS, {"id": encode_id(Kind.MESSAGE, after["u-2"]["id"])})["message"]
    assert unchanged["edits"] == []

    # New messages are announced as a bulk write announces them: a REPLY per new branch tip (a-4 under a-2; a-3
    # at the end of the new branch u-2b, a-2b, u-3, a-3), whose path names the new messages above it; the EDIT.
    events = sql(
        loop,
        dsn,
        """SELECT type, payload FROM stream_event WHERE id > $1 AND conversation_id = $2 AND type LIKE 'thread.%'
           ORDER BY id""",
        events_before,
        decode_id(cid, Kind.CONVERSATION),
    )
    actions = sorted((e["type"], json.loads(e["payload"]).get("action")) for e in events)
    assert actions == sorted([("thread.activity", "REPLY")] * 2 + [("thread.activity", "EDIT")])
    # Each REPLY names the message's ancestors, root first, itself last, as a live reply's event does (the
    # existing parents' ancestors read from the database, the new ones' from their new parents).
    by_id = {r["id"]: r for r in after.values()}
    announced, named = [], set()
    for e in events:
        payload = json.loads(e["payload"])
        if payload.get("action") != "REPLY":
            continue
        chain = []
        node = by_id.get(decode_id(payload["message"]["id"], Kind.MESSAGE))
        announced.append(node["import_key"] if node else None)
        while node is not None:
            chain.append(encode_id(Kind.MESSAGE, node["id"]))
            node = by_id.get(node["parent_id"])
        assert payload["message"]["path"] == chain[::-1]
        assert len(chain) == payload["message"]["depth"] + 1
        assert payload["replyCount"] == 9  # the thread's count after the merge
        named.update(payload["message"]["path"])
    assert sorted(announced) == ["a-3", "a-4"]
    # Every new message is on an announced path: a client learns of each one.
    new_ids = {encode_id(Kind.MESSAGE, after[k]["id"]) for k in ("u-4", "a-4", "u-2b", "a-2b", "u-3", "a-3")}
    assert new_ids <= named

    # v2 again: nothing new, nothing changed.
    third = report(admin, "CHATGPT", "chatgpt-v2.json")
    assert counts(third) == (0, 0, 1, 0, 0, 0, 0)
    assert [c["id"] for c in third["conversations"]] == [cid]
    assert outline(loop, dsn, cid) == CHATGPT_V2
    assert (
        len(admin.client.ok(EDITS, {"id": encode_id(Kind.MESSAGE, after["a-1"]["id"])})["message"]["edits"])
        == 1
    )
    (row,) = sql(loop, dsn, "SELECT count(*) AS n FROM conversation")
    assert row["n"] == 1


def test_a_live_subscriber_and_a_resumed_one_learn_every_merged_message(
    admin: Actor, server: ServerThread
) -> None:
    """A merge announces each new branch tip (a REPLY with its path) and the edit: a subscriber reads every new
    message's id on those paths and fetches the ones it was not sent; one resuming from before gets the same."""
    cid = report(admin, "CHATGPT", "chatgpt-v1.json")["conversations"][0]["id"]
    before = live(admin)
    ws = WsClient(server.ws_url, admin.api_key)
    try:
        ws.subscribe(CONVERSATION_EVENTS, {"c": cid, "s": before})
        assert report(admin, "CHATGPT", "chatgpt-v2.json")["messagesAdded"] == 6
        events = ws.events(3, timeout=30, ignore=("presence.update", "unread.update"))
        ws.expect_quiet(0.3, ignore=("presence.update", "unread.update"))
    finally:
        ws.close()
    assert sorted(e["action"] for e in events) == ["EDIT", "REPLY", "REPLY"]
    assert {e["replyCount"] for e in events} == {9}
    named = {i for e in events if e["action"] == "REPLY" for i in e["changedMessage"]["path"]}
    sent = {e["changedMessage"]["id"] for e in events}
    fetched = {
        i: admin.client.ok("query($id: ID!) { message(id: $id) { content } }", {"id": i})["message"][
            "content"
        ]
        for i in named - sent
    }
    # The tree as the subscriber can rebuild it: every message of v2 is named (the earlier ones it had).
    contents = {e["changedMessage"]["content"] for e in events if e["action"] == "REPLY"} | set(
        fetched.values()
    )
    assert {"Thanks!", "And of Italy?", "Rome.", "And of Portugal?"} <= contents
    assert {"You're welcome.", "Lisbon."} == {
        e["changedMessage"]["content"] for e in events if e["action"] == "REPLY"
    }
    # Resumed from the cursor before the merge: the same events, in the same order.
    again = WsClient(server.ws_url, admin.api_key)
    try:
        again.subscribe(CONVERSATION_EVENTS, {"c": cid, "s": before})
        replayed = again.events(3, timeout=30, ignore=("presence.update", "unread.update"))
    finally:
        again.close()
    assert [e["cursor"] for e in replayed] == [e["cursor"] for e in events]


def test_claude_newer_export_merges_through_conversation_import(admin: Actor, loop: Loop, dsn: str) -> None:
    (first,) = admin.client.ok(IMPORT, {"i": {"format": "CLAUDE", "data": fixture("merge/claude-v1.json")}})[
        "conversationImport"
    ]
    before = keyed(loop, dsn, first["id"])
    (second,) = admin.client.ok(IMPORT, {"i": {"format": "CLAUDE", "data": fixture("merge/claude-v2.json")}})[
        "conversationImport"
    ]
    assert second == {"id": first["id"], "messageCount": 5}
    assert outline(loop, dsn, first["id"]) == CLAUDE_V2
    assert_tree_is_consistent(loop, dsn, first["id"])
    after = keyed(loop, dsn, first["id"])
    assert {k: after[k]["id"] for k in before} == {k: r["id"] for k, r in before.items()}
    assert after["c-1b"]["parent_id"] == after["h-1"]["id"]
    assert after["c-2"]["parent_id"] == after["h-2"]["id"]
    again = report(admin, "CLAUDE", "claude-v2.json")
    assert counts(again) == (0, 0, 1, 0, 0, 0, 0)


def test_merge_keeps_live_replies_and_places_new_messages_after_them(
    admin: Actor, loop: Loop, dsn: str
) -> None:
    cid = report(admin, "CHATGPT", "chatgpt-v1.json")["conversations"][0]["id"]
    rows = keyed(loop, dsn, cid)
    reply(admin, encode_id(Kind.MESSAGE, rows["a-1"]["id"]), "Live follow-up")
    merged = report(admin, "CHATGPT", "chatgpt-v2.json")
    assert counts(merged) == (0, 1, 0, 0, 6, 6, 1)
    assert_tree_is_consistent(loop, dsn, cid)
    shape = outline(loop, dsn, cid)
    # The live reply keeps its place (second child of a-1); the new branch comes after it.
    assert shape[6] == (2, "USER", "Live follow-up")
    assert shape[7:] == CHATGPT_V2[6:]


def test_a_second_user_importing_the_same_file_gets_their_own_conversation(
    admin: Actor, make_user: Any, loop: Loop, dsn: str
) -> None:
    mine = report(admin, "CHATGPT", "chatgpt-v2.json")
    member = make_user(admin)
    theirs = report(member, "CHATGPT", "chatgpt-v2.json")
    assert counts(theirs) == (1, 0, 0, 0, 10, 0, 0)
    (conversation,) = theirs["conversations"]
    assert conversation["id"] != mine["conversations"][0]["id"]
    owner = member.client.ok(
        "query($id: ID!) { conversation(id: $id) { owner { id } } }", {"id": conversation["id"]}
    )
    assert owner["conversation"]["owner"]["id"] == member.user_id
    # A fresh import of v2 has exactly the tree the merge built from v1 + v2.
    assert outline(loop, dsn, conversation["id"]) == CHATGPT_V2
    # Each user's re-import merges into their own conversation only.
    assert counts(report(member, "CHATGPT", "chatgpt-v2.json")) == (0, 0, 1, 0, 0, 0, 0)
    assert counts(report(admin, "CHATGPT", "chatgpt-v2.json")) == (0, 0, 1, 0, 0, 0, 0)


def test_a_deleted_import_can_be_imported_again_as_a_new_conversation(
    admin: Actor, loop: Loop, dsn: str
) -> None:
    old = report(admin, "CLAUDE", "claude-v1.json")["conversations"][0]["id"]
    admin.client.ok("mutation($id: ID!) { conversationDelete(id: $id) { status } }", {"id": old})
    again = report(admin, "CLAUDE", "claude-v2.json")
    assert counts(again) == (1, 0, 0, 0, 5, 0, 0)
    (new,) = again["conversations"]
    assert new["id"] != old and new["status"] == "ACTIVE"
    assert outline(loop, dsn, new["id"]) == CLAUDE_V2
    # The deleted one is untouched and can still be restored; re-imports now merge into the new one.
    assert len(tree_rows(loop, dsn, old)) == 3
    restored = admin.client.ok("mutation($id: ID!) { conversationRestore(id: $id) { status } }", {"id": old})
    assert restored["conversationRestore"]["status"] == "ACTIVE"
    third = report(admin, "CLAUDE", "claude-v2.json")
    assert counts(third) == (0, 0, 1, 0, 0, 0, 0)
    assert [c["id"] for c in third["conversations"]] == [new["id"]]


def test_merge_needs_a_writable_conversation_the_importer_manages(
    admin: Actor, make_user: Any, loop: Loop, dsn: str
) -> None:
    cid = report(admin, "CHATGPT", "chatgpt-v1.json")["conversations"][0]["id"]
    admin.client.ok("mutation($id: ID!) { conversationArchive(id: $id) { status } }", {"id": cid})
    refused = report(admin, "CHATGPT", "chatgpt-v2.json")
    assert counts(refused)[:4] == (0, 0, 0, 1)
    assert refused["failures"][0]["externalId"] == CHATGPT_ID
    assert "cannot be merged" in refused["failures"][0]["message"]
    assert outline(loop, dsn, cid) == CHATGPT_V1
    # Restored (open again), it merges.
    admin.client.ok("mutation($id: ID!) { conversationRestore(id: $id) { status } }", {"id": cid})
    assert counts(report(admin, "CHATGPT", "chatgpt-v2.json")) == (0, 1, 0, 0, 6, 6, 1)


def cli_import(dsn: str, actor: Actor, path: Path) -> dict[str, Any]:
    """`threadline import --format chatgpt` of a file as `actor`: its report."""
    result = run(dsn, "import", str(path), "--format", "chatgpt", "--api-key", actor.api_key, "--quiet")
    assert result.returncode == 0, result.stderr
    return report_of(result)


def summary(r: dict[str, Any]) -> tuple[int, ...]:
    """A CLI report's counts: imported, merged, skipped, failed, messages, messagesAdded, messagesUpdated."""
    keys = ("imported", "merged", "skipped", "failed", "messages", "messagesAdded", "messagesUpdated")
    return tuple(r[k] for k in keys)


def test_cli_import_merges_a_newer_export(admin: Actor, dsn: str, loop: Loop, tmp_path: Path) -> None:
    def cli(name: str) -> dict[str, Any]:
        return cli_import(dsn, admin, FIXTURES / "merge" / name)

    assert summary(cli("chatgpt-v1.json")) == (1, 0, 0, 0, 4, 0, 0)
    (conversation,) = sql(loop, dsn, "SELECT id FROM conversation")
    cid = encode_id(Kind.CONVERSATION, conversation["id"])
    merged = cli("chatgpt-v2.json")
    assert summary(merged) == (0, 1, 0, 0, 6, 6, 1)
    assert merged["merges"] == [
        {"conversationId": cid, "externalId": CHATGPT_ID, "messagesAdded": 6, "messagesUpdated": 1}
    ]
    assert outline(loop, dsn, cid) == CHATGPT_V2
    assert_tree_is_consistent(loop, dsn, cid)
    assert summary(cli("chatgpt-v2.json")) == (0, 0, 1, 0, 0, 0, 0)


@pytest.fixture(scope="module")
def capped(dsn: str) -> Iterator[ServerThread]:
    """A server whose API imports carry at most 8 messages: v1 (4) fits, v2 (10) does not."""
    srv = ServerThread(test_settings(dsn, migrate_on_start=False, import_api_max_messages=8))
    srv.start()
    yield srv
    srv.stop()


def test_a_merge_through_the_api_is_bounded_by_the_import_caps(
    capped: ServerThread, loop: Loop, dsn: str
) -> None:
    client = create_admin(loop, dsn, capped.url).client
    try:
        first = client.ok(REPORT, {"i": {"format": "CHATGPT", "data": fixture("merge/chatgpt-v1.json")}})
        cid = first["conversationImportReport"]["conversations"][0]["id"]
        # The whole file counts (10 messages), not just what the merge would add (6): refused, nothing merged.
        error = client.error(REPORT, {"i": {"format": "CHATGPT", "data": fixture("merge/chatgpt-v2.json")}})
        assert error["extensions"]["code"] == "BAD_USER_INPUT"
        assert error["extensions"]["setting"] == "THREADLINE_IMPORT_API_MAX_MESSAGES"
        assert outline(loop, dsn, cid) == CHATGPT_V1
    finally:
        client.close()


def test_a_reimport_of_the_same_bytes_is_skipped_by_their_fingerprint_and_changed_bytes_are_not(
    admin: Actor, dsn: str, loop: Loop, tmp_path: Path
) -> None:
    """`threadline import` keeps the SHA-256 of each conversation's JSON bytes on its import identity. The same
    bytes again are skipped before anything of the conversation is read; any other bytes go the ordinary way,
    whatever the file says (a field named like the fingerprint changes nothing)."""

    def cli(data: bytes) -> dict[str, Any]:
        path = tmp_path / "conversations.json"
        path.write_bytes(data)
        return cli_import(dsn, admin, path)

    def stored() -> bytes:
        (row,) = sql(loop, dsn, "SELECT fingerprint FROM import_source")
        return bytes(row["fingerprint"])

    (item,) = json.loads((FIXTURES / "merge" / "chatgpt-v1.json").read_bytes())
    first = json.dumps(item).encode()
    assert summary(cli(b"[" + first + b"]")) == (1, 0, 0, 0, 4, 0, 0)
    assert stored() == hashlib.sha256(first).digest()  # of the item's bytes, not of the file's brackets

    # Proof that nothing of it was read: its messages lose their source ids and its node digests go (as an import
    # from before they were recorded), which the ordinary way reports as "cannot be merged"; the same bytes are
    # skipped silently.
    sql(loop, dsn, "UPDATE message SET import_key = NULL")
    sql(loop, dsn, "UPDATE import_source SET node_digests = NULL")
    again = cli(b"[\n  " + first + b"\n]")
    assert summary(again) == (0, 0, 1, 0, 0, 0, 0)
    assert again["warnings"] == []
    (conversation,) = sql(loop, dsn, "SELECT id FROM conversation")
    # The source ids back (the fixture's message ids, depth-first).
    rows = tree_rows(loop, dsn, encode_id(Kind.CONVERSATION, conversation["id"]))
    for row, key in zip(rows, ["u-1", "a-1", "u-2", "a-2"], strict=True):
        sql(loop, dsn, "UPDATE message SET import_key = $1 WHERE id = $2", key, row["id"])

    # A changed answer with the stored fingerprint planted in the item: merged as an edit all the same.
    changed = json.loads(first)
    changed["fingerprint"] = stored().hex()
    changed["mapping"]["a-1"]["message"]["content"]["parts"] = ["Paris, on the Seine."]
    changed_bytes = json.dumps(changed).encode()
    assert summary(cli(b"[" + changed_bytes + b"]")) == (0, 1, 0, 0, 0, 0, 1)
    assert stored() == hashlib.sha256(changed_bytes).digest()

    # Other bytes, the same nodes (keys reordered): skipped by the node digests, the fingerprint follows the bytes.
    reordered = json.dumps(dict(reversed(list(changed.items())))).encode()
    assert summary(cli(b"[" + reordered + b"]")) == (0, 0, 1, 0, 0, 0, 0)
    assert stored() == hashlib.sha256(reordered).digest()
    assert [r["content"] for r in tree_rows(loop, dsn, encode_id(Kind.CONVERSATION, conversation["id"]))][
        :2
    ] == ["What is the capital of France?", "Paris, on the Seine."]


def test_the_same_bytes_are_imported_again_after_a_delete_and_by_another_user(
    admin: Actor, make_user: Any, loop: Loop, dsn: str
) -> None:
    """A fingerprint is the importing user's, and of a live conversation: the same file after the conversation
    was deleted, or by another user of the tenant, is imported as a new conversation."""
    path = FIXTURES / "merge" / "chatgpt-v2.json"
    assert summary(cli_import(dsn, admin, path)) == (1, 0, 0, 0, 10, 0, 0)
    (first,) = sql(loop, dsn, "SELECT id FROM conversation")
    member = make_user(admin)
    assert summary(cli_import(dsn, member, path)) == (1, 0, 0, 0, 10, 0, 0)
    assert summary(cli_import(dsn, member, path)) == (0, 0, 1, 0, 0, 0, 0)
    old = encode_id(Kind.CONVERSATION, first["id"])
    admin.client.ok("mutation($id: ID!) { conversationDelete(id: $id) { status } }", {"id": old})
    again = cli_import(dsn, admin, path)
    assert summary(again) == (1, 0, 0, 0, 10, 0, 0)
    rows = sql(loop, dsn, "SELECT id, owner_id, status FROM conversation ORDER BY created_at, id")
    assert sorted(r["status"] for r in rows) == ["ACTIVE", "ACTIVE", "DELETED"]
    live = [
        r for r in rows if r["status"] == "ACTIVE" and r["owner_id"] == decode_id(admin.user_id, Kind.USER)
    ]
    assert len(live) == 1 and live[0]["id"] != first["id"]
    assert outline(loop, dsn, encode_id(Kind.CONVERSATION, live[0]["id"])) == CHATGPT_V2
    assert summary(cli_import(dsn, admin, path)) == (0, 0, 1, 0, 0, 0, 0)
