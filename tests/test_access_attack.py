"""Authorization attack: every root field that takes an id, walked from the printed schema, aimed at objects the
caller must not reach (another tenant's, or a conversation the caller is no participant of). Each call is
NOT_FOUND, or an empty/null answer for a read, and nothing changes."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from graphql import (
    GraphQLEnumType,
    GraphQLField,
    GraphQLInputObjectType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLScalarType,
    build_schema,
    get_named_type,
)

from tests.api import create_conversation, join, reply, start_thread
from tests.harness import Actor, Loop, ServerThread

SCHEMA = build_schema((Path(__file__).resolve().parents[1] / "schema.graphql").read_text())
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4

# Where an argument's name does not say its kind: (field, argument) -> kind key of `Objects`.
BY_FIELD = {
    ("run", "id"): "run",
    ("runCancel", "id"): "run",
    ("runSubmitToolOutputs", "runId"): "run",
    ("apiKeyRevoke", "id"): "api_key",
    ("inviteAccept", "id"): "invite",
    ("shareLinkRevoke", "id"): "share_link",
    ("folder", "id"): "folder",
    ("folderRename", "id"): "folder",
    ("folderMove", "id"): "folder",
    ("folderMove", "parentId"): "folder",
    ("folderCreate", "parentId"): "folder",
    ("folderDelete", "id"): "folder",
    ("conversationFile", "folderId"): "folder",
    ("conversations", "folderId"): "folder",
    ("conversationUnlink", "id"): "link",
    ("rateLimitProfileUpdate", "id"): "profile",
    ("rateLimitProfileDelete", "id"): "profile",
    ("rateLimitProfileAssign", "profileId"): "profile",
    ("messageReply", "parentId"): "child",
    ("threadTree", "fromId"): "child",
    ("messageAppend", "id"): "run_output",
    ("messageFinish", "id"): "run_output",
    ("node", "id"): "conversation",
}
BY_NAME = {
    "conversationId": "conversation",
    "fromId": "conversation",
    "toId": "conversation",
    "ids": "conversation",
    "messageId": "child",
    "rootId": "root",
    "userId": "member_id",
    "actorId": "member_id",
    "targetId": "member_id",
}


def kind_of(field: str, arg: str) -> str:
    if (field, arg) in BY_FIELD:
        return BY_FIELD[(field, arg)]
    if arg in BY_NAME:
        return BY_NAME[arg]
    if arg == "id":
        if field.startswith("message"):
            return "child"
        if field.startswith("conversation"):
            return "conversation"
    raise AssertionError(f"no kind for {field}({arg})")


Objects = dict[str, str]


def wait_run(actor: Actor, run_id: str) -> dict[str, Any]:
    for _ in range(500):
        run: dict[str, Any] = actor.client.ok(
            "query($r: ID!) { run(id: $r) { status output { id } } }", {"r": run_id}
        )["run"]
        if run["status"] == "COMPLETED":
            return run
        threading.Event().wait(0.02)
    raise AssertionError("run did not complete")


def populate(server: ServerThread, owner: Actor, member: Actor, admin: Actor | None = None) -> Objects:
    """One object of every kind, owned by `owner` with `member` a participant (the tenant-wide ones, a rate-limit
    profile and a user, made by `admin`, `owner` by default)."""
    c = owner.client
    admin = admin or owner
    cid = create_conversation(owner, "secret", tags=["private"])
    other = create_conversation(owner, "secret too")
    join(owner, member, cid)
    root = start_thread(owner, cid, "secret root")
    child = reply(member, root, "secret child")
    run_id = c.ok("mutation($m: ID!) { runCreate(input: {messageId: $m}) { id } }", {"m": child})[
        "runCreate"
    ]["id"]
    run = wait_run(owner, run_id)
    uploaded = httpx.post(
        f"{server.url}/files",
        files={"file": ("s.png", PNG, "image/png")},
        headers={"Authorization": f"Bearer {owner.api_key}"},
        timeout=60,
    ).json()
    key = c.ok(
        'mutation($u: ID!) { apiKeyCreate(userId: $u, name: "k") { apiKey { id } } }', {"u": owner.user_id}
    )["apiKeyCreate"]["apiKey"]["id"]
    share = c.ok("mutation($c: ID!) { shareLinkCreate(conversationId: $c) { id } }", {"c": cid})[
        "shareLinkCreate"
    ]["id"]
    folder = c.ok('mutation { folderCreate(name: "secret folder") { id } }')["folderCreate"]["id"]
    c.ok(
        "mutation($c: ID!, $f: ID) { conversationFile(conversationId: $c, folderId: $f) { id } }",
        {"c": cid, "f": folder},
    )
    c.ok("mutation($c: ID!) { conversationPin(conversationId: $c) { id } }", {"c": cid})
    c.ok('mutation($m: ID!) { bookmarkSet(messageId: $m, note: "secret note") { id } }', {"m": child})
    c.ok(
        "mutation($m: ID!) { messageFeedbackSet(messageId: $m, rating: UP) { id } }",
        {"m": run["output"]["id"]},
    )
    link = c.ok(
        "mutation($f: ID!, $t: ID!) { conversationLink(fromId: $f, toId: $t, kind: RELATED) { id } }",
        {"f": cid, "t": other},
    )["conversationLink"]["id"]
    profile = admin.client.ok(
        "mutation($n: String!) { rateLimitProfileCreate(input: {name: $n, requestsPerWindow: 5}) { id } }",
        {"n": "p-" + cid[4:12]},
    )["rateLimitProfileCreate"]["id"]
    stranger = admin.client.ok(
        "mutation($i: UserCreateInput!) { userCreate(input: $i) { id } }",
        {"i": {"email": f"s-{cid[4:12]}@example.com", "role": "MEMBER"}},
    )["userCreate"]["id"]
    invite = c.ok(
        "mutation($c: ID!, $u: ID!) { participantInvite(conversationId: $c, userId: $u, role: VIEWER) { id } }",
        {"c": cid, "u": stranger},
    )["participantInvite"]["id"]
    return {
        "conversation": cid,
        "root": root,
        "child": child,
        "run": run_id,
        "run_output": run["output"]["id"],
        "file": uploaded["id"],
        "api_key": key,
        "share_link": share,
        "folder": folder,
        "link": link,
        "profile": profile,
        "member_id": member.user_id,
        "invite": invite,
    }


def placeholder(type_: Any, field: str, arg: str, own: Objects) -> Any:
    """A valid value for a non-id argument (or an id argument pointing at the caller's own object)."""
    if isinstance(type_, GraphQLNonNull):
        return placeholder(type_.of_type, field, arg, own)
    if isinstance(type_, GraphQLList):
        return [placeholder(type_.of_type, field, arg, own)]
    if isinstance(type_, GraphQLEnumType):
        return "VIEWER" if type_.name == "ParticipantRole" else next(iter(type_.values))
    if isinstance(type_, GraphQLInputObjectType):
        if type_.name == "MessagePartInput":
            return {"text": "x"}
        if type_.name == "ConversationImportInput":
            message = {"messageId": "a", "parentMessageId": None, "text": "hi", "isCreatedByUser": True}
            return {"format": "LIBRECHAT", "data": {"conversationId": "lc-1", "messages": [message]}}
        out = {}
        for name, f in type_.fields.items():
            if isinstance(f.type, GraphQLNonNull) or get_named_type(f.type).name == "ID":
                out[name] = placeholder(f.type, field, name, own)
        return out
    assert isinstance(type_, GraphQLScalarType)
    name = type_.name
    if name == "ID":
        return own[kind_of(field, arg)]
    return {
        "String": "x",
        "Int": 1,
        "Float": 1.0,
        "Boolean": False,
        "JSON": {"k": "v"},
        "DateTime": "2099-01-01T00:00:00Z",
        "PiiPolicy": "OFF",
    }.get(name, "x")


def selection(field: GraphQLField) -> str:
    named = get_named_type(field.type)
    if isinstance(named, GraphQLScalarType | GraphQLEnumType):
        return ""
    return "{ totalCount }" if named.name.endswith("Connection") else "{ __typename }"


def id_paths(field_name: str, field: GraphQLField) -> list[tuple[str, str | None]]:
    """(argument, input field or None) for every ID the field takes, top level or one input object down."""
    out: list[tuple[str, str | None]] = []
    for name, arg in field.args.items():
        named = get_named_type(arg.type)
        if named.name == "ID":
            out.append((name, None))
        elif isinstance(named, GraphQLInputObjectType):
            out.extend((name, sub) for sub, f in named.fields.items() if get_named_type(f.type).name == "ID")
    return out


def document(op: str, field_name: str, field: GraphQLField) -> str:
    variables = ", ".join(f"${n}: {a.type}" for n, a in field.args.items())
    args = ", ".join(f"{n}: ${n}" for n in field.args)
    head = f"{op}({variables})" if variables else op
    call = f"{field_name}({args})" if args else field_name
    return f"{head} {{ {call} {selection(field)} }}"


# Nullable arguments that must be given (null removes or turns off; omitting one is BAD_USER_INPUT, see
# test_omitted_nullable_arguments_are_bad_input_not_internal): given here so the call reaches the access check.
ALWAYS = {("messageFeedbackSet", "rating"), ("conversationFile", "folderId")}


def calls(own: Objects, foreign: Objects) -> list[tuple[str, str, dict[str, Any], str]]:
    """(label, document, variables) with exactly one id pointing at a foreign object."""
    out = []
    for op, root in (("query", SCHEMA.query_type), ("mutation", SCHEMA.mutation_type)):
        assert root is not None
        for field_name, field in root.fields.items():
            for arg, sub in id_paths(field_name, field):
                if (arg, sub) == ("input", "fileId"):
                    continue
                variables = {
                    n: placeholder(a.type, field_name, n, own)
                    for n, a in field.args.items()
                    if n == arg or isinstance(a.type, GraphQLNonNull) or (field_name, n) in ALWAYS
                }
                if sub is None:
                    kind = kind_of(field_name, arg)
                    value = foreign[kind]
                    variables[arg] = [value] if isinstance(variables[arg], list) else value
                else:
                    kind = kind_of(field_name, sub)
                    variables[arg][sub] = foreign[kind]
                label = f"{field_name}.{arg}{'.' + sub if sub else ''}"
                out.append((label, document(op, field_name, field), variables, kind))
    return out


# Logs that a refused call may write (rate-limit counters, audit of refusals, presence), and the event log.
UNWATCHED = {"migration", "stream_cursor_key", "stream_event", "rate_limit_bucket", "audit_log", "presence"}


def snapshot_all(loop: Loop, dsn: str) -> dict[str, list[str]]:
    async def read() -> dict[str, list[str]]:
        conn = await asyncpg.connect(dsn)
        try:
            names = [
                r["tablename"]
                for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
                if r["tablename"] not in UNWATCHED
            ]
            out = {}
            for name in sorted(names):
                rows = await conn.fetch(f'SELECT t::text AS r FROM "{name}" t')
                out[name] = sorted(r["r"] for r in rows)
            return out
        finally:
            await conn.close()

    return loop.run(read())


def empty(value: Any) -> bool:
    """No data: null, an empty list, or a connection of nothing (`totalCount` 0)."""
    return value is None or value == [] or value == {"totalCount": 0}


# Refusals other than NOT_FOUND that say nothing about the foreign object: the same answer as for an id that
# does not exist (threadSetCurrent looks the message up within the caller's thread).
ALLOWED = {"threadSetCurrent.messageId": "BAD_USER_INPUT"}


def run_attacks(
    attacker: Actor, own: Objects, foreign: Objects, skip: frozenset[str] = frozenset()
) -> list[tuple[str, str]]:
    failures = []
    for label, doc, variables, kind in calls(own, foreign):
        if kind in skip:
            continue
        body = attacker.client.execute(doc, variables)
        errors = body.get("errors") or []
        if errors:
            code = errors[0].get("extensions", {}).get("code")
            if code != ALLOWED.get(label, "NOT_FOUND"):
                failures.append((label, f"{code}: {errors[0]['message']}"))
        else:
            data = (body.get("data") or {}).get(label.split(".")[0])
            if doc.startswith("mutation") or not empty(data):
                failures.append((label, f"answered {data!r}"))
    return failures


@pytest.fixture
def two_tenants(
    server: ServerThread, make_tenant: Callable[..., Actor], make_user: Callable[..., Actor]
) -> tuple[Actor, Objects, Actor, Objects]:
    victim_admin = make_tenant()
    victim = populate(server, victim_admin, make_user(victim_admin))
    attacker_admin = make_tenant()
    own = populate(server, attacker_admin, make_user(attacker_admin))
    return victim_admin, victim, attacker_admin, own


def test_every_root_field_refuses_another_tenants_ids_and_changes_nothing(
    two_tenants: tuple[Actor, Objects, Actor, Objects], loop: Loop, dsn: str
) -> None:
    _, victim, attacker, own = two_tenants
    before = snapshot_all(loop, dsn)
    # Lists filtered by an id (search by user, the audit log by actor or target) answer with nothing.
    failures = run_attacks(attacker, own, victim)
    after = snapshot_all(loop, dsn)
    changed = {t for t in before if before[t] != after.get(t)}
    assert failures == [], "\n".join(map(str, failures))
    assert changed == set()


def test_a_non_participant_member_reaches_no_conversation_of_their_own_tenant(
    server: ServerThread, admin: Actor, make_user: Callable[..., Actor], loop: Loop, dsn: str
) -> None:
    """A MEMBER of the same tenant, given the ids of an admin's conversation they are not in (and the admin's
    folder, link, share link, run...): NOT_FOUND for all but user ids (users of one's tenant are visible)."""
    victim = populate(server, admin, make_user(admin))
    outsider = make_user(admin)
    mine = populate(server, outsider, make_user(admin), admin)
    before = snapshot_all(loop, dsn)
    # Users and rate-limit profiles are the tenant's: visible to its members (admin-only calls are FORBIDDEN
    # by role, and inviting a colleague is allowed), so those ids are not aimed at here.
    failures = run_attacks(outsider, mine, victim, frozenset({"member_id", "profile"}))
    after = snapshot_all(loop, dsn)
    assert failures == [], "\n".join(map(str, failures))
    assert {t for t in before if before[t] != after.get(t)} == set()


OMITTED = [
    ("messageFeedbackSet", "mutation($m: ID!) { messageFeedbackSet(messageId: $m) { id } }", "rating"),
    ("conversationFile", "mutation($c: ID!) { conversationFile(conversationId: $c) { id } }", "folderId"),
    ("tenantAuditRetentionSet", "mutation { tenantAuditRetentionSet }", "days"),
    ("tierPolicySet", "mutation { tierPolicySet { coldAfterDays } }", "coldAfterDays"),
    ("tierDeepPolicySet", "mutation { tierDeepPolicySet { deepAfterDays } }", "deepAfterDays"),
    ("tenantRetentionSet", "mutation { tenantRetentionSet { retentionDays } }", "retentionDays"),
]


@pytest.mark.parametrize(("name", "query", "argument"), OMITTED, ids=[o[0] for o in OMITTED])
def test_omitted_nullable_arguments_are_bad_input_not_internal(
    admin: Actor, loop: Loop, dsn: str, name: str, query: str, argument: str
) -> None:
    """Arguments where null removes or turns something off are nullable in the schema, so a caller may omit them:
    that was INTERNAL (the resolver had no value to take). It is BAD_USER_INPUT naming the argument, and an
    omission is not taken for null."""
    cid = create_conversation(admin)
    root = start_thread(admin, cid)
    admin.client.ok("mutation($m: ID!) { messageFeedbackSet(messageId: $m, rating: UP) { id } }", {"m": root})
    before = snapshot_all(loop, dsn)
    error = admin.client.error(query, {"m": root, "c": cid})
    assert (error["extensions"]["code"], argument in error["message"]) == ("BAD_USER_INPUT", True)
    assert snapshot_all(loop, dsn) == before


# Each kind of id swapped for the same object's neighbour of another kind (a message id where a conversation id
# is expected, ...): the UUID behind it names a row of another table.
WRONG_KIND = {
    "conversation": "child",
    "root": "conversation",
    "child": "run",
    "run": "run_output",
    "run_output": "conversation",
    "file": "child",
    "api_key": "member_id",
    "share_link": "conversation",
    "folder": "conversation",
    "link": "conversation",
    "profile": "folder",
    "member_id": "api_key",
    "invite": "conversation",
}


def test_ids_of_the_wrong_kind_are_refused_and_change_nothing(
    two_tenants: tuple[Actor, Objects, Actor, Objects], loop: Loop, dsn: str
) -> None:
    """The attacker's own objects, each given where another kind is expected: BAD_USER_INPUT (a malformed id) or
    NOT_FOUND, never an answer; `node` and the audit log's `targetId` take every kind and are left out."""
    _, _, attacker, own = two_tenants
    swapped = {kind: own[other] for kind, other in WRONG_KIND.items()}
    before = snapshot_all(loop, dsn)
    answered = []
    for label, doc, variables, _ in calls(own, swapped):
        if label in ("node.id", "auditLog.targetId"):
            continue
        body = attacker.client.execute(doc, variables)
        errors = body.get("errors") or []
        code = errors[0].get("extensions", {}).get("code") if errors else None
        if code not in ("BAD_USER_INPUT", "NOT_FOUND"):
            answered.append((label, code, body.get("data")))
    assert answered == [], "\n".join(map(str, answered))
    assert snapshot_all(loop, dsn) == before
