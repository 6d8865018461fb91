"""Hostile requests against the features of issue 21 (persisted queries, batching, GraphQL over HTTP, the
GraphiQL static route, cursors): each fails on the code as it was before its fix, or pins a bound that held."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import asyncpg
import httpx
import pytest

from tests.harness import Actor, Loop, ServerThread, test_settings
from tests.test_http_subscriptions import MultipartSubscription
from tests.ws import VIEWER_EVENTS


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def apq(text: str) -> dict[str, Any]:
    return {"persistedQuery": {"version": 1, "sha256Hash": sha(text)}}


def post(base_url: str, actor: Actor | None, body: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {actor.api_key}"} if actor else {}
    return httpx.post(f"{base_url}/graphql", json=body, headers=headers, timeout=60)


def stored_bodies(loop: Loop, dsn: str) -> dict[str, str]:
    async def work() -> dict[str, str]:
        conn = await asyncpg.connect(dsn)
        try:
            return {r["id"]: r["body"] for r in await conn.fetch("SELECT id, body FROM persisted_document")}
        finally:
            await conn.close()

    return loop.run(work())


# --- persisted queries ----------------------------------------------------------------------------


def test_apq_does_not_keep_documents_carrying_inline_strings(
    admin: Actor, server: ServerThread, loop: Loop, dsn: str
) -> None:
    # Inline string values are caller content (a title, a message, a search term): the shared, unscoped
    # document table is not reached by deletes or erasure, so such a document runs but is not kept.
    secret = f"secret-{uuid.uuid4().hex}"
    mutation = f'mutation {{ conversationCreate(input: {{title: "{secret}"}}) {{ id }} }}'
    response = post(server.url, admin, {"query": mutation, "extensions": apq(mutation)})
    assert response.json()["data"]["conversationCreate"]["id"], response.text
    assert not [body for body in stored_bodies(loop, dsn).values() if secret in body]
    miss = post(server.url, admin, {"extensions": apq(mutation)})
    assert miss.json()["errors"][0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_FOUND"

    # The same operation with its content in variables is kept as before.
    with_variables = "mutation Create($t: String!) { conversationCreate(input: {title: $t}) { id } }"
    body = {"query": with_variables, "variables": {"t": secret}, "extensions": apq(with_variables)}
    assert post(server.url, admin, body).json()["data"]["conversationCreate"]["id"]
    assert sha(with_variables) in stored_bodies(loop, dsn)


def test_apq_does_not_keep_documents_refused_by_the_query_limits(
    admin: Actor, server: ServerThread, loop: Loop, dsn: str
) -> None:
    name = f"Wide_{uuid.uuid4().hex[:8]}"
    aliases = " ".join(f"a{i}: viewer {{ id }}" for i in range(40))
    query = f"query {name} {{ {aliases} }}"
    response = post(server.url, admin, {"query": query, "extensions": apq(query)})
    assert response.json().get("errors"), response.text
    assert sha(query) not in stored_bodies(loop, dsn)


# --- subscriptions over HTTP ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_streams(dsn: str, server: ServerThread) -> Iterator[ServerThread]:
    srv = ServerThread(test_settings(dsn, migrate_on_start=False, ws_max_operations=2))
    srv.start()
    yield srv
    srv.stop()


def test_open_http_subscription_streams_per_user_are_capped(
    admin: Actor, make_user: Callable[..., Actor], two_streams: ServerThread
) -> None:
    # Each stream holds a subscriber queue and a connection for as long as the client likes; the subscription
    # rate limit bounds how fast they start, not how many stay open.
    member = make_user(admin)
    opened: list[MultipartSubscription] = []
    try:
        for _ in range(2):
            sub = MultipartSubscription(two_streams.url, member.api_key, VIEWER_EVENTS, {})
            opened.append(sub)
            assert sub.streaming, sub.response.read()
            assert sub.part() == {}  # the first heartbeat: the stream is registered
        third = MultipartSubscription(two_streams.url, member.api_key, VIEWER_EVENTS, {})
        opened.append(third)
        assert third.response.status_code == 429
        third.response.read()
        error = third.response.json()["errors"][0]
        assert error["extensions"]["code"] == "RATE_LIMITED"
        assert error["extensions"]["limit"] == 2
        assert third.response.headers["retry-after"] == "1"

        # Another user is not affected.
        others = MultipartSubscription(two_streams.url, admin.api_key, VIEWER_EVENTS, {})
        opened.append(others)
        assert others.streaming and others.part() == {}

        # Ending a stream frees its place (once the server has seen the client go).
        opened[0].close()
        deadline = time.monotonic() + 20
        while True:
            again = MultipartSubscription(two_streams.url, member.api_key, VIEWER_EVENTS, {})
            opened.append(again)
            if again.streaming or time.monotonic() > deadline:
                break
            again.close()
            time.sleep(0.2)
        assert again.streaming and again.part() == {}
    finally:
        for sub in opened:
            sub.close()


# --- GraphQL over HTTP ----------------------------------------------------------------------------


def test_a_subscription_sent_as_a_plain_request_is_bad_input_not_internal(
    admin: Actor, server: ServerThread
) -> None:
    # strawberry runs it as a query and fails on the event generator: INTERNAL, a 200, a logged "bug".
    subscription = "subscription { viewerEvents { type } }"
    for response in (
        post(server.url, admin, {"query": subscription}),
        httpx.get(
            f"{server.url}/graphql",
            params={"query": subscription},
            headers={"Authorization": f"Bearer {admin.api_key}", "Accept": "application/json"},
            timeout=60,
        ),
    ):
        assert response.status_code == 400, response.text
        error = response.json()["errors"][0]
        assert error["extensions"]["code"] == "BAD_USER_INPUT", error
        assert "multipart/mixed" in error["message"] and "WebSocket" in error["message"]


# --- trusted documents on every transport ---------------------------------------------------------


@pytest.fixture(scope="module")
def trusted_batching(dsn: str, server: ServerThread) -> Iterator[ServerThread]:
    srv = ServerThread(test_settings(dsn, migrate_on_start=False, trusted_documents=True, batch_max=5))
    srv.start()
    yield srv
    srv.stop()


def test_trusted_mode_holds_in_batches_and_http_subscriptions(
    admin: Actor, trusted_batching: ServerThread
) -> None:
    query = f"query Unregistered_{uuid.uuid4().hex[:8]} {{ viewer {{ id }} }}"
    batch = post(trusted_batching.url, admin, [{"query": query}, {"query": query}])
    assert [r["errors"][0]["extensions"]["reason"] for r in batch.json()] == ["untrustedDocument"] * 2
    assert all(not r.get("data") for r in batch.json())

    sub = MultipartSubscription(trusted_batching.url, admin.api_key, VIEWER_EVENTS, {})
    try:
        if sub.streaming:
            part = sub.part()
            while part == {}:
                part = sub.part()
            errors = (part.get("payload") or {}).get("errors") or part.get("errors")
        else:
            sub.response.read()
            errors = sub.response.json()["errors"]
        assert errors[0]["extensions"].get("reason") == "untrustedDocument", errors
    finally:
        sub.close()


def test_a_query_sent_as_a_multipart_stream_is_bad_input_not_internal(
    admin: Actor, server: ServerThread
) -> None:
    sub = MultipartSubscription(server.url, admin.api_key, "{ viewer { id } }", {})
    try:
        if sub.streaming:
            part = sub.part()
            while part == {}:
                part = sub.part()
            errors = (part.get("payload") or {}).get("errors") or part.get("errors")
        else:
            sub.response.read()
            errors = sub.response.json()["errors"]
        assert errors[0]["extensions"]["code"] == "BAD_USER_INPUT", errors
    finally:
        sub.close()


# --- opaque cursors -------------------------------------------------------------------------------


def first_stream_error(sub: MultipartSubscription) -> dict[str, Any]:
    if not sub.streaming:
        sub.response.read()
        return dict(sub.response.json()["errors"][0])
    part = sub.part()
    while part == {}:
        part = sub.part()
    errors = (part.get("payload") or {}).get("errors") or part.get("errors")
    assert errors, part
    return dict(errors[0])


def test_malformed_and_foreign_cursors_are_refused_with_a_code_over_http_streams(
    admin: Actor, make_tenant: Callable[..., Actor], server: ServerThread
) -> None:
    good = str(admin.client.ok("{ streamCursor }")["streamCursor"])
    body = good.removeprefix("c1.")
    flipped = body[:-1] + ("0" if body[-1] != "0" else "1")
    shapes = {
        "": "BAD_USER_INPUT",
        "c1.": "BAD_USER_INPUT",
        "c1." + "z" * 24: "BAD_USER_INPUT",
        "c1." + " " * 24: "BAD_USER_INPUT",
        "c1." + body[:22] + "  ": "BAD_USER_INPUT",
        "c1." + body.upper()[:-1] + "g": "BAD_USER_INPUT",
        "c1." + flipped: "BAD_USER_INPUT",
        "c1." + body * 1000: "BAD_USER_INPUT",
        "c2." + body: "BAD_USER_INPUT",
        "-1": "BAD_USER_INPUT",
        "1e5": "BAD_USER_INPUT",
        "9" * 19: "BAD_USER_INPUT",
        "9" * 18: "CURSOR_EXPIRED",
        "١٢٣": "BAD_USER_INPUT",  # Arabic-Indic digits: str.isdigit, but not a number we issued
        "\x00": "BAD_USER_INPUT",
    }
    for since, code in shapes.items():
        sub = MultipartSubscription(server.url, admin.api_key, VIEWER_EVENTS, {"s": since})
        try:
            error = first_stream_error(sub)
        finally:
            sub.close()
        assert error["extensions"]["code"] == code, (since[:40], error)

    # A cursor of another tenant does not decode under this one's key.
    foreign = str(make_tenant().client.ok("{ streamCursor }")["streamCursor"])
    sub = MultipartSubscription(server.url, admin.api_key, VIEWER_EVENTS, {"s": foreign})
    try:
        assert first_stream_error(sub)["extensions"]["code"] == "BAD_USER_INPUT"
    finally:
        sub.close()


# --- batching -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_batches(dsn: str, server: ServerThread) -> Iterator[ServerThread]:
    srv = ServerThread(test_settings(dsn, migrate_on_start=False, batch_max=5, response_max_bytes=2000))
    srv.start()
    yield srv
    srv.stop()


def test_a_batch_response_is_bounded_as_a_whole_not_per_operation_times_n(
    admin: Actor, small_batches: ServerThread
) -> None:
    # 25 aliases of the viewer's id: ~1.3 kB, within the 2 kB limit alone; five of them are not.
    aliases = " ".join(f"a{i}: viewer {{ id }}" for i in range(25))
    query = f"{{ {aliases} }}"
    alone = post(small_batches.url, admin, {"query": query})
    assert alone.json()["data"]["a0"]["id"] == admin.user_id, alone.text
    assert len(alone.content) < 2000

    batch = post(small_batches.url, admin, [{"query": query}] * 5)
    results = batch.json()
    assert len(results) == 5
    assert results[0]["data"]["a0"]["id"] == admin.user_id
    refused = [r for r in results if r.get("errors")]
    assert refused and all(r["errors"][0]["extensions"]["limitName"] == "responseBytes" for r in refused)
    assert all(r["data"] is None for r in refused)
    assert len(batch.content) <= 2000 + 300 * len(refused)
