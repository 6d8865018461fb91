"""Key lineage (found in review): `apiKeyCreate` accepts an API key as the caller, so a leaked key could mint
keys for its user (or, an admin's, for anyone) that outlived its own revocation. A key now records the key that
minted it, and revoking (or deleting) a key revokes every key it minted, transitively, in one transaction:
over HTTP at once and on open WebSockets, as a direct revocation does. Keys minted with a JWT have no parent and
are untouched. Through the real API (uvicorn + embedded PostgreSQL).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.harness import Actor, Client, ServerThread
from tests.test_hostile_credentials import close_code, streaming, token, ws_op, ws_url
from tests.test_streaming import conversation, join
from tests.ws import WsClient

VIEWER = "{ viewer { id } }"
KEY_CREATE = """mutation($u: ID!, $n: String!) {
  apiKeyCreate(userId: $u, name: $n) { secret apiKey { id revoked } } }"""
KEY_REVOKE = "mutation($k: ID!) { apiKeyRevoke(id: $k) { id revoked } }"
KEY = """query($k: ID!) { node(id: $k) { ... on ApiKey {
  id name revoked revokedAt createdByKey { id }
  mintedKeys(first: 10) { totalCount nodes { id revoked createdByKey { id } } } } } }"""
USER_CREATE = "mutation($e: String!, $r: Role!) { userCreate(input: {email: $e, role: $r}) { id } }"
ERASE = "mutation($u: ID!) { userErase(userId: $u) { __typename } }"
USER_KEYS = """query($u: ID!) { node(id: $u) { ... on User {
  apiKeys(first: 20) { totalCount nodes { id revoked createdByKey { id } } } } } }"""
AUDIT = """query($t: ID!) { auditLog(action: "api_key.revoke", targetId: $t, first: 5) {
  nodes { action targetId details } } }"""


@pytest.fixture
def clients(server: ServerThread) -> Iterator[Callable[[str], Client]]:
    made: list[Client] = []

    def make(secret: str) -> Client:
        client = Client(server.url, secret)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@pytest.fixture
def sockets(server: ServerThread) -> Iterator[Callable[[str], WsClient]]:
    opened: list[WsClient] = []

    def open_(secret: str) -> WsClient:
        client = WsClient(ws_url(server.url), secret)
        opened.append(client)
        return client

    yield open_
    for client in opened:
        try:
            client.close()
        except Exception:  # noqa: BLE001 - closed by the server already
            pass


def mint(by: Client, user_id: str, name: str) -> tuple[str, str]:
    """A new key of `user_id`, created by `by`'s credential: (secret, key id)."""
    created = by.ok(KEY_CREATE, {"u": user_id, "n": name})["apiKeyCreate"]
    assert created["apiKey"]["revoked"] is False
    return created["secret"], created["apiKey"]["id"]


def key(by: Client, key_id: str) -> dict[str, Any]:
    node: dict[str, Any] = by.ok(KEY, {"k": key_id})["node"]
    return node


def test_a_key_minted_by_a_key_dies_with_it_over_http_and_on_open_sockets(
    admin: Actor, make_user: Callable[..., Actor], clients: Callable[[str], Client], sockets: Any
) -> None:
    member = make_user(admin)
    # The member's own key (member.api_key) mints `parent`; `parent` mints `child`, which mints `grandchild`.
    parent_secret, parent_id = mint(member.client, member.user_id, "parent")
    child_secret, child_id = mint(clients(parent_secret), member.user_id, "child")
    grandchild_secret, grandchild_id = mint(clients(child_secret), member.user_id, "grandchild")
    sibling_secret, sibling_id = mint(member.client, member.user_id, "sibling")  # not in the lineage

    cid = conversation(admin)
    join(admin, member, cid)
    child_socket, grandchild_socket = sockets(child_secret), sockets(grandchild_secret)
    sibling_socket = sockets(sibling_secret)
    for socket in (child_socket, grandchild_socket, sibling_socket):
        streaming(socket, admin, cid)
        assert ws_op(socket, VIEWER)["data"]["viewer"]["id"] == member.user_id

    assert member.client.ok(KEY_REVOKE, {"k": parent_id})["apiKeyRevoke"] == {
        "id": parent_id,
        "revoked": True,
    }

    for secret in (parent_secret, child_secret, grandchild_secret):
        assert clients(secret).code(VIEWER) == "UNAUTHENTICATED"
    assert close_code(child_socket) == 4403
    assert close_code(grandchild_socket) == 4403
    # Outside the lineage: the key that minted `parent`, and a key it minted besides, keep working.
    assert member.client.ok(VIEWER)["viewer"]["id"] == member.user_id
    assert clients(sibling_secret).ok(VIEWER)["viewer"]["id"] == member.user_id
    assert ws_op(sibling_socket, VIEWER)["data"]["viewer"]["id"] == member.user_id

    # The revoked children stay listed and readable by their owner (who minted each, what each minted), and
    # each revocation is audited.
    seen = key(member.client, parent_id)
    assert seen["mintedKeys"]["totalCount"] == 1
    assert seen["mintedKeys"]["nodes"] == [
        {"id": child_id, "revoked": True, "createdByKey": {"id": parent_id}}
    ]
    assert key(member.client, grandchild_id)["createdByKey"] == {"id": child_id}
    assert key(member.client, child_id)["mintedKeys"]["nodes"][0]["id"] == grandchild_id
    for key_id in (child_id, grandchild_id):
        gone = key(member.client, key_id)
        assert gone["revoked"] is True
        assert gone["revokedAt"] is not None
    assert key(member.client, sibling_id)["revokedAt"] is None
    # And the owner lists all their keys (to find a leaked one by its prefix).
    listed = member.client.ok(USER_KEYS, {"u": member.user_id})["node"]["apiKeys"]
    assert listed["totalCount"] == 5
    by_id = {k["id"]: k for k in listed["nodes"]}
    assert {i: by_id[i]["revoked"] for i in (parent_id, child_id, grandchild_id, sibling_id)} == {
        parent_id: True,
        child_id: True,
        grandchild_id: True,
        sibling_id: False,
    }
    for key_id in (child_id, grandchild_id):
        entries = admin.client.ok(AUDIT, {"t": key_id})["auditLog"]["nodes"]
        assert [e["details"]["cascadedFrom"] for e in entries] == [parent_id]


def test_a_jwt_minted_key_is_unaffected_by_revoking_an_unrelated_key(
    admin: Actor, clients: Callable[[str], Client], sockets: Any
) -> None:
    bearer = token(admin.tenant_id, "lineage-jwt-user")
    jwt_client = clients(bearer)
    user_id = jwt_client.ok(VIEWER)["viewer"]["id"]
    # A user token (JWT) still creates keys; such a key has no parent key.
    kept_secret, kept_id = mint(jwt_client, user_id, "from the jwt")
    other_secret, other_id = mint(jwt_client, user_id, "another")
    minted_secret, minted_id = mint(clients(other_secret), user_id, "minted by another")
    kept_socket = sockets(kept_secret)
    assert ws_op(kept_socket, VIEWER)["data"]["viewer"]["id"] == user_id

    jwt_client.ok(KEY_REVOKE, {"k": other_id})

    assert clients(minted_secret).code(VIEWER) == "UNAUTHENTICATED"  # in the revoked key's lineage
    assert clients(kept_secret).ok(VIEWER)["viewer"]["id"] == user_id
    assert ws_op(kept_socket, VIEWER)["data"]["viewer"]["id"] == user_id
    assert key(jwt_client, kept_id)["revoked"] is False
    assert key(jwt_client, kept_id)["createdByKey"] is None
    assert key(jwt_client, minted_id)["revoked"] is True
    assert key(jwt_client, minted_id)["createdByKey"] == {"id": other_id}
    assert jwt_client.ok(VIEWER)["viewer"]["id"] == user_id


def test_an_admin_key_revoked_takes_the_keys_it_minted_for_other_users(
    admin: Actor, make_user: Callable[..., Actor], clients: Callable[[str], Client], sockets: Any
) -> None:
    admin_key_secret, admin_key_id = mint(admin.client, admin.user_id, "automation")
    automation = clients(admin_key_secret)
    member = make_user(admin)
    member_secret, member_key_id = mint(automation, member.user_id, "made by automation")
    member_socket = sockets(member_secret)
    cid = conversation(admin)
    join(admin, member, cid)
    streaming(member_socket, admin, cid)

    admin.client.ok(KEY_REVOKE, {"k": admin_key_id})

    assert clients(member_secret).code(VIEWER) == "UNAUTHENTICATED"
    assert close_code(member_socket) == 4403
    assert member.client.ok(VIEWER)["viewer"]["id"] == member.user_id  # the member's other key
    # The member sees their key but not the admin's key that minted it; an admin sees both.
    assert key(member.client, member_key_id)["createdByKey"] is None
    assert key(admin.client, member_key_id)["createdByKey"] == {"id": admin_key_id}
    assert member.client.ok(KEY, {"k": admin_key_id})["node"] is None  # another user's key
    assert key(member.client, member_key_id)["revoked"] is True
    assert member.client.ok(USER_KEYS, {"u": admin.user_id})["node"]["apiKeys"] is None  # not theirs to list
    assert admin.client.ok(USER_KEYS, {"u": member.user_id})["node"]["apiKeys"]["totalCount"] == 2


def test_erasing_a_user_revokes_the_keys_their_keys_minted_for_others(
    admin: Actor, make_user: Callable[..., Actor], clients: Callable[[str], Client], sockets: Any
) -> None:
    second_admin = make_user(admin, role="ADMIN")
    member = make_user(admin)
    member_secret, _ = mint(second_admin.client, member.user_id, "made by the second admin")
    member_socket = sockets(member_secret)
    cid = conversation(admin)
    join(admin, member, cid)
    streaming(member_socket, admin, cid)

    admin.client.ok(ERASE, {"u": second_admin.user_id})

    assert clients(member_secret).code(VIEWER) == "UNAUTHENTICATED"
    assert close_code(member_socket) == 4403
    assert member.client.ok(VIEWER)["viewer"]["id"] == member.user_id


def test_a_user_holds_a_bounded_number_of_live_keys(admin: Actor, make_user: Callable[..., Actor]) -> None:
    member = make_user(admin)  # one live key already
    made = [mint(member.client, member.user_id, f"k{i}")[1] for i in range(99)]
    assert member.client.code(KEY_CREATE, {"u": member.user_id, "n": "one too many"}) == "CONFLICT"
    assert admin.client.code(KEY_CREATE, {"u": member.user_id, "n": "nor for an admin"}) == "CONFLICT"
    admin.client.ok(KEY_REVOKE, {"k": made[0]})
    mint(member.client, member.user_id, "after a revocation")
