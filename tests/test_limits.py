"""Query limits at their edges (allowed at N, refused at N+1), before execution, on a server with small limits."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from tests import harness
from tests.harness import Actor, Client, ServerThread, without_count
from tests.ws import WsClient

LIMITS = {
    "query_max_depth": 4,
    "query_max_aliases": 3,
    "query_max_tokens": 50,
    "query_max_cost": 100,
    "query_max_duplicate_fields": 50,  # the token tests repeat `id` (tests/test_hostile_limits.py tests this one)
    "request_max_bytes": 2000,
    "ws_max_message_bytes": 1000,
}


@pytest.fixture(scope="module")
def limited(dsn: str) -> Iterator[ServerThread]:
    srv = ServerThread(harness.test_settings(dsn, migrate_on_start=False, **LIMITS))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def caller(limited: ServerThread, admin: Actor) -> Iterator[Client]:
    client = Client(limited.url, admin.api_key)
    yield client
    client.close()


def limit_error(client: Client, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    body = client.execute(query, variables)
    assert "data" not in body, body  # refused before execution: nothing ran
    assert len(body["errors"]) == 1, body
    return dict(body["errors"][0]["extensions"])


def test_depth_is_allowed_at_the_limit_and_refused_one_past_it(caller: Client) -> None:
    assert caller.ok("{ conversations { nodes { owner { id } } } }") == {"conversations": {"nodes": []}}
    assert limit_error(caller, "{ conversations { edges { node { owner { id } } } } }") == {
        "code": "BAD_USER_INPUT",
        "limitName": "depth",
        "limit": 4,
        "actual": 5,
    }


def test_depth_error_names_the_limit(caller: Client) -> None:
    error = caller.error("{ conversations { edges { node { owner { id } } } } }")
    assert (
        error["message"]
        == "Query depth 5 exceeds the limit of 4 (nested `replies` of a Message do not count)"
    )


def test_nested_replies_do_not_count_toward_depth(caller: Client, admin: Actor) -> None:
    cid = caller.ok('mutation { conversationCreate(input: {title: "t"}) { id } }')["conversationCreate"]["id"]
    root = caller.ok(
        'mutation($c: ID!) { threadStart(conversationId: $c, input: {content: "r"}) { id } }', {"c": cid}
    )["threadStart"]["id"]
    parent = root
    chain = [root]
    for i in range(6):
        parent = caller.ok(
            "mutation($p: ID!, $t: String!) { messageReply(parentId: $p, input: {content: $t}) { id } }",
            {"p": parent, "t": f"m{i}"},
        )["messageReply"]["id"]
        chain.append(parent)
    nested = "id"
    for _ in range(6):
        nested = f"id replies {{ {nested} }}"
    data = caller.ok(f"query($m: ID!) {{ message(id: $m) {{ {nested} }} }}", {"m": root})
    node = data["message"]
    seen = []
    while node is not None:
        seen.append(node["id"])
        node = node["replies"][0] if node.get("replies") else None
    assert seen == chain


def test_thread_tree_is_not_limited_by_depth(caller: Client) -> None:
    cid = caller.ok('mutation { conversationCreate(input: {title: "t"}) { id } }')["conversationCreate"]["id"]
    root = caller.ok(
        'mutation($c: ID!) { threadStart(conversationId: $c, input: {content: "r"}) { id } }', {"c": cid}
    )["threadStart"]["id"]
    tree = caller.ok("query($r: ID!) { threadTree(rootId: $r) { nodes { id replies { id } } } }", {"r": root})
    assert tree == {"threadTree": {"nodes": [{"id": root, "replies": []}]}}


def test_aliases_are_allowed_at_the_limit_and_refused_one_past_it(caller: Client, admin: Actor) -> None:
    assert caller.ok("{ a: viewer { id } b: viewer { id } c: viewer { id } }") == {
        "a": {"id": admin.user_id},
        "b": {"id": admin.user_id},
        "c": {"id": admin.user_id},
    }
    assert limit_error(caller, "{ a: viewer { id } b: viewer { id } c: viewer { id } d: viewer { id } }") == {
        "code": "BAD_USER_INPUT",
        "limitName": "aliases",
        "limit": 3,
        "actual": 4,
    }


def test_aliases_inside_fragments_count(caller: Client) -> None:
    query = "{ a: viewer { ...F } b: viewer { id } } fragment F on User { x: id y: id }"
    assert limit_error(caller, query) == {
        "code": "BAD_USER_INPUT",
        "limitName": "aliases",
        "limit": 3,
        "actual": 4,
    }


def test_tokens_are_allowed_at_the_limit_and_refused_one_past_it(caller: Client, admin: Actor) -> None:
    # `{ viewer {` + n x `id` + `} }` is 4 + n tokens.
    assert caller.ok("{ viewer { " + "id " * 46 + "} }") == {"viewer": {"id": admin.user_id}}
    error = caller.error("{ viewer { " + "id " * 47 + "} }")
    assert error["message"] == "The document has more than 50 tokens (the limit)"
    assert error["extensions"] == {"code": "BAD_USER_INPUT", "limitName": "tokens", "limit": 50, "actual": 51}


def test_cost_is_allowed_at_the_limit_and_refused_one_past_it(caller: Client) -> None:
    # conversations (1) + first x nodes (1 each).
    assert caller.ok("{ conversations(first: 99) { nodes { id } } }") == {"conversations": {"nodes": []}}
    assert limit_error(caller, "{ conversations(first: 100) { nodes { id } } }") == {
        "code": "BAD_USER_INPUT",
        "limitName": "cost",
        "limit": 100,
        "actual": 101,
    }


def test_cost_reads_list_sizes_from_variables(caller: Client) -> None:
    query = "query($n: Int) { conversations(first: $n) { nodes { id } } }"
    assert caller.ok(query, {"n": 99}) == {"conversations": {"nodes": []}}
    assert limit_error(caller, query, {"n": 100})["actual"] == 101


def test_a_repeated_document_is_judged_anew_for_its_variables(caller: Client) -> None:
    # Validation of the document is remembered per query text; the limits are not.
    query = "query($n: Int) { conversations(first: $n) { nodes { id } } }"
    for _ in range(2):
        assert limit_error(caller, query, {"n": 100})["actual"] == 101
        assert caller.ok(query, {"n": 99}) == {"conversations": {"nodes": []}}


def test_a_repeated_invalid_document_gets_the_same_error_each_time(caller: Client) -> None:
    errors = [caller.execute("{ viewer { nope } }")["errors"] for _ in range(3)]
    assert errors[0] == errors[1] == errors[2]
    assert errors[0][0]["message"].startswith("Cannot query field 'nope' on type 'User'.")
    assert errors[0][0]["extensions"] == {"code": "BAD_USER_INPUT"}


def test_cost_uses_the_default_page_size_when_first_is_absent(caller: Client) -> None:
    # 20 by default: conversations (1) + 20 x (edges (1) + node (1)) = 41; twice = 82; three times = 123.
    twice = "{ a: conversations { edges { node { id } } } b: conversations { edges { node { id } } } }"
    assert caller.ok(twice) == {"a": {"edges": []}, "b": {"edges": []}}
    thrice = twice[:-1] + " c: conversations { edges { node { id } } } }"
    assert limit_error(caller, thrice) == {
        "code": "BAD_USER_INPUT",
        "limitName": "cost",
        "limit": 100,
        "actual": 123,
    }


def test_list_size_over_the_cap_is_refused_before_execution(caller: Client) -> None:
    assert limit_error(
        caller, "query($n: Int) { conversations(first: $n) { nodes { id } } }", {"n": 101}
    ) == {"code": "BAD_USER_INPUT", "limitName": "listSize", "limit": 100, "actual": 101}


def test_introspection_is_not_limited_by_depth_or_cost(caller: Client) -> None:
    deep = "{ __schema { types { fields { type { ofType { ofType { ofType { ofType { name } } } } } } } } }"
    assert len(caller.ok(deep)["__schema"]["types"]) > 50


def test_a_mutation_over_a_limit_changes_nothing(caller: Client) -> None:
    mutation = 'mutation { a: conversationCreate(input: {title: "a"}) { x: id y: id z: id } }'
    assert limit_error(caller, mutation)["limitName"] == "aliases"
    assert caller.ok("{ conversations { totalCount } }") == {"conversations": {"totalCount": 0}}


def test_request_body_over_the_limit_is_413_with_a_graphql_error(limited: ServerThread, admin: Actor) -> None:
    headers = {"Authorization": f"Bearer {admin.api_key}", "Content-Type": "application/json"}
    query = "{ viewer { id } }"
    padding = " " * (2000 - len('{"query": ""}') - len(query))
    at_limit = '{"query": "' + query + padding + '"}'
    assert len(at_limit.encode()) == 2000
    ok = httpx.post(f"{limited.url}/graphql", content=at_limit, headers=headers)
    assert ok.status_code == 200
    assert without_count(ok.json()) == {"data": {"viewer": {"id": admin.user_id}}}
    over = httpx.post(f"{limited.url}/graphql", content=at_limit[:-2] + ' "}', headers=headers)
    assert over.status_code == 413
    assert without_count(over.json()) == {
        "errors": [
            {
                "message": "The request body is larger than 2000 bytes (the limit)",
                "extensions": {"code": "BAD_USER_INPUT", "limitName": "requestBytes", "limit": 2000},
            }
        ],
    }


def test_chunked_request_body_over_the_limit_is_413(limited: ServerThread, admin: Actor) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"query": "{ viewer { id } }'
        for _ in range(30):
            yield b" " * 100
        yield b'"}'

    response = httpx.post(
        f"{limited.url}/graphql",
        content=chunks(),
        headers={"Authorization": f"Bearer {admin.api_key}", "Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert response.json()["errors"][0]["extensions"]["limitName"] == "requestBytes"


def test_batched_operations_are_refused(limited: ServerThread, admin: Actor) -> None:
    response = httpx.post(
        f"{limited.url}/graphql",
        json=[{"query": "{ viewer { id } }"}, {"query": "{ viewer { id } }"}],
        headers={"Authorization": f"Bearer {admin.api_key}"},
    )
    assert response.status_code == 400
    assert without_count(response.json()) == {
        "errors": [{"message": "Batching is not enabled", "extensions": {"code": "BAD_USER_INPUT"}}],
    }


def test_websocket_message_over_the_limit_closes_the_socket_with_1009(
    limited: ServerThread, admin: Actor
) -> None:
    ws = WsClient(limited.ws_url, admin.api_key)
    try:
        query = "subscription { viewerEvents { type } }"
        padding = " " * (1000 - len(f'{{"id": "1", "type": "subscribe", "payload": {{"query": "{query}"}}}}'))
        at_limit = f'{{"id": "1", "type": "subscribe", "payload": {{"query": "{query}{padding}"}}}}'
        assert len(at_limit) == 1000
        ws.ws.send(at_limit)
        ws.send({"id": "1", "type": "complete"})
        ws.ws.send(at_limit.replace('"1"', '"2"') + " ")
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                ws.receive(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    finally:
        ws.ws.close()


def test_default_limits_allow_the_schema_introspection_query(server: ServerThread, admin: Actor) -> None:
    from graphql import get_introspection_query

    data = admin.client.ok(get_introspection_query(descriptions=True))
    assert data["__schema"]["queryType"] == {"name": "Query", "kind": "OBJECT"}
