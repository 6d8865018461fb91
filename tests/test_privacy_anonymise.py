"""userAnonymise (issue 20 item 5): the team keeps the conversations; the user's identity is replaced and
nothing of the PII they wrote survives, in any table."""

from __future__ import annotations

import uuid
from typing import Any

from tests.api import create_conversation, join, reply, start_thread
from tests.harness import Actor, Loop
from tests.test_privacy_pii import CARD, EMAIL, MASKED, TEXT, sql

ANONYMISE = """mutation($u: ID!) { userAnonymise(userId: $u) {
  userId pseudonymId messages messagesMasked detections } }"""
EDIT = "mutation($id: ID!, $c: String!) { messageEdit(id: $id, content: $c) { id } }"
FEEDBACK = (
    """mutation($m: ID!, $c: String) { messageFeedbackSet(messageId: $m, rating: UP, comment: $c) { id } }"""
)
READ = """query($c: ID!) { conversation(id: $c) { title owner { id displayName email }
  messages(first: 10) { nodes { content author { id displayName email } edits { content } } } } }"""


def stored(loop: Loop, dsn: str, but: str) -> str:
    """Every row that holds text or ids, except the message `but` (a public id) and the events carrying it."""
    keep = uuid.UUID(but.removeprefix("msg_"))
    queries = [
        ("SELECT * FROM message WHERE id <> $1", [keep]),
        ("SELECT * FROM stream_event WHERE message_id IS DISTINCT FROM $1", [keep]),
        *(
            (f"SELECT * FROM {t}", [])
            for t in ("message_edit", "message_chunk", "conversation", "message_feedback")
        ),
    ]
    return "\n".join(str(tuple(r)) for q, args in queries for r in sql(loop, dsn, q, *args))


def test_anonymise_keeps_the_conversations_but_not_the_identity_nor_the_pii(
    admin: Actor, make_user: Any, loop: Loop, dsn: str
) -> None:
    author = make_user(admin, team="sales")
    teammate = make_user(admin)
    conversation = create_conversation(author, f"ask {EMAIL}")
    join(author, teammate, conversation)
    root = start_thread(author, conversation, "first draft")
    author.client.ok(EDIT, {"id": root, "c": TEXT})  # the earlier version has no PII, the current one has
    answer = reply(teammate, root, f"teammate keeps {EMAIL}")
    reply(author, answer, f"card again {CARD}")
    author.client.ok(FEEDBACK, {"m": answer, "c": f"reach me at {EMAIL}"})

    done = admin.client.ok(ANONYMISE, {"u": author.user_id})["userAnonymise"]
    pseudonym = done["pseudonymId"]
    assert done == {
        "userId": author.user_id,
        "pseudonymId": pseudonym,
        "messages": 2,
        "messagesMasked": 2,
        "detections": 3,
    }
    assert pseudonym != author.user_id
    found = teammate.client.ok(READ, {"c": conversation})["conversation"]
    assert found["title"] == "ask [EMAIL]"
    assert found["owner"] == {"id": pseudonym, "displayName": "Anonymised user", "email": None}
    anonymous = {"id": pseudonym, "displayName": "Anonymised user", "email": None}
    nodes = found["messages"]["nodes"]
    assert [(m["content"], m["edits"]) for m in nodes] == [
        (MASKED, [{"content": "first draft"}]),
        (f"teammate keeps {EMAIL}", []),
        ("card again [CARD]", []),
    ]
    assert [nodes[0]["author"], nodes[1]["author"]["id"], nodes[2]["author"]] == [
        anonymous,
        teammate.user_id,
        anonymous,
    ]
    # Their credentials are gone; the admin cannot anonymise themselves; an unknown user is NOT_FOUND.
    assert author.client.code("{ viewer { id } }") == "UNAUTHENTICATED"
    assert admin.client.code(ANONYMISE, {"u": admin.user_id}) == "FORBIDDEN"
    assert admin.client.code(ANONYMISE, {"u": author.user_id}) == "NOT_FOUND"
    assert teammate.client.code(ANONYMISE, {"u": pseudonym}) == "FORBIDDEN"
    # At the SQL level: no trace of their PII nor of their id; the teammate's own message is untouched.
    rows = stored(loop, dsn, but=answer)  # the teammate's message keeps its text
    # The card digits in any spacing ("4111" alone also turns up in the microseconds of timestamps).
    assert CARD not in rows and "4111 1111" not in rows and "41111111" not in rows and "gonzalez" not in rows
    assert author.user_id.removeprefix("usr_") not in rows.replace("-", "") and author.user_id not in rows
    assert sql(loop, dsn, "SELECT count(*) AS n FROM app_user WHERE email LIKE 'u-%'")[0]["n"] == 1
    vectors = " ".join(r["v"] for r in sql(loop, dsn, "SELECT search_vector::text AS v FROM message"))
    assert "4111" not in vectors
    # The feedback comment of theirs is masked, and the anonymisation is audited.
    (comment,) = sql(loop, dsn, "SELECT comment FROM message_feedback")
    assert comment["comment"] == "reach me at [EMAIL]"
    log = admin.client.ok('{ auditLog(action: "user.anonymise") { nodes { actorId targetId details } } }')
    assert log["auditLog"]["nodes"] == [
        {
            "actorId": admin.user_id,
            "targetId": pseudonym,
            "details": {"pseudonymId": pseudonym, "messages": 2, "messagesMasked": 2, "detections": 3},
        }
    ]


def test_anonymise_of_another_tenants_user_is_not_found(admin: Actor, make_tenant: Any) -> None:
    other = make_tenant()
    assert admin.client.code(ANONYMISE, {"u": other.user_id}) == "NOT_FOUND"
