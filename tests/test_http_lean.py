"""The lean POST /graphql (graphql/http_fast.py) answers exactly what strawberry's HTTP view answers (issue 14).

The same requests go to one real server with the lean path on and off (`app.state.graphql_http`), and the
responses are compared: status, every header (names, order and values; only the rate-limit counters that move
between two requests are compared by name), and the body bytes. Each request is sent stock first (so its
document is parsed and validated, as a client's repeated request finds it: plain queries then run through
graphql.lean_operation), then lean twice; a response that differs between the two lean runs reads something
that moves and is skipped.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
from graphql import OperationDefinitionNode, parse, validate

from tests.harness import Actor, ServerThread
from tests.test_compiled_execution import SERVED, Ids, seeded, suite_documents, variables_for
from threadline.graphql.http_fast import LeanGraphQL

MOVING = {"ratelimit-remaining", "ratelimit-reset", "date"}  # compared by name only
Request = tuple[str, dict[str, str], bytes]  # method, headers, body


def answer(client: httpx.Client, request: Request) -> tuple[int, list[tuple[str, str]], bytes]:
    method, headers, body = request
    response = client.request(method, "/graphql", headers=headers, content=body)
    listed = [
        (name.decode().lower(), "" if name.decode().lower() in MOVING else value.decode())
        for name, value in response.headers.raw
    ]
    return response.status_code, listed, response.content


def both_ways(server: ServerThread, lean: LeanGraphQL, requests: list[Request]) -> tuple[int, int]:
    """Asserts the lean answer is the view's for every request whose answer is stable; returns (compared,
    answered by the lean path)."""
    compared = served = 0
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for request in requests:
            lean.enabled = False
            before = lean.served
            stock = answer(client, request)
            assert lean.served == before  # off means off
            lean.enabled = True
            first = answer(client, request)
            took_lean = lean.served > before
            again = answer(client, request)
            if first != again:  # the answer moves between requests (time, counters)
                continue
            assert first == stock, request
            compared += 1
            served += took_lean
    return compared, served


def post(body: Any, *, key: str | None, **headers: str) -> Request:
    sent = {"Content-Type": "application/json", "X-Request-Id": "lean-vs-view", **headers}
    if key is not None:
        sent["Authorization"] = f"Bearer {key}"
    return "POST", sent, body if isinstance(body, bytes) else orjson.dumps(body)


def test_every_query_of_the_test_suite_gets_the_views_answer_from_the_lean_path(
    server: ServerThread, lean: LeanGraphQL, admin: Actor, make_user: Callable[..., Actor]
) -> None:
    picker = Ids(seeded(admin, make_user(admin)), 3)
    accepts = [{}, {"Accept": "application/json"}, {"Accept": "application/graphql-response+json"}]
    requests: list[Request] = []
    for n, document in enumerate(suite_documents()):
        parsed = parse(document)
        for definition in parsed.definitions:
            if isinstance(definition, OperationDefinitionNode):
                name = definition.name.value if definition.name else None
                body: dict[str, Any] = {"query": document, "variables": variables_for(document, picker)}
                if name is not None or n % 2:
                    body["operationName"] = name
                requests.append(post(body, key=admin.api_key, **accepts[n % len(accepts)]))
    invalid = sum(1 for document in suite_documents() if validate(SERVED._schema, parse(document)))
    assert invalid > 0  # a test's deliberately invalid documents are compared too: validation errors
    ran = lean.operations.ran
    compared, served = both_ways(server, lean, requests)
    assert len(requests) > 150
    assert compared > 0.8 * len(requests)
    assert served > 0.8 * compared  # the rest mention subscription/defer/stream: the view's
    # Most are queries whose documents the stock request left parsed and validated: graphql.lean_operation's
    # (twice each: both lean requests); mutations, and documents with string literals, are strawberry's.
    assert lean.operations.ran - ran > served


def test_refusals_and_unusual_requests_get_the_views_answer(
    server: ServerThread, lean: LeanGraphQL, admin: Actor
) -> None:
    key = admin.api_key
    viewer = "query V { viewer { id email } }"
    big = server.app.state.services.settings.request_max_bytes + 10
    requests: list[Request] = [
        post({"query": viewer}, key=key),
        post({"query": viewer, "operationName": "V", "variables": None}, key=key),
        post({"query": viewer}, key=key, **{"Content-Type": "application/json; charset=utf-8"}),
        post({"query": viewer}, key=key, Accept="application/json;q=0.5, application/graphql-response+json"),
        post({"query": viewer}, key=key, Accept="*/*"),
        post({"query": viewer}, key=key, Accept="text/html"),  # 406
        post({"query": viewer}, key=key, Accept='multipart/mixed;subscriptionSpec="1.0", application/json'),
        post({"query": viewer}, key=key, **{"Content-Type": "text/plain"}),  # 415
        post({"query": viewer}, key=None),  # 401
        post({"query": viewer}, key="tlk_not_a_key"),
        post({"query": viewer, "operationName": "Other"}, key=key),  # no such operation
        post({"query": "{ viewer { id } "}, key=key),  # syntax error
        post({"query": "{ viewer { nope } }"}, key=key),  # validation error
        post({"query": "query($n: Int!) { conversations(first: $n) { totalCount } }"}, key=key),
        post(
            {"query": "query($n: Int!) { conversations(first: $n) { totalCount } }", "variables": {"n": "x"}},
            key=key,
        ),
        post({"query": None}, key=key),
        post({"variables": {}}, key=key),
        post({"query": 5}, key=key),
        post({"query": viewer, "variables": "nope"}, key=key),
        post({"query": viewer, "operationName": 7}, key=key),
        post({"query": viewer, "extensions": {}}, key=key),
        post({"query": viewer, "documentId": "sha256:00"}, key=key),
        post({"query": viewer, "unknown": 1}, key=key),
        post([{"query": viewer}, {"query": "{ viewer { email } }"}], key=key),  # a batch
        post(b"[]", key=key),
        post(b"17", key=key),
        post(b"{not json", key=key),
        post(b"", key=key),
        post(b'{"query": "{ viewer { id } }", "variables": {"x": "\\ud800"}}', key=key),  # lone surrogate
        post(b'{"query": "{ viewer { id } }", "variables": ' + b'{"a": ' * 300 + b"1" + b"}" * 301, key=key),
        post(b'{"query": "{ viewer { id } }", "variables": {"pad": "' + b"x" * big + b'"}}', key=key),
        post({"query": "subscription { viewerEvents { cursor } }"}, key=key),  # not over a plain POST
        post({"query": 'mutation { conversationCreate(input: {title: ""}) { id } }'}, key=key),
        post({"query": "{ __typename a: __typename }"}, key=key),
        post({"query": '{ conversation(id: "cnv_nope") { id } }'}, key=key),
        ("GET", {"Authorization": f"Bearer {key}", "X-Request-Id": "lean-vs-view"}, b""),
        (
            "PUT",
            {
                "Authorization": f"Bearer {key}",
                "Content-Type": "application/json",
                "X-Request-Id": "lean-vs-view",
            },
            orjson.dumps({"query": viewer}),
        ),
    ]
    chunked: Request = (
        "POST",
        {
            "Authorization": f"Bearer {key}",
            "Content-Type": "application/json",
            "X-Request-Id": "lean-vs-view",
        },
        orjson.dumps({"query": viewer}),
    )
    fronted = lean.fronted
    compared, served = both_ways(server, lean, requests)
    assert compared == len(requests)
    assert lean.fronted - fronted == 2 * served  # both lean requests, before Starlette's router (app.py)
    # The plain operations (whatever their outcome: data, a GraphQL error, 401, no such operation) are the lean
    # path's; everything refused before execution or shaped otherwise went to the view.
    assert served == 15
    with httpx.Client(
        base_url=server.url, timeout=60
    ) as client:  # a body without a Content-Length: the view's
        before = lean.served

        def chunks() -> Iterator[bytes]:
            yield chunked[2]

        response = client.post("/graphql", headers=chunked[1], content=chunks())
        assert response.status_code == 200 and lean.served == before
        assert response.json()["data"]["viewer"]["id"] == admin.user_id


def test_a_mutation_through_the_lean_path_writes_once_and_answers_as_the_view(
    server: ServerThread, lean: LeanGraphQL, admin: Actor
) -> None:
    create = 'mutation { conversationCreate(input: {title: "lean one"}) { id title status messageCount } }'
    request = post({"query": create}, key=admin.api_key)
    with httpx.Client(base_url=server.url, timeout=60) as client:
        lean.enabled = True
        before = lean.served
        first = answer(client, request)
        assert lean.served == before + 1
        lean.enabled = False
        stock = answer(client, request)
    ids = re.compile(rb"cnv_[0-9a-f]{32}")
    assert first[:2] == stock[:2]
    assert ids.sub(b"cnv_", first[2]) == ids.sub(b"cnv_", stock[2])
    listed = admin.client.ok("{ conversations(first: 50) { edges { node { title } } } }")
    titles = [edge["node"]["title"] for edge in listed["conversations"]["edges"]]
    assert titles.count("lean one") == 2  # one each: nothing ran twice


def test_a_response_over_the_byte_limit_gets_the_views_refusal(dsn: str, admin: Actor) -> None:
    from tests.harness import test_settings

    small = ServerThread(test_settings(dsn, migrate_on_start=False, response_max_bytes=3000))
    small.start()
    try:
        endpoint: LeanGraphQL = small.app.state.graphql_http
        requests = [
            post({"query": "{ __schema { types { name description } } }"}, key=admin.api_key),
            post({"query": "{ errorCodes viewer { id } }"}, key=admin.api_key),
        ]
        compared, served = both_ways(small, endpoint, requests)
        assert compared == served == len(requests)
        with httpx.Client(base_url=small.url, timeout=60) as client:
            refused = answer(client, requests[0])
        assert b'"limitName":"responseBytes"' in refused[2]  # the view's backstop, answered for the lean path
    finally:
        small.stop()


def test_cors_and_production_answers_of_the_lean_path_are_the_views(dsn: str, admin: Actor) -> None:
    from tests.harness import test_settings

    origin = "https://app.example"
    settings = test_settings(
        dsn, migrate_on_start=False, production=True, introspection=False, cors_origins=(origin,)
    )
    production = ServerThread(settings)
    production.start()
    try:
        endpoint: LeanGraphQL = production.app.state.graphql_http
        key = admin.api_key
        viewer = {"query": "query V { viewer { id email } }"}
        requests = [
            post(viewer, key=key, Origin=origin),
            post(viewer, key=key, Origin="https://evil.example"),
            post(viewer, key=key),
            post(viewer, key=None, Origin=origin),  # 401, with CORS headers
            post({"query": "{ viewer { emial } }"}, key=key, Origin=origin),  # no suggestion in production
            post({"query": "{ __schema { types { name } } }"}, key=key, Origin=origin),  # introspection off
            post({"query": '{ conversation(id: "cnv_nope") { id } }'}, key=key, Origin=origin),
        ]
        fronted, ran = endpoint.fronted, endpoint.operations.ran
        compared, served = both_ways(production, endpoint, requests)
        assert compared == served == len(requests)
        assert endpoint.fronted - fronted == 2 * served
        assert endpoint.operations.ran - ran >= 6  # the valid queries, twice each
        with httpx.Client(base_url=production.url, timeout=60) as client:
            allowed = answer(client, requests[0])
        assert ("access-control-allow-origin", origin) in allowed[1]
    finally:
        production.stop()


def test_the_lean_sub_response_is_strawberrys() -> None:
    from strawberry.asgi import GraphQL

    from threadline.graphql.http_fast import _sub_response

    stock = asyncio.run(GraphQL.get_sub_response(None, None))  # type: ignore[arg-type]  # reads neither
    lean = _sub_response()
    assert {k: v for k, v in vars(stock).items() if k != "_headers"} == vars(lean)
    assert stock.headers.raw == lean.headers.raw == []
    lean.headers["RateLimit-Limit"] = "5"
    assert lean.raw_headers == [(b"ratelimit-limit", b"5")]


def test_the_one_pass_runs_for_the_served_schema_only() -> None:
    from threadline.graphql.lean_operation import LeanOperations
    from threadline.graphql.tracing import traced
    from threadline.schema import build_schema

    assert LeanOperations(build_schema())._limits_class() is not None
    assert LeanOperations(build_schema(fast_execution=False))._limits_class() is not None
    # Another extension (tracing's spans): strawberry runs every operation, with it.
    assert LeanOperations(traced(build_schema()))._limits_class() is None
    schema = build_schema()
    operations = LeanOperations(schema)
    assert operations._limits_class() is not None
    schema.extensions = schema.extensions[:-1]  # one fewer: noticed on the next request
    assert operations._limits_class() is None
