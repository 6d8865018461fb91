"""Hostile documents: every limit check is linear in the document, anonymous callers get no further than a
linear walk, and graphql-core's quadratic field-merging rule only sees documents within bounds."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.harness import Actor, Client, ServerThread

# A request the old, exponential limit walker would not finish in hours: a failure here is a timeout.
TIMEOUT = 20


def post(server: ServerThread, query: str, token: str | None = None, variables: Any = None) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = httpx.post(
        f"{server.url}/graphql",
        json={"query": query, "variables": variables or {}},
        headers=headers,
        timeout=TIMEOUT,
    )
    body: dict[str, Any] = response.json()
    return body


def doubling_fragments(levels: int, body: str) -> str:
    """`message { ...F<levels> }` where each fragment spreads the one below it twice through `body`."""
    fragments = ["fragment F0 on Message { id }"]
    fragments += [f"fragment F{i} on Message {{ {body.format(p=f'F{i - 1}')} }}" for i in range(1, levels + 1)]
    return f"query($id: ID!) {{ message(id: $id) {{ ...F{levels} }} }} " + " ".join(fragments)


def only_error(body: dict[str, Any]) -> dict[str, Any]:
    assert body.get("data") is None, body  # refused before execution
    assert len(body["errors"]) == 1, body
    error: dict[str, Any] = body["errors"][0]
    return error


def test_fragments_that_double_at_every_level_are_refused_by_cost_in_one_linear_walk(server: ServerThread) -> None:
    # The 1.3 KB document with 60 levels instead of 19: 2^60 paths, one walk per fragment (graphql-core
    # itself aborts documents nested past 200 levels).
    query = doubling_fragments(60, "replies {{ ...{p} }} replies {{ ...{p} }}")
    error = only_error(post(server, query, variables={"id": "msg_x"}))
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["extensions"]["limitName"] == "cost"
    assert error["extensions"]["actual"] > 2**59  # the measure doubles; the work of measuring does not


def test_doubling_fragments_of_free_fields_reach_no_further_than_authentication(server: ServerThread) -> None:
    # Leaf fields cost nothing, so no limit refuses this; the walk must still be linear and the anonymous
    # caller must be refused before graphql-core's own validation and execution.
    query = doubling_fragments(100, "id ...{p} ...{p}")
    error = only_error(post(server, query, variables={"id": "msg_x"}))
    assert error["extensions"]["code"] == "UNAUTHENTICATED"


def test_doubling_fragments_are_measured_linearly_for_a_signed_in_caller_too(server: ServerThread, admin: Actor) -> None:
    query = doubling_fragments(60, "replies {{ ...{p} }} replies {{ ...{p} }}")
    error = only_error(post(server, query, admin.api_key, {"id": "msg_x"}))
    assert error["extensions"]["limitName"] == "cost"


def test_an_anonymous_document_is_refused_before_the_schema_rules_run(anonymous: Client) -> None:
    # Unknown fields and a missing variable: validation errors for a signed-in caller, but an anonymous caller
    # learns nothing and costs nothing beyond the linear walk.
    error = only_error(anonymous.execute("{ viewer { id nope } message(id: $missing) { id } }"))
    assert error["extensions"]["code"] == "UNAUTHENTICATED"


def test_introspection_stays_public(anonymous: Client) -> None:
    assert anonymous.ok("{ __schema { queryType { name } } }") == {"__schema": {"queryType": {"name": "Query"}}}
    assert anonymous.ok("{ __type(name: \"Message\") { name } }") == {"__type": {"name": "Message"}}


def test_the_whole_schema_may_be_read_once_per_operation(anonymous: Client) -> None:
    twice = "{ a: __schema { queryType { name } } b: __schema { queryType { name } } }"
    error = only_error(anonymous.execute(twice))
    assert error["extensions"]["limitName"] == "cost"


def test_same_named_selections_are_allowed_at_the_limit_and_refused_one_past_it(anonymous: Client) -> None:
    assert anonymous.ok("{" + " __typename" * 20 + " }") == {"__typename": "Query"}
    error = only_error(anonymous.execute("{" + " __typename" * 21 + " }"))
    assert error["extensions"] == {"code": "BAD_USER_INPUT", "limitName": "duplicateFields", "limit": 20, "actual": 21}


def test_same_named_selections_count_through_inline_fragments_and_inside_introspection(anonymous: Client) -> None:
    inline = "{ __schema { types { name" + " ... on __Type { name }" * 20 + " } } }"
    assert only_error(anonymous.execute(inline))["extensions"]["limitName"] == "duplicateFields"
    # 300 conflicting selections under one alias: graphql-core compares every pair (quadratic) unless refused.
    conflicting = "{ __schema { types { " + " ".join(("a: name", "a: kind")[i % 2] for i in range(300)) + " } } }"
    body = anonymous.execute(conflicting)
    assert body["data"] is None
    assert {e["extensions"]["limitName"] for e in body["errors"]} == {"aliases", "duplicateFields"}


def test_distinct_fragment_spreads_are_allowed_at_the_limit_and_refused_one_past_it(
    server: ServerThread, admin: Actor
) -> None:
    def document(n: int) -> str:
        spreads = " ".join(f"...U{i}" for i in range(n))
        return "{ viewer { " + spreads + " } } " + " ".join(f"fragment U{i} on User {{ id }}" for i in range(n))

    body = post(server, document(40), admin.api_key)
    assert body.get("errors") is None, body
    assert body["data"] == {"viewer": {"id": admin.user_id}}
    error = only_error(post(server, document(41), admin.api_key))
    assert error["extensions"]["limitName"] == "fragmentSpreads"
    assert (error["extensions"]["limit"], error["extensions"]["actual"]) == (40, 41)


@pytest.mark.parametrize("levels", [10, 30])
def test_a_fragment_spread_twice_reports_its_list_error_once(server: ServerThread, admin: Actor, levels: int) -> None:
    fragments = ["fragment F0 on Query { conversations(first: 1000) { nodes { id } } }"]
    fragments += [f"fragment F{i} on Query {{ ...F{i - 1} ...F{i - 1} }}" for i in range(1, levels + 1)]
    body = post(server, f"{{ ...F{levels} }} " + " ".join(fragments), admin.api_key)
    assert [e["extensions"]["limitName"] for e in body["errors"]] == ["listSize"]
