"""Attacks on the lean POST /graphql (graphql/http_fast.py, app.py's front door): each request is answered as the
stock view answers it (tests/test_http_lean.py's comparison), with raw header lists (duplicates) and raw bodies."""

from __future__ import annotations

import asyncio
import re
import socket
from typing import Any

import httpx
import orjson

from tests.harness import Actor, ServerThread
from threadline.graphql.http_fast import LeanGraphQL
from threadline.graphql.view import over_limit

MOVING = {"ratelimit-remaining", "ratelimit-reset", "date"}
Raw = tuple[str, str, list[tuple[str, str]], bytes]  # method, path, headers, body


def _answer(client: httpx.Client, request: Raw) -> tuple[int, list[tuple[str, str]], bytes]:
    method, path, headers, body = request
    response = client.request(method, path, headers=headers, content=body)
    listed = [
        (name.decode().lower(), "" if name.decode().lower() in MOVING else value.decode())
        for name, value in response.headers.raw
    ]
    return response.status_code, listed, response.content


def compare(server: ServerThread, lean: LeanGraphQL, requests: list[Raw]) -> list[Any]:
    """The requests whose lean answer differs from the view's, or moves between two lean requests (none of these
    should: rate-limit counters and dates are compared by name only)."""
    differ = []
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for request in requests:
            lean.enabled = False
            _answer(client, request)  # first-time work (a token's user provisioned, caches filled) is done
            stock = _answer(client, request)
            lean.enabled = True
            first = _answer(client, request)
            again = _answer(client, request)
            if first != again:  # the answer moves between requests
                differ.append((request, "moving", first, again))
            elif first != stock:
                differ.append((request, stock, first))
    return differ


def raw(body: Any, key: str | None, *headers: tuple[str, str], path: str = "/graphql") -> Raw:
    listed = [("X-Request-Id", "attack"), *headers]
    if not any(name.lower() == "content-type" for name, _ in headers):
        listed.append(("Content-Type", "application/json"))
    if key is not None:
        listed.append(("Authorization", f"Bearer {key}"))
    return "POST", path, listed, body if isinstance(body, bytes) else orjson.dumps(body)


def _raw_exchange(server: ServerThread, request: bytes) -> bytes:
    """One request on its own connection, as sent; the response's bytes without its Date header."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(request)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return re.sub(rb"date: [^\r]*\r\n", b"", received)


def test_an_upper_case_json_content_type_gets_the_views_refusal(
    server: ServerThread, lean: LeanGraphQL, admin: Actor
) -> None:
    """strawberry reads the media type case-sensitively (its 400 "Unsupported content type"); the lean path
    answered such a body 200 with data."""
    for content_type in ("APPLICATION/JSON", "Application/Json; charset=utf-8"):
        request = raw({"query": "{ viewer { id } }"}, admin.api_key, ("Content-Type", content_type))
        assert compare(server, lean, [request]) == []
        with httpx.Client(base_url=server.url, timeout=60) as client:
            assert _answer(client, request)[0] == 400


def test_a_content_length_of_thousands_of_digits_goes_through_the_apps_error_handling(
    server: ServerThread, lean: LeanGraphQL, admin: Actor
) -> None:
    """uvicorn (httptools) takes a Content-Length of 4,400 leading zeros; `int()` refuses more than 4,300 digits.
    The lean path's admission raised before the app's error handling and middleware (uvicorn's own 500, no
    request id); now the request is the view's, whose answer it is."""
    body = orjson.dumps({"query": "{ viewer { id } }"})
    request = (
        b"POST /graphql HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nX-Request-Id: attack\r\n"
        + f"Authorization: Bearer {admin.api_key}\r\nConnection: close\r\n".encode()
        + b"Content-Length: "
        + b"0" * 4400
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )
    lean.enabled = False
    stock = _raw_exchange(server, request)
    lean.enabled = True
    before = lean.served
    again = _raw_exchange(server, request)
    # Answered now, each draws from the rate limit: the remaining budget is the one header that differs.
    remaining = re.compile(rb"ratelimit-remaining: \d+\r\n")
    assert remaining.sub(b"", again) == remaining.sub(b"", stock)
    assert lean.served == before
    # The view reads the length past its zeros: the request is answered (it was uvicorn's 500, a traceback in the
    # log). (A length of thousands of significant digits never reaches the app: the server's parser refuses it,
    # 400; `over_limit` says 413 for any that would.)
    assert stock.startswith(b"HTTP/1.1 200"), stock[:200]
    assert b'"viewer"' in stock
    huge = request.replace(b"0" * 4400 + str(len(body)).encode(), b"9" * 4400)
    assert _raw_exchange(server, huge).startswith(b"HTTP/1.1 400"), _raw_exchange(server, huge)[:300]
    assert (
        over_limit("9" * 4400, 10)
        and over_limit("0" * 4400 + "11", 10)
        and not over_limit("0" * 4400 + "10", 10)
    )


def test_attacks(server: ServerThread, lean: LeanGraphQL, admin: Actor) -> None:
    key = admin.api_key
    viewer = {"query": "{ viewer { id } }"}
    requests = [
        raw(b'{"query": "\\u0073ubscription { viewerEvents { cursor } }"}', key),
        raw('{"query": "{ viewer { id } }"}'.encode("utf-16"), key),
        raw('{"query": "{ viewer { id } }"}'.encode("utf-8-sig"), key),
        raw(b'{"query": "{ viewer { email } }", "query": "{ viewer { id } }"}', key),
        raw(
            {
                "query": "query($n: Int) { conversations(first: $n) { totalCount } }",
                "variables": {"n": 1e300},
            },
            key,
        ),
        raw(
            b'{"query": "query($n: Int) { conversations(first: $n) { totalCount } }", "variables": {"n": 1e400}}',
            key,
        ),
        raw(
            b'{"query": "query($n: Int) { conversations(first: $n) { totalCount } }", "variables": {"n": 99999999999999999999999}}',
            key,
        ),
        raw({"query": "query A { viewer { id } } query B { viewer { email } }"}, key),
        raw({"query": "query A { viewer { id } } mutation B { presenceHeartbeat }"}, key),
        raw(
            {"query": "mutation B { presenceHeartbeat } query A { viewer { id } }", "operationName": "A"}, key
        ),
        raw({"query": "query A { viewer { id } }", "operationName": ""}, key),
        raw(viewer, key, ("Content-Type", "text/plain"), ("Content-Type", "application/json")),
        raw(viewer, key, ("Content-Type", "application/json"), ("Content-Type", "text/plain")),
        raw(viewer, key, ("Content-Type", "APPLICATION/JSON; charset=latin-1")),
        raw(viewer, key, ("Content-Type", "application/json; charset=utf-16")),
        raw(viewer, key, ("Content-Type", "application/json, text/plain")),
        raw(viewer, key, ("Content-Encoding", "gzip")),
        raw(viewer, key, ("Accept", "text/html"), ("Accept", "application/json")),
        raw(viewer, key, ("Accept", "application/json"), ("Accept", "text/event-stream")),
        raw(viewer, key, ("Accept", "application/*")),
        raw(viewer, key, ("Accept", "application/json;q=0, application/graphql-response+json;q=0")),
        raw(viewer, key, ("Accept", "text/event-stream")),
        raw(viewer, key, ("Accept", "application/json; q=abc")),
        raw(viewer, None, ("Authorization", "Bearer nope"), ("Authorization", f"Bearer {key}")),
        raw(viewer, key, ("Authorization", "Bearer nope")),
        raw(viewer, None, ("Authorization", f"bearer {key}")),
        raw(viewer, None, ("Authorization", f"Bearer  {key}")),
        raw(viewer, key, path="/graphql?query=%7B__typename%7D"),
        raw(viewer, key, path="/graphql/"),
        raw(b'{"query": "{ viewer { id } }"} trailing', key),
        raw({"query": "{ viewer { id } }", "variables": []}, key),
        raw({"query": "{ viewer { id } }", "variables": {}}, key),
        raw({"query": "{ viewer { id } }", "operationName": None}, key),
        raw({"query": ""}, key),
        raw({"query": "   "}, key),
        raw({"query": "# only a comment"}, key),
        raw({"query": "fragment F on User { id }"}, key),
        raw({"query": "query { ...F } fragment F on Query { viewer { id } }"}, key),
        raw(
            {"query": "query($s: Boolean!) { viewer { id email @skip(if: $s) } }", "variables": {"s": True}},
            key,
        ),
        raw(
            {"query": "query($s: Boolean!) { viewer { id email @skip(if: $s) } }", "variables": {"s": "yes"}},
            key,
        ),
        raw({"query": "{ __schema { queryType { name } } }"}, key),
        raw({"query": '{ __type(name: "User") { name } }'}, key),
        raw({"query": "{ a: viewer { id } b: viewer { id } }"}, key),
        raw({"query": "{ viewer { id } viewer { email } }"}, key),
        raw({"query": '{ node(id: "usr_00000000000000000000000000000000") { id } }'}, key),
        raw({"query": "{ viewer { id } }", "variables": {"unused": "\u00e9\U0001f600"}}, key),
        raw(
            {
                "query": "query ($t: [String!]) { conversations(tags: $t) { totalCount } }",
                "variables": {"t": ["x"] * 5000},
            },
            key,
        ),
        raw({"query": "{ viewer @include(if: false) { id } }"}, key),
        raw({"query": "{ viewer { id } } " + "#" * 20000}, key),
        raw({"query": "{ " + "a: __typename " * 2000 + "}"}, key),
        raw({"query": "{ viewer { id } }", "extensions": None}, key),
        raw({"query": "{ viewer { id } }", "operationName": "X", "variables": None}, key),
        raw(b'{"query": "{ viewer { id } }\xff"}', key),
        raw(b'{"query": "{ viewer { id } }\\u0000"}', key),
        raw(b'{"query": "{ viewer { id } }", "variables": {"a": NaN, "b": Infinity, "c": -Infinity}}', key),
        raw(
            b'{"query": "query($n: Int) { conversations(first: $n) { totalCount } }", "variables": {"n": NaN}}',
            key,
        ),
        raw(
            b'{"query": "query($n: Int) { conversations(first: $n) { totalCount } }", "variables": {"n": 1}, "variables": {"n": 500}}',
            key,
        ),
        raw({"query": "{ viewer { id } }" + " { viewer { id } }" * 400}, key),
        raw({"query": "query Q { viewer { id } }", "operationName": "Q\u0000"}, key),
        raw({"query": "query($id: ID!) { conversation(id: $id) { id } }", "variables": {"id": ["a"]}}, key),
        raw(
            {"query": "query($id: ID!) { conversation(id: $id) { id } }", "variables": {"id": {"a": 1}}}, key
        ),
        raw(
            {
                "query": "query($id: ID!) { conversation(id: $id) { id } }",
                "variables": {"id": "\u00e9" * 10000},
            },
            key,
        ),
    ]
    differ = compare(server, lean, requests)
    for request, stock, first in differ:
        print("DIFF", request[1], request[2], request[3][:120])
        print("  stock", stock[0], stock[1], stock[2][:300])
        print("  lean ", first[0], first[1], first[2][:300])
    assert not differ


SMALL = {
    "query_max_depth": 5,
    "query_max_aliases": 3,
    "query_max_tokens": 80,
    "query_max_cost": 300,
    "request_max_bytes": 4000,
    "production": True,
    "introspection": False,
    "rate_limit_requests": 60,
    "rate_limit_window_seconds": 3600,
}


def test_limits_and_rate_limits(dsn: str, admin: Actor) -> None:
    from tests.harness import test_settings

    small = ServerThread(test_settings(dsn, migrate_on_start=False, **SMALL))
    small.start()
    try:
        endpoint: LeanGraphQL = small.app.state.graphql_http
        key = admin.api_key
        page = (
            "query($n: Int) { conversations(first: $n) { nodes { id messages(first: $n) { totalCount } } } }"
        )
        requests = [
            raw({"query": page, "variables": {"n": 2}}, key),
            raw({"query": page, "variables": {"n": 100}}, key),
            raw({"query": page, "variables": {"n": 101}}, key),
            raw({"query": page, "variables": {"n": 2}}, key),
            raw({"query": "{ a: viewer { id } b: viewer { id } c: viewer { id } d: viewer { id } }"}, key),
            raw({"query": "{ conversations { edges { node { owner { team } } } } }"}, key),
            raw({"query": "{ conversations { nodes { owner { id } } } }"}, key),
            raw({"query": "{ viewer { emial } }"}, key),
            raw({"query": "{ __schema { types { name } } }"}, key),
            raw({"query": '{ __type(name: "User") { name } }'}, key),
            raw({"query": "{ __typename }"}, None),
            raw({"query": "{ viewer { id } }"}, None),
            raw({"query": "{ viewer { " + "id " * 90 + "} }"}, key),
            raw(
                {
                    "query": "query($t: [String!]) { conversations(tags: $t) { totalCount } }",
                    "variables": {"t": ["x"] * 300},
                },
                key,
            ),
            raw({"query": "{ viewer { id } }", "variables": {"pad": "x" * 5000}}, key),
            raw(
                {
                    "query": "query($s: ConversationStatus) { conversations(status: $s) { totalCount } }",
                    "variables": {"s": "ACTIV"},
                },
                key,
            ),
            raw({"query": "{ conversations(status: ACTIV) { totalCount } }"}, key),
            raw(
                {
                    "query": "query($i: ConversationSearchInput!) { search(input: $i) { totalCount } }",
                    "variables": {"i": {"qurey": "x"}},
                },
                key,
            ),
            raw(
                {
                    "query": "query($i: ConversationCreateInput!) { viewer { id } }",
                    "variables": {"i": {"titel": "x"}},
                },
                key,
            ),
            raw({"query": "{ conversation(id: 5) { id } }"}, key),
            raw({"query": '{ conversation(id: "x") { titel } }'}, key),
        ]
        differ = compare(small, endpoint, requests)
        for request, stock, first in differ:
            print("DIFF", request[2], request[3][:160])
            print("  stock", stock[0], stock[1], stock[2][:400])
            print("  lean ", first[0], first[1], first[2][:400])
        assert not differ
        # Past the budget: 429 with its headers, both ways.
        viewer = raw({"query": "{ viewer { id } }"}, key)
        with httpx.Client(base_url=small.url, timeout=60) as client:
            for _ in range(80):
                if _answer(client, viewer)[0] == 429:
                    break
        grj = ("Accept", "application/graphql-response+json")
        refused = [
            viewer,
            raw({"query": "{ __typename }"}, key),
            raw({"query": "{ viewer { id } }"}, key, grj),
            raw({"query": "{ viewer { nope } }"}, key, grj),
            raw({"query": "{ viewer { id } }"}, None, grj),
            raw({"query": "mutation { presenceHeartbeat }"}, key, grj),
        ]
        with httpx.Client(base_url=small.url, timeout=60) as client:
            assert _answer(client, refused[2])[0] == 429
        differ = compare(small, endpoint, refused)
        for request, stock, first in differ:
            print("DIFF", request[2], request[3][:160])
            print("  stock", stock[0], stock[1], stock[2][:400])
            print("  lean ", first[0], first[1], first[2][:400])
        assert not differ
    finally:
        small.stop()


def test_credentials_and_tenants(
    server: ServerThread, lean: LeanGraphQL, admin: Actor, make_tenant: Any
) -> None:
    from tests.test_auth import KEY_CREATE, KEY_REVOKE, token

    other = make_tenant()
    theirs = other.client.ok('mutation { conversationCreate(input: {title: "theirs"}) { id } }')
    their_id = theirs["conversationCreate"]["id"]
    made = admin.client.ok(KEY_CREATE, {"u": admin.user_id, "n": "revoked"})["apiKeyCreate"]
    admin.client.ok(KEY_REVOKE, {"k": made["apiKey"]["id"]})
    expired = token(admin.tenant_id, admin.user_id, "ADMIN", expires_in=-60)
    cross = token(other.tenant_id, admin.user_id, "ADMIN")
    by_id = "query($id: ID!) { conversation(id: $id) { id title } node(id: $id) { id } }"
    requests = [
        raw({"query": "{ viewer { id } }"}, made["secret"]),
        raw({"query": "{ __typename }"}, made["secret"]),
        raw({"query": "{ viewer { id } }"}, expired),
        raw({"query": "{ viewer { id } }"}, cross),
        raw({"query": by_id, "variables": {"id": their_id}}, admin.api_key),
        raw({"query": "{ conversations(first: 5) { totalCount nodes { id } } }"}, admin.api_key),
        raw({"query": by_id, "variables": {"id": their_id}}, other.api_key),
    ]
    differ = compare(server, lean, requests)
    for request, stock, first in differ:
        print("DIFF", request[2], request[3][:160])
        print("  stock", stock[0], stock[1], stock[2][:400])
        print("  lean ", first[0], first[1], first[2][:400])
    assert not differ


def _cancelled_while_reading(enabled: bool) -> tuple[str, list[Any]]:
    """A POST /graphql to the app itself, cancelled (as uvicorn cancels requests when the shutdown grace ends)
    while its body is coming in: how the app call ended and what it sent."""
    from tests.harness import test_settings
    from threadline.app import create_app

    app = create_app(test_settings("postgresql://nobody@127.0.0.1:1/none"))  # no lifespan: never connects
    app.state.graphql_http.enabled = enabled
    body = orjson.dumps({"query": "{ viewer { id } }"})
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/graphql",
        "raw_path": b"/graphql",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"x-request-id", b"attack"),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 2),
        "state": {},
    }
    sent: list[Any] = []

    async def main() -> str:
        started = asyncio.Event()

        async def receive() -> Any:
            if not started.is_set():
                started.set()
                return {"type": "http.request", "body": body[:5], "more_body": True}
            await asyncio.Event().wait()  # the rest never comes

        async def send(message: Any) -> None:
            sent.append(message)

        task = asyncio.create_task(app(scope, receive, send))
        await started.wait()
        await asyncio.sleep(0.01)
        task.cancel()
        try:
            await task
        except BaseException as exc:  # noqa: BLE001 - what escaped the app is the finding
            return repr(exc)
        return "answered"

    return asyncio.run(main()), sent


def test_a_request_cancelled_while_its_body_comes_in_gets_the_views_503() -> None:
    """The lean admission reads the body before the app's middleware; a cancellation there escaped the app
    (no answer: uvicorn's plain 500 or a dropped connection) where the view answers 503 UNAVAILABLE."""
    stock = _cancelled_while_reading(False)
    assert stock[0] == "answered" and stock[1][0]["status"] == 503
    assert _cancelled_while_reading(True) == stock


def test_metrics_count_the_same_both_ways(server: ServerThread, lean: LeanGraphQL, admin: Actor) -> None:
    """Operation, error, request and duration counts per request, the lean path's as the view's."""
    from tests.harness import METRICS_HEADERS

    def counts(client: httpx.Client) -> dict[str, float]:
        found = {}
        for line in client.get("/metrics", headers=METRICS_HEADERS).text.splitlines():
            name, _, value = line.rpartition(" ")
            if (
                line.startswith("threadline_")
                and ("_total" in name or "_count" in name)
                and "seconds_total" not in name
            ):
                found[name] = float(value)
        return found

    key = admin.api_key
    requests = [
        raw({"query": "query V { viewer { id } }"}, key),
        raw({"query": "query V { viewer { nope } }"}, key),
        raw({"query": "query V { viewer { id } }"}, None),
        raw({"query": 'query V { conversation(id: "cnv_00000000000000000000000000000000") { id } }'}, key),
        raw(
            {
                "query": "query V($n: Int) { conversations(first: $n) { totalCount } }",
                "variables": {"n": 1000},
            },
            key,
        ),
    ]
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for request in requests:
            _answer(client, request)
            deltas = []
            for enabled in (False, True):
                lean.enabled = enabled
                served = lean.served
                before = counts(client)
                for _ in range(3):
                    _answer(client, request)
                after = counts(client)
                assert (lean.served > served) is enabled
                deltas.append({k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)})
            assert deltas[0] == deltas[1], request
            assert deltas[0]


def test_the_content_types_known_up_front_are_what_the_check_computes() -> None:
    from strawberry.http.parse_content_type import parse_content_type

    from threadline.graphql import http_fast, over_http

    for content_type, known in list(http_fast._JSON_BODIES.items())[:4]:
        assert content_type is not None
        assert known == (
            over_http.is_json_body(content_type) and "application/json" in parse_content_type(content_type)[0]
        )


def test_words_in_variables_do_not_send_a_request_to_the_view(
    server: ServerThread, lean: LeanGraphQL, admin: Actor
) -> None:
    """Only the document can stream: a message's text that says "stream" or "defer" is answered here, and a
    document whose keyword hides behind a JSON escape still goes to the view."""
    key = admin.api_key
    texts = raw(
        {
            "query": "query($q: String) { viewer { id } }",
            "variables": {"q": "I'd defer to the Subscription stream"},
        },
        key,
    )
    escaped = raw(b'{"query": "\\u0073ubscription { viewerEvents { cursor } }"}', key)
    assert compare(server, lean, [texts, escaped]) == []
    with httpx.Client(base_url=server.url, timeout=60) as client:
        served = lean.served
        _answer(client, texts)
        assert lean.served == served + 1
        assert _answer(client, escaped)[0] == 400
        assert lean.served == served + 1


def test_a_lone_surrogate_in_a_utf16_utf32_or_raw_utf8_body_is_refused_before_the_database(
    server: ServerThread, lean: LeanGraphQL, admin: Actor
) -> None:
    """json.loads takes UTF-16 and UTF-32 bodies and decodes with "surrogatepass"; the check for lone surrogates
    looked for a `\\ud800` escape in the body as UTF-8 only: such bodies reached PostgreSQL (INTERNAL) on both
    paths. They are BAD_USER_INPUT before anything runs, like the UTF-8 escape."""
    text = (
        '{"query": "mutation($t: String!) { conversationCreate(input: {title: $t}) { id } }",'
        ' "variables": {"t": "a\\ud800b"}}'
    )
    bodies = [
        text.encode(),
        text.encode("utf-16"),
        text.encode("utf-16-le"),
        text.encode("utf-32"),
        text.replace("\\ud800", "\ud800").encode("utf-8", "surrogatepass"),  # the surrogate's own bytes
        text.replace("\\ud800", "\udc00").encode("utf-16-be", "surrogatepass"),
    ]
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for body in bodies:
            for enabled in (False, True):
                lean.enabled = enabled
                status, _, answer = _answer(client, raw(body, admin.api_key))
                assert status == 400, (body, answer)
                assert orjson.loads(answer)["errors"][0]["message"].startswith("Text must be valid Unicode")
    listed = admin.client.ok("{ conversations(first: 50) { totalCount } }")
    assert listed["conversations"]["totalCount"] == 0


def test_the_surrogate_check_walks_only_bodies_that_may_hold_one() -> None:
    from threadline.graphql import request_json

    plain = '{"a": "\u00e9 \u4e2d \U0001f600", "b": [1, 2]}'
    assert not request_json.may_hold_lone_surrogate(plain.encode())
    assert not request_json.may_hold_lone_surrogate(plain.encode("utf-8-sig"))
    assert not request_json.may_hold_lone_surrogate(b"")
    assert request_json.may_hold_lone_surrogate(b'{"a": "\\uD83D"}')
    assert request_json.may_hold_lone_surrogate(plain.encode("utf-16"))


def test_a_request_the_front_door_leaves_to_the_view_is_decoded_once_more_only(
    server: ServerThread, lean: LeanGraphQL, admin: Actor
) -> None:
    """The front door's admission decodes the body; a request it declines (one with `extensions`) went through the router to
    this endpoint's `__call__`, which read and decoded it a second time before the view's own decoding."""
    view = lean.view
    decoded: list[int] = []
    stock_parse = view.parse_json

    def counted(data: Any) -> Any:
        decoded.append(len(data))
        return stock_parse(data)

    view.parse_json = counted  # type: ignore[method-assign]
    try:
        declined = raw({"query": "{ viewer { id } }", "extensions": {}}, admin.api_key)
        with httpx.Client(base_url=server.url, timeout=60) as client:
            assert _answer(client, declined)[0] == 200
            assert len(decoded) == 2  # the front door's, the view's
            decoded.clear()
            assert _answer(client, raw({"query": "{ viewer { id } }"}, admin.api_key))[0] == 200
            assert len(decoded) == 1
    finally:
        del view.parse_json
