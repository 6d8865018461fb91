"""Hostile input (issue 12): bounded search snippets, rate-limit ceilings, lone surrogates, deep JSON, /metrics.

Every case goes through the public API of the real server, as an attacker would send it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import asyncpg
import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from tests.api import create_conversation, start_thread
from tests.harness import METRICS_HEADERS, Actor, Client, Loop, ServerThread, test_settings, unique
from tests.ws import WsClient

SEARCH = """query($i: ConversationSearchInput!) { search(input: $i) {
  edges { node { snippet matchedBy message { id } conversation { title } } } } }"""


def search_edges(actor: Actor, **input: Any) -> list[dict[str, Any]]:
    edges: list[dict[str, Any]] = actor.client.ok(SEARCH, {"i": input})["search"]["edges"]
    return edges


def text_of(snippet: str) -> str:
    return re.sub(r"</?mark>", "", snippet)


# --- search snippets (item 6) ---------------------------------------------------------------------------

FILLER = "lorem ipsum dolor sit amet "  # 27 characters, no query word


def test_snippet_marks_a_match_deep_in_a_long_message_from_a_bounded_window(admin: Actor) -> None:
    conversation = create_conversation(admin, "notes")
    start_thread(admin, conversation, FILLER * 400 + "the zanzibar outage " + FILLER * 400)

    (edge,) = search_edges(admin, query="zanzibar")
    snippet = edge["node"]["snippet"]
    assert "<mark>zanzibar</mark> outage" in snippet
    # ts_headline saw a window of the message, not its 21,000 characters.
    assert len(text_of(snippet)) < 400


def test_a_match_past_the_scanned_prefix_is_found_and_its_snippet_is_the_start(admin: Actor) -> None:
    conversation = create_conversation(admin, "notes")
    start_thread(admin, conversation, FILLER * 1000 + "the zanzibar outage")  # 27,000 characters in

    (edge,) = search_edges(admin, query="zanzibar")
    assert edge["node"]["message"] is not None  # the hit itself is exact: the whole message is indexed
    snippet = edge["node"]["snippet"]
    # Snippet work stops after the first 20,000 characters: the start of the message, nothing marked.
    assert "<mark>" not in snippet
    assert snippet.startswith("lorem ipsum dolor sit amet")


def test_snippet_work_per_page_is_bounded_too(admin: Actor) -> None:
    for _ in range(40):
        conversation = create_conversation(admin, "notes")
        start_thread(admin, conversation, FILLER * 450 + "the zanzibar outage")  # 12,150 characters in

    # One hit: its first 20,000 characters are scanned. Forty: 400,000 characters over the page, 10,000 each.
    (alone,) = search_edges(admin, query="zanzibar", first=1)
    assert "<mark>zanzibar</mark>" in alone["node"]["snippet"]
    page = search_edges(admin, query="zanzibar", first=40)
    assert len(page) == 40
    assert all("<mark>" not in e["node"]["snippet"] for e in page)


def test_snippet_of_a_query_of_repeated_alternatives_is_answered(admin: Actor) -> None:
    # ts_headline on this query's own structure takes time exponential in it and superlinear in the text:
    # ~8 s per 10,000 characters measured, so over 60 s (the driver's timeout: INTERNAL) for this message.
    # Snippets mark a flat OR of the query's distinct words, over a window of the text.
    conversation = create_conversation(admin, "notes")
    start_thread(admin, conversation, "alpha beta gamma delta epsilon " * 1000)
    query = " or ".join(["alpha beta gamma delta"] * 7)  # the first 32 words count

    (edge,) = search_edges(admin, query=query)
    assert edge["node"]["snippet"].startswith(
        "<mark>alpha</mark> <mark>beta</mark> <mark>gamma</mark> <mark>delta</mark> epsilon <mark>alpha</mark>"
    )


def test_excluded_words_are_not_marked(admin: Actor) -> None:
    conversation = create_conversation(admin, "notes")
    start_thread(admin, conversation, "kafka lag grows while zookeeper sleeps")

    (edge,) = search_edges(admin, query="kafka -postgres")
    assert edge["node"]["snippet"] == "<mark>kafka</mark> lag grows while zookeeper sleeps"


def test_absurd_searches_are_refused(admin: Actor) -> None:
    def code(**input: Any) -> str:
        return admin.client.code(SEARCH, {"i": input})

    assert code(query="k" * 10_001) == "BAD_USER_INPUT"
    assert code(query="kafka", first=101) == "BAD_USER_INPUT"
    assert code(query="kafka", first=1_000_000) == "BAD_USER_INPUT"


# --- lone surrogates (item 9) ---------------------------------------------------------------------------

CREATE = "mutation($i: ConversationCreateInput!) { conversationCreate(input: $i) { id title } }"


def post_raw(client: Client, body: str) -> httpx.Response:
    """POSTs `body` as is: json.dumps escapes a lone surrogate as \\ud800, which the server decodes back."""
    return client.http.post("/graphql", content=body, headers={"content-type": "application/json"})


def error_code(response: httpx.Response) -> str:
    assert response.status_code in (200, 400), response.text
    return str(response.json()["errors"][0]["extensions"]["code"])


def test_a_lone_surrogate_in_a_variable_is_bad_input(admin: Actor) -> None:
    body = json.dumps({"query": CREATE, "variables": {"i": {"title": "chat \ud800"}}})
    assert error_code(post_raw(admin.client, body)) == "BAD_USER_INPUT"
    body = json.dumps({"query": CREATE, "variables": {"i": {"title": "ok", "tags": ["\udfff"]}}})
    assert error_code(post_raw(admin.client, body)) == "BAD_USER_INPUT"
    assert (
        admin.client.ok("{ conversations(first: 5) { edges { node { id } } } }")["conversations"]["edges"]
        == []
    )


def test_a_lone_surrogate_inline_in_the_document_is_bad_input(admin: Actor) -> None:
    escaped = 'mutation { conversationCreate(input: {title: "chat \\ud800"}) { id } }'  # a GraphQL escape
    assert error_code(post_raw(admin.client, json.dumps({"query": escaped}))) == "BAD_USER_INPUT"
    raw = 'mutation { conversationCreate(input: {title: "chat \ud800"}) { id } }'  # the character itself
    assert error_code(post_raw(admin.client, json.dumps({"query": raw}))) == "BAD_USER_INPUT"
    block = 'mutation { conversationCreate(input: {title: """chat \ud800"""}) { id } }'
    assert error_code(post_raw(admin.client, json.dumps({"query": block}))) == "BAD_USER_INPUT"


def test_a_surrogate_pair_is_text(admin: Actor) -> None:
    body = json.dumps({"query": CREATE, "variables": {"i": {"title": "chat \U0001f600"}}})  # \ud83d\ude00
    response = post_raw(admin.client, body)
    assert response.json()["data"]["conversationCreate"]["title"] == "chat \U0001f600"


IMPORT = "mutation($d: JSON!) { conversationImport(input: {format: THREADLINE, data: $d}) { id } }"


def test_a_lone_surrogate_in_a_json_argument_is_bad_input(admin: Actor) -> None:
    body = json.dumps({"query": IMPORT, "variables": {"d": {"title": "\ud800", "messages": []}}})
    assert error_code(post_raw(admin.client, body)) == "BAD_USER_INPUT"


def test_a_lone_surrogate_on_a_socket_is_bad_input_and_the_socket_stays_open(
    server: ServerThread, admin: Actor
) -> None:
    ws = WsClient(server.ws_url, admin.api_key)
    try:
        ws.ws.send(
            json.dumps(
                {
                    "id": "1",
                    "type": "subscribe",
                    "payload": {"query": CREATE, "variables": {"i": {"title": "chat \ud800"}}},
                }
            )
        )
        message = ws.receive()
        assert message["id"] == "1"
        errors = message["payload"] if message["type"] == "error" else message["payload"]["errors"]
        assert errors[0]["extensions"]["code"] == "BAD_USER_INPUT"
        ws.subscribe(CREATE, {"i": {"title": "fine"}}, op_id="2")
        assert ws.next_event("2")["conversationCreate"]["title"] == "fine"
    finally:
        ws.close()


# --- deeply nested JSON (item 10) -----------------------------------------------------------------------


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_deeply_nested_json_body_is_400_before_authentication(anonymous: Client) -> None:
    body = '{"query": "{ __typename }", "variables": {"v": ' + nested(1000) + "}}"
    response = post_raw(anonymous, body)
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/json")
    (error,) = response.json()["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["extensions"]["limitName"] == "jsonDepth"
    assert "Traceback" not in response.text
    # Nested past the interpreter's recursion limit, too.
    assert post_raw(anonymous, '{"query": ' + nested(100_000) + "}").status_code == 400
    # Ordinary nesting is fine.
    ordinary = post_raw(anonymous, '{"query": "{ __typename }", "variables": {"v": ' + nested(20) + "}}")
    assert ordinary.json()["data"] == {"__typename": "Query"}


def test_deeply_nested_variables_in_a_get_query_string_are_400(anonymous: Client) -> None:
    response = anonymous.http.get("/graphql", params={"query": "{ __typename }", "variables": nested(1000)})
    assert response.status_code == 400
    assert response.json()["errors"][0]["extensions"]["limitName"] == "jsonDepth"


def test_a_deeply_nested_json_argument_inline_is_refused(admin: Actor) -> None:
    value = "{a: " * 1000 + "1" + "}" * 1000
    query = "mutation { conversationImport(input: {format: THREADLINE, data: " + value + "}) { id } }"
    response = post_raw(admin.client, json.dumps({"query": query}))
    assert error_code(response) == "BAD_USER_INPUT"
    assert "nested too deeply" in response.json()["errors"][0]["message"]


def test_a_deeply_nested_json_argument_in_variables_is_refused(admin: Actor) -> None:
    body = (
        '{"query": ' + json.dumps(IMPORT) + ', "variables": {"d": ' + '{"a": ' * 200 + "1" + "}" * 200 + "}}"
    )
    response = post_raw(admin.client, body)
    assert response.status_code == 400
    assert response.json()["errors"][0]["extensions"]["limitName"] == "jsonDepth"


def test_deeply_nested_json_on_a_socket_closes_it_with_4400(server: ServerThread, admin: Actor) -> None:
    ws = WsClient(server.ws_url, admin.api_key)
    try:
        ws.ws.send('{"id": "1", "type": "subscribe", "payload": ' + nested(1000) + "}")
        with pytest.raises(ConnectionClosed) as closed:
            ws.receive()
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 4400
        assert "nested deeper than" in closed.value.rcvd.reason
    finally:
        ws.close()


# --- rate-limit ceilings (item 8) -----------------------------------------------------------------------

PROFILE_CREATE = """mutation($i: RateLimitProfileCreateInput!) { rateLimitProfileCreate(input: $i) {
  id requestsPerWindow } }"""
PROFILE_UPDATE = """mutation($id: ID!, $i: RateLimitProfileUpdateInput!) { rateLimitProfileUpdate(id: $id, input: $i) {
  name requestsPerWindow } }"""
PROFILE_ASSIGN = """mutation($u: ID!, $p: ID) { rateLimitProfileAssign(userId: $u, profileId: $p) {
  requestsPerWindow } }"""
EFFECTIVE = "{ rateLimit { windowSeconds burst requestsPerWindow mutationsPerWindow } }"


def test_a_profile_above_the_operators_ceiling_is_refused_naming_it(admin: Actor) -> None:
    def refused(**values: Any) -> dict[str, Any]:
        return admin.client.error(PROFILE_CREATE, {"i": {"name": unique("p"), **values}})

    # The default ceiling: 60,000 requests per 60 s, held or refilled.
    error = refused(windowSeconds=1, requestsPerWindow=1_000_000_000)
    assert error["extensions"] == {
        "code": "BAD_USER_INPUT",
        "argument": "requestsPerWindow",
        "limitName": "rateLimitCeiling",
        "setting": "THREADLINE_RATE_LIMIT_CEILING_REQUESTS",
        "limit": 60_000,
    }
    # Budgets left out take the built-in values (6,000 requests per window): over the ceiling for a 1 s window.
    assert refused(windowSeconds=1, mutationsPerWindow=200)["extensions"]["argument"] == "requestsPerWindow"
    one_second = {
        "windowSeconds": 1,
        "requestsPerWindow": 1000,
        "runsPerWindow": 50,
        "subscriptionsPerWindow": 100,
    }
    assert refused(**one_second, mutationsPerWindow=201)["extensions"]["argument"] == "mutationsPerWindow"
    assert (
        refused(windowSeconds=3600, requestsPerWindow=1000, burst=1_000_000)["extensions"]["argument"]
        == "burst"
    )
    assert refused(windowSeconds=86_400, runsPerWindow=3001)["extensions"]["setting"] == (
        "THREADLINE_RATE_LIMIT_CEILING_RUNS"
    )
    # At the ceiling is fine: 1,000 per second is 60,000 per minute.
    created = admin.client.ok(
        PROFILE_CREATE, {"i": {"name": "fast", **one_second, "mutationsPerWindow": 200}}
    )
    profile_id = created["rateLimitProfileCreate"]["id"]
    update_error = admin.client.error(PROFILE_UPDATE, {"id": profile_id, "i": {"requestsPerWindow": 1001}})
    assert update_error["extensions"]["limitName"] == "rateLimitCeiling"
    update_error = admin.client.error(
        PROFILE_UPDATE, {"id": profile_id, "i": {"windowSeconds": 1, "burst": 59_001}}
    )
    assert update_error["extensions"]["argument"] == "burst"
    assert admin.client.ok(PROFILE_UPDATE, {"id": profile_id, "i": {"name": "quick"}})[
        "rateLimitProfileUpdate"
    ] == {
        "name": "quick",
        "requestsPerWindow": 1000,
    }


def test_a_profile_stored_over_a_ceiling_is_clamped_when_enforced(
    admin: Actor, make_user: Callable[..., Actor], dsn: str, loop: Loop
) -> None:
    member = make_user(admin)
    created = admin.client.ok(PROFILE_CREATE, {"i": {"name": "legacy", "windowSeconds": 60}})
    admin.client.ok(PROFILE_ASSIGN, {"u": member.user_id, "p": created["rateLimitProfileCreate"]["id"]})

    async def lift() -> None:  # as stored before the ceilings existed (or before the operator lowered them)
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(
                "UPDATE rate_limit_profile SET window_seconds = 1, requests_per_window = 1000000000, "
                "mutations_per_window = 1000000000, burst = 1000000000 WHERE name = 'legacy'"
            )
        finally:
            await conn.close()

    loop.run(lift())
    response = member.client.http.post("/graphql", json={"query": "{ viewer { id } }"})
    # Per 1 s window, ceilings per 60 s / 60: 1,000 requests, 200 mutations, 50 runs (300 stored), 100 subscriptions
    # (600 stored). One burst serves every budget: the smallest room left under a ceiling, 3,000 - 50 runs.
    assert response.headers["RateLimit-Limit"] == str(1000 + 2950)
    assert member.client.ok(EFFECTIVE)["rateLimit"] == {
        "windowSeconds": 1,
        "burst": 2950,
        "requestsPerWindow": 1000,
        "mutationsPerWindow": 200,
    }


# --- /metrics (item 14) ---------------------------------------------------------------------------------


def test_metrics_need_the_operators_bearer_token(server: ServerThread) -> None:
    assert httpx.get(f"{server.url}/metrics").status_code == 401
    wrong = httpx.get(f"{server.url}/metrics", headers={"Authorization": "Bearer guessed"})
    assert (wrong.status_code, wrong.headers["WWW-Authenticate"]) == (401, "Bearer")
    assert "threadline_" not in wrong.text
    scraped = httpx.get(f"{server.url}/metrics", headers=METRICS_HEADERS)
    assert scraped.status_code == 200
    assert "# TYPE threadline_subscriptions_active " in scraped.text


def test_metrics_are_not_served_without_a_token_setting(dsn: str) -> None:
    srv = ServerThread(test_settings(dsn, migrate_on_start=False, metrics_token=None))
    srv.start()
    try:
        assert httpx.get(f"{srv.url}/metrics", headers=METRICS_HEADERS).status_code == 404
        assert httpx.get(f"{srv.url}/healthz").status_code == 200
    finally:
        srv.stop()
