"""Membership, roles and tenant isolation: who may read, write and manage what."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from tests.api import ACCEPT, CONVERSATION, INVITE, create_conversation, join, reply, snapshot, start_thread
from tests.harness import Actor, Loop

START = 'mutation($c: ID!) { threadStart(conversationId: $c, input: {content: "x"}) { id } }'
REPLY = 'mutation($p: ID!) { messageReply(parentId: $p, input: {content: "x"}) { id } }'
EDIT = 'mutation($m: ID!) { messageEdit(id: $m, content: "changed") { id content } }'
DELETE_MESSAGE = "mutation($m: ID!) { messageDelete(id: $m) { id isDeleted } }"
TREE = "query($r: ID!) { threadTree(rootId: $r) { totalCount nodes { id content } } }"
UPDATE = 'mutation($c: ID!) { conversationUpdate(id: $c, input: {title: "taken"}) { id title } }'
REMOVE = "mutation($c: ID!, $u: ID!) { participantRemove(conversationId: $c, userId: $u) }"
ROLE_SET = """mutation($c: ID!, $u: ID!, $r: ParticipantRole!) {
  participantRoleSet(conversationId: $c, userId: $u, role: $r) { role } }"""
LIST = "{ conversations(first: 100, status: null) { totalCount nodes { id } } }"


def listed(actor: Actor) -> list[str]:
    return [n["id"] for n in actor.client.ok(LIST)["conversations"]["nodes"]]


# --- participants and invites ---------------------------------------------------------------------


def test_non_participant_member_cannot_see_a_conversation(
    admin: Actor, make_user: Callable[..., Actor]
) -> None:
    stranger = make_user(admin)
    cid = create_conversation(admin)
    root = start_thread(admin, cid)
    assert stranger.client.code(CONVERSATION, {"id": cid}) == "NOT_FOUND"
    assert stranger.client.code(TREE, {"r": root}) == "NOT_FOUND"
    assert stranger.client.code(START, {"c": cid}) == "NOT_FOUND"
    assert stranger.client.code(REPLY, {"p": root}) == "NOT_FOUND"
    assert stranger.client.ok("query($id: ID!) { node(id: $id) { id } }", {"id": cid}) == {"node": None}
    assert listed(stranger) == []


def test_invited_member_reads_and_writes_after_accepting(
    admin: Actor, make_user: Callable[..., Actor]
) -> None:
    owner = make_user(admin)
    member = make_user(admin)
    cid = create_conversation(owner, "shared")
    root = start_thread(owner, cid)
    invite = owner.client.ok(INVITE, {"c": cid, "u": member.user_id, "r": "MEMBER"})["participantInvite"]
    assert (invite["role"], invite["status"]) == ("MEMBER", "PENDING")
    assert member.client.code(CONVERSATION, {"id": cid}) == "NOT_FOUND"  # not yet a participant
    pending = member.client.ok("{ viewerInvites { id conversationId inviter { id } } }")["viewerInvites"]
    assert pending == [{"id": invite["id"], "conversationId": cid, "inviter": {"id": owner.user_id}}]
    accepted = member.client.ok(ACCEPT, {"i": invite["id"]})["inviteAccept"]
    assert (accepted["role"], accepted["user"]) == ("MEMBER", {"id": member.user_id})
    assert member.client.ok("{ viewerInvites { id } }")["viewerInvites"] == []
    assert member.client.ok(CONVERSATION, {"id": cid})["conversation"]["title"] == "shared"
    assert listed(member) == [cid]
    child = reply(member, root, "from member")
    start_thread(member, cid, "own thread")
    assert member.client.ok(EDIT, {"m": child})["messageEdit"]["content"] == "changed"


def test_only_the_owner_invites(admin: Actor, make_user: Callable[..., Actor], loop: Loop, dsn: str) -> None:
    owner, member, other = make_user(admin), make_user(admin), make_user(admin)
    cid = create_conversation(owner)
    join(owner, member, cid)
    before = snapshot(loop, dsn)
    assert member.client.code(INVITE, {"c": cid, "u": other.user_id, "r": "MEMBER"}) == "FORBIDDEN"
    assert snapshot(loop, dsn) == before


def test_invite_errors(admin: Actor, make_user: Callable[..., Actor]) -> None:
    owner, member = make_user(admin), make_user(admin)
    cid = create_conversation(owner)
    assert owner.client.code(INVITE, {"c": cid, "u": member.user_id, "r": "OWNER"}) == "BAD_USER_INPUT"
    invite = owner.client.ok(INVITE, {"c": cid, "u": member.user_id, "r": "VIEWER"})["participantInvite"]
    assert owner.client.code(INVITE, {"c": cid, "u": member.user_id, "r": "MEMBER"}) == "CONFLICT"
    assert owner.client.code(ACCEPT, {"i": invite["id"]}) == "NOT_FOUND"  # addressed to someone else
    member.client.ok(ACCEPT, {"i": invite["id"]})
    assert member.client.code(ACCEPT, {"i": invite["id"]}) == "CONFLICT"
    assert owner.client.code(INVITE, {"c": cid, "u": member.user_id, "r": "MEMBER"}) == "CONFLICT"
    assert owner.client.code(INVITE, {"c": cid, "u": owner.user_id, "r": "MEMBER"}) == "CONFLICT"


def test_invite_to_a_deleted_conversation_cannot_be_accepted(
    admin: Actor, make_user: Callable[..., Actor]
) -> None:
    member = make_user(admin)
    cid = create_conversation(admin)
    invite = admin.client.ok(INVITE, {"c": cid, "u": member.user_id, "r": "MEMBER"})["participantInvite"]
    admin.client.ok("mutation($c: ID!) { conversationDelete(id: $c) { id } }", {"c": cid})
    assert member.client.code(ACCEPT, {"i": invite["id"]}) == "NOT_FOUND"
    assert member.client.code(CONVERSATION, {"id": cid}) == "NOT_FOUND"


def test_owner_removes_a_participant_who_then_loses_access(
    admin: Actor, make_user: Callable[..., Actor]
) -> None:
    owner, member = make_user(admin), make_user(admin)
    cid = create_conversation(owner)
    join(owner, member, cid)
    assert owner.client.ok(REMOVE, {"c": cid, "u": member.user_id}) == {"participantRemove": True}
    assert member.client.code(CONVERSATION, {"id": cid}) == "NOT_FOUND"
    assert owner.client.code(REMOVE, {"c": cid, "u": member.user_id}) == "NOT_FOUND"


def test_participant_may_leave_but_not_remove_others(admin: Actor, make_user: Callable[..., Actor]) -> None:
    owner, a, b = make_user(admin), make_user(admin), make_user(admin)
    cid = create_conversation(owner)
    join(owner, a, cid)
    join(owner, b, cid, "VIEWER")
    assert a.client.code(REMOVE, {"c": cid, "u": b.user_id}) == "FORBIDDEN"
    assert b.client.ok(REMOVE, {"c": cid, "u": b.user_id}) == {"participantRemove": True}
    assert b.client.code(CONVERSATION, {"id": cid}) == "NOT_FOUND"
    assert a.client.ok(CONVERSATION, {"id": cid})["conversation"]["id"] == cid


def test_owner_cannot_be_removed(admin: Actor, make_user: Callable[..., Actor]) -> None:
    owner = make_user(admin)
    cid = create_conversation(owner)
    assert owner.client.code(REMOVE, {"c": cid, "u": owner.user_id}) == "CONFLICT"
    assert admin.client.code(REMOVE, {"c": cid, "u": owner.user_id}) == "CONFLICT"


def test_owner_changes_a_participants_role(admin: Actor, make_user: Callable[..., Actor]) -> None:
    owner, member = make_user(admin), make_user(admin)
    cid = create_conversation(owner)
    root = start_thread(owner, cid)
    join(owner, member, cid)
    assert owner.client.ok(ROLE_SET, {"c": cid, "u": member.user_id, "r": "VIEWER"}) == {
        "participantRoleSet": {"role": "VIEWER"}
    }
    assert member.client.code(REPLY, {"p": root}) == "FORBIDDEN"
    assert member.client.code(ROLE_SET, {"c": cid, "u": member.user_id, "r": "MEMBER"}) == "FORBIDDEN"
    assert owner.client.code(ROLE_SET, {"c": cid, "u": owner.user_id, "r": "VIEWER"}) == "FORBIDDEN"


# --- participant roles: OWNER / MEMBER / VIEWER -----------------------------------------------------


def test_viewer_reads_but_every_write_is_forbidden(
    admin: Actor, make_user: Callable[..., Actor], loop: Loop, dsn: str
) -> None:
    owner, viewer, other = make_user(admin), make_user(admin), make_user(admin)
    cid = create_conversation(owner, "read me")
    root = start_thread(owner, cid, "hello")
    join(owner, viewer, cid, "VIEWER")
    assert viewer.client.ok(CONVERSATION, {"id": cid})["conversation"]["title"] == "read me"
    assert viewer.client.ok(TREE, {"r": root})["threadTree"]["nodes"] == [{"id": root, "content": "hello"}]
    assert listed(viewer) == [cid]
    before = snapshot(loop, dsn)
    for query, variables in [
        (START, {"c": cid}),
        (REPLY, {"p": root}),
        (EDIT, {"m": root}),
        (DELETE_MESSAGE, {"m": root}),
        (UPDATE, {"c": cid}),
        ("mutation($c: ID!) { conversationArchive(id: $c) { id } }", {"c": cid}),
        ("mutation($c: ID!) { conversationDelete(id: $c) { id } }", {"c": cid}),
        (INVITE, {"c": cid, "u": other.user_id, "r": "VIEWER"}),
        (REMOVE, {"c": cid, "u": owner.user_id}),
    ]:
        assert viewer.client.code(query, variables) == "FORBIDDEN", query
    assert snapshot(loop, dsn) == before
    # Reading and marking read are not writes to the conversation.
    viewer.client.ok("mutation($r: ID!) { threadMarkRead(rootId: $r) { unreadCount } }", {"r": root})


def test_viewer_cannot_delete_their_own_earlier_message(
    admin: Actor, make_user: Callable[..., Actor]
) -> None:
    owner, member = make_user(admin), make_user(admin)
    cid = create_conversation(owner)
    join(owner, member, cid)
    own = start_thread(member, cid, "mine")
    owner.client.ok(ROLE_SET, {"c": cid, "u": member.user_id, "r": "VIEWER"})
    assert member.client.code(EDIT, {"m": own}) == "FORBIDDEN"
    assert member.client.code(DELETE_MESSAGE, {"m": own}) == "FORBIDDEN"


def test_member_writes_but_cannot_manage(admin: Actor, make_user: Callable[..., Actor]) -> None:
    owner, member = make_user(admin), make_user(admin)
    cid = create_conversation(owner)
    root = start_thread(owner, cid)
    join(owner, member, cid)
    reply(member, root)
    assert member.client.code(UPDATE, {"c": cid}) == "FORBIDDEN"
    assert (
        member.client.code("mutation($c: ID!) { conversationDelete(id: $c) { id } }", {"c": cid})
        == "FORBIDDEN"
    )
    assert member.client.code(EDIT, {"m": root}) == "FORBIDDEN"  # not the author
    assert member.client.code(DELETE_MESSAGE, {"m": root}) == "FORBIDDEN"


def test_owner_deletes_others_messages_but_cannot_edit_them(
    admin: Actor, make_user: Callable[..., Actor]
) -> None:
    owner, member = make_user(admin), make_user(admin)
    cid = create_conversation(owner)
    join(owner, member, cid)
    theirs = start_thread(member, cid, "theirs")
    assert owner.client.code(EDIT, {"m": theirs}) == "FORBIDDEN"
    assert owner.client.ok(DELETE_MESSAGE, {"m": theirs})["messageDelete"] == {
        "id": theirs,
        "isDeleted": True,
    }


# --- tenant roles: ADMIN / MANAGER / MEMBER -------------------------------------------------------


def test_admin_sees_and_manages_every_conversation_of_the_tenant(
    admin: Actor, make_user: Callable[..., Actor]
) -> None:
    a, b = make_user(admin), make_user(admin)
    ca, cb = create_conversation(a), create_conversation(b)
    root = start_thread(a, ca)
    assert set(listed(admin)) == {ca, cb}
    assert admin.client.ok(TREE, {"r": root})["threadTree"]["totalCount"] == 1
    assert admin.client.ok(UPDATE, {"c": cb})["conversationUpdate"]["title"] == "taken"
    reply(admin, root)


def test_manager_reads_their_teams_conversations_only(admin: Actor, make_user: Callable[..., Actor]) -> None:
    manager = make_user(admin, role="MANAGER", team="red")
    red = make_user(admin, team="red")
    blue = make_user(admin, team="blue")
    nobody = make_user(admin)
    c_red, c_blue, c_none = create_conversation(red), create_conversation(blue), create_conversation(nobody)
    root = start_thread(red, c_red)
    assert listed(manager) == [c_red]
    assert manager.client.ok(CONVERSATION, {"id": c_red})["conversation"]["id"] == c_red
    assert manager.client.ok(TREE, {"r": root})["threadTree"]["totalCount"] == 1
    assert manager.client.code(CONVERSATION, {"id": c_blue}) == "NOT_FOUND"
    assert manager.client.code(CONVERSATION, {"id": c_none}) == "NOT_FOUND"
    # Team visibility is read-only.
    assert manager.client.code(REPLY, {"p": root}) == "FORBIDDEN"
    assert manager.client.code(UPDATE, {"c": c_red}) == "FORBIDDEN"


def test_manager_without_a_team_sees_only_their_own(admin: Actor, make_user: Callable[..., Actor]) -> None:
    manager = make_user(admin, role="MANAGER")
    other = make_user(admin)
    create_conversation(other)
    own = create_conversation(manager)
    assert listed(manager) == [own]


def test_member_sees_only_conversations_they_participate_in(
    admin: Actor, make_user: Callable[..., Actor]
) -> None:
    a, b = make_user(admin, team="red"), make_user(admin, team="red")
    ca = create_conversation(a)
    cb = create_conversation(b)
    shared = create_conversation(b)
    join(b, a, shared, "VIEWER")
    assert set(listed(a)) == {ca, shared}
    assert a.client.code(CONVERSATION, {"id": cb}) == "NOT_FOUND"


# --- tenant isolation -------------------------------------------------------------------------------


@dataclass
class Victim:
    """Tenant A's objects: a conversation with a thread, an edit, a pending invite and an API key."""

    owner: Actor
    member: Actor
    conversation: str
    root: str
    child: str
    invite: str
    api_key_id: str
    run: str
    run_output: str


@pytest.fixture
def victim(make_tenant: Callable[..., Actor], make_user: Callable[..., Actor]) -> Victim:
    admin = make_tenant()
    member, invitee = make_user(admin), make_user(admin)
    cid = create_conversation(admin, "secret", tags=["private"])
    join(admin, member, cid)
    root = start_thread(admin, cid, "secret root")
    child = reply(member, root, "secret child")
    member.client.ok(EDIT, {"m": child})
    invite = admin.client.ok(INVITE, {"c": cid, "u": invitee.user_id, "r": "VIEWER"})["participantInvite"][
        "id"
    ]
    key = admin.client.ok(
        'mutation($u: ID!) { apiKeyCreate(userId: $u, name: "k") { apiKey { id } } }', {"u": member.user_id}
    )["apiKeyCreate"]["apiKey"]["id"]
    run = admin.client.ok("mutation($m: ID!) { runCreate(input: {messageId: $m}) { id } }", {"m": child})
    run_id = run["runCreate"]["id"]
    for _ in range(500):  # the echo worker answers in the background; wait until it is done
        done = admin.client.ok("query($r: ID!) { run(id: $r) { status output { id } } }", {"r": run_id})[
            "run"
        ]
        if done["status"] == "COMPLETED":
            break
        threading.Event().wait(0.02)
    assert done["status"] == "COMPLETED"
    return Victim(admin, member, cid, root, child, invite, key, run_id, done["output"]["id"])


def _attacks(v: Victim, own_conversation: str) -> list[tuple[str, str, dict[str, Any]]]:
    """Every query and mutation that takes an id, aimed at tenant A's objects."""
    cid, root, child = v.conversation, v.root, v.child
    return [
        ("conversation", CONVERSATION, {"id": cid}),
        ("threadTree", TREE, {"r": root}),
        ("threadTree non-root", TREE, {"r": child}),
        ("message", "query($m: ID!) { message(id: $m) { id content } }", {"m": child}),
        ("thread", "query($r: ID!) { thread(rootId: $r) { replyCount } }", {"r": root}),
        ("conversationUpdate", UPDATE, {"c": cid}),
        ("conversationArchive", "mutation($c: ID!) { conversationArchive(id: $c) { id } }", {"c": cid}),
        ("conversationRestore", "mutation($c: ID!) { conversationRestore(id: $c) { id } }", {"c": cid}),
        ("conversationDelete", "mutation($c: ID!) { conversationDelete(id: $c) { id } }", {"c": cid}),
        ("participantInvite", INVITE, {"c": cid, "u": v.member.user_id, "r": "MEMBER"}),
        (
            "participantInvite of a foreign user",
            INVITE,
            {"c": own_conversation, "u": v.member.user_id, "r": "MEMBER"},
        ),
        ("inviteAccept", ACCEPT, {"i": v.invite}),
        ("participantRemove", REMOVE, {"c": cid, "u": v.member.user_id}),
        ("participantRoleSet", ROLE_SET, {"c": cid, "u": v.member.user_id, "r": "VIEWER"}),
        ("threadStart", START, {"c": cid}),
        ("messageReply", REPLY, {"p": child}),
        ("messageEdit", EDIT, {"m": child}),
        ("messageDelete", DELETE_MESSAGE, {"m": child}),
        ("threadMarkRead", "mutation($r: ID!) { threadMarkRead(rootId: $r) { unreadCount } }", {"r": root}),
        (
            "apiKeyCreate",
            'mutation($u: ID!) { apiKeyCreate(userId: $u, name: "x") { secret } }',
            {"u": v.member.user_id},
        ),
        ("apiKeyRevoke", "mutation($k: ID!) { apiKeyRevoke(id: $k) { id } }", {"k": v.api_key_id}),
        ("typingSet", "mutation($c: ID!) { typingSet(conversationId: $c, isTyping: true) }", {"c": cid}),
        (
            "typingSet in a thread",
            "mutation($c: ID!, $r: ID!) { typingSet(conversationId: $c, rootId: $r, isTyping: true) }",
            {"c": cid, "r": root},
        ),
        ("run", "query($r: ID!) { run(id: $r) { id status } }", {"r": v.run}),
        ("runCreate", "mutation($m: ID!) { runCreate(input: {messageId: $m}) { id } }", {"m": child}),
        ("runCancel", "mutation($r: ID!) { runCancel(id: $r) { id } }", {"r": v.run}),
        (
            "messageAppend",
            'mutation($m: ID!) { messageAppend(id: $m, delta: "x") { id } }',
            {"m": v.run_output},
        ),
        ("messageFinish", "mutation($m: ID!) { messageFinish(id: $m) { id } }", {"m": v.run_output}),
        ("conversationExport", "query($c: ID!) { conversationExport(id: $c) }", {"c": cid}),
        (
            "conversationsBatchTag",
            'mutation($c: ID!) { conversationsBatchTag(ids: [$c], add: ["pwned"]) { id } }',
            {"c": cid},
        ),
    ]


@pytest.mark.parametrize("attacker_role", ["ADMIN", "MANAGER", "MEMBER"])
def test_another_tenants_user_gets_not_found_for_everything_and_changes_nothing(
    victim: Victim,
    make_tenant: Callable[..., Actor],
    make_user: Callable[..., Actor],
    loop: Loop,
    dsn: str,
    attacker_role: str,
) -> None:
    other_admin = make_tenant()
    attacker = other_admin if attacker_role == "ADMIN" else make_user(other_admin, role=attacker_role)
    own = create_conversation(attacker, "mine")
    own_root = start_thread(attacker, own)
    before = snapshot(loop, dsn)
    failures = []
    for name, query, variables in _attacks(victim, own):
        error = attacker.client.error(query, variables)
        if error["extensions"]["code"] != "NOT_FOUND":
            failures.append((name, error["extensions"]["code"], error["message"]))
    assert failures == []
    # A subtree of one's own thread cannot start at another tenant's message.
    fenced = attacker.client.error(
        "query($r: ID!, $f: ID!) { threadTree(rootId: $r, fromId: $f) { totalCount } }",
        {"r": own_root, "f": victim.child},
    )
    assert fenced["extensions"]["code"] == "NOT_FOUND"
    assert snapshot(loop, dsn) == before


USER_DATA_OPERATIONS = [
    ("userExport", "query($u: ID!) { userExport(userId: $u) }"),
    ("userErase", "mutation($u: ID!) { userErase(userId: $u) { __typename } }"),
]


@pytest.mark.parametrize("attacker_role", ["ADMIN", "MEMBER"])
def test_another_tenants_user_data_operations_are_not_found(
    victim: Victim,
    make_tenant: Callable[..., Actor],
    make_user: Callable[..., Actor],
    loop: Loop,
    dsn: str,
    attacker_role: str,
) -> None:
    other_admin = make_tenant()
    attacker = other_admin if attacker_role == "ADMIN" else make_user(other_admin)
    before = snapshot(loop, dsn)
    codes = {
        name: attacker.client.code(query, {"u": victim.member.user_id})
        for name, query in USER_DATA_OPERATIONS
    }
    assert snapshot(loop, dsn) == before
    assert codes == {"userExport": "NOT_FOUND", "userErase": "NOT_FOUND"}


@pytest.mark.parametrize("attacker_role", ["ADMIN", "MEMBER"])
def test_another_tenants_objects_are_invisible_in_lists_and_node(
    victim: Victim, make_tenant: Callable[..., Actor], make_user: Callable[..., Actor], attacker_role: str
) -> None:
    other_admin = make_tenant()
    attacker = other_admin if attacker_role == "ADMIN" else make_user(other_admin)
    for node_id in [
        victim.conversation,
        victim.root,
        victim.child,
        "thr_" + victim.root[4:],
        victim.member.user_id,
        victim.invite,
        victim.api_key_id,
    ]:
        assert attacker.client.ok("query($id: ID!) { node(id: $id) { id } }", {"id": node_id}) == {
            "node": None
        }
    assert attacker.client.ok(LIST)["conversations"] == {"totalCount": 0, "nodes": []}
    assert attacker.client.ok("{ recentConversations { id } }") == {"recentConversations": []}
    assert (
        attacker.client.ok('{ conversations(tags: ["private"]) { totalCount } }')["conversations"][
            "totalCount"
        ]
        == 0
    )
    users = attacker.client.ok("{ users(first: 100) { nodes { id } } }")["users"]["nodes"]
    assert users == [{"id": attacker.user_id}] if attacker_role == "ADMIN" else len(users) == 2
    assert attacker.client.ok("{ viewerInvites { id } }") == {"viewerInvites": []}
    for query in [
        '{ search(input: {query: "secret"}) { totalCount } }',
        "query($u: ID!) { search(input: {userId: $u}) { totalCount } }",
    ]:
        assert attacker.client.ok(query, {"u": victim.member.user_id})["search"]["totalCount"] == 0
    assert "private" not in [t["tag"] for t in attacker.client.ok("{ tags { tag } }")["tags"]]
    assert attacker.client.ok("{ insights { conversationCount } }")["insights"]["conversationCount"] == 1 - 1


def test_victim_still_sees_everything_after_the_attacks(
    victim: Victim, make_tenant: Callable[..., Actor], loop: Loop, dsn: str
) -> None:
    attacker = make_tenant()
    own = create_conversation(attacker)
    for _, query, variables in _attacks(victim, own):
        attacker.client.error(query, variables)
    tree = victim.owner.client.ok(TREE, {"r": victim.root})["threadTree"]
    assert tree["nodes"] == [
        {"id": victim.root, "content": "secret root"},
        {"id": victim.child, "content": "changed"},
        {"id": victim.run_output, "content": "echo: changed"},
    ]
    conv = victim.owner.client.ok(CONVERSATION, {"id": victim.conversation})["conversation"]
    assert (conv["title"], conv["status"], conv["messageCount"]) == ("secret", "ACTIVE", 3)
    assert conv["tags"] == ["private"]


NODE = """query($id: ID!) { node(id: $id) { __typename id
  ... on Participant { role user { id } } ... on Invite { status user { id } } ... on ApiKey { name user { id } } } }"""


def node(actor: Actor, node_id: str) -> Any:
    return actor.client.ok(NODE, {"id": node_id})["node"]


def test_node_resolves_participants_invites_and_api_keys_only_for_those_who_may_see_them(
    admin: Actor, make_user: Callable[..., Actor]
) -> None:
    owner, member, invitee, outsider = make_user(admin), make_user(admin), make_user(admin), make_user(admin)
    cid = create_conversation(owner)
    join(owner, member, cid)
    participant = member.client.ok(
        "query($c: ID!) { conversation(id: $c) { participants { id user { id } } } }", {"c": cid}
    )["conversation"]["participants"][1]
    assert participant["user"] == {"id": member.user_id}
    invite = owner.client.ok(INVITE, {"c": cid, "u": invitee.user_id, "r": "VIEWER"})["participantInvite"][
        "id"
    ]
    key = member.client.ok(
        'mutation($u: ID!) { apiKeyCreate(userId: $u, name: "own") { apiKey { id } } }', {"u": member.user_id}
    )["apiKeyCreate"]["apiKey"]["id"]

    expected_participant = {
        "__typename": "Participant",
        "id": participant["id"],
        "role": "MEMBER",
        "user": {"id": member.user_id},
    }
    assert node(owner, participant["id"]) == expected_participant
    assert node(member, participant["id"]) == expected_participant
    assert node(outsider, participant["id"]) is None

    expected_invite = {
        "__typename": "Invite",
        "id": invite,
        "status": "PENDING",
        "user": {"id": invitee.user_id},
    }
    assert node(owner, invite) == expected_invite
    assert node(invitee, invite) == expected_invite
    assert node(admin, invite) == expected_invite
    assert node(member, invite) is None  # a participant who does not manage the conversation
    assert node(outsider, invite) is None

    expected_key = {"__typename": "ApiKey", "id": key, "name": "own", "user": {"id": member.user_id}}
    assert node(member, key) == expected_key
    assert node(admin, key) == expected_key
    assert node(owner, key) is None
