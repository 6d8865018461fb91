"""The audit log: admin actions, role changes, exports and erasures are recorded; admins read them."""

from __future__ import annotations

from typing import Any

from tests.api import create_conversation, join, start_thread
from tests.harness import Actor, Client

LOG = """query($a: String, $actor: ID, $target: ID, $first: Int, $after: String) {
  auditLog(action: $a, actorId: $actor, targetId: $target, first: $first, after: $after) {
    totalCount pageInfo { hasNextPage endCursor }
    nodes { id action actorId actor { id } targetKind targetId details createdAt } } }"""


def log(who: Actor, **filters: Any) -> dict[str, Any]:
    return who.client.ok(LOG, filters)["auditLog"]  # type: ignore[no-any-return]


def entries(who: Actor, **filters: Any) -> list[tuple[str, str | None, str | None, str | None, Any]]:
    return [
        (n["action"], n["actorId"], n["targetKind"], n["targetId"], n["details"])
        for n in log(who, **filters)["nodes"]
    ]


def test_user_creation_and_api_keys_are_recorded_newest_first(admin: Actor, make_user: Any) -> None:
    member = make_user(admin)  # userCreate + apiKeyCreate by the admin
    key = member.client.ok(
        'mutation($u: ID!) { apiKeyCreate(userId: $u, name: "mine") { apiKey { id prefix } } }',
        {"u": member.user_id},
    )
    created = key["apiKeyCreate"]["apiKey"]
    admin.client.ok("mutation($k: ID!) { apiKeyRevoke(id: $k) { id } }", {"k": created["id"]})
    rows = entries(admin)
    assert [r[0] for r in rows] == ["api_key.revoke", "api_key.create", "api_key.create", "user.create"]
    assert rows[0] == (
        "api_key.revoke",
        admin.user_id,
        "ApiKey",
        created["id"],
        {"prefix": created["prefix"]},
    )
    assert rows[1] == (
        "api_key.create",
        member.user_id,
        "ApiKey",
        created["id"],
        # Minted with the key the admin made for the member (rows[2]): the lineage is recorded (auth.service).
        {"prefix": created["prefix"], "forSelf": True, "createdByKey": rows[2][3]},
    )
    assert rows[2][:3] == ("api_key.create", admin.user_id, "ApiKey") and rows[2][4]["forSelf"] is False
    assert rows[3] == ("user.create", admin.user_id, "User", member.user_id, {"role": "MEMBER"})


def test_role_changes_exports_and_erasures_are_recorded(admin: Actor, make_user: Any) -> None:
    member = make_user(admin)
    conversation = create_conversation(admin, "audited")
    start_thread(admin, conversation, "hello")
    join(admin, member, conversation)
    admin.client.ok(
        "mutation($c: ID!, $u: ID!) { participantRoleSet(conversationId: $c, userId: $u, role: VIEWER) { id } }",
        {"c": conversation, "u": member.user_id},
    )
    member.client.ok("query($id: ID!) { conversationExport(id: $id) }", {"id": conversation})
    admin.client.ok("mutation($u: ID!) { userErase(userId: $u) { userId } }", {"u": member.user_id})
    rows = entries(admin, first=3)
    erasure, export, role = rows
    assert erasure[:4] == ("user.erase", admin.user_id, "User", member.user_id)
    assert (erasure[4]["conversationsDeleted"], erasure[4]["messagesRedacted"]) == (0, 0)
    # The erased member's own entries now name the anonymous placeholder instead of them.
    placeholder = erasure[4]["placeholderId"]
    assert export == ("conversation.export", placeholder, "Conversation", conversation, {"messages": 1})
    assert role == (
        "participant.role_set",
        admin.user_id,
        "User",
        placeholder,
        {"conversationId": conversation, "from": "MEMBER", "to": "VIEWER"},
    )


def test_imports_are_recorded_with_their_counts(admin: Actor) -> None:
    data = [{"id": "one", "title": "t", "mapping": {}}, 7]
    admin.client.ok(
        "mutation($i: ConversationImportInput!) { conversationImportReport(input: $i) { imported } }",
        {"i": {"format": "CHATGPT", "data": data}},
    )
    ((action, actor, kind, target, details),) = entries(admin, a="conversation.import")
    assert (action, actor, kind) == ("conversation.import", admin.user_id, "Conversation")
    assert target is not None and target.startswith("cnv_")
    assert details == {
        "format": "chatgpt",
        "imported": 1,
        "skipped": 0,
        "failed": 1,
        "messages": 0,
        "merged": 0,
    }


def test_the_log_filters_by_actor_and_target_and_pages(admin: Actor, make_user: Any) -> None:
    first, second = make_user(admin), make_user(admin)
    assert [r[0] for r in entries(admin, target=second.user_id)] == ["user.create"]
    assert {r[1] for r in entries(admin, actor=admin.user_id)} == {admin.user_id}
    page = log(admin, first=2)
    assert (page["totalCount"], page["pageInfo"]["hasNextPage"], len(page["nodes"])) == (4, True, 2)
    rest = log(admin, first=2, after=page["pageInfo"]["endCursor"])
    assert [n["action"] for n in page["nodes"] + rest["nodes"]] == ["api_key.create", "user.create"] * 2
    assert rest["nodes"][-1]["targetId"] == first.user_id
    assert page["nodes"][0]["actor"] == {"id": admin.user_id}


def test_only_admins_read_the_audit_log_of_their_own_tenant(
    admin: Actor, make_user: Any, make_tenant: Any
) -> None:
    make_user(admin)
    member = make_user(admin, role="MANAGER")
    assert member.client.code(LOG) == "FORBIDDEN"
    assert log(make_tenant())["totalCount"] == 0


def test_the_audit_log_needs_credentials(anonymous: Client) -> None:
    assert anonymous.code(LOG) == "UNAUTHENTICATED"
