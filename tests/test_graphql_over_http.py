"""GraphQL over HTTP (https://graphql.github.io/graphql-over-http/draft/), following the spec's examples: media
type negotiation, the status codes of application/graphql-response+json and application/json, no `data` entry
on request errors, for POST and GET (issue 21 item 1)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.harness import Actor, ServerThread, without_count
from tests.test_ratelimits import assign, profile

GRJ = "application/graphql-response+json"
GRJ_CONTENT_TYPE = "application/graphql-response+json; charset=utf-8"
JSON = "application/json"
# What Apollo Client 4 and urql send.
APOLLO_ACCEPT = "application/graphql-response+json,application/json;q=0.9"


def post(
    server: ServerThread,
    body: Any,
    accept: str | None,
    key: str | None = None,
    content_type: str | None = JSON,
) -> httpx.Response:
    """POSTs `body` (JSON-encoded unless bytes) with exactly these headers (no Accept when `accept` is None)."""
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {
        "Accept": accept,
        "Content-Type": content_type,
        "Authorization": f"Bearer {key}" if key else None,
    }
    with httpx.Client(base_url=server.url, timeout=30) as client:
        request = client.build_request("POST", "/graphql", content=content)
        return client.send(with_headers(request, headers))


def get(
    server: ServerThread, params: dict[str, str], accept: str | None, key: str | None = None
) -> httpx.Response:
    headers = {"Accept": accept, "Authorization": f"Bearer {key}" if key else None}
    with httpx.Client(base_url=server.url, timeout=30) as client:
        return client.send(with_headers(client.build_request("GET", "/graphql", params=params), headers))


def with_headers(request: httpx.Request, headers: dict[str, str | None]) -> httpx.Request:
    for name, value in headers.items():
        if value is None:
            request.headers.pop(name, None)  # httpx sends Accept: */* unless told otherwise
        else:
            request.headers[name] = value
    return request


def media(response: httpx.Response) -> str:
    return response.headers["content-type"].split(";")[0]


def codes(body: dict[str, Any]) -> list[str]:
    return [e["extensions"]["code"] for e in body["errors"]]


# --- content negotiation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (GRJ, GRJ),
        (JSON, JSON),
        (APOLLO_ACCEPT, GRJ),
        ("application/json, application/graphql-response+json", GRJ),  # both named: the spec's type
        ("application/json, application/graphql-response+json;q=0.5", JSON),
        ("*/*", JSON),  # legacy clients (curl, requests, httpx) get what they always got
        ("application/*", JSON),
        ("application/json, */*", JSON),
        ("application/graphql-response+json, */*;q=0.1", GRJ),
        ("application/json;q=0, */*", GRJ),  # json refused explicitly
        ("text/html, application/json;q=0.8", JSON),
        ("application/graphql-response+json; charset=utf-8", GRJ),
        (None, GRJ),  # no Accept header: the spec's default since its legacy watershed (2025-01-01)
    ],
)
def test_the_response_media_type_follows_the_accept_header(
    server: ServerThread, admin: Actor, accept: str | None, expected: str
) -> None:
    response = post(server, {"query": "{ viewer { id } }"}, accept, admin.api_key)
    assert response.status_code == 200
    assert media(response) == expected
    if expected == GRJ:
        assert response.headers["content-type"] == GRJ_CONTENT_TYPE
    assert "Accept" in response.headers["Vary"]  # a cache keys GET responses on it
    assert without_count(response.json()) == {"data": {"viewer": {"id": admin.user_id}}}


@pytest.mark.parametrize("accept", ["text/plain", "application/xml", "application/json;q=0", "image/*"])
def test_an_accept_header_admitting_no_json_type_is_406(
    server: ServerThread, admin: Actor, accept: str
) -> None:
    response = post(server, {"query": "{ viewer { id } }"}, accept, admin.api_key)
    assert response.status_code == 406
    body = response.json()
    assert "data" not in body
    assert codes(body) == ["BAD_USER_INPUT"]
    assert "Not acceptable" in body["errors"][0]["message"]


# --- request errors: 400 with application/graphql-response+json, 200 with application/json, never `data` -------


REQUEST_ERRORS = {
    # The spec's examples, each refused before execution.
    "document parsing failure": {"query": "{"},
    "document validation failure": {"query": "{ viewer { noSuchField } }"},
    "operation cannot be determined": {
        "query": "query A { __typename } query B { __typename }",
        "operationName": "C",
    },
    "variable coercion failure": {
        "query": "query($n: String!) { __type(name: $n) { name } }",
        "variables": {"n": 7},
    },
    "query limit": {"query": "{" + " __typename" * 21 + " }"},
}


@pytest.mark.parametrize("case", sorted(REQUEST_ERRORS))
def test_a_request_error_is_400_in_graphql_response_json_and_has_no_data(
    server: ServerThread, admin: Actor, case: str
) -> None:
    response = post(server, REQUEST_ERRORS[case], APOLLO_ACCEPT, admin.api_key)
    assert response.status_code == 400, response.text
    assert media(response) == GRJ
    body = response.json()
    assert "data" not in body, body
    assert codes(body) and set(codes(body)) == {"BAD_USER_INPUT"}


@pytest.mark.parametrize("case", sorted(REQUEST_ERRORS))
def test_a_request_error_is_200_in_application_json_and_has_no_data(
    server: ServerThread, admin: Actor, case: str
) -> None:
    response = post(server, REQUEST_ERRORS[case], JSON, admin.api_key)
    assert response.status_code == 200, response.text
    assert media(response) == JSON
    body = response.json()
    assert "data" not in body, body
    assert set(codes(body)) == {"BAD_USER_INPUT"}


MALFORMED = {
    "JSON parsing failure": b"NONSENSE",
    "truncated JSON": b'{"query":',
    "invalid parameters (typo)": b'{"qeury": "{__typename}"}',
    "invalid parameters (variables shape)": b'{"query": "query Q ($i:Int!) { q(i: $i) }", "variables": [7]}',
    "not an object": b'"{ __typename }"',
}


@pytest.mark.parametrize("accept", [GRJ, JSON])
@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_request_is_400_in_both_media_types_without_data(
    server: ServerThread, admin: Actor, case: str, accept: str
) -> None:
    response = post(server, MALFORMED[case], accept, admin.api_key)
    assert response.status_code == 400, response.text
    assert media(response) == accept
    body = response.json()
    assert "data" not in body, body
    assert codes(body) == ["BAD_USER_INPUT"]


def test_field_errors_are_200_with_data_in_both_media_types(server: ServerThread, admin: Actor) -> None:
    query = '{ viewer { id } message(id: "msg_00000000000000000000000000000000") { id } }'
    for accept in (GRJ, JSON):
        response = post(server, {"query": query}, accept, admin.api_key)
        assert response.status_code == 200, response.text
        assert media(response) == accept
        body = response.json()
        assert body["data"] == {"viewer": {"id": admin.user_id}, "message": None}
        assert body["errors"][0]["path"] == ["message"]
        assert codes(body) == ["NOT_FOUND"]


def test_an_unauthenticated_caller_is_401_in_graphql_response_json(server: ServerThread) -> None:
    response = post(server, {"query": "{ viewer { id } }"}, GRJ)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    body = response.json()
    assert "data" not in body
    assert codes(body) == ["UNAUTHENTICATED"]
    legacy = post(server, {"query": "{ viewer { id } }"}, JSON)
    assert legacy.status_code == 200
    assert "data" not in legacy.json()
    assert codes(legacy.json()) == ["UNAUTHENTICATED"]
    # Introspection stays public in either type.
    assert without_count(post(server, {"query": "{ __typename }"}, GRJ).json()) == {
        "data": {"__typename": "Query"}
    }


# --- POST bodies and GET --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/x-www-form-urlencoded", "application/graphql"]
)
def test_a_post_body_other_than_application_json_is_415(
    server: ServerThread, admin: Actor, content_type: str | None
) -> None:
    for accept in (GRJ, JSON):
        response = post(
            server, {"query": "{ viewer { id } }"}, accept, admin.api_key, content_type=content_type
        )
        assert response.status_code == 415, response.text
        assert media(response) == accept
        assert "data" not in response.json()
    charset = post(server, {"query": "{ __typename }"}, GRJ, content_type="application/json; charset=utf-8")
    assert charset.status_code == 200


def test_get_runs_queries_and_answers_errors_like_post(server: ServerThread, admin: Actor) -> None:
    ok = get(
        server,
        {"query": "query($n: String!) { __type(name: $n) { name } }", "variables": '{"n": "User"}'},
        GRJ,
    )
    assert (ok.status_code, media(ok), without_count(ok.json())) == (
        200,
        GRJ,
        {"data": {"__type": {"name": "User"}}},
    )
    assert "Accept" in ok.headers["Vary"]
    broken = get(server, {"query": "{"}, GRJ)
    assert broken.status_code == 400 and "data" not in broken.json()
    assert "Accept" in broken.headers["Vary"]
    legacy = get(server, {"query": "{"}, JSON)
    assert legacy.status_code == 200 and "data" not in legacy.json()
    missing = get(server, {"variables": "{}"}, GRJ)
    assert missing.status_code == 400 and "data" not in missing.json()


@pytest.mark.parametrize("accept", [GRJ, JSON])
def test_a_mutation_over_get_is_405_with_allow_post(
    server: ServerThread, admin: Actor, list_conversations: Callable[[], int], accept: str
) -> None:
    mutation = 'mutation { conversationCreate(input: {title: "via get"}) { id } }'
    response = get(server, {"query": mutation}, accept, admin.api_key)
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"
    assert media(response) == accept
    body = response.json()
    assert "data" not in body
    assert codes(body) == ["BAD_USER_INPUT"]
    assert "GET" in body["errors"][0]["message"]
    assert list_conversations() == 0  # halted: nothing ran


@pytest.fixture
def list_conversations(admin: Actor) -> Callable[[], int]:
    return lambda: len(admin.client.ok("{ conversations { nodes { id } } }")["conversations"]["nodes"])


# --- the server's own refusals keep their status, with a GraphQL body in the negotiated type ------------------


def test_a_rate_limited_call_is_429_with_rate_limited_and_retry_after_in_graphql_response_json(
    server: ServerThread, admin: Actor, make_user: Callable[..., Actor]
) -> None:
    member = make_user(admin)
    assign(admin, member, profile(admin, "one", requestsPerWindow=1))
    assert post(server, {"query": "{ viewer { id } }"}, APOLLO_ACCEPT, member.api_key).status_code == 200
    refused = post(server, {"query": "{ viewer { id } }"}, APOLLO_ACCEPT, member.api_key)
    assert refused.status_code == 429
    assert refused.headers["content-type"] == GRJ_CONTENT_TYPE
    assert refused.headers["Retry-After"] == "86400"
    body = without_count(refused.json())
    assert "data" not in body  # refused before execution
    (error,) = body["errors"]
    assert error["extensions"]["code"] == "RATE_LIMITED"
    assert error["extensions"]["retryAfter"] == 86400
    legacy = post(server, {"query": "{ viewer { id } }"}, JSON, member.api_key)
    assert (legacy.status_code, media(legacy)) == (429, JSON)
    assert codes(legacy.json()) == ["RATE_LIMITED"]


def test_a_body_over_the_size_limit_is_413_in_the_negotiated_type(server: ServerThread, admin: Actor) -> None:
    huge = b'{"query": "' + b" " * (11 * 1024 * 1024) + b'{ __typename }"}'  # the limit is 10 MiB
    for accept in (GRJ, JSON):
        response = post(server, huge, accept, admin.api_key)
        assert response.status_code == 413
        assert media(response) == accept
        body = response.json()
        assert "data" not in body
        assert body["errors"][0]["extensions"]["limitName"] == "requestBytes"


def test_an_unknown_persisted_query_is_200_without_data_so_persisted_query_links_retry(
    server: ServerThread, admin: Actor
) -> None:
    unknown = {"extensions": {"persistedQuery": {"version": 1, "sha256Hash": "0" * 64}}}
    for accept in (APOLLO_ACCEPT, JSON):
        response = post(server, unknown, accept, admin.api_key)
        assert response.status_code == 200, response.text
        body = response.json()
        assert "data" not in body
        assert codes(body) == ["PERSISTED_QUERY_NOT_FOUND"]


def test_graphiql_is_still_served_to_a_browser(server: ServerThread) -> None:
    page = get(server, {}, "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8")
    assert page.status_code == 200
    assert "graphiql" in page.text.lower()
    only_html = get(server, {}, "text/html")
    assert only_html.status_code == 200
