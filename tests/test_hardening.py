"""Transport hardening: request ids, metrics, production mode, CORS and WebSocket origins, token expiry on a
socket, and SIGTERM with a run in progress."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import jwt
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests import harness
from tests.harness import METRICS_HEADERS, TEST_JWT_SECRET, Actor, Client, ServerThread, free_port
from tests.ws import PROTOCOL, WsClient

APP_ORIGIN = "https://app.example"


@pytest.fixture(scope="module")
def production(dsn: str) -> Iterator[ServerThread]:
    srv = ServerThread(
        harness.test_settings(
            dsn,
            migrate_on_start=False,
            production=True,
            introspection=False,
            cors_origins=(APP_ORIGIN,),
            ws_allowed_origins=(APP_ORIGIN,),
        )
    )
    srv.start()
    yield srv
    srv.stop()


def metric(text: str, name: str, labels: str = "") -> float:
    match = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


# --- request ids ---------------------------------------------------------------------------------


def test_every_response_carries_a_request_id(server: ServerThread) -> None:
    first = httpx.get(f"{server.url}/healthz")
    second = httpx.get(f"{server.url}/healthz")
    assert re.fullmatch(r"[0-9a-f]{16}", first.headers["X-Request-Id"])
    assert first.headers["X-Request-Id"] != second.headers["X-Request-Id"]


def test_a_request_id_sent_by_the_client_is_kept(server: ServerThread, admin: Actor) -> None:
    response = httpx.post(
        f"{server.url}/graphql",
        json={"query": "{ viewer { id } }"},
        headers={"Authorization": f"Bearer {admin.api_key}", "X-Request-Id": "trace-42.a:b"},
    )
    assert response.headers["X-Request-Id"] == "trace-42.a:b"


def test_every_error_carries_the_request_id(server: ServerThread, admin: Actor) -> None:
    headers = {"Authorization": f"Bearer {admin.api_key}", "X-Request-Id": "trace-errors-1"}
    cases = [
        {"query": "{ nope }"},  # validation
        {"query": 'query { conversation(id: "cnv_00000000000000000000000000000000") { id } }'},  # NOT_FOUND
        {"query": 'query { conversation(id: "garbage") { id } }'},  # BAD_USER_INPUT from a resolver
    ]
    for body in cases:
        response = httpx.post(f"{server.url}/graphql", json=body, headers=headers)
        errors = response.json()["errors"]
        assert errors and all(e["extensions"]["requestId"] == "trace-errors-1" for e in errors), errors
    too_big = httpx.post(
        f"{server.url}/graphql", content=b"{" + b" " * (11 * 1024 * 1024) + b"}", headers=headers
    )
    assert too_big.status_code == 413
    assert too_big.json()["errors"][0]["extensions"]["requestId"] == "trace-errors-1"


def test_errors_on_a_socket_carry_its_request_id(server: ServerThread, admin: Actor) -> None:
    ws = WsClient(server.ws_url, admin.api_key)
    try:
        ws.subscribe(
            'subscription { conversationEvents(conversationId: "cnv_00000000000000000000000000000000") { type } }'
        )
        message = ws.receive()
        error = message["payload"][0] if message["type"] == "error" else message["payload"]["errors"][0]
        assert error["extensions"]["code"] == "NOT_FOUND"
        assert re.fullmatch(r"[0-9a-f]{16}", error["extensions"]["requestId"])
    finally:
        ws.ws.close()


def test_a_request_id_that_is_not_a_plain_token_is_replaced(server: ServerThread) -> None:
    response = httpx.get(f"{server.url}/healthz", headers={"X-Request-Id": "evil\tid with spaces"})
    assert re.fullmatch(r"[0-9a-f]{16}", response.headers["X-Request-Id"])


# --- metrics -------------------------------------------------------------------------------------


def test_metrics_count_requests_and_errors_by_code(
    server: ServerThread, admin: Actor, anonymous: Client
) -> None:
    before = httpx.get(f"{server.url}/metrics", headers=METRICS_HEADERS).text
    anonymous.execute("{ viewer { id } }")
    admin.client.execute("{ nope }")
    admin.client.execute("{ nope }")
    after = httpx.get(f"{server.url}/metrics", headers=METRICS_HEADERS)
    assert after.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = after.text
    code = 'threadline_graphql_errors_total{code="%s"}'
    assert metric(text, code % "UNAUTHENTICATED") - metric(before, code % "UNAUTHENTICATED") == 1
    assert metric(text, code % "BAD_USER_INPUT") - metric(before, code % "BAD_USER_INPUT") == 2
    ok = 'threadline_http_requests_total{status="200",transport="http"}'
    assert metric(text, ok) - metric(before, ok) == 3
    for family in (
        "threadline_db_pool_max",
        "threadline_events_published_total",
        "threadline_events_delivered_total",
    ):
        assert f"# TYPE {family} " in text
    assert 'threadline_runs{state="QUEUED"} ' in text


def test_metrics_show_active_subscriptions(server: ServerThread, admin: Actor) -> None:
    def active() -> float:
        return metric(
            httpx.get(f"{server.url}/metrics", headers=METRICS_HEADERS).text,
            "threadline_subscriptions_active",
        )

    before = active()
    ws = WsClient(server.ws_url, admin.api_key)
    try:
        ws.subscribe("subscription { viewerEvents { type } }")
        deadline = time.monotonic() + 10
        while active() != before + 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert active() == before + 1
    finally:
        ws.ws.close()


# --- production mode -----------------------------------------------------------------------------


def test_production_mode_gives_no_field_suggestions(production: ServerThread, admin: Actor) -> None:
    client = Client(production.url, admin.api_key)
    try:
        assert client.error("{ viewr { id } }")["message"] == "Cannot query field 'viewr' on type 'Query'."
    finally:
        client.close()


def test_development_mode_gives_field_suggestions(admin: Actor) -> None:
    assert admin.client.error("{ viewr { id } }")["message"] == (
        "Cannot query field 'viewr' on type 'Query'. Did you mean 'viewer'?"
    )


def test_introspection_can_be_turned_off(production: ServerThread, admin: Actor) -> None:
    client = Client(production.url, admin.api_key)
    try:
        error = client.error("{ __schema { queryType { name } } }")
        assert error["extensions"] == {"code": "BAD_USER_INPUT"}
        assert "introspection" in error["message"]
        assert client.ok("{ viewer { __typename } }") == {"viewer": {"__typename": "User"}}
    finally:
        client.close()


def test_graphiql_is_served_in_development_and_not_in_production(
    server: ServerThread, production: ServerThread
) -> None:
    browser = {"Accept": "text/html"}
    dev = httpx.get(f"{server.url}/graphql", headers=browser)
    assert dev.status_code == 200 and "graphiql" in dev.text.lower()
    prod = httpx.get(f"{production.url}/graphql", headers=browser)
    assert "graphiql" not in prod.text.lower()


# --- CORS and WebSocket origins ------------------------------------------------------------------


def test_cors_allows_listed_origins_only(production: ServerThread) -> None:
    def preflight(origin: str) -> httpx.Response:
        return httpx.options(
            f"{production.url}/graphql",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type",
            },
        )

    allowed = preflight(APP_ORIGIN)
    assert allowed.status_code == 200
    assert allowed.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    refused = preflight("https://evil.example")
    assert refused.status_code == 400
    assert "Access-Control-Allow-Origin" not in refused.headers


def test_cors_is_off_without_an_allow_list(server: ServerThread) -> None:
    response = httpx.post(
        f"{server.url}/graphql", json={"query": "{ __typename }"}, headers={"Origin": APP_ORIGIN}
    )
    assert "Access-Control-Allow-Origin" not in response.headers


def test_websocket_from_an_unlisted_origin_is_refused_before_accept(production: ServerThread) -> None:
    ws_url = f"ws://127.0.0.1:{production.port}/graphql"
    with pytest.raises(InvalidStatus) as refused:
        connect(ws_url, subprotocols=[PROTOCOL], origin="https://evil.example", open_timeout=10)  # type: ignore[arg-type]
    assert refused.value.response.status_code == 403


def test_websocket_from_a_listed_origin_or_without_origin_is_accepted(
    production: ServerThread, admin: Actor
) -> None:
    ws_url = f"ws://127.0.0.1:{production.port}/graphql"
    with connect(ws_url, subprotocols=[PROTOCOL], origin=APP_ORIGIN, open_timeout=10) as ws:  # type: ignore[arg-type]
        ws.send(
            json.dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {admin.api_key}"}})
        )
        assert '"connection_ack"' in str(ws.recv(timeout=10))
    client = WsClient(ws_url, admin.api_key)  # no Origin header: not a browser
    client.ws.close()


# --- token expiry on a socket --------------------------------------------------------------------


def test_a_socket_is_closed_with_4401_when_its_token_expires(server: ServerThread, admin: Actor) -> None:
    token = jwt.encode(
        {"sub": "short-lived", "tenant": admin.tenant_id, "exp": int(time.time()) + 2},
        TEST_JWT_SECRET,
        algorithm="HS256",
    )
    ws = WsClient(server.ws_url, token)
    try:
        ws.subscribe("subscription { viewerEvents { type } }")
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                ws.receive(timeout=15)
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4401, "token expired")
    finally:
        ws.ws.close()


def test_a_socket_authenticated_by_api_key_stays_open(server: ServerThread, admin: Actor) -> None:
    ws = WsClient(server.ws_url, admin.api_key)
    try:
        ws.send({"type": "ping"})
        assert ws.ws.recv(timeout=10) == '{"type":"pong"}'
    finally:
        ws.ws.close()


# --- graceful shutdown ---------------------------------------------------------------------------


def _serve(dsn: str, **env: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "threadline.cli", "serve", "--port", str(port)],
        env={**os.environ, "DATABASE_URL": dsn, "THREADLINE_MIGRATE_ON_START": "false", **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.1)


def test_sigterm_closes_sockets_with_1012_and_returns_the_run_in_progress_to_the_queue(
    admin: Actor, server: ServerThread, dsn: str
) -> None:
    queue = f"q{time.monotonic_ns()}"  # only the process under test takes runs from it
    proc, url = _serve(dsn, THREADLINE_RUN_QUEUE=queue, THREADLINE_ECHO_DELAY_SECONDS="0.2")
    try:
        client = Client(url, admin.api_key)
        cid = client.ok('mutation { conversationCreate(input: {title: "t"}) { id } }')["conversationCreate"][
            "id"
        ]
        words = " ".join(f"w{i}" for i in range(200))
        mid = client.ok(
            "mutation($c: ID!, $t: String!) { threadStart(conversationId: $c, input: {content: $t}) { id } }",
            {"c": cid, "t": words},
        )["threadStart"]["id"]
        run = client.ok("mutation($m: ID!) { runCreate(input: {messageId: $m}) { id } }", {"m": mid})[
            "runCreate"
        ]
        query = "query($r: ID!) { run(id: $r) { status attempt } }"
        deadline = time.monotonic() + 30
        while admin.client.ok(query, {"r": run["id"]})["run"]["status"] != "IN_PROGRESS":
            assert time.monotonic() < deadline, "the run never started"
            time.sleep(0.05)
        ws = WsClient(f"ws://{url.removeprefix('http://')}/graphql", admin.api_key)
        ws.subscribe("subscription { viewerEvents { type } }")
        client.close()

        proc.send_signal(signal.SIGTERM)
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                ws.receive(timeout=20)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
        # uvicorn re-raises the signal once its graceful shutdown (lifespan included) is done.
        assert proc.wait(timeout=30) == -signal.SIGTERM
        # Back in its queue (attempt 1 ended), for any process serving that queue to take up.
        assert admin.client.ok(query, {"r": run["id"]}) == {"run": {"status": "QUEUED", "attempt": 1}}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
