"""Rate limits: profiles in tables, budgets at their edges, shared across processes, changes effective at once."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import asyncpg
import httpx
import pytest

from tests.harness import Actor, ServerThread, serve_process, test_settings, without_count
from tests.ws import WsClient
from threadline.ids import Kind, decode_id
from threadline.ratelimits.service import LEASE_SECONDS

# 86,400 s windows refill one token per 86,400 / perWindow seconds: nothing refills during a test.
DAY = 86_400
CREATE = """mutation($i: RateLimitProfileCreateInput!) { rateLimitProfileCreate(input: $i) {
  id name windowSeconds burst requestsPerWindow mutationsPerWindow runsPerWindow subscriptionsPerWindow isDefault } }"""
ASSIGN = """mutation($u: ID!, $p: ID) { rateLimitProfileAssign(userId: $u, profileId: $p) {
  profile { name } requestsPerWindow } }"""
UPDATE = """mutation($id: ID!, $i: RateLimitProfileUpdateInput!) { rateLimitProfileUpdate(id: $id, input: $i) {
  name requestsPerWindow } }"""
VIEWER = "{ viewer { id } }"


def profile(admin: Actor, name: str, **budgets: Any) -> str:
    values = {"name": name, "windowSeconds": DAY, **budgets}
    return str(admin.client.ok(CREATE, {"i": values})["rateLimitProfileCreate"]["id"])


def assign(admin: Actor, user: Actor, profile_id: str | None) -> dict[str, Any]:
    return dict(admin.client.ok(ASSIGN, {"u": user.user_id, "p": profile_id})["rateLimitProfileAssign"])


def post(url: str, actor: Actor, query: str, variables: dict[str, Any] | None = None) -> httpx.Response:
    return httpx.post(
        f"{url}/graphql",
        json={"query": query, "variables": variables or {}},
        headers={"Authorization": f"Bearer {actor.api_key}"},
        timeout=30,
    )


def headers(response: httpx.Response) -> tuple[str | None, str | None, str | None]:
    h = response.headers
    return h.get("RateLimit-Limit"), h.get("RateLimit-Remaining"), h.get("RateLimit-Reset")


@pytest.fixture
def member(admin: Actor, make_user: Callable[..., Actor]) -> Actor:
    return make_user(admin)


def test_requests_are_allowed_up_to_the_budget_and_refused_one_past_it(
    admin: Actor, member: Actor, server: ServerThread
) -> None:
    assign(admin, member, profile(admin, "three", requestsPerWindow=3))
    seen = []
    for _ in range(3):
        response = post(server.url, member, VIEWER)
        assert response.status_code == 200
        assert without_count(response.json()) == {"data": {"viewer": {"id": member.user_id}}}
        seen.append(headers(response))
    # One token per 28,800 s: the reset is how long until the bucket is full again.
    assert seen == [("3", "2", "28800"), ("3", "1", "57600"), ("3", "0", "86400")]
    refused = post(server.url, member, VIEWER)
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "28800"
    assert headers(refused) == ("3", "0", "28800")
    assert without_count(refused.json()) == {  # refused before execution: no `data` entry
        "errors": [
            {
                "message": "Rate limit of the `requests` budget reached (3 at most); retry after 28800 s",
                "extensions": {"code": "RATE_LIMITED", "retryAfter": 28800, "budget": "requests", "limit": 3},
            }
        ],
    }


def test_burst_adds_to_what_a_budget_holds(admin: Actor, member: Actor, server: ServerThread) -> None:
    assign(admin, member, profile(admin, "burst", requestsPerWindow=2, burst=1))
    assert [post(server.url, member, VIEWER).status_code for _ in range(4)] == [200, 200, 200, 429]


def test_mutations_have_their_own_budget_and_queries_go_on(
    admin: Actor, member: Actor, server: ServerThread
) -> None:
    assign(admin, member, profile(admin, "m2", mutationsPerWindow=2))
    create = 'mutation { conversationCreate(input: {title: "x"}) { title } }'
    for _ in range(2):
        assert without_count(post(server.url, member, create).json()) == {
            "data": {"conversationCreate": {"title": "x"}}
        }
    refused = without_count(post(server.url, member, create).json())
    assert refused["errors"][0]["extensions"] == {
        "code": "RATE_LIMITED",
        "retryAfter": 43200,
        "budget": "mutations",
        "limit": 2,
    }
    assert member.client.ok("{ conversations { totalCount } }") == {"conversations": {"totalCount": 2}}


def test_each_top_level_mutation_field_draws_from_the_mutation_budget(
    admin: Actor, member: Actor, server: ServerThread
) -> None:
    assign(admin, member, profile(admin, "m3", mutationsPerWindow=3))
    two = 'mutation { a: conversationCreate(input: {title: "a"}) { id } b: conversationCreate(input: {title: "b"}) { id } }'
    assert post(server.url, member, two).status_code == 200
    assert post(server.url, member, two).json()["errors"][0]["extensions"]["budget"] == "mutations"
    assert member.client.ok("{ conversations { totalCount } }") == {"conversations": {"totalCount": 2}}


def test_run_creation_has_its_own_budget(admin: Actor, member: Actor, server: ServerThread) -> None:
    assign(admin, member, profile(admin, "r1", runsPerWindow=1))
    cid = member.client.ok('mutation { conversationCreate(input: {title: "r"}) { id } }')[
        "conversationCreate"
    ]["id"]
    mids = [
        member.client.ok(
            'mutation($c: ID!) { threadStart(conversationId: $c, input: {content: "hi"}) { id } }', {"c": cid}
        )["threadStart"]["id"]
        for _ in range(2)
    ]
    run = "mutation($m: ID!) { runCreate(input: {messageId: $m}) { status } }"
    assert post(server.url, member, run, {"m": mids[0]}).json()["data"]["runCreate"]["status"] in {
        "QUEUED",
        "IN_PROGRESS",
        "COMPLETED",
    }
    refused = without_count(post(server.url, member, run, {"m": mids[1]}).json())
    assert refused["errors"][0]["extensions"] == {
        "code": "RATE_LIMITED",
        "retryAfter": 86400,
        "budget": "runs",
        "limit": 1,
    }


def test_subscription_starts_have_their_own_budget(admin: Actor, member: Actor, server: ServerThread) -> None:
    assign(admin, member, profile(admin, "s1", subscriptionsPerWindow=1))
    ws = WsClient(server.ws_url, member.api_key)
    try:
        # Both starts race on the server: whichever comes second is refused, the other stays open.
        ws.subscribe("subscription { viewerEvents { type } }", op_id="1")
        ws.subscribe("subscription { viewerEvents { type } }", op_id="2")
        message = ws.receive()
        while not (message["type"] == "next" and message["payload"].get("errors")):
            message = ws.receive()
        assert message["id"] in {"1", "2"}
        assert without_count(message["payload"])["errors"][0]["extensions"] == {
            "code": "RATE_LIMITED",
            "retryAfter": 86400,
            "budget": "subscriptions",
            "limit": 1,
        }
        refused = message["id"]
        assert ws.receive() == {"id": refused, "type": "complete"}
        ws.expect_quiet(0.5)  # the other one was not refused
    finally:
        ws.ws.close()


def test_a_raised_budget_applies_at_once(admin: Actor, member: Actor, server: ServerThread) -> None:
    pid = profile(admin, "two", requestsPerWindow=2)
    assign(admin, member, pid)
    assert [post(server.url, member, VIEWER).status_code for _ in range(3)] == [200, 200, 429]
    assert admin.client.ok(UPDATE, {"id": pid, "i": {"requestsPerWindow": 5}}) == {
        "rateLimitProfileUpdate": {"name": "two", "requestsPerWindow": 5}
    }
    # Raising 2 -> 5 grants the 3 extra tokens at once.
    assert [post(server.url, member, VIEWER).status_code for _ in range(4)] == [200, 200, 200, 429]


def test_a_lowered_budget_applies_at_once(admin: Actor, member: Actor, server: ServerThread) -> None:
    pid = profile(admin, "ten", requestsPerWindow=10)
    assign(admin, member, pid)
    assert post(server.url, member, VIEWER).status_code == 200
    admin.client.ok(UPDATE, {"id": pid, "i": {"requestsPerWindow": 2}})
    # One of the two is spent already.
    assert [post(server.url, member, VIEWER).status_code for _ in range(2)] == [200, 429]


def test_the_tenant_default_profile_applies_to_unassigned_users_and_assignments_override_it(
    admin: Actor, member: Actor, server: ServerThread
) -> None:
    roomy = profile(admin, "roomy", requestsPerWindow=100)
    assign(admin, admin, roomy)  # the default applies to admins too
    default = admin.client.ok(
        CREATE, {"i": {"name": "default", "windowSeconds": DAY, "requestsPerWindow": 1, "isDefault": True}}
    )["rateLimitProfileCreate"]
    assert default["isDefault"] is True
    assert member.client.ok("{ rateLimit { profile { name } requestsPerWindow } }") == {
        "rateLimit": {"profile": {"name": "default"}, "requestsPerWindow": 1}
    }
    assert post(server.url, member, VIEWER).status_code == 429  # the query above spent the one token
    assert assign(admin, member, roomy) == {"profile": {"name": "roomy"}, "requestsPerWindow": 100}
    assert post(server.url, member, VIEWER).status_code == 200
    assert assign(admin, member, None) == {"profile": {"name": "default"}, "requestsPerWindow": 1}
    assert post(server.url, member, VIEWER).status_code == 429


def test_a_new_default_replaces_the_old_one(admin: Actor) -> None:
    profile(admin, "a", isDefault=True)
    profile(admin, "b", isDefault=True)
    listed = admin.client.ok("{ rateLimitProfiles { name isDefault } }")["rateLimitProfiles"]
    assert listed == [{"name": "a", "isDefault": False}, {"name": "b", "isDefault": True}]


def test_without_profiles_the_built_in_budgets_apply(member: Actor) -> None:
    assert member.client.ok(
        "{ rateLimit { profile { id } windowSeconds burst requestsPerWindow mutationsPerWindow runsPerWindow "
        "subscriptionsPerWindow } }"
    ) == {
        "rateLimit": {
            "profile": None,
            "windowSeconds": 60,
            "burst": 0,
            "requestsPerWindow": 6000,
            "mutationsPerWindow": 1200,
            "runsPerWindow": 300,
            "subscriptionsPerWindow": 600,
        }
    }


def test_only_admins_manage_profiles(admin: Actor, member: Actor) -> None:
    pid = profile(admin, "p")
    assert member.client.code("{ rateLimitProfiles { id } }") == "FORBIDDEN"
    assert member.client.code(CREATE, {"i": {"name": "mine"}}) == "FORBIDDEN"
    assert member.client.code(UPDATE, {"id": pid, "i": {"requestsPerWindow": 1}}) == "FORBIDDEN"
    assert member.client.code(ASSIGN, {"u": member.user_id, "p": None}) == "FORBIDDEN"
    assert (
        member.client.code("query($u: ID!) { rateLimit(userId: $u) { burst } }", {"u": admin.user_id})
        == "FORBIDDEN"
    )


def test_another_tenants_profile_is_not_found(
    admin: Actor, make_tenant: Callable[..., Actor], member: Actor
) -> None:
    other = make_tenant()
    theirs = profile(other, "theirs")
    assert admin.client.code(ASSIGN, {"u": member.user_id, "p": theirs}) == "NOT_FOUND"
    assert admin.client.code(UPDATE, {"id": theirs, "i": {"burst": 1}}) == "NOT_FOUND"
    assert admin.client.ok("query($id: ID!) { node(id: $id) { id } }", {"id": theirs}) == {"node": None}


def test_profile_input_is_checked(admin: Actor) -> None:
    assert admin.client.code(CREATE, {"i": {"name": " "}}) == "BAD_USER_INPUT"
    assert admin.client.code(CREATE, {"i": {"name": "w", "windowSeconds": 0}}) == "BAD_USER_INPUT"
    assert admin.client.code(CREATE, {"i": {"name": "n", "burst": -1}}) == "BAD_USER_INPUT"
    profile(admin, "same")
    assert admin.client.code(CREATE, {"i": {"name": "same"}}) == "CONFLICT"


@pytest.fixture
def second_process(server: ServerThread, dsn: str) -> Iterator[str]:
    with serve_process(dsn) as url:
        yield url


def test_two_processes_share_one_budget(
    admin: Actor, member: Actor, server: ServerThread, second_process: str
) -> None:
    assign(admin, member, profile(admin, "four", requestsPerWindow=4))
    urls = [server.url, second_process] * 3
    assert [post(url, member, VIEWER).status_code for url in urls] == [200, 200, 200, 200, 429, 429]


def test_a_profile_change_made_through_one_process_applies_in_the_other(
    admin: Actor, member: Actor, server: ServerThread, second_process: str
) -> None:
    pid = profile(admin, "one", requestsPerWindow=1)
    assign(admin, member, pid)
    assert [post(second_process, member, VIEWER).status_code for _ in range(2)] == [200, 429]
    admin.client.ok(UPDATE, {"id": pid, "i": {"requestsPerWindow": 2}})
    assert [post(second_process, member, VIEWER).status_code for _ in range(2)] == [200, 429]


def bucket_tokens(dsn: str, loop: Any, user: Actor) -> int:
    """The whole tokens the user's `requests` bucket holds in the database (refills of a day's window aside)."""

    async def read() -> int:
        conn = await asyncpg.connect(dsn)
        try:
            milli = await conn.fetchval(
                "SELECT tokens_milli FROM rate_limit_bucket WHERE user_id = $1 AND bucket = 'requests'",
                decode_id(user.user_id, Kind.USER),
            )
        finally:
            await conn.close()
        return int(milli) // 1000

    return int(loop.run(read()))


@pytest.fixture
def leasing_server(server: ServerThread, dsn: str) -> Iterator[ServerThread]:
    """A server that takes tokens ahead as by default (the shared test server does not: exact statement counts)."""
    srv = ServerThread(test_settings(dsn, migrate_on_start=False, rate_limit_lease_max=16))
    srv.start()
    yield srv
    srv.stop()


def test_a_busy_user_takes_tokens_ahead_and_each_query_still_counts_once(
    admin: Actor, member: Actor, leasing_server: ServerThread, second_process: str, dsn: str, loop: Any
) -> None:
    server = leasing_server
    assign(admin, member, profile(admin, "thousand", requestsPerWindow=1000))
    remaining = [headers(post(server.url, member, VIEWER))[1] for _ in range(20)]
    assert remaining == [str(n) for n in range(999, 979, -1)]  # as if each query drew its own token
    held = bucket_tokens(dsn, loop, member)
    assert 980 - 15 <= held < 980  # this process holds a few tokens ahead: gone from the shared bucket
    # Another process draws from the same bucket: it sees what the first one holds ahead as spent.
    assert headers(post(second_process, member, VIEWER))[1] == str(held - 1)
    time.sleep(2 * LEASE_SECONDS + 0.2)  # the lease is over and the user no longer busy
    # The first process gives back what it did not spend before its next draw: the count is exact again.
    assert headers(post(server.url, member, VIEWER))[1] == str(1000 - 22)
    assert bucket_tokens(dsn, loop, member) == 1000 - 22


def test_a_lowered_budget_applies_at_once_to_a_user_holding_tokens_ahead(
    admin: Actor, member: Actor, leasing_server: ServerThread, dsn: str, loop: Any
) -> None:
    server = leasing_server
    pid = profile(admin, "many", requestsPerWindow=1000)
    assign(admin, member, pid)
    assert [post(server.url, member, VIEWER).status_code for _ in range(3)] == [200, 200, 200]
    assert bucket_tokens(dsn, loop, member) < 997  # tokens taken ahead
    admin.client.ok(UPDATE, {"id": pid, "i": {"requestsPerWindow": 5}})
    # Three of the five are spent; the tokens held ahead went back before the next draw.
    assert [post(server.url, member, VIEWER).status_code for _ in range(3)] == [200, 200, 429]


def test_a_draw_in_flight_across_a_profile_change_keeps_no_tokens_ahead(
    admin: Actor, member: Actor, dsn: str, loop: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A profile change that commits while a user's draw is in flight (the draw ran under the old budget) must
    not leave that draw's tokens taken ahead to spend: they go back at once, and the next query draws."""
    from threadline.auth.principal import Principal, Role
    from threadline.ratelimits import service

    assign(admin, member, profile(admin, "thousand", requestsPerWindow=1000))
    tenant, user = decode_id(admin.tenant_id, Kind.TENANT), decode_id(member.user_id, Kind.USER)
    principal = Principal(tenant_id=tenant, user_id=user, role=Role.MEMBER, team=None)
    settings = test_settings(dsn, rate_limit_lease_max=16)
    real = service.repo.consume

    async def consume_then_change(*args: Any, **kwargs: Any) -> Any:
        rows = await real(*args, **kwargs)
        service.expire_leases(tenant)  # what a profile update or assignment does once it committed
        return rows

    async def two_queries() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await service.spend(conn, settings, principal, {"requests": 1})  # the first: no tokens ahead
            monkeypatch.setattr(service.repo, "consume", consume_then_change)
            await service.spend(conn, settings, principal, {"requests": 1})  # busy: would take tokens ahead
        finally:
            await conn.close()

    loop.run(two_queries())
    lease = service._leases.get((tenant, user))
    assert lease is None or lease.left == 0
    assert bucket_tokens(dsn, loop, member) == 1000 - 2  # the tokens taken ahead went back


def test_anonymous_operations_are_counted_per_client_address(dsn: str, admin: Actor) -> None:
    """Introspection and shared links run without credentials, so no budget row holds them: a full introspection
    costs ~0.15-0.2 s of CPU and twenty at once held both cores. They are counted per client address and process
    (THREADLINE_RATE_LIMIT_ANONYMOUS), refused past it like any budget; callers with credentials are not."""
    srv = ServerThread(
        test_settings(dsn, migrate_on_start=False, rate_limit_anonymous=3, rate_limit_window_seconds=3600)
    )
    srv.start()
    try:
        introspect = {"query": "{ __schema { queryType { name } } }"}
        for _ in range(3):
            response = httpx.post(f"{srv.url}/graphql", json=introspect, timeout=30)
            assert response.json()["data"] == {"__schema": {"queryType": {"name": "Query"}}}
        refused = httpx.post(f"{srv.url}/graphql", json=introspect, timeout=30)
        assert refused.status_code == 429
        assert 0 < int(refused.headers["Retry-After"]) <= 3600
        (error,) = refused.json()["errors"]
        assert (error["extensions"]["code"], error["extensions"]["budget"], error["extensions"]["limit"]) == (
            "RATE_LIMITED",
            "anonymous",
            3,
        )
        # The same address with credentials goes on.
        with_key = post(srv.url, admin, "{ __schema { queryType { name } } }")
        assert with_key.status_code == 200, with_key.text
    finally:
        srv.stop()


def test_an_ipv6_client_is_counted_by_its_64_as_one_host_holds_a_whole_64() -> None:
    from types import SimpleNamespace

    from threadline.ratelimits.addresses import counted

    def of(host: str) -> str:
        return counted(SimpleNamespace(client=SimpleNamespace(host=host)))

    assert of("2001:db8:1:2:aaaa::1") == of("2001:db8:1:2:ffff:1:2:3") == "2001:db8:1:2::/64"
    assert of("2001:db8:1:3::1") != of("2001:db8:1:2::1")
    assert (of("127.0.0.1"), of("::ffff:10.0.0.1"), of("unix-socket")) == (
        "127.0.0.1",
        "::ffff:10.0.0.1",
        "unix-socket",
    )
