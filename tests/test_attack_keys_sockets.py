"""Attacks on key lineage (143b3a2) and the per-user socket cap (0a7da8b), through the real API (uvicorn +
embedded PostgreSQL, real WebSockets).

- Erasing (or anonymising) a user deletes their keys, and a trigger revokes every live key those keys minted,
  other users' too. Those revocations were not audited at all, where the same cascade through `apiKeyRevoke`
  audits each key (`api_key.revoke`, `details.cascadedFrom`): a member's key could stop working with no trace
  in the audit log of why.

What held is kept as regressions: sockets reset at any stage (while authenticating, acknowledged, subscribed)
leave no ghost under the per-user cap; an anonymous socket is refused (4403) and counted nowhere; keys minted
under a key (or its child) while that key is revoked are revoked with it.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.harness import Actor, Client, ServerThread
from tests.test_key_lineage import AUDIT, ERASE, KEY_CREATE, KEY_REVOKE, mint
from tests.test_ws_socket_cap import capped_server
from tests.test_ws_socket_cap import opens as accepted
from tests.ws import PROTOCOL, VIEWER_EVENTS, WsClient

VIEWER = "{ viewer { id } }"
ANONYMISE = "mutation($u: ID!) { userAnonymise(userId: $u) { __typename } }"
OWN_KEYS = """query($u: ID!) { node(id: $u) { ... on User { apiKeys(first: 5) { nodes { id } } } } }"""


@pytest.mark.parametrize("removal", [ERASE, ANONYMISE])
def test_keys_revoked_because_their_minting_key_was_deleted_are_audited(
    removal: str, admin: Actor, make_user: Callable[..., Actor], server: ServerThread
) -> None:
    second_admin = make_user(admin, role="ADMIN")
    (second_key_id,) = [
        k["id"]
        for k in second_admin.client.ok(OWN_KEYS, {"u": second_admin.user_id})["node"]["apiKeys"]["nodes"]
    ]
    member = make_user(admin)
    # second admin's key -> a key of the member -> a key that key minted (transitively revoked too)
    child_secret, child_id = mint(second_admin.client, member.user_id, "made by the second admin")
    child = Client(server.url, child_secret)
    try:
        grandchild_secret, grandchild_id = mint(child, member.user_id, "made by that key")
    finally:
        child.close()

    admin.client.ok(removal, {"u": second_admin.user_id})

    grandchild = Client(server.url, grandchild_secret)
    try:
        assert grandchild.code(VIEWER) == "UNAUTHENTICATED"
    finally:
        grandchild.close()
    for key_id in (child_id, grandchild_id):
        entries: list[dict[str, Any]] = admin.client.ok(AUDIT, {"t": key_id})["auditLog"]["nodes"]
        assert len(entries) == 1, entries
        assert entries[0]["action"] == "api_key.revoke"
        assert entries[0]["details"]["cascadedFrom"] == second_key_id
    # The member's own key, outside the lineage, is untouched (and its revocation not invented).
    assert member.client.ok(VIEWER)["viewer"]["id"] == member.user_id


LINEAGE_PAGE = (
    """{ viewer { apiKeys(first: 50) { nodes { id createdByKey { id createdByKey { id } } } } } }"""
)


def test_the_minting_keys_of_a_page_of_keys_load_in_one_statement(admin: Actor, server: ServerThread) -> None:
    """`ApiKey.createdByKey` read one key per statement: a page of keys (and its aliases and nesting, up to the
    cost limit) cost a statement per key. Now the request's keys load together, whatever the page's size."""
    parent_secret, _ = mint(admin.client, admin.user_id, "parent")
    parent = Client(server.url, parent_secret)
    try:
        for i in range(3):
            mint(parent, admin.user_id, f"child {i}")
        few = admin.client.statements(LINEAGE_PAGE)
        for i in range(3, 20):
            mint(parent, admin.user_id, f"child {i}")
        many = admin.client.statements(LINEAGE_PAGE)
    finally:
        parent.close()
    nodes = admin.client.ok(LINEAGE_PAGE)["viewer"]["apiKeys"]["nodes"]
    assert len(nodes) == 22
    assert sum(1 for n in nodes if n["createdByKey"] is not None) == 21  # all but the bootstrap key
    assert many == few, (few, many)


# --- what held: kept as regressions ------------------------------------------------------------------


@pytest.fixture(scope="module")
def capped(dsn: str) -> Iterator[ServerThread]:
    yield from capped_server(dsn)


def killed(url: str, secret: str, stage: int) -> None:
    """Opens a socket and drops its TCP connection without a close frame (a reset): right after
    connection_init (stage 0: while the server authenticates it), after the ack (1), or with a subscription
    running (2)."""
    conn = connect(url, subprotocols=[PROTOCOL], open_timeout=10).__enter__()
    conn.send(json.dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {secret}"}}))
    if stage >= 1:
        assert json.loads(conn.recv(timeout=10))["type"] == "connection_ack"
    if stage >= 2:
        conn.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": VIEWER_EVENTS}}))
    conn.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.socket.close()


def test_sockets_killed_at_any_stage_do_not_keep_their_places_under_the_cap(
    capped: ServerThread, admin: Actor
) -> None:
    for i in range(24):
        killed(capped.ws_url, admin.api_key, i % 3)
    # Once the server has seen the resets, both places are free again: two sockets open side by side.
    deadline = time.monotonic() + 20
    while True:
        first = WsClient(capped.ws_url, admin.api_key, init=False)
        try:
            first.send({"type": "connection_init", "payload": {"authorization": f"Bearer {admin.api_key}"}})
            try:
                ok = first.receive(timeout=10)["type"] == "connection_ack"
            except ConnectionClosed:
                ok = False
            if ok and accepted(capped.ws_url, admin.api_key):
                break
        finally:
            first.close()
        assert time.monotonic() < deadline, "sockets killed long ago still hold the user's places"
        time.sleep(0.2)


def test_an_anonymous_socket_is_refused_and_takes_no_place(capped: ServerThread, admin: Actor) -> None:
    anonymous = WsClient(capped.ws_url, None, init=False)
    try:
        anonymous.send({"type": "connection_init", "payload": {}})
        with pytest.raises(ConnectionClosed) as closed:
            anonymous.receive(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403
    finally:
        anonymous.close()


def test_keys_minted_while_their_parent_is_revoked_die_with_it(
    admin: Actor, make_user: Callable[..., Actor], server: ServerThread
) -> None:
    """Minters under the parent and under its child race the parent's revocation: every key any of them got
    is revoked once the revocation has returned."""
    member = make_user(admin)
    parent_secret, parent_id = mint(member.client, member.user_id, "parent")
    parent = Client(server.url, parent_secret)
    child_secret, _ = mint(parent, member.user_id, "child")
    parent.close()
    minted: list[str] = []
    started = threading.Barrier(5)

    def minter(secret: str) -> None:
        client = Client(server.url, secret)
        try:
            # One before the race (so there is something to check), then as many as it gets during it.
            minted.append(
                client.ok(KEY_CREATE, {"u": member.user_id, "n": "before"})["apiKeyCreate"]["secret"]
            )
            started.wait()
            for i in range(15):
                body = client.execute(KEY_CREATE, {"u": member.user_id, "n": f"race {i}"})
                if body.get("errors"):
                    return
                minted.append(body["data"]["apiKeyCreate"]["secret"])
        finally:
            client.close()

    threads = [threading.Thread(target=minter, args=(s,)) for s in (parent_secret, child_secret) * 2]
    for thread in threads:
        thread.start()
    started.wait()
    member.client.ok(KEY_REVOKE, {"k": parent_id})
    for thread in threads:
        thread.join()
    assert len(minted) >= 4
    for secret in minted:
        client = Client(server.url, secret)
        try:
            assert client.code(VIEWER) == "UNAUTHENTICATED"
        finally:
            client.close()
