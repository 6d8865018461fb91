"""Batched operations (a JSON array body, as Apollo's BatchHttpLink sends) behind THREADLINE_BATCH_MAX: answered
in order, each operation limited and rate-counted on its own, a batch over the limit refused naming it
(issue 21 item 3)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests import harness
from tests.harness import Actor, ServerThread, without_count
from tests.test_ratelimits import assign, profile

BATCH_MAX = 3
GRJ = "application/graphql-response+json"
APOLLO_ACCEPT = "application/graphql-response+json,application/json;q=0.9"
VIEWER = "{ viewer { id } }"
CREATE = "mutation($t: String!) { conversationCreate(input: {title: $t}) { title } }"
TITLES = "{ conversations { nodes { title } } }"


@pytest.fixture(scope="module")
def batching(dsn: str) -> Iterator[ServerThread]:
    srv = ServerThread(
        harness.test_settings(dsn, migrate_on_start=False, batch_max=BATCH_MAX, query_max_depth=4)
    )
    srv.start()
    yield srv
    srv.stop()


def send(
    server: ServerThread, actor: Actor | None, operations: Any, accept: str = APOLLO_ACCEPT, **extra: str
) -> httpx.Response:
    headers = {"Accept": accept, **extra}
    if actor is not None:
        headers["Authorization"] = f"Bearer {actor.api_key}"
    return httpx.post(f"{server.url}/graphql", json=operations, headers=headers, timeout=30)


def bodies(response: httpx.Response) -> list[dict[str, Any]]:
    payload = response.json()
    assert isinstance(payload, list), payload
    return [without_count(body) for body in payload]


def test_a_batch_is_answered_in_order_one_response_per_operation(
    batching: ServerThread, admin: Actor
) -> None:
    response = send(
        batching,
        admin,
        [
            {"query": VIEWER},
            {"query": "query Named($n: String!) { __type(name: $n) { name } }", "variables": {"n": "User"}},
            {"query": "{ __typename }", "operationName": None, "variables": None, "extensions": None},
        ],
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(GRJ)
    assert bodies(response) == [
        {"data": {"viewer": {"id": admin.user_id}}},
        {"data": {"__type": {"name": "User"}}},
        {"data": {"__typename": "Query"}},
    ]


def test_mutations_in_a_batch_run_in_the_order_sent(batching: ServerThread, admin: Actor) -> None:
    operations = [{"query": CREATE, "variables": {"t": t}} for t in ("first", "second")] + [{"query": TITLES}]
    response = send(batching, admin, operations)
    assert response.status_code == 200
    created, second, listed = bodies(response)
    assert created == {"data": {"conversationCreate": {"title": "first"}}}
    assert second == {"data": {"conversationCreate": {"title": "second"}}}
    # The query after them sees both: operations run one after the other, not concurrently.
    assert sorted(n["title"] for n in listed["data"]["conversations"]["nodes"]) == ["first", "second"]


def test_an_idempotency_key_header_on_a_batch_is_refused_before_anything_runs(
    batching: ServerThread, admin: Actor
) -> None:
    operations = [{"query": CREATE, "variables": {"t": t}} for t in ("one", "two")]
    response = send(batching, admin, operations, **{"Idempotency-Key": "k-1"})
    assert response.status_code == 400
    (error,) = response.json()["errors"]
    assert error["extensions"]["argument"] == "Idempotency-Key"
    assert "clientMutationId" in error["message"]
    assert admin.client.ok(TITLES) == {"conversations": {"nodes": []}}
    # Keys per mutation work in a batch: each operation is its own request.
    keyed = "mutation($t: String!, $k: String) { conversationCreate(input: {title: $t}, clientMutationId: $k) { id } }"
    first = send(batching, admin, [{"query": keyed, "variables": {"t": "a", "k": "ka"}}] * 2)
    one, again = bodies(first)
    assert one == again  # the second is a replay of the first
    assert len(admin.client.ok(TITLES)["conversations"]["nodes"]) == 1


def test_each_operation_fails_alone_with_its_own_errors(batching: ServerThread, admin: Actor) -> None:
    too_deep = "{ conversations { edges { node { owner { id } } } } }"
    response = send(
        batching,
        admin,
        [
            {"query": "{ viewer { nope } }"},  # validation error
            {"query": too_deep},  # over the depth limit (4 on this server)
            {"query": VIEWER},
        ],
    )
    assert response.status_code == 200  # one operation succeeded: a partial success
    invalid, deep, ok = bodies(response)
    assert "data" not in invalid and invalid["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert "data" not in deep and deep["errors"][0]["extensions"]["limitName"] == "depth"
    assert ok == {"data": {"viewer": {"id": admin.user_id}}}


def test_operations_strawberry_refuses_are_errors_of_their_own_entry(
    batching: ServerThread, admin: Actor
) -> None:
    response = send(
        batching, admin, [{"variables": {}}, {"query": VIEWER, "operationName": "Missing"}, {"query": VIEWER}]
    )
    assert response.status_code == 200
    missing, unknown, ok = bodies(response)
    assert (
        "data" not in missing and missing["errors"][0]["message"] == "No GraphQL query found in the request"
    )
    assert "data" not in unknown and unknown["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert ok == {"data": {"viewer": {"id": admin.user_id}}}


def test_a_batch_where_every_operation_fails_gets_their_status(batching: ServerThread, admin: Actor) -> None:
    refused = send(batching, None, [{"query": VIEWER}, {"query": VIEWER}])
    assert refused.status_code == 401  # graphql-response+json: no operation may run unauthenticated
    assert [b["errors"][0]["extensions"]["code"] for b in bodies(refused)] == ["UNAUTHENTICATED"] * 2
    legacy = send(batching, None, [{"query": VIEWER}, {"query": "{"}], accept="application/json")
    assert legacy.status_code == 200
    assert all("data" not in b for b in bodies(legacy))


def test_each_operation_is_rate_counted_on_its_own(
    batching: ServerThread, admin: Actor, make_user: Callable[..., Actor]
) -> None:
    member = make_user(admin)
    assign(admin, member, profile(admin, "two", requestsPerWindow=2))
    response = send(batching, member, [{"query": VIEWER}] * 3)
    assert response.status_code == 200  # two ran; the third is refused alone
    first, second, third = bodies(response)
    assert first == second == {"data": {"viewer": {"id": member.user_id}}}
    assert "data" not in third
    assert third["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
    assert third["errors"][0]["extensions"]["retryAfter"] == 43200
    assert response.headers["RateLimit-Remaining"] == "0"
    assert "Retry-After" not in response.headers  # the batch as a whole succeeded
    # Everything spent: a whole batch refused is 429 with Retry-After, each entry saying why.
    again = send(batching, member, [{"query": VIEWER}, {"query": VIEWER}])
    assert again.status_code == 429
    assert again.headers["Retry-After"] == "43200"
    assert [b["errors"][0]["extensions"]["code"] for b in bodies(again)] == ["RATE_LIMITED"] * 2


def test_a_batch_over_the_limit_is_400_naming_it(batching: ServerThread, admin: Actor) -> None:
    response = send(batching, admin, [{"query": VIEWER}] * (BATCH_MAX + 1))
    assert response.status_code == 400
    body = without_count(response.json())
    assert body == {
        "errors": [
            {
                "message": "The batch holds 4 operations; the limit is 3 (THREADLINE_BATCH_MAX)",
                "extensions": {
                    "code": "BAD_USER_INPUT",
                    "limitName": "batchOperations",
                    "limit": 3,
                    "actual": 4,
                },
            }
        ]
    }
    assert send(batching, admin, [{"query": VIEWER}] * BATCH_MAX).status_code == 200


@pytest.mark.parametrize(
    ("operations", "message"),
    [
        ([], "A batch must hold at least one operation"),
        ([{"query": VIEWER}, 7], "Operation 1 of the batch: a GraphQL request must be a JSON object"),
        ([{"query": 5}], "Operation 0 of the batch: `query` must be a string or null, if provided"),
        (
            [{"query": VIEWER, "variables": [1]}],
            "Operation 0 of the batch: `variables` must be an object or null, if provided",
        ),
    ],
)
def test_a_malformed_batch_is_400(
    batching: ServerThread, admin: Actor, operations: Any, message: str
) -> None:
    response = send(batching, admin, operations)
    assert response.status_code == 400
    assert [e["message"] for e in response.json()["errors"]] == [message]


def test_batches_are_refused_when_the_setting_is_0(server: ServerThread, admin: Actor) -> None:
    response = send(server, admin, [{"query": VIEWER}])
    assert response.status_code == 400
    assert without_count(response.json()) == {
        "errors": [{"message": "Batching is not enabled", "extensions": {"code": "BAD_USER_INPUT"}}]
    }
