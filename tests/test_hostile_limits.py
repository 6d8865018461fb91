"""Hostile documents: every limit check is linear in the document, anonymous callers get no further than a
linear walk, and graphql-core's quadratic field-merging rule only sees documents within bounds."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests import harness
from tests.api import create_conversation, reply, start_thread
from tests.harness import Actor, Client, ServerThread
from tests.ws import WsClient

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
    fragments += [
        f"fragment F{i} on Message {{ {body.format(p=f'F{i - 1}')} }}" for i in range(1, levels + 1)
    ]
    return f"query($id: ID!) {{ message(id: $id) {{ ...F{levels} }} }} " + " ".join(fragments)


def only_error(body: dict[str, Any]) -> dict[str, Any]:
    assert body.get("data") is None, body  # refused before execution
    assert len(body["errors"]) == 1, body
    error: dict[str, Any] = body["errors"][0]
    return error


def test_fragments_that_double_at_every_level_are_refused_by_cost_in_one_linear_walk(
    server: ServerThread,
) -> None:
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


def test_doubling_fragments_are_measured_linearly_for_a_signed_in_caller_too(
    server: ServerThread, admin: Actor
) -> None:
    query = doubling_fragments(60, "replies {{ ...{p} }} replies {{ ...{p} }}")
    error = only_error(post(server, query, admin.api_key, {"id": "msg_x"}))
    assert error["extensions"]["limitName"] == "cost"


def test_an_anonymous_document_is_refused_before_the_schema_rules_run(anonymous: Client) -> None:
    # Unknown fields and a missing variable: validation errors for a signed-in caller, but an anonymous caller
    # learns nothing and costs nothing beyond the linear walk.
    error = only_error(anonymous.execute("{ viewer { id nope } message(id: $missing) { id } }"))
    assert error["extensions"]["code"] == "UNAUTHENTICATED"


def test_introspection_stays_public(anonymous: Client) -> None:
    assert anonymous.ok("{ __schema { queryType { name } } }") == {
        "__schema": {"queryType": {"name": "Query"}}
    }
    assert anonymous.ok('{ __type(name: "Message") { name } }') == {"__type": {"name": "Message"}}


def test_the_whole_schema_may_be_read_once_per_operation(anonymous: Client) -> None:
    twice = "{ a: __schema { queryType { name } } b: __schema { queryType { name } } }"
    error = only_error(anonymous.execute(twice))
    assert error["extensions"]["limitName"] == "cost"


def test_same_named_selections_are_allowed_at_the_limit_and_refused_one_past_it(anonymous: Client) -> None:
    assert anonymous.ok("{" + " __typename" * 20 + " }") == {"__typename": "Query"}
    error = only_error(anonymous.execute("{" + " __typename" * 21 + " }"))
    assert error["extensions"] == {
        "code": "BAD_USER_INPUT",
        "limitName": "duplicateFields",
        "limit": 20,
        "actual": 21,
    }


def test_same_named_selections_count_through_inline_fragments_and_inside_introspection(
    anonymous: Client,
) -> None:
    inline = "{ __schema { types { name" + " ... on __Type { name }" * 20 + " } } }"
    assert only_error(anonymous.execute(inline))["extensions"]["limitName"] == "duplicateFields"
    # 300 conflicting selections under one alias: graphql-core compares every pair (quadratic) unless refused.
    conflicting = (
        "{ __schema { types { " + " ".join(("a: name", "a: kind")[i % 2] for i in range(300)) + " } } }"
    )
    body = anonymous.execute(conflicting)
    assert "data" not in body  # refused before execution
    assert {e["extensions"]["limitName"] for e in body["errors"]} == {"aliases", "duplicateFields"}


def test_distinct_fragment_spreads_are_allowed_at_the_limit_and_refused_one_past_it(
    server: ServerThread, admin: Actor
) -> None:
    def document(n: int) -> str:
        spreads = " ".join(f"...U{i}" for i in range(n))
        return (
            "{ viewer { " + spreads + " } } " + " ".join(f"fragment U{i} on User {{ id }}" for i in range(n))
        )

    body = post(server, document(40), admin.api_key)
    assert body.get("errors") is None, body
    assert body["data"] == {"viewer": {"id": admin.user_id}}
    error = only_error(post(server, document(41), admin.api_key))
    assert error["extensions"]["limitName"] == "fragmentSpreads"
    assert (error["extensions"]["limit"], error["extensions"]["actual"]) == (40, 41)


@pytest.mark.parametrize("levels", [10, 30])
def test_a_fragment_spread_twice_reports_its_list_error_once(
    server: ServerThread, admin: Actor, levels: int
) -> None:
    fragments = ["fragment F0 on Query { conversations(first: 1000) { nodes { id } } }"]
    fragments += [f"fragment F{i} on Query {{ ...F{i - 1} ...F{i - 1} }}" for i in range(1, levels + 1)]
    body = post(server, f"{{ ...F{levels} }} " + " ".join(fragments), admin.api_key)
    assert [e["extensions"]["limitName"] for e in body["errors"]] == ["listSize"]


# --- Execution budgets: tree fields cost what they return, across aliases and fragments -----------------

BUDGETS = {"query_max_messages": 50, "response_max_bytes": 20_000, "query_max_aliases": 100}


@pytest.fixture(scope="module")
def budgeted(dsn: str) -> Iterator[ServerThread]:
    srv = ServerThread(harness.test_settings(dsn, migrate_on_start=False, **BUDGETS))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def member(budgeted: ServerThread, admin: Actor) -> Iterator[Client]:
    client = Client(budgeted.url, admin.api_key)
    yield client
    client.close()


def chain(actor: Actor, length: int) -> str:
    conversation = create_conversation(actor)
    root = parent = start_thread(actor, conversation, "root")
    for i in range(length):
        parent = reply(actor, parent, f"link {i}")
    return root


def limit_names(body: dict[str, Any]) -> list[str]:
    return [e["extensions"].get("limitName") for e in body.get("errors") or []]


def test_aliases_of_replies_share_one_message_budget(admin: Actor, member: Client) -> None:
    root = start_thread(admin, create_conversation(admin), "root")
    for i in range(30):
        reply(admin, root, f"reply {i}")
    one = member.ok("query($id: ID!) { message(id: $id) { replies { id } } }", {"id": root})
    assert len(one["message"]["replies"]) == 30
    # The 30 aliases of `replies` on a root with 20,000 replies, in small: 2 x 30 > 50.
    body = member.execute(
        "query($id: ID!) { message(id: $id) { a: replies { id } b: replies { id } } }", {"id": root}
    )
    assert limit_names(body) == ["messages"]
    error = body["errors"][0]
    assert error["extensions"] == {
        "code": "BAD_USER_INPUT",
        "limitName": "messages",
        "limit": 50,
        "actual": 60,
    }


def test_fragment_fan_out_over_a_tree_is_charged_per_returned_node(admin: Actor, member: Client) -> None:
    # A binary tree of 15 nodes read through fragments that visit every subtree twice: 2^levels paths.
    root = start_thread(admin, create_conversation(admin), "root")
    level = [root]
    for _ in range(3):
        level = [reply(admin, node, "child") for node in level for _ in range(2)]

    def fan_out(levels: int) -> str:
        fragments = ["fragment F0 on Message { id }"] + [
            f"fragment F{i} on Message {{ l: replies {{ ...F{i - 1} }} r: replies {{ ...F{i - 1} }} }}"
            for i in range(1, levels + 1)
        ]
        return f"query($id: ID!) {{ message(id: $id) {{ ...F{levels} }} }} " + " ".join(fragments)

    # 4 + 4 x (4 + 4 x 4) = 84 messages would be returned; the budget is 50.
    assert limit_names(member.execute(fan_out(3), {"id": root})) == ["messages"]
    assert "errors" not in member.execute(fan_out(2), {"id": root})  # 4 + 4 x 4 = 20


def test_aliases_of_thread_tree_over_a_deep_chain_are_charged_for_their_paths(
    admin: Actor, member: Client
) -> None:
    root = chain(admin, 24)  # 25 nodes, paths 1..25 ids long: 325 ids (~10 KB) in all
    with_paths = "query($id: ID!) { a: threadTree(rootId: $id) { nodes { path } } b: threadTree(rootId: $id) { nodes { path } } }"
    body = member.execute(with_paths, {"id": root})
    assert limit_names(body) == ["responseBytes"]
    assert body["errors"][0]["extensions"]["limit"] == 20_000
    # Without `path`, the same two trees are well within the budget: only what is selected is charged.
    without = member.ok(with_paths.replace("path", "id"), {"id": root})
    assert len(without["a"]["nodes"]) == len(without["b"]["nodes"]) == 25


def test_thread_tree_is_refused_when_one_tree_is_over_the_message_budget(
    admin: Actor, member: Client
) -> None:
    root = chain(admin, 60)
    body = member.execute("query($id: ID!) { threadTree(rootId: $id) { totalCount } }", {"id": root})
    assert limit_names(body) == ["messages"]
    assert body["errors"][0]["extensions"]["actual"] == 61
    # A subtree within the budget is the way to read it.
    assert member.ok(
        "query($id: ID!) { threadTree(rootId: $id, maxDepth: 40) { totalCount } }", {"id": root}
    ) == {"threadTree": {"totalCount": 41}}


def test_the_budget_is_per_operation_not_per_connection(admin: Actor, budgeted: ServerThread) -> None:
    root = chain(admin, 30)
    query = "query($id: ID!) { threadTree(rootId: $id) { totalCount } }"
    ws = WsClient(budgeted.url.replace("http", "ws") + "/graphql", admin.api_key)
    try:
        for op in range(3):  # 3 x 31 > 50: each operation has its own budget
            ws.subscribe(query, {"id": root}, op_id=str(op))
            assert ws.next_event(str(op)) == {"threadTree": {"totalCount": 31}}
        ws.subscribe(
            query.replace("{ totalCount }", "{ totalCount } b: threadTree(rootId: $id) { totalCount }"),
            {"id": root},
            op_id="x",
        )
        message = ws.receive()
        while message["id"] != "x":  # the earlier operations' `complete`
            message = ws.receive()
        assert message["type"] == "next", message
        assert limit_names(message["payload"]) == ["messages"]
    finally:
        ws.close()


def test_a_response_over_the_byte_limit_is_refused_whole(admin: Actor, member: Client) -> None:
    # One message's content is not a tree read; the encoded response is checked as a backstop.
    conversation = create_conversation(admin)
    big = start_thread(admin, conversation, "x" * 25_000)
    body = member.raw("query($id: ID!) { message(id: $id) { content } }", {"id": big})
    assert body["data"] is None
    assert limit_names(body) == ["responseBytes"]
    assert body["errors"][0]["extensions"]["limit"] == 20_000
    assert member.ok("query($id: ID!) { message(id: $id) { id } }", {"id": big})["message"]["id"] == big


def test_chunks_and_edits_are_charged_as_response_bytes(admin: Actor, member: Client) -> None:
    message = start_thread(admin, create_conversation(admin), "v0")
    for i in range(1, 4):
        admin.client.ok(
            "mutation($id: ID!, $c: String!) { messageEdit(id: $id, content: $c) { id } }",
            {"id": message, "c": f"v{i}" + "e" * 25_000},
        )
    body = member.execute("query($id: ID!) { message(id: $id) { edits { content } } }", {"id": message})
    assert limit_names(body) == ["responseBytes"]
