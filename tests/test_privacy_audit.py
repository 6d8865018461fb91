"""Access audit (issue 20 item 3): reads by non-participants are recorded with who, what and why; the log is
append-only at the SQL level, has a retention, and exports as JSON lines."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests.api import create_conversation, join, start_thread, stream_cursor
from tests.harness import Actor, Client, Loop, ServerThread
from tests.test_porting_cli import run
from tests.test_privacy_pii import EMAIL, MASKED, TEXT, set_policy, sql
from tests.test_share_links import READ, share
from tests.ws import WsClient

READS = """{ auditLog(action: "conversation.read") { totalCount
  nodes { actorId targetKind targetId details } } }"""
CONVERSATION = """query($c: ID!) { a: conversation(id: $c) { messages(first: 5) { nodes { content } } }
  b: conversation(id: $c) { title } }"""
RETENTION = "mutation($d: Int) { tenantAuditRetentionSet(days: $d) }"


def reads(admin: Actor) -> list[dict[str, Any]]:
    return admin.client.ok(READS)["auditLog"]["nodes"]  # type: ignore[no-any-return]


def test_reads_by_an_admin_or_a_manager_who_is_no_participant_are_audited_once_per_request(
    admin: Actor, make_user: Any
) -> None:
    owner = make_user(admin, team="sales")
    member = make_user(admin)
    manager = make_user(admin, role="MANAGER", team="sales")
    conversation = create_conversation(owner)
    join(owner, member, conversation)
    start_thread(owner, conversation, "hello")
    # Participants' reads are not audited.
    owner.client.ok(CONVERSATION, {"c": conversation})
    member.client.ok(CONVERSATION, {"c": conversation})
    assert reads(admin) == []
    # The admin's request reads it twice (two aliases): one entry, naming the role that allowed it.
    admin.client.ok(CONVERSATION, {"c": conversation})
    manager.client.ok("query($id: ID!) { conversationExport(id: $id) }", {"id": conversation})
    assert reads(admin) == [
        {
            "actorId": manager.user_id,
            "targetKind": "Conversation",
            "targetId": conversation,
            "details": {"via": "MANAGER"},
        },
        {
            "actorId": admin.user_id,
            "targetKind": "Conversation",
            "targetId": conversation,
            "details": {"via": "ADMIN"},
        },
    ]
    # A conversation the caller may not read leaves nothing (NOT_FOUND before any read).
    outsider = make_user(admin)
    assert outsider.client.code(CONVERSATION, {"c": conversation}) == "NOT_FOUND"
    assert len(reads(admin)) == 2


def test_a_subscription_by_an_admin_who_is_no_participant_is_audited(
    admin: Actor, make_user: Any, ws: Callable[..., WsClient]
) -> None:
    owner = make_user(admin)
    conversation = create_conversation(owner)
    client = ws(admin)
    # From a cursor taken before the write: the event is replayed if it commits before the subscription is live.
    client.subscribe(
        "subscription($c: ID!, $s: String) { conversationEvents(conversationId: $c, since: $s) { type } }",
        {"c": conversation, "s": stream_cursor(admin)},
    )
    start_thread(owner, conversation, "hello")
    assert client.events(1, ignore=("presence.update", "unread.update", "branch.current")) == [
        {"type": "thread.new"}
    ]
    client.close()
    assert reads(admin) == [
        {
            "actorId": admin.user_id,
            "targetKind": "Conversation",
            "targetId": conversation,
            "details": {"via": "ADMIN"},
        }
    ]


def test_a_share_link_view_is_audited_and_masked_under_mask_on_read(
    admin: Actor, make_user: Any, server: ServerThread, anonymous: Client
) -> None:
    owner = make_user(admin)
    conversation = create_conversation(owner)
    start_thread(owner, conversation, TEXT)
    set_policy(admin, "MASK_ON_READ")
    link = share(owner, conversation)
    body = anonymous.ok(READ, {"t": link["token"]})
    assert [n["content"] for n in body["sharedConversation"]["messages"]["nodes"]] == [MASKED]
    page = httpx.get(f"{server.url}/share/{link['token']}", headers={"Accept": "text/html"})
    assert page.status_code == 200 and EMAIL not in page.text and "[EMAIL]" in page.text
    entries = reads(admin)
    assert entries[0] == {
        "actorId": None,
        "targetKind": "Conversation",
        "targetId": conversation,
        "details": {"via": "SHARE_LINK", "shareLinkId": link["id"]},
    }
    assert len(entries) == 2  # the GraphQL read and the page


def test_the_audit_log_refuses_updates_and_deletes_at_the_sql_level(
    admin: Actor, loop: Loop, dsn: str
) -> None:
    set_policy(admin, "DETECT")  # one entry
    (before,) = sql(loop, dsn, "SELECT id, action, details FROM audit_log")

    async def attempt(statement: str, setting: str | None = None) -> str:
        conn = await asyncpg.connect(dsn)
        try:
            async with conn.transaction():
                if setting is not None:
                    await conn.execute("SELECT set_config('threadline.audit_rewrite', $1, true)", setting)
                await conn.execute(statement)
            return "done"
        except asyncpg.InsufficientPrivilegeError as exc:
            return str(exc)
        finally:
            await conn.close()

    refused = "audit_log is append-only: {} refused"
    assert loop.run(attempt("UPDATE audit_log SET action = 'x'")) == refused.format("UPDATE")
    assert loop.run(attempt("DELETE FROM audit_log")) == refused.format("DELETE")
    # The erasure rewrite may change user ids only; the retention delete may only delete.
    assert loop.run(attempt("UPDATE audit_log SET details = '{}'::jsonb", "erasure")) == refused.format(
        "UPDATE"
    )
    assert loop.run(attempt("UPDATE audit_log SET action = 'x'", "retention")) == refused.format("UPDATE")
    assert sql(loop, dsn, "SELECT id, action, details FROM audit_log") == [before]


def test_retention_deletes_only_old_entries_and_records_the_purge(
    admin: Actor, make_user: Any, loop: Loop, dsn: str
) -> None:
    member = make_user(admin)
    assert member.client.code(RETENTION, {"d": 30}) == "FORBIDDEN"
    assert admin.client.code(RETENTION, {"d": 0}) == "BAD_USER_INPUT"
    assert admin.client.ok(RETENTION, {"d": 30})["tenantAuditRetentionSet"] == 30
    tenant = uuid.UUID(sql(loop, dsn, "SELECT tenant_id FROM app_user LIMIT 1")[0]["tenant_id"].hex)
    old = uuid.uuid4()
    sql(
        loop,
        dsn,
        """INSERT INTO audit_log (id, tenant_id, action, details, created_at)
           VALUES ($1, $2, 'user.export', '{}'::jsonb, now() - interval '31 days')""",
        old,
        tenant,
    )
    result = run(dsn, "audit", "purge")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"deleted": 1}
    actions = [r["action"] for r in sql(loop, dsn, "SELECT action FROM audit_log ORDER BY created_at")]
    assert "user.export" not in actions
    assert actions[-1] == "audit.purge"
    assert actions.count("tenant.audit_retention_set") == 1
    (purge,) = sql(loop, dsn, "SELECT details FROM audit_log WHERE action = 'audit.purge'")
    assert json.loads(purge["details"]) == {"entries": 1, "auditRetentionDays": 30}


def test_the_log_exports_as_json_lines_and_the_export_is_audited(
    admin: Actor, make_user: Any, tmp_path: Path, loop: Loop, dsn: str
) -> None:
    member = make_user(admin)
    out = tmp_path / "audit.jsonl"
    result = run(dsn, "audit", "export", "--tenant", admin.tenant_id, "--out", str(out))
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(e["action"], e["actorId"], e["targetId"]) for e in lines] == [
        ("user.create", admin.user_id, member.user_id),
        ("api_key.create", admin.user_id, lines[1]["targetId"]),
    ]
    assert set(lines[0]) == {"id", "action", "actorId", "targetKind", "targetId", "details", "createdAt"}
    exported = sql(loop, dsn, "SELECT details FROM audit_log WHERE action = 'audit.export'")
    assert [json.loads(r["details"]) for r in exported] == [{"entries": 2, "since": None}]
    assert run(dsn, "audit", "export", "--tenant", "nonsense").returncode == 2


@pytest.mark.parametrize("policy", ["DETECT", "MASK_ON_WRITE", "MASK_ON_READ"])
def test_backfill_applies_the_policy_to_earlier_messages(
    policy: str, admin: Actor, loop: Loop, dsn: str
) -> None:
    conversation = create_conversation(admin)
    root = start_thread(admin, conversation, TEXT)
    admin.client.ok(
        "mutation($id: ID!, $c: String!) { messageEdit(id: $id, content: $c) { id } }",
        {"id": root, "c": f"edited {EMAIL}"},
    )
    set_policy(admin, policy)
    query = "query($id: ID!) { message(id: $id) { content pii { kind } edits { content } } }"
    assert [r["pii"] for r in sql(loop, dsn, "SELECT pii FROM message")] == [None]  # not scanned
    result = run(dsn, "pii", "backfill", "--tenant", admin.tenant_id)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert (report["tenants"], report["messages"], report["with_pii"]) == (1, 1, 1)
    found = admin.client.ok(query, {"id": root})["message"]
    assert found["pii"] == [{"kind": "EMAIL"}]
    events = "\n".join(r["p"] for r in sql(loop, dsn, "SELECT payload::text AS p FROM stream_event"))
    if policy != "MASK_ON_WRITE":
        # The text stays; under MASK_ON_READ the logged events (which any reader may replay) are masked.
        assert found["content"] == f"edited {EMAIL}" and found["edits"] == [{"content": TEXT}]
        assert (EMAIL in events) is (policy == "DETECT") and "maria" in sql(
            loop, dsn, "SELECT content FROM message"
        )[0]["content"]
    else:
        assert found["content"] == "edited [EMAIL]" and found["edits"] == [{"content": MASKED}]
        stored = "\n".join(
            str(tuple(r))
            for t in ("message", "message_edit", "stream_event")
            for r in sql(loop, dsn, f"SELECT * FROM {t}")  # noqa: S608
        )
        assert EMAIL not in stored
    # Run again: nothing is left to scan.
    again = json.loads(run(dsn, "pii", "backfill").stdout.strip().splitlines()[-1])
    assert again["messages"] == 0
