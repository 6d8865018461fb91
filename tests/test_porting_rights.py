"""Data rights: erasure leaves no trace of a user and keeps others' replies readable; retention purges."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from tests.api import create_conversation, join, reply, start_thread
from tests.harness import Actor, Client, Loop, ServerThread
from tests.test_porting_import import sql
from threadline.db import Database
from threadline.ids import Kind, decode_id
from threadline.porting.retention import purge_expired

ERASE = """mutation($u: ID!, $r: Boolean) { userErase(userId: $u, redactMessages: $r) {
  userId conversationsDeleted messagesRedacted messagesReassigned placeholder { id displayName email } } }"""
TREE = (
    """query($r: ID!) { threadTree(rootId: $r) { nodes { content isDeleted author { id displayName } } } }"""
)
RETENTION_SET = "mutation($d: Int) { tenantRetentionSet(retentionDays: $d) { retentionDays } }"


async def _rows_mentioning(dsn: str, needles: list[str]) -> dict[str, list[str]]:
    """For each needle, every `table: row` of the database whose text contains it."""
    conn = await asyncpg.connect(dsn)
    try:
        tables = [
            r["tablename"]
            for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        ]
        found: dict[str, list[str]] = {}
        for table in tables:
            for row in await conn.fetch(f'SELECT t::text AS row FROM "{table}" t'):
                for needle in needles:
                    if needle in row["row"]:
                        found.setdefault(needle, []).append(f"{table}: {row['row'][:200]}")
        return found
    finally:
        await conn.close()


def test_erasure_leaves_no_trace_of_the_user_and_keeps_other_replies_readable(
    admin: Actor, make_user: Any, loop: Loop, dsn: str
) -> None:
    erased, other = make_user(admin), make_user(admin)
    profile = erased.client.ok("{ viewer { email displayName } }")["viewer"]
    # A conversation the erased user owns, with someone else's reply in it.
    own = create_conversation(erased, "secret-title-of-erased")
    join(erased, other, own)
    own_root = start_thread(erased, own, "secret-own-root")
    reply(other, own_root, "other-in-erased-conversation")
    # Their messages in someone else's conversation, with replies under them.
    shared = create_conversation(admin, "shared")
    join(admin, erased, shared)
    join(admin, other, shared)
    root = start_thread(erased, shared, "secret-root-elsewhere")
    answer = reply(other, root, "other-reply-stays")
    mine = reply(erased, answer, "secret-first-draft")
    erased.client.ok(
        'mutation($i: ID!) { messageEdit(id: $i, content: "secret-second-draft") { id } }', {"i": mine}
    )
    erased.client.ok("mutation($r: ID!) { threadMarkRead(rootId: $r) { id } }", {"r": root})
    admin.client.ok(
        "mutation($c: ID!, $u: ID!) { participantRoleSet(conversationId: $c, userId: $u, role: VIEWER) { id } }",
        {"c": shared, "u": erased.user_id},
    )

    done = admin.client.ok(ERASE, {"u": erased.user_id})["userErase"]
    placeholder = done["placeholder"]
    assert {k: v for k, v in done.items() if k != "placeholder"} == {
        "userId": erased.user_id,
        "conversationsDeleted": 1,
        "messagesRedacted": 2,
        "messagesReassigned": 2,
    }
    assert (placeholder["displayName"], placeholder["email"]) == ("Deleted user", None)

    user_uuid = decode_id(erased.user_id, Kind.USER)
    needles = [
        "secret-title-of-erased",
        "secret-own-root",
        "other-in-erased-conversation",
        "secret-root-elsewhere",
        "secret-first-draft",
        "secret-second-draft",
        profile["email"],
        profile["displayName"],
        erased.user_id,
        str(user_uuid),
    ]
    found = loop.run(_rows_mentioning(dsn, needles))
    # The one allowed trace: the erasure's own audit entry names the erased id as its target.
    (erasure_entry,) = found.pop(str(user_uuid))
    assert erasure_entry.startswith("audit_log: ") and "user.erase" in erasure_entry
    assert found == {}

    nodes = other.client.ok(TREE, {"r": root})["threadTree"]["nodes"]
    assert [(n["content"], n["isDeleted"], n["author"]["id"]) for n in nodes] == [
        ("", True, placeholder["id"]),
        ("other-reply-stays", False, other.user_id),
        ("", True, placeholder["id"]),
    ]
    assert other.client.code("query($c: ID!) { conversation(id: $c) { id } }", {"c": own}) == "NOT_FOUND"
    assert erased.client.code("{ viewer { id } }") == "UNAUTHENTICATED"


def test_erasure_without_redaction_keeps_the_text_under_the_placeholder(admin: Actor, make_user: Any) -> None:
    erased = make_user(admin)
    shared = create_conversation(admin, "shared")
    join(admin, erased, shared)
    root = start_thread(erased, shared, "keep my words")
    done = admin.client.ok(ERASE, {"u": erased.user_id, "r": False})["userErase"]
    (node,) = admin.client.ok(TREE, {"r": root})["threadTree"]["nodes"]
    assert node == {
        "content": "keep my words",
        "isDeleted": False,
        "author": {"id": done["placeholder"]["id"], "displayName": "Deleted user"},
    }


def test_a_second_erasure_reuses_the_placeholder(admin: Actor, make_user: Any) -> None:
    first, second = make_user(admin), make_user(admin)
    a = admin.client.ok(ERASE, {"u": first.user_id})["userErase"]["placeholder"]["id"]
    b = admin.client.ok(ERASE, {"u": second.user_id})["userErase"]["placeholder"]["id"]
    assert a == b
    assert admin.client.code(ERASE, {"u": a}) == "BAD_USER_INPUT"


def test_only_admins_erase_and_not_themselves(admin: Actor, make_user: Any, make_tenant: Any) -> None:
    member, target = make_user(admin), make_user(admin)
    assert member.client.code(ERASE, {"u": target.user_id}) == "FORBIDDEN"
    assert admin.client.code(ERASE, {"u": admin.user_id}) == "FORBIDDEN"
    assert make_tenant().client.code(ERASE, {"u": target.user_id}) == "NOT_FOUND"
    assert admin.client.ok("query($u: ID!) { node(id: $u) { id } }", {"u": target.user_id})["node"] == {
        "id": target.user_id
    }


def _backdate(loop: Loop, dsn: str, conversation: str, column: str, days: int) -> None:
    sql(
        loop,
        dsn,
        f"UPDATE conversation SET {column} = now() - make_interval(days => $2) WHERE id = $1",
        decode_id(conversation, Kind.CONVERSATION),
        days,
    )


def test_retention_policy_is_set_by_admins(admin: Actor, make_user: Any) -> None:
    assert admin.client.ok("{ retentionPolicy { retentionDays } }")["retentionPolicy"] == {
        "retentionDays": None
    }
    assert admin.client.ok(RETENTION_SET, {"d": 30})["tenantRetentionSet"] == {"retentionDays": 30}
    assert admin.client.ok("{ retentionPolicy { retentionDays } }")["retentionPolicy"] == {
        "retentionDays": 30
    }
    assert admin.client.code(RETENTION_SET, {"d": 0}) == "BAD_USER_INPUT"
    member = make_user(admin)
    assert member.client.code(RETENTION_SET, {"d": 1}) == "FORBIDDEN"
    assert member.client.code("{ retentionPolicy { retentionDays } }") == "FORBIDDEN"
    assert admin.client.ok(RETENTION_SET, {"d": None})["tenantRetentionSet"] == {"retentionDays": None}


def test_retention_job_hard_deletes_conversations_deleted_or_inactive_past_the_policy(
    admin: Actor, make_tenant: Any, loop: Loop, dsn: str
) -> None:
    admin.client.ok(RETENTION_SET, {"d": 30})
    fresh = create_conversation(admin, "fresh")
    start_thread(admin, fresh, "recent")
    inactive = create_conversation(admin, "inactive")
    start_thread(admin, inactive, "old words")
    _backdate(loop, dsn, inactive, "last_activity_at", 31)
    deleted = create_conversation(admin, "deleted")
    admin.client.ok("mutation($c: ID!) { conversationDelete(id: $c) { id } }", {"c": deleted})
    _backdate(loop, dsn, deleted, "updated_at", 31)
    recently_deleted = create_conversation(admin, "recently deleted")
    admin.client.ok("mutation($c: ID!) { conversationDelete(id: $c) { id } }", {"c": recently_deleted})
    other_tenant = make_tenant()
    unlimited = create_conversation(other_tenant, "no policy there")
    _backdate(loop, dsn, unlimited, "last_activity_at", 400)

    async def run_job() -> int:
        db = await Database.connect(dsn, 1, 2)
        try:
            return await purge_expired(db)
        finally:
            await db.close()

    assert loop.run(run_job()) == 2
    remaining = {r["title"] for r in sql(loop, dsn, "SELECT title FROM conversation")}
    assert remaining == {"fresh", "recently deleted", "no policy there"}
    assert sql(loop, dsn, "SELECT count(*) AS n FROM message WHERE content = 'old words'")[0]["n"] == 0
    entries = admin.client.ok('{ auditLog(action: "retention.purge") { nodes { actorId details } } }')[
        "auditLog"
    ]["nodes"]
    assert entries == [{"actorId": None, "details": {"conversations": 2, "retentionDays": 30}}]
    assert loop.run(run_job()) == 0


def test_the_server_runs_the_retention_job(server: ServerThread) -> None:
    names = [task.get_name() for task in server.app.state.services.background if not task.done()]
    assert "threadline-retention" in names


def test_userErase_needs_credentials(anonymous: Client) -> None:
    assert anonymous.code(ERASE, {"u": f"usr_{uuid.uuid4().hex}"}) == "UNAUTHENTICATED"
