"""WebSocket clients as they are configured in the wild: the key under the `connection_init` names graphql-ws,
Apollo, urql and HTTP-minded clients use, and a refusal whose close reason says why (issue 21 item 6)."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest
from websockets.exceptions import ConnectionClosed

from tests.harness import TEST_JWT_SECRET, Actor, ServerThread
from tests.ws import WsClient


def init(server: ServerThread, payload: dict[str, Any] | None) -> WsClient:
    client = WsClient(server.ws_url, None, init=False)
    message: dict[str, Any] = {"type": "connection_init"}
    if payload is not None:
        message["payload"] = payload
    client.send(message)
    return client


def refusal(client: WsClient) -> tuple[int, str]:
    """The close code and reason of a socket the server refuses."""
    try:
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                client.receive(timeout=10)
        assert closed.value.rcvd is not None, "closed without a close frame"
        return closed.value.rcvd.code, closed.value.rcvd.reason
    finally:
        client.close()


def viewer_over(client: WsClient) -> dict[str, Any]:
    """`viewer` through the socket: the connection is acknowledged and runs as its key's user."""
    ack = client.receive(timeout=10)
    assert ack["type"] == "connection_ack", ack
    client.send({"id": "v", "type": "subscribe", "payload": {"query": "{ viewer { id } }"}})
    message = client.receive(timeout=10)
    assert message["type"] == "next", message
    data: dict[str, Any] = message["payload"]["data"]["viewer"]
    return data


@pytest.mark.parametrize(
    "payload",
    [
        lambda key: {"authorization": f"Bearer {key}"},
        lambda key: {"Authorization": f"Bearer {key}"},
        lambda key: {"authorization": key},
        lambda key: {"Authorization": key},
        lambda key: {"authToken": key},
        lambda key: {"authToken": f"Bearer {key}"},
        lambda key: {"token": key},
        lambda key: {"headers": {"Authorization": f"Bearer {key}"}},
        lambda key: {"headers": {"authorization": f"Bearer {key}"}},
        lambda key: {"headers": {"Authorization": key}},
    ],
    ids=[
        "authorization",
        "Authorization",
        "authorization-bare",
        "Authorization-bare",
        "authToken",
        "authToken-bearer",
        "token",
        "headers.Authorization",
        "headers.authorization",
        "headers.Authorization-bare",
    ],
)
def test_connection_init_accepts_the_key_under_the_names_clients_use(
    server: ServerThread, admin: Actor, payload: Any
) -> None:
    client = init(server, payload(admin.api_key))
    try:
        assert viewer_over(client) == {"id": admin.user_id}
    finally:
        client.close()


def test_a_jwt_is_accepted_under_authToken_too(server: ServerThread, admin: Actor) -> None:
    token = jwt.encode(
        {"sub": "compat-user", "tenant": admin.tenant_id, "exp": int(time.time()) + 600},
        TEST_JWT_SECRET,
        algorithm="HS256",
    )
    client = init(server, {"authToken": token})
    try:
        assert set(viewer_over(client)) == {"id"}
    finally:
        client.close()


def test_a_bad_key_is_refused_with_4403_and_a_reason_naming_it(server: ServerThread, admin: Actor) -> None:
    assert refusal(init(server, {"authorization": "Bearer tlk_wrong"})) == (
        4403,
        "Forbidden: Invalid API key",
    )
    assert refusal(init(server, {"authToken": "tlk_wrong"})) == (4403, "Forbidden: Invalid API key")


def test_missing_credentials_are_refused_with_a_reason_saying_how_to_send_them(server: ServerThread) -> None:
    expected = (4403, "Forbidden: Missing credentials: send Authorization: Bearer <api key or JWT>")
    assert refusal(init(server, {})) == expected
    assert refusal(init(server, None)) == expected
    assert refusal(init(server, {"authorization": "", "headers": {"Authorization": "  "}})) == expected


def test_a_wrong_scheme_and_an_expired_token_are_named(server: ServerThread, admin: Actor) -> None:
    assert refusal(init(server, {"authorization": "Basic dXNlcjpwYXNz"})) == (
        4403,
        "Forbidden: Malformed Authorization header: expected 'Bearer <token>'",
    )
    expired = jwt.encode(
        {"sub": "compat-user", "tenant": admin.tenant_id, "exp": int(time.time()) - 60},
        TEST_JWT_SECRET,
        algorithm="HS256",
    )
    assert refusal(init(server, {"headers": {"Authorization": f"Bearer {expired}"}})) == (
        4403,
        "Forbidden: Token expired",
    )


def test_the_first_name_that_holds_a_key_wins(server: ServerThread, admin: Actor) -> None:
    # `authorization` is read before `authToken`: a wrong key there is refused, whatever follows.
    client = init(server, {"authorization": "Bearer tlk_wrong", "authToken": admin.api_key})
    assert refusal(client) == (4403, "Forbidden: Invalid API key")
    client = init(server, {"authorization": "", "authToken": admin.api_key})
    try:
        assert viewer_over(client) == {"id": admin.user_id}
    finally:
        client.close()
