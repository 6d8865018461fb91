"""Credentials are live (issue 12, items 2, 11, 12): revocation, erasure, removal and role changes reach
open sockets in every server process; JWT rules (stored role wins, erased subjects stay erased, per-tenant
secrets); members revoke their own API keys.

Two server processes: the session's in-process server (`server`) and a second `threadline serve` subprocess
(`other`) on the same database. Changes are made through one; sockets on both must see them.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing
from typing import Any

import asyncpg
import jwt
import pytest
from websockets.exceptions import ConnectionClosed

from tests.harness import (
    TEST_JWT_SECRET,
    Actor,
    Client,
    Loop,
    ServerThread,
    serve_process,
    test_settings,
)
from tests.test_streaming import START, conversation, join, live
from tests.ws import CONVERSATION_EVENTS, VIEWER_EVENTS, WsClient
from threadline.ids import Kind, encode_id

VIEWER = "{ viewer { id role } }"
KEY_CREATE = 'mutation($u: ID!) { apiKeyCreate(userId: $u, name: "k") { secret apiKey { id } } }'
KEY_REVOKE = "mutation($k: ID!) { apiKeyRevoke(id: $k) { id revoked } }"
ROLE_SET = "mutation($u: ID!, $r: Role!) { userRoleSet(userId: $u, role: $r) { id role } }"
ERASE = "mutation($u: ID!) { userErase(userId: $u) { __typename } }"
REMOVE = "mutation($c: ID!, $u: ID!) { participantRemove(conversationId: $c, userId: $u) }"
CONVERSATION = "query($id: ID!) { conversation(id: $id) { id } }"
USER_CREATE = 'mutation { userCreate(input: {email: "someone@example.com"}) { id } }'
AUDIT = "{ auditLog(first: 5) { nodes { action targetId details } } }"
# An upper bound for a loaded machine (two shared cores), not a latency claim.
SETTLE_SECONDS = 20.0
_op_ids = itertools.count()


# --- helpers --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def other(dsn: str) -> Iterator[str]:
    """A second server process on the session database; its base URL."""
    with serve_process(dsn, THREADLINE_JWT_SECRET=TEST_JWT_SECRET, THREADLINE_RUN_WORKERS="0") as url:
        yield url


@pytest.fixture
def sockets() -> Iterator[Callable[[str, str], WsClient]]:
    opened: list[WsClient] = []

    def open_(base_url: str, token: str) -> WsClient:
        client = WsClient(ws_url(base_url), token)
        opened.append(client)
        return client

    yield open_
    for client in opened:
        try:
            client.close()
        except Exception:  # noqa: BLE001 - closed by the server already
            pass


def ws_url(base_url: str) -> str:
    return "ws://" + base_url.removeprefix("http://") + "/graphql"


def token(tenant_id: str, sub: str, role: str = "MEMBER", secret: str = TEST_JWT_SECRET) -> str:
    claims = {"sub": sub, "tenant": tenant_id, "role": role, "exp": int(time.time() + 600)}
    return jwt.encode(claims, secret, algorithm="HS256")


def ws_op(client: WsClient, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    """Runs a query or mutation over the socket; its result payload ({"data"/"errors"})."""
    op_id = f"op{next(_op_ids)}"
    client.subscribe(query, variables, op_id)
    result: dict[str, Any] | None = None
    while True:
        message = client.receive(timeout=SETTLE_SECONDS)
        if message.get("id") != op_id:
            client.pending.append(message)
            continue
        if message["type"] == "error":
            return {"errors": message["payload"]}
        if message["type"] == "next":
            result = message["payload"]
        elif message["type"] == "complete":
            assert result is not None
            return result


def error_code(result: dict[str, Any]) -> str:
    assert result.get("errors"), result
    return str(result["errors"][0]["extensions"]["code"])


def close_code(client: WsClient) -> int:
    """Reads (and drops) whatever arrives until the server closes the socket; the close code."""
    deadline = time.monotonic() + SETTLE_SECONDS
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            client.receive(timeout=max(deadline - time.monotonic(), 0.01))
    assert closed.value.rcvd is not None, "closed without a close frame"
    return closed.value.rcvd.code


def streaming(client: WsClient, writer: Actor, cid: str) -> None:
    """Subscribes `client` to the conversation and waits until the stream is live (an event arrived)."""
    client.subscribe(CONVERSATION_EVENTS, {"c": cid, "s": live(writer)})
    writer.client.ok(START, {"c": cid, "x": "are you there"})
    event = client.events(1, ignore=("presence.update", "unread.update", "membership.changed"))[0]
    assert event["type"] == "thread.new"


def until_complete(client: WsClient, op_id: str = "1") -> list[dict[str, Any]]:
    """The messages of `op_id` up to its `complete` (fails if the stream does not end)."""
    got = []
    while True:
        message = client.receive(timeout=SETTLE_SECONDS)
        if message.get("id") != op_id:
            continue
        if message["type"] == "complete":
            return got
        got.append(message)


def connection_refused(base_url: str, bearer: str) -> int:
    client = WsClient(ws_url(base_url), None, init=False)
    try:
        client.send({"type": "connection_init", "payload": {"authorization": f"Bearer {bearer}"}})
        return close_code(client)
    finally:
        client.close()


def member_with_key(
    admin: Actor, make_user: Callable[..., Actor], role: str = "MEMBER"
) -> tuple[Actor, str, str]:
    """A user (with the key make_user gave them) and a second key of theirs: (user, secret, key id)."""
    user = make_user(admin, role)
    created = user.client.ok(KEY_CREATE, {"u": user.user_id})["apiKeyCreate"]
    return user, created["secret"], created["apiKey"]["id"]


# --- item 2: live credentials on open sockets, in two processes -----------------------------------


def test_revoking_a_key_closes_its_sockets_in_every_process_and_spares_the_users_other_keys(
    admin: Actor, make_user: Callable[..., Actor], server: ServerThread, other: str, sockets: Any
) -> None:
    member, secret, key_id = member_with_key(admin, make_user)
    cid = conversation(admin)
    join(admin, member, cid)
    here, there = sockets(server.url, secret), sockets(other, secret)
    kept = sockets(other, member.api_key)  # the same user, another key
    for client in (here, there, kept):
        streaming(client, admin, cid)
        assert ws_op(client, VIEWER)["data"]["viewer"]["id"] == member.user_id

    admin.client.ok(KEY_REVOKE, {"k": key_id})

    assert close_code(here) == 4403
    assert close_code(there) == 4403
    assert connection_refused(other, secret) == 4403
    admin.client.ok(START, {"c": cid, "x": "after the revocation"})
    got = kept.events(1, ignore=("presence.update", "unread.update", "membership.changed"))
    assert got[0]["thread"]["root"]["content"] == "after the revocation"
    assert ws_op(kept, VIEWER)["data"]["viewer"]["id"] == member.user_id


def test_a_role_change_reaches_open_sockets_in_every_process(
    admin: Actor, make_user: Callable[..., Actor], server: ServerThread, other: str, sockets: Any
) -> None:
    boss = make_user(admin, "ADMIN")
    cid = conversation(admin)  # boss is not a participant: reads it as a tenant admin only
    there, here = sockets(other, boss.api_key), sockets(server.url, boss.api_key)
    streaming(there, admin, cid)
    assert ws_op(here, VIEWER)["data"]["viewer"]["role"] == "ADMIN"
    assert ws_op(there, CONVERSATION, {"id": cid})["data"]["conversation"] == {"id": cid}

    assert admin.client.ok(ROLE_SET, {"u": boss.user_id, "r": "MEMBER"})["userRoleSet"]["role"] == "MEMBER"

    # The admin-only stream ends; the socket stays open (the key still holds) and runs under the new role.
    until_complete(there)
    for client in (there, here):
        assert ws_op(client, VIEWER)["data"]["viewer"]["role"] == "MEMBER"
        assert error_code(ws_op(client, CONVERSATION, {"id": cid})) == "NOT_FOUND"
        assert error_code(ws_op(client, USER_CREATE)) == "FORBIDDEN"
    admin.client.ok(START, {"c": cid, "x": "not for a member"})
    there.expect_quiet(0.5)
    audit = admin.client.ok(AUDIT)["auditLog"]["nodes"][0]
    expected = {
        "action": "user.role_set",
        "targetId": boss.user_id,
        "details": {"from": "ADMIN", "to": "MEMBER"},
    }
    assert audit == expected


def test_an_operation_on_an_open_socket_runs_under_the_current_role(
    admin: Actor, make_user: Callable[..., Actor], other: str, sockets: Any
) -> None:
    # Promotion too: nothing is cached at connect.
    member = make_user(admin)
    client = sockets(other, member.api_key)
    assert error_code(ws_op(client, USER_CREATE)) == "FORBIDDEN"
    admin.client.ok(ROLE_SET, {"u": member.user_id, "r": "ADMIN"})
    assert ws_op(client, VIEWER)["data"]["viewer"]["role"] == "ADMIN"
    # The other process's credential cache (THREADLINE_CREDENTIAL_CACHE_SECONDS, 1 s there) is emptied when its hub
    # reads the role change from the log: under load that may come after the next operation, never later than the
    # cache's age. (Failed in CI when it was asserted on the very next operation.)
    deadline = time.monotonic() + 10
    while "errors" in (created := ws_op(client, USER_CREATE)):
        assert error_code(created) == "FORBIDDEN", created
        assert time.monotonic() < deadline, "the promotion never reached the socket's operations"
        time.sleep(0.2)


def test_erasing_a_user_closes_their_sockets_in_every_process_api_key_and_jwt(
    admin: Actor, make_user: Callable[..., Actor], server: ServerThread, other: str, sockets: Any
) -> None:
    member = make_user(admin)
    cid = conversation(admin)
    join(admin, member, cid)
    here, there = sockets(server.url, member.api_key), sockets(other, member.api_key)
    streaming(here, admin, cid)
    there.subscribe(VIEWER_EVENTS, {"s": live(admin)})
    bearer = token(admin.tenant_id, "jay")
    jay = sockets(other, bearer)
    jay_id = ws_op(jay, VIEWER)["data"]["viewer"]["id"]

    admin.client.ok(ERASE, {"u": member.user_id})
    admin.client.ok(ERASE, {"u": jay_id})

    assert close_code(here) == 4403
    assert close_code(there) == 4403
    assert close_code(jay) == 4403
    assert connection_refused(other, member.api_key) == 4403
    assert connection_refused(other, bearer) == 4403  # an erased subject is not provisioned again


def test_a_removed_participant_stops_streaming_and_cannot_read_the_conversation_on_another_process(
    admin: Actor, make_user: Callable[..., Actor], other: str, sockets: Any
) -> None:
    member = make_user(admin)
    cid = conversation(admin)
    join(admin, member, cid)
    client = sockets(other, member.api_key)
    streaming(client, admin, cid)
    assert ws_op(client, CONVERSATION, {"id": cid})["data"]["conversation"] == {"id": cid}

    admin.client.ok(REMOVE, {"c": cid, "u": member.user_id})

    until_complete(client)
    assert error_code(ws_op(client, CONVERSATION, {"id": cid})) == "NOT_FOUND"
    admin.client.ok(START, {"c": cid, "x": "after the removal"})
    client.expect_quiet(0.5)


# --- item 11: JWT rules ---------------------------------------------------------------------------


def test_the_stored_role_wins_over_the_role_claim_after_provisioning(
    admin: Actor, server: ServerThread
) -> None:
    def viewer(role: str) -> dict[str, Any]:
        with closing(Client(server.url, token(admin.tenant_id, "bob", role))) as client:
            return client.ok(VIEWER)["viewer"]  # type: ignore[no-any-return]

    provisioned = viewer("ADMIN")  # the first token's role provisions the user
    assert provisioned["role"] == "ADMIN"
    admin.client.ok(ROLE_SET, {"u": provisioned["id"], "r": "MEMBER"})
    assert viewer("ADMIN") == {**provisioned, "role": "MEMBER"}  # an old ADMIN token does not re-promote
    with closing(Client(server.url, token(admin.tenant_id, "bob", "ADMIN"))) as client:
        assert client.code(USER_CREATE) == "FORBIDDEN"
    admin.client.ok(ROLE_SET, {"u": provisioned["id"], "r": "MANAGER"})
    assert viewer("MEMBER")["role"] == "MANAGER"


def test_an_erased_jwt_subject_stays_erased_in_its_tenant(
    admin: Actor, make_tenant: Callable[..., Actor], server: ServerThread, loop: Loop, dsn: str
) -> None:
    with closing(Client(server.url, token(admin.tenant_id, "carol"))) as carol:
        carol_id = carol.ok(VIEWER)["viewer"]["id"]
        admin.client.ok(ERASE, {"u": carol_id})
        users = _count(loop, dsn, "app_user")
        assert carol.code(VIEWER) == "UNAUTHENTICATED"
        assert carol.code(VIEWER) == "UNAUTHENTICATED"
        assert _count(loop, dsn, "app_user") == users  # not recreated
    with closing(Client(server.url, token(admin.tenant_id, "carol2"))) as someone_else:
        assert someone_else.ok(VIEWER)["viewer"]["role"] == "MEMBER"
    elsewhere = make_tenant()
    with closing(Client(server.url, token(elsewhere.tenant_id, "carol"))) as same_subject_other_tenant:
        assert same_subject_other_tenant.ok(VIEWER)["viewer"]["id"] != carol_id
    # The tombstone keeps a hash, not the subject.
    stored = loop.run(_fetch(dsn, "SELECT subject_hash FROM erased_subject"))
    assert len(stored) == 1 and "carol" not in stored[0]["subject_hash"]


def test_a_tenant_with_its_own_jwt_secret_accepts_only_tokens_signed_with_it(
    make_tenant: Callable[..., Actor], dsn: str
) -> None:
    own, shared = make_tenant(), make_tenant()
    own_secret = "a-tenant-secret-that-is-long-enough-for-hs256"
    srv = ServerThread(
        test_settings(dsn, migrate_on_start=False, jwt_tenant_secrets=((own.tenant_id, own_secret),))
    )
    srv.start()
    try:

        def code(tenant_id: str, secret: str) -> str | None:
            with closing(Client(srv.url, token(tenant_id, "tess", secret=secret))) as client:
                body = client.raw(VIEWER)
            return body["errors"][0]["extensions"]["code"] if body.get("errors") else None

        assert code(own.tenant_id, own_secret) is None
        # The global secret no longer covers a tenant with its own; other tenants keep it.
        assert code(own.tenant_id, TEST_JWT_SECRET) == "UNAUTHENTICATED"
        assert code(shared.tenant_id, TEST_JWT_SECRET) is None
        # One tenant's secret mints tokens for no other tenant.
        assert code(shared.tenant_id, own_secret) == "UNAUTHENTICATED"
    finally:
        srv.stop()


def test_user_role_set_is_for_admins_on_others_in_their_tenant(
    admin: Actor, make_user: Callable[..., Actor], make_tenant: Callable[..., Actor]
) -> None:
    member = make_user(admin)
    target = make_user(admin)
    assert member.client.code(ROLE_SET, {"u": target.user_id, "r": "ADMIN"}) == "FORBIDDEN"
    assert member.client.code(ROLE_SET, {"u": member.user_id, "r": "ADMIN"}) == "FORBIDDEN"
    assert admin.client.code(ROLE_SET, {"u": admin.user_id, "r": "MEMBER"}) == "FORBIDDEN"
    stranger = make_tenant()
    assert stranger.client.code(ROLE_SET, {"u": target.user_id, "r": "MEMBER"}) == "NOT_FOUND"
    unknown = encode_id(Kind.USER, uuid.uuid4())
    assert admin.client.code(ROLE_SET, {"u": unknown, "r": "MEMBER"}) == "NOT_FOUND"
    assert target.client.ok(VIEWER)["viewer"]["role"] == "MEMBER"


# --- item 12: members revoke their own keys -------------------------------------------------------


def test_members_revoke_their_own_keys_but_another_users_key_is_not_found(
    admin: Actor, make_user: Callable[..., Actor], server: ServerThread, sockets: Any
) -> None:
    member, secret, key_id = member_with_key(admin, make_user)
    other_member, other_secret, other_key = member_with_key(admin, make_user)
    open_socket = sockets(server.url, secret)

    assert member.client.code(KEY_REVOKE, {"k": other_key}) == "NOT_FOUND"
    with closing(Client(server.url, other_secret)) as still_valid:
        assert still_valid.ok(VIEWER)["viewer"]["id"] == other_member.user_id

    assert member.client.ok(KEY_REVOKE, {"k": key_id})["apiKeyRevoke"] == {"id": key_id, "revoked": True}
    with closing(Client(server.url, secret)) as revoked:
        assert revoked.code(VIEWER) == "UNAUTHENTICATED"
    assert close_code(open_socket) == 4403
    assert admin.client.ok(KEY_REVOKE, {"k": other_key})["apiKeyRevoke"]["revoked"] is True


# --- database helpers -----------------------------------------------------------------------------


async def _fetch(dsn: str, sql: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(sql)
    finally:
        await conn.close()


def _count(loop: Loop, dsn: str, table: str) -> int:
    return len(loop.run(_fetch(dsn, f"SELECT 1 FROM {table}")))
