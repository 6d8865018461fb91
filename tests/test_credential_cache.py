"""Credentials cached in the process (issue 14 item 3) stay live (ARCHITECTURE.md, Trust): a cached credential
saves the authentication statement, and a revocation or role change still takes effect at once on the process
that made it and, through `principal.changed`, on every worker of another server.

The caches here are given an hour (THREADLINE_CREDENTIAL_CACHE_SECONDS=3600), so only the invalidation can make
a change take effect: the time bound alone would not within these tests.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import httpx
import jwt
import pytest

from tests.harness import (
    METRICS_HEADERS,
    TEST_JWT_SECRET,
    Actor,
    Client,
    Loop,
    ServerThread,
    create_admin,
    serve_process,
    test_settings,
)
from threadline.auth.credentials import CredentialCache
from threadline.auth.principal import Principal, Role

VIEWER = "{ viewer { id role } }"
KEY_CREATE = 'mutation($u: ID!) { apiKeyCreate(userId: $u, name: "k") { secret apiKey { id } } }'
KEY_REVOKE = "mutation($k: ID!) { apiKeyRevoke(id: $k) { id revoked } }"
ROLE_SET = "mutation($u: ID!, $r: Role!) { userRoleSet(userId: $u, role: $r) { id role } }"
USER_CREATE = "mutation($e: String!) { userCreate(input: {email: $e, role: ADMIN}) { id } }"
# An upper bound for a loaded machine (two shared cores), not a latency claim.
SETTLE_SECONDS = 20.0


@pytest.fixture(scope="module")
def cached(dsn: str) -> Iterator[ServerThread]:
    """An in-process server whose credential cache keeps entries for an hour."""
    srv = ServerThread(test_settings(dsn, migrate_on_start=False, credential_cache_seconds=3600.0))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def workers(dsn: str) -> Iterator[str]:
    """`threadline serve --workers 2` on the session database, caching credentials for an hour."""
    with serve_process(
        dsn,
        THREADLINE_WORKERS="2",
        THREADLINE_CREDENTIAL_CACHE_SECONDS="3600",
        THREADLINE_RUN_WORKERS="0",
        THREADLINE_METRICS_TOKEN=METRICS_HEADERS["Authorization"].removeprefix("Bearer "),
    ) as url:
        yield url


def second_key(admin: Actor, base_url: str) -> tuple[str, str]:
    """A second API key of the admin: (secret, key id)."""
    made = admin.client.ok(KEY_CREATE, {"u": admin.user_id})["apiKeyCreate"]
    return made["secret"], made["apiKey"]["id"]


def viewer_on_fresh_connection(base_url: str, secret: str) -> dict[str, object]:
    """One request on a new connection (so the kernel may hand it to any worker of the port)."""
    headers = {"Authorization": f"Bearer {secret}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=30) as http:
        body: dict[str, object] = http.post("/graphql", json={"query": VIEWER}).json()
    return body


def refused(body: dict[str, object]) -> bool:
    errors = body.get("errors")
    return bool(errors) and errors[0]["extensions"]["code"] == "UNAUTHENTICATED"  # type: ignore[index]


def test_a_cached_credential_costs_no_statement(cached: ServerThread, loop: Loop, dsn: str) -> None:
    admin = create_admin(loop, dsn, cached.url)
    try:
        first = admin.client.statements(VIEWER)
        second = admin.client.statements(VIEWER)
        assert first - second == 1  # the key's lookup, made once
    finally:
        admin.client.http.close()


def test_a_revoked_key_is_refused_by_the_next_request_on_the_same_process(
    cached: ServerThread, loop: Loop, dsn: str
) -> None:
    admin = create_admin(loop, dsn, cached.url)
    secret, key_id = second_key(admin, cached.url)
    other = Client(cached.url, secret)
    try:
        assert other.ok(VIEWER)["viewer"]["id"] == admin.user_id  # cached now
        other.ok(KEY_REVOKE, {"k": key_id})  # revoked with itself: the very next request is refused
        assert other.error(VIEWER)["extensions"]["code"] == "UNAUTHENTICATED"
        assert admin.client.ok(VIEWER)["viewer"]["id"] == admin.user_id  # the other key still works
    finally:
        other.http.close()
        admin.client.http.close()


def test_a_role_change_is_seen_by_the_next_request(cached: ServerThread, loop: Loop, dsn: str) -> None:
    admin = create_admin(loop, dsn, cached.url)
    user_id = admin.client.ok(USER_CREATE, {"e": f"{uuid.uuid4().hex[:8]}@example.com"})["userCreate"]["id"]
    made = admin.client.ok(KEY_CREATE, {"u": user_id})["apiKeyCreate"]
    demoted = Client(cached.url, made["secret"])
    try:
        assert demoted.ok(VIEWER)["viewer"]["role"] == "ADMIN"  # cached as an admin
        admin.client.ok(ROLE_SET, {"u": user_id, "r": "MEMBER"})
        assert demoted.ok(VIEWER)["viewer"]["role"] == "MEMBER"
    finally:
        demoted.http.close()
        admin.client.http.close()


def test_a_revocation_reaches_every_worker_of_another_server(
    cached: ServerThread, workers: str, loop: Loop, dsn: str
) -> None:
    admin = create_admin(loop, dsn, cached.url)
    secret, key_id = second_key(admin, cached.url)
    try:
        # Used on many connections: both workers of the other server hold it in their caches.
        for _ in range(20):
            assert not refused(viewer_on_fresh_connection(workers, secret))
        assert served_by(workers) >= 2, "both workers answered"
        admin.client.ok(KEY_REVOKE, {"k": key_id})  # through the in-process server
        deadline = time.monotonic() + SETTLE_SECONDS
        while not refused(viewer_on_fresh_connection(workers, secret)):
            assert time.monotonic() < deadline, "the revocation never reached the other server"
            time.sleep(0.05)
        # And it holds on every connection, whichever worker takes it.
        assert all(refused(viewer_on_fresh_connection(workers, secret)) for _ in range(20))
    finally:
        admin.client.http.close()


def served_by(base_url: str) -> int:
    """How many worker processes have answered GraphQL requests (the per-pid gauge in /metrics)."""
    text = httpx.get(f"{base_url}/metrics", headers=METRICS_HEADERS, timeout=10).text
    return sum(
        1
        for line in text.splitlines()
        if line.startswith("threadline_worker_http_requests{") and float(line.rsplit(" ", 1)[1]) > 0
    )


def test_a_cached_jwt_is_refused_once_it_expires(cached: ServerThread, loop: Loop, dsn: str) -> None:
    admin = create_admin(loop, dsn, cached.url)
    expires = int(time.time()) + 3
    claims = {"sub": "short-lived", "tenant": admin.tenant_id, "role": "MEMBER", "exp": expires}
    bearer = Client(cached.url, jwt.encode(claims, TEST_JWT_SECRET, algorithm="HS256"))
    try:
        assert bearer.ok(VIEWER)["viewer"]["role"] == "MEMBER"  # cached, for an hour at most
        while time.time() < expires + 1:
            time.sleep(0.2)
        assert bearer.error(VIEWER)["extensions"]["code"] == "UNAUTHENTICATED"
    finally:
        bearer.http.close()
        admin.client.http.close()


def test_a_load_that_began_before_an_invalidation_is_not_kept(loop: Loop) -> None:
    cache = CredentialCache(3600.0)
    stale = Principal(uuid.uuid4(), uuid.uuid4(), Role.ADMIN, None)
    fresh = Principal(stale.tenant_id, stale.user_id, Role.MEMBER, None)

    async def load_racing_a_revocation() -> Principal:
        cache.forget()  # a principal.changed arrives while the old row is being read
        return stale

    async def load_again() -> Principal:
        return fresh

    async def scenario() -> tuple[Principal, Principal]:
        first = await cache.principal("Bearer k", load_racing_a_revocation)
        second = await cache.principal("Bearer k", load_again)
        return first, second

    assert loop.run(scenario()) == (stale, fresh)


# --- the other fixed cost: parsing (graphql.parse_cache) ------------------------------------------------


def test_a_document_parsed_under_one_token_limit_is_still_refused_under_a_lower_one(
    server: ServerThread, admin: Actor, dsn: str
) -> None:
    query = "query Tokens { viewer { id email displayName role } }"  # 13 tokens
    assert admin.client.ok(query)["viewer"]["id"] == admin.user_id  # parsed and kept under the default limit
    strict = ServerThread(test_settings(dsn, migrate_on_start=False, query_max_tokens=8))
    strict.start()  # the same process, so the same cache of parsed documents
    try:
        refused = Client(strict.url, admin.api_key).error(query)
        assert refused["extensions"]["limitName"] == "tokens"
    finally:
        strict.stop()


def test_documents_holding_a_string_literal_are_not_kept(server: ServerThread, admin: Actor) -> None:
    from threadline.graphql import parse_cache

    literal = 'mutation { conversationCreate(input: {title: "a caller\'s own words"}) { id } }'
    admin.client.ok(literal)
    assert not any("own words" in query for query, _ in parse_cache._documents)
    plain = "query Kept { viewer { id } }"
    admin.client.ok(plain)
    assert any(query == plain for query, _ in parse_cache._documents)


# --- and the limit rule's walk (graphql.limit_cache): only passes are kept, per variables and settings ----------

PAGE = "query Page($n: Int) { conversations(first: $n) { edges { node { id participants { role } } } } }"


def test_a_document_that_passed_with_small_pages_is_still_refused_with_large_ones(
    server: ServerThread, admin: Actor
) -> None:
    assert admin.client.ok(PAGE, {"n": 2})["conversations"]["edges"] == []  # passed and kept
    refused = admin.client.error(PAGE, {"n": 10_000_000})
    assert refused["extensions"]["limitName"] == "listSize", refused  # the limit rule's, before any resolver


def test_a_document_that_passed_on_one_server_is_still_refused_under_stricter_limits(
    server: ServerThread, admin: Actor, dsn: str
) -> None:
    assert admin.client.ok(PAGE, {"n": 2})["conversations"]["edges"] == []
    strict = ServerThread(test_settings(dsn, migrate_on_start=False, query_max_depth=2))
    strict.start()  # the same process: the same cache of passes
    try:
        refused = Client(strict.url, admin.api_key).error(PAGE, {"n": 2})
        assert refused["extensions"]["limitName"] == "depth", refused
    finally:
        strict.stop()
