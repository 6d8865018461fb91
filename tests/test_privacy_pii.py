"""PII policies per mode (issue 20 item 2): OFF, DETECT, MASK_ON_WRITE, MASK_ON_READ, through the API and in
the rows."""

from __future__ import annotations

from typing import Any

import asyncpg

from tests.api import create_conversation, join, reply, start_thread
from tests.harness import Actor, Loop

EMAIL = "maria.gonzalez@example.org"
CARD = "4111 1111 1111 1111"
TEXT = f"write to {EMAIL} and charge {CARD} today"
MASKED = "write to [EMAIL] and charge [CARD] today"

SET = "mutation($p: PiiPolicy!) { tenantPiiPolicySet(policy: $p) }"
MESSAGE = """query($id: ID!) { message(id: $id) {
  content pii { kind span { start end } } parts { ... on TextPart { text } } edits { content } } }"""
TREE = "query($r: ID!) { threadTree(rootId: $r) { nodes { id content } } }"
EDIT = "mutation($id: ID!, $c: String!) { messageEdit(id: $id, content: $c) { content } }"


def set_policy(admin: Actor, policy: str) -> None:
    assert admin.client.ok(SET, {"p": policy})["tenantPiiPolicySet"] == policy


def message(actor: Actor, message_id: str) -> dict[str, Any]:
    found: dict[str, Any] = actor.client.ok(MESSAGE, {"id": message_id})["message"]
    return found


def sql(loop: Loop, dsn: str, query: str, *args: Any) -> list[asyncpg.Record]:
    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetch(query, *args)
        finally:
            await conn.close()

    return loop.run(run())


def everything_stored(loop: Loop, dsn: str) -> str:
    """Every row of the tables that hold message text or its traces, as one string."""
    tables = ("message", "message_edit", "message_chunk", "stream_event", "conversation")
    rows = [str(tuple(r)) for t in tables for r in sql(loop, dsn, f"SELECT * FROM {t}")]  # noqa: S608
    return "\n".join(rows)


def test_policy_is_off_by_default_and_nothing_is_scanned(admin: Actor) -> None:
    assert admin.client.ok("{ piiPolicy }")["piiPolicy"] == "OFF"
    root = start_thread(admin, create_conversation(admin), TEXT)
    found = message(admin, root)
    assert (found["content"], found["pii"]) == (TEXT, None)


def test_only_admins_set_the_policy_and_each_change_is_audited(admin: Actor, make_user: Any) -> None:
    member = make_user(admin)
    error = member.client.error(SET, {"p": "DETECT"})
    assert error["extensions"]["code"] == "FORBIDDEN"
    assert admin.client.ok("{ piiPolicy }")["piiPolicy"] == "OFF"
    set_policy(admin, "DETECT")
    set_policy(admin, "MASK_ON_READ")
    assert member.client.ok("{ piiPolicy }")["piiPolicy"] == "MASK_ON_READ"
    log = admin.client.ok('{ auditLog(action: "tenant.pii_policy_set") { nodes { actorId details } } }')
    assert [n["details"] for n in log["auditLog"]["nodes"]] == [
        {"from": "DETECT", "to": "MASK_ON_READ"},
        {"from": "OFF", "to": "DETECT"},
    ]
    assert {n["actorId"] for n in log["auditLog"]["nodes"]} == {admin.user_id}


def test_detect_keeps_the_content_and_stores_the_detections(admin: Actor, loop: Loop, dsn: str) -> None:
    set_policy(admin, "DETECT")
    root = start_thread(admin, create_conversation(admin), TEXT)
    found = message(admin, root)
    assert found["content"] == TEXT
    start = TEXT.index(EMAIL)
    card = TEXT.index(CARD)
    assert found["pii"] == [
        {"kind": "EMAIL", "span": {"start": start, "end": start + len(EMAIL)}},
        {"kind": "CARD", "span": {"start": card, "end": card + len(CARD)}},
    ]
    (row,) = sql(loop, dsn, "SELECT content, pii FROM message")
    assert row["content"] == TEXT
    clean = reply(admin, root, "nothing personal in version 1.2.3.4, order #123456789")
    assert message(admin, clean)["pii"] == []
    # Content changed by a writer that does not know about PII loses its stored detections (a trigger), so they
    # never point at the wrong characters; `pii` is then found afresh.
    sql(loop, dsn, "UPDATE message SET content = 'now ' || content WHERE pii = '[]'::jsonb")
    assert [r["pii"] for r in sql(loop, dsn, "SELECT pii FROM message WHERE content LIKE 'now %'")] == [None]
    assert message(admin, clean)["pii"] == []
    sql(loop, dsn, "UPDATE message SET content = $1 WHERE content LIKE 'now %'", f"now {EMAIL}")
    assert message(admin, clean)["pii"] == [{"kind": "EMAIL", "span": {"start": 4, "end": 4 + len(EMAIL)}}]


def test_mask_on_write_stores_no_original_anywhere(admin: Actor, loop: Loop, dsn: str) -> None:
    set_policy(admin, "MASK_ON_WRITE")
    conversation = create_conversation(admin)
    root = start_thread(admin, conversation, TEXT)
    child = reply(admin, root, f"my IBAN is GB82 WEST 1234 5698 7654 32, mail {EMAIL}")
    found = message(admin, root)
    assert found["content"] == MASKED
    assert found["pii"] == [
        {"kind": "EMAIL", "span": {"start": 9, "end": 16}},
        {"kind": "CARD", "span": {"start": 28, "end": 34}},
    ]
    assert message(admin, child)["content"] == "my IBAN is [IBAN], mail [EMAIL]"
    # An edit is masked too, and the version it replaces was stored masked already.
    edited = admin.client.ok(EDIT, {"id": root, "c": f"now {EMAIL} only"})["messageEdit"]
    assert edited["content"] == "now [EMAIL] only"
    assert message(admin, root)["edits"] == [{"content": MASKED}]
    stored = everything_stored(loop, dsn)
    # The card digits in any spacing ("4111" alone also turns up in the microseconds of timestamps).
    for original in (EMAIL, CARD, "GB82", "maria", "gonzalez", "4111 1111", "41111111"):
        assert original not in stored, original
    # The search index holds only what was stored.
    vectors = sql(loop, dsn, "SELECT search_vector::text AS v FROM message")
    assert all("maria" not in r["v"] and "4111" not in r["v"] for r in vectors)
    hits = admin.client.ok('{ search(input: {query: "gonzalez"}) { totalCount } }')
    assert hits["search"]["totalCount"] == 0


def test_mask_on_read_masks_for_members_but_not_for_the_author_or_admins(
    admin: Actor, make_user: Any, loop: Loop, dsn: str
) -> None:
    author = make_user(admin, team="sales")
    reader = make_user(admin)
    manager = make_user(admin, role="MANAGER", team="sales")  # reads the team's conversations
    conversation = create_conversation(author)
    join(author, reader, conversation)
    set_policy(admin, "MASK_ON_READ")
    root = start_thread(author, conversation, TEXT)
    (row,) = sql(loop, dsn, "SELECT content FROM message")
    assert row["content"] == TEXT  # stored as written
    assert message(author, root)["content"] == TEXT
    assert message(admin, root)["content"] == TEXT
    seen = message(reader, root)
    assert seen["content"] == MASKED
    assert seen["parts"] == [{"text": MASKED}]
    assert seen["pii"] == [
        {"kind": "EMAIL", "span": {"start": 9, "end": 16}},
        {"kind": "CARD", "span": {"start": 28, "end": 34}},
    ]
    # The reader's own reply is theirs to read in full; the author reads it masked.
    mine = reply(reader, root, f"mine: {EMAIL}")
    assert [n["content"] for n in reader.client.ok(TREE, {"r": root})["threadTree"]["nodes"]] == [
        MASKED,
        f"mine: {EMAIL}",
    ]
    assert [n["content"] for n in author.client.ok(TREE, {"r": root})["threadTree"]["nodes"]] == [
        TEXT,
        "mine: [EMAIL]",
    ]
    page = reader.client.ok(
        "query($c: ID!) { conversation(id: $c) { messages(first: 10) { nodes { id content } } } }",
        {"c": conversation},
    )
    assert {n["id"]: n["content"] for n in page["conversation"]["messages"]["nodes"]} == {
        root: MASKED,
        mine: f"mine: {EMAIL}",
    }
    # An edit history is masked like the content.
    author.client.ok(EDIT, {"id": root, "c": f"edited, still {EMAIL}"})
    assert message(reader, root)["edits"] == [{"content": MASKED}]
    assert message(reader, root)["content"] == "edited, still [EMAIL]"
    assert message(manager, root)["content"] == "edited, still [EMAIL]"
    # Back to OFF: everyone reads the stored text again.
    set_policy(admin, "OFF")
    assert message(reader, root)["content"] == f"edited, still {EMAIL}"
