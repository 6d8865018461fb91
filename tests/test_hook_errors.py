"""An exception out of a schema extension's hook (not a resolver) is answered like one out of a resolver.

strawberry's `Schema.execute` catches what escapes the operation's hooks outside them (ErrorCodes never sees it)
and answers the exception's own text, uncoded; the lean query path (graphql.lean_operation) copied that answer.
Here the rate-limit draw (ratelimits.schema `RateLimits.on_execute` -> `draw`: `Context.principal`,
`service.spend`) fails: an unexpected exception is INTERNAL, masked, with the request id, and logged; a database
outage is UNAVAILABLE (HTTP 503 with Retry-After). Through the real API: the lean path, strawberry's own (a
mutation, a batch), and a graphql-transport-ws socket. Any hook: QueryLimits' `on_validate` failing as well, which
`Schema.stream` (a socket's operations) does not catch at all (the client got a bare `complete`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import asyncpg
import httpx
import orjson
import pytest

from tests.api import count_rows
from tests.harness import Actor, Loop, ServerThread, test_settings
from tests.test_http_lean import both_ways
from tests.test_http_lean import post as lean_request
from tests.ws import WsClient
from threadline.db.database import DatabaseUnreachable
from threadline.errors import UNAVAILABLE_RETRY_AFTER_SECONDS
from threadline.graphql.context import Context
from threadline.graphql.http_fast import LeanGraphQL
from threadline.ratelimits import service

SECRET = "secret internals"


def _unreachable() -> BaseException:
    try:
        raise DatabaseUnreachable("cannot connect to the database") from ConnectionRefusedError(111, SECRET)
    except DatabaseUnreachable as exc:
        return exc


# What the draw raises: each name's expected code.
FAILURES: dict[str, tuple[Callable[[], BaseException], str]] = {
    "runtime": (lambda: RuntimeError(SECRET), "INTERNAL"),
    "connection-lost": (
        lambda: asyncpg.exceptions.ConnectionDoesNotExistError(f"connection was closed: {SECRET}"),
        "UNAVAILABLE",
    ),
    "pool-closed": (lambda: asyncpg.exceptions.InterfaceError("pool is closed"), "UNAVAILABLE"),
    "unreachable": (_unreachable, "UNAVAILABLE"),
}
# Where the draw fails: the budget's statement, or the caller's authentication (reached by the draw for a
# document of public root fields only: QueryLimits' check of anonymous callers asks for no principal then).
WHERE = ("spend", "principal")
PUBLIC_QUERY = "query HookFaultPublic { errorCodes }"
PRIVATE_QUERY = "query HookFaultViewer { viewer { id } }"


def query_for(where: str) -> str:
    return PUBLIC_QUERY if where == "principal" else PRIVATE_QUERY


def make_fail(monkeypatch: pytest.MonkeyPatch, where: str, failure: str) -> list[int]:
    """Makes the rate-limit draw raise `failure` at `where`; the list counts the raises."""
    build = FAILURES[failure][0]
    calls: list[int] = []

    async def fail(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        raise build()

    if where == "spend":
        monkeypatch.setattr(service, "spend", fail)
    else:
        monkeypatch.setattr(Context, "principal", fail)
    return calls


@pytest.fixture(scope="module")
def batching(dsn: str) -> Iterator[ServerThread]:
    srv = ServerThread(test_settings(dsn, migrate_on_start=False, batch_max=4))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def logged(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.WARNING, logger="threadline.graphql")
    return caplog


def send(server: ServerThread, actor: Actor, body: Any, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{server.url}/graphql",
        content=orjson.dumps(body),
        headers={"Authorization": f"Bearer {actor.api_key}", "Content-Type": "application/json", **headers},
        timeout=60,
    )


def assert_error(error: dict[str, Any], code: str, request_id: str | None) -> None:
    extensions = error.get("extensions") or {}
    assert extensions.get("code") == code, error
    assert SECRET not in orjson.dumps(error).decode()
    if code == "INTERNAL":
        assert error["message"] == "Internal server error"
        assert extensions["requestId"]
        if request_id is not None:
            assert extensions["requestId"] == request_id
    else:
        assert error["message"] == "The database is unavailable; retry later"
        assert extensions["retryAfter"] == UNAVAILABLE_RETRY_AFTER_SECONDS


def assert_answer(response: httpx.Response, code: str, errors: int = 1) -> list[dict[str, Any]]:
    assert SECRET not in response.text
    body = response.json()
    listed: list[dict[str, Any]] = body["errors"] if isinstance(body, dict) else []
    assert len(listed) == errors, body
    request_id = response.headers.get("X-Request-Id")
    for error in listed:
        assert_error(error, code, request_id)
    if code == "UNAVAILABLE":
        assert response.status_code == 503, response.text
        assert response.headers["Retry-After"] == str(UNAVAILABLE_RETRY_AFTER_SECONDS)
    else:
        assert response.status_code == 200, response.text
        assert "Retry-After" not in response.headers
    return listed


def assert_logged(caplog: pytest.LogCaptureFixture, code: str) -> None:
    if code == "INTERNAL":
        records = [r for r in caplog.records if r.getMessage().startswith("internal error")]
        assert records, caplog.text
        assert any(r.exc_info and SECRET in str(r.exc_info[1]) for r in records), caplog.text
    else:
        assert any(r.getMessage().startswith("database unavailable") for r in caplog.records), caplog.text


@pytest.mark.parametrize("where", WHERE)
@pytest.mark.parametrize("failure", list(FAILURES))
def test_a_failed_draw_on_the_lean_query_path_is_coded(
    server: ServerThread,
    lean: LeanGraphQL,
    admin: Actor,
    monkeypatch: pytest.MonkeyPatch,
    logged: pytest.LogCaptureFixture,
    where: str,
    failure: str,
) -> None:
    code = FAILURES[failure][1]
    query = query_for(where)
    # Parsed and validated by this first request: the lean path runs the next.
    assert send(server, admin, {"query": query}).status_code == 200
    calls = make_fail(monkeypatch, where, failure)
    ran = lean.operations.ran
    response = send(server, admin, {"query": query}, **{"X-Request-Id": f"hook-{failure}"})
    assert lean.operations.ran == ran + 1  # graphql.lean_operation ran it
    assert calls  # the draw failed
    (error,) = assert_answer(response, code)
    assert error["extensions"].get("requestId") in (None, f"hook-{failure}")
    assert_logged(logged, code)


@pytest.mark.parametrize("where", WHERE)
@pytest.mark.parametrize("failure", ["runtime", "connection-lost"])
def test_a_failed_draw_gets_the_same_answer_from_the_lean_path_and_strawberrys(
    server: ServerThread,
    lean: LeanGraphQL,
    admin: Actor,
    monkeypatch: pytest.MonkeyPatch,
    where: str,
    failure: str,
) -> None:
    query = query_for(where)
    assert send(server, admin, {"query": query}).status_code == 200  # parsed and validated
    make_fail(monkeypatch, where, failure)
    accepts = [{}, {"Accept": "application/graphql-response+json"}]
    requests = [lean_request({"query": query}, key=admin.api_key, **accept) for accept in accepts]
    compared, served = both_ways(server, lean, requests)
    assert compared == served == len(requests)


@pytest.mark.parametrize("where", WHERE)
@pytest.mark.parametrize("failure", ["runtime", "connection-lost", "unreachable"])
def test_a_mutation_whose_draw_failed_is_coded_and_did_not_run(
    server: ServerThread,
    admin: Actor,
    monkeypatch: pytest.MonkeyPatch,
    logged: pytest.LogCaptureFixture,
    loop: Loop,
    dsn: str,
    where: str,
    failure: str,
) -> None:
    code = FAILURES[failure][1]
    before = count_rows(loop, dsn, "conversation")
    calls = make_fail(monkeypatch, where, failure)
    # With `principal` failing, a mutation fails already in QueryLimits' check of the caller (coded there).
    mutation = 'mutation HookFault { conversationCreate(input: {title: "half done?"}) { id } }'
    response = send(server, admin, {"query": mutation})
    assert_answer(response, code)
    body = response.json()
    assert body.get("data") is None
    assert calls
    monkeypatch.undo()
    assert count_rows(loop, dsn, "conversation") == before  # nothing half-done
    assert_logged(logged, code)


@pytest.mark.parametrize("where", WHERE)
@pytest.mark.parametrize("failure", ["runtime", "pool-closed"])
def test_a_failed_draw_in_a_batch_is_coded_per_operation(
    batching: ServerThread,
    admin: Actor,
    monkeypatch: pytest.MonkeyPatch,
    where: str,
    failure: str,
) -> None:
    code = FAILURES[failure][1]
    make_fail(monkeypatch, where, failure)
    query = query_for(where)
    response = send(batching, admin, [{"query": query}, {"query": "query Other { errorCodes }"}])
    assert SECRET not in response.text
    body = response.json()
    assert isinstance(body, list) and len(body) == 2, body
    for answer in body:
        (error,) = answer["errors"]
        assert_error(error, code, None)
    if code == "UNAVAILABLE":
        assert response.status_code == 503
        assert response.headers["Retry-After"] == str(UNAVAILABLE_RETRY_AFTER_SECONDS)
    else:
        assert response.status_code == 200


def each_answered_coded(client: WsClient, operations: dict[str, str], code: str) -> None:
    """Sends each operation on the socket: each is answered with one coded error, without the secret."""
    for op_id, document in operations.items():
        client.send({"id": op_id, "type": "subscribe", "payload": {"query": document}})
        message = ws_answer(client, op_id)
        assert SECRET not in orjson.dumps(message).decode()
        errors = ws_errors(message)
        assert len(errors) == 1, message
        assert_error(errors[0], code, None)


def ws_answer(client: WsClient, op_id: str) -> dict[str, Any]:
    """The `error` or `next` message for `op_id`, and checks `complete` follows a `next`."""
    while True:
        message = client.receive(timeout=20)
        if message.get("id") == op_id:
            break
    assert message["type"] in ("error", "next"), message
    if message["type"] == "next":
        assert client.receive(timeout=20) == {"id": op_id, "type": "complete"}
    return message


def ws_errors(message: dict[str, Any]) -> list[dict[str, Any]]:
    payload = message["payload"]
    errors: list[dict[str, Any]] = payload if message["type"] == "error" else payload["errors"]
    return errors


@pytest.mark.parametrize("where", WHERE)
@pytest.mark.parametrize("failure", ["runtime", "connection-lost"])
def test_a_failed_draw_over_a_websocket_is_coded(
    server: ServerThread,
    admin: Actor,
    ws: Callable[..., WsClient],
    monkeypatch: pytest.MonkeyPatch,
    logged: pytest.LogCaptureFixture,
    loop: Loop,
    dsn: str,
    where: str,
    failure: str,
) -> None:
    code = FAILURES[failure][1]
    client = ws(admin)  # connected (and authenticated) before the draw fails
    before = count_rows(loop, dsn, "conversation")
    calls = make_fail(monkeypatch, where, failure)
    operations = {
        "q": query_for(where),
        "m": 'mutation { conversationCreate(input: {title: "half done?"}) { id } }',
    }
    each_answered_coded(client, operations, code)
    assert calls
    monkeypatch.undo()
    assert count_rows(loop, dsn, "conversation") == before
    assert_logged(logged, code)
    # The socket stays usable.
    client.send({"id": "after", "type": "subscribe", "payload": {"query": "{ viewer { id } }"}})
    message = ws_answer(client, "after")
    assert message["type"] == "next" and message["payload"]["data"]["viewer"]["id"] == admin.user_id


def fail_validation(monkeypatch: pytest.MonkeyPatch, failure: str) -> list[int]:
    """Makes another hook raise: QueryLimits' `on_validate` (and the lean path's same check)."""
    from threadline.graphql import limits

    build = FAILURES[failure][0]
    calls: list[int] = []

    async def fail(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        raise build()

    monkeypatch.setattr(limits, "check_document", fail)
    return calls


@pytest.mark.parametrize("failure", ["runtime", "connection-lost"])
def test_any_hook_that_fails_is_coded_on_both_http_paths_alike(
    server: ServerThread,
    lean: LeanGraphQL,
    admin: Actor,
    monkeypatch: pytest.MonkeyPatch,
    logged: pytest.LogCaptureFixture,
    failure: str,
) -> None:
    code = FAILURES[failure][1]
    query = "query HookFaultValidate { viewer { id email } }"
    assert send(server, admin, {"query": query}).status_code == 200  # parsed and validated
    calls = fail_validation(monkeypatch, failure)
    ran = lean.operations.ran
    assert_answer(send(server, admin, {"query": query}), code)  # the lean path
    assert lean.operations.ran == ran + 1
    mutation = 'mutation { conversationCreate(input: {title: "half done?"}) { id } }'
    assert_answer(send(server, admin, {"query": mutation}), code)  # strawberry's
    assert len(calls) == 2
    assert_logged(logged, code)
    compared, served = both_ways(server, lean, [lean_request({"query": query}, key=admin.api_key)])
    assert compared == served == 1


@pytest.mark.parametrize("failure", ["runtime", "connection-lost"])
def test_any_hook_that_fails_over_a_websocket_is_coded(
    admin: Actor,
    ws: Callable[..., WsClient],
    monkeypatch: pytest.MonkeyPatch,
    logged: pytest.LogCaptureFixture,
    failure: str,
) -> None:
    code = FAILURES[failure][1]
    client = ws(admin)
    calls = fail_validation(monkeypatch, failure)
    operations = {
        "q": "{ viewer { id } }",
        "m": 'mutation { conversationCreate(input: {title: "half done?"}) { id } }',
        "s": "subscription { viewerEvents { cursor } }",
    }
    each_answered_coded(client, operations, code)
    assert len(calls) == len(operations)
    assert_logged(logged, code)
    monkeypatch.undo()
    client.send({"id": "after", "type": "subscribe", "payload": {"query": "{ viewer { id } }"}})
    message = ws_answer(client, "after")
    assert message["type"] == "next" and message["payload"]["data"]["viewer"]["id"] == admin.user_id
