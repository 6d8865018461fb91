"""Authentication (API keys, JWTs), users and API key management, through the GraphQL API."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import pytest

from tests.api import CREATE, count_rows, snapshot
from tests.harness import TEST_JWT_SECRET, Actor, Client, Loop, ServerThread
from threadline.ids import Kind, encode_id

VIEWER = "{ viewer { id role email displayName team } }"
USER_CREATE = "mutation($i: UserCreateInput!) { userCreate(input: $i) { id email role team displayName } }"
KEY_CREATE = """mutation($u: ID!, $n: String!) {
  apiKeyCreate(userId: $u, name: $n) { secret apiKey { id name prefix revoked user { id } } } }"""
KEY_REVOKE = "mutation($k: ID!) { apiKeyRevoke(id: $k) { id revoked } }"


def token(
    tenant_id: str,
    sub: str,
    role: str = "MEMBER",
    *,
    expires_in: float = 300,
    secret: str = TEST_JWT_SECRET,
    **extra: Any,
) -> str:
    claims = {"sub": sub, "tenant": tenant_id, "role": role, "exp": int(time.time() + expires_in), **extra}
    return jwt.encode(claims, secret, algorithm="HS256")


@pytest.fixture
def as_token(server: ServerThread) -> Any:
    clients: list[Client] = []

    def make(bearer: str | None) -> Client:
        client = Client(server.url, bearer)
        clients.append(client)
        return client

    yield make
    for c in clients:
        c.close()


# --- API keys -------------------------------------------------------------------------------------


def test_api_key_authenticates_as_its_user(admin: Actor, make_user: Callable[..., Actor]) -> None:
    member = make_user(admin, role="MEMBER", team="red")
    viewer = member.client.ok(VIEWER)["viewer"]
    assert viewer["id"] == member.user_id
    assert viewer["role"] == "MEMBER"
    assert viewer["team"] == "red"


def test_missing_authorization_is_unauthenticated_and_writes_nothing(
    admin: Actor, anonymous: Client, loop: Loop, dsn: str
) -> None:
    before = snapshot(loop, dsn)
    assert anonymous.code(VIEWER) == "UNAUTHENTICATED"
    assert anonymous.code(CREATE, {"i": {"title": "x"}}) == "UNAUTHENTICATED"
    assert "Authorization: Bearer" in anonymous.error(VIEWER)["message"]
    assert snapshot(loop, dsn) == before


@pytest.mark.parametrize(
    "header",
    [
        "Bearer tlk_" + "A" * 43,  # well-formed but unknown key
        "Bearer " + "x" * 5000,  # far too long to be a key
        "Basic dXNlcjpwYXNz",  # wrong scheme
        "Bearer",  # no token
        "Bearer \ttlk_x",
        "tlk_nobearer",
    ],
)
def test_bad_credentials_are_unauthenticated(admin: Actor, server: ServerThread, header: str) -> None:
    response = httpx.post(f"{server.url}/graphql", json={"query": VIEWER}, headers={"Authorization": header})
    body = response.json()
    assert "data" not in body  # refused before execution (GraphQL over HTTP: no `data` entry)
    assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


def test_bearer_scheme_is_case_insensitive(admin: Actor, server: ServerThread) -> None:
    response = httpx.post(
        f"{server.url}/graphql", json={"query": VIEWER}, headers={"Authorization": f"bearer {admin.api_key}"}
    )
    assert response.json()["data"]["viewer"]["id"] == admin.user_id


def test_api_key_secret_is_shown_once_and_only_its_hash_is_stored(
    admin: Actor, make_user: Callable[..., Actor], as_token: Any, loop: Loop, dsn: str
) -> None:
    member = make_user(admin)
    created = admin.client.ok(KEY_CREATE, {"u": member.user_id, "n": " laptop "})["apiKeyCreate"]
    secret = created["secret"]
    assert secret.startswith("tlk_")
    assert created["apiKey"]["prefix"] == secret[:12]
    assert created["apiKey"]["name"] == "laptop"
    assert created["apiKey"]["revoked"] is False
    assert created["apiKey"]["user"] == {"id": member.user_id}
    assert as_token(secret).ok("{ viewer { id } }")["viewer"]["id"] == member.user_id

    async def stored() -> list[str]:
        import asyncpg

        conn = await asyncpg.connect(dsn)
        try:
            return [r["key_hash"] for r in await conn.fetch("SELECT key_hash FROM api_key")]
        finally:
            await conn.close()

    hashes = loop.run(stored())
    assert all(secret not in h and len(h) == 64 for h in hashes)


def test_revoked_key_stops_authenticating_at_once_and_others_keep_working(
    admin: Actor, make_user: Callable[..., Actor], as_token: Any
) -> None:
    member = make_user(admin)
    second = admin.client.ok(KEY_CREATE, {"u": member.user_id, "n": "second"})["apiKeyCreate"]
    revoked = admin.client.ok(KEY_REVOKE, {"k": second["apiKey"]["id"]})["apiKeyRevoke"]
    assert revoked == {"id": second["apiKey"]["id"], "revoked": True}
    assert as_token(second["secret"]).code(VIEWER) == "UNAUTHENTICATED"
    assert member.client.ok("{ viewer { id } }")["viewer"]["id"] == member.user_id


def test_member_creates_keys_for_themself_but_not_for_others(
    admin: Actor, make_user: Callable[..., Actor], as_token: Any, loop: Loop, dsn: str
) -> None:
    member = make_user(admin)
    other = make_user(admin)
    own = member.client.ok(KEY_CREATE, {"u": member.user_id, "n": "mine"})["apiKeyCreate"]
    assert as_token(own["secret"]).ok("{ viewer { id } }")["viewer"]["id"] == member.user_id
    keys = count_rows(loop, dsn, "api_key")
    assert member.client.code(KEY_CREATE, {"u": other.user_id, "n": "theirs"}) == "FORBIDDEN"
    assert count_rows(loop, dsn, "api_key") == keys


def test_revoking_an_unknown_key_is_not_found(admin: Actor) -> None:
    assert admin.client.code(KEY_REVOKE, {"k": encode_id(Kind.API_KEY, uuid.uuid4())}) == "NOT_FOUND"


def test_api_key_for_an_unknown_user_is_not_found(admin: Actor) -> None:
    assert admin.client.code(KEY_CREATE, {"u": encode_id(Kind.USER, uuid.uuid4()), "n": "x"}) == "NOT_FOUND"


# --- users ----------------------------------------------------------------------------------------


def test_admin_creates_users_with_normalised_email_role_and_team(admin: Actor) -> None:
    user = admin.client.ok(
        USER_CREATE, {"i": {"email": "  Ada@Example.COM ", "role": "MANAGER", "team": " blue "}}
    )["userCreate"]
    assert user["email"] == "ada@example.com"
    assert user["role"] == "MANAGER"
    assert user["team"] == "blue"
    assert user["displayName"] == "ada"


def test_user_role_defaults_to_member(admin: Actor) -> None:
    user = admin.client.ok(USER_CREATE, {"i": {"email": "m@example.com"}})["userCreate"]
    assert user["role"] == "MEMBER"
    assert user["team"] is None


def test_only_admins_create_users(
    admin: Actor, make_user: Callable[..., Actor], loop: Loop, dsn: str
) -> None:
    manager = make_user(admin, role="MANAGER", team="t")
    users = count_rows(loop, dsn, "app_user")
    assert manager.client.code(USER_CREATE, {"i": {"email": "z@example.com"}}) == "FORBIDDEN"
    assert count_rows(loop, dsn, "app_user") == users


def test_duplicate_email_in_a_tenant_is_a_conflict_but_another_tenant_may_reuse_it(
    make_tenant: Callable[..., Actor],
) -> None:
    first, second = make_tenant(), make_tenant()
    first.client.ok(USER_CREATE, {"i": {"email": "same@example.com"}})
    assert first.client.code(USER_CREATE, {"i": {"email": "SAME@example.com"}}) == "CONFLICT"
    assert second.client.ok(USER_CREATE, {"i": {"email": "same@example.com"}})["userCreate"]["email"] == (
        "same@example.com"
    )


@pytest.mark.parametrize("email", ["", "no-at-sign", "@example.com", "a@", "x" * 400 + "@example.com"])
def test_invalid_email_is_bad_user_input(admin: Actor, email: str) -> None:
    assert admin.client.code(USER_CREATE, {"i": {"email": email}}) == "BAD_USER_INPUT"


def test_users_lists_the_callers_tenant_only_oldest_first(
    make_tenant: Callable[..., Actor], make_user: Callable[..., Actor]
) -> None:
    first, second = make_tenant(), make_tenant()
    a = make_user(first)
    make_user(second)
    data = a.client.ok("{ users(first: 10) { totalCount nodes { id } } }")["users"]
    assert data["totalCount"] == 2
    assert [n["id"] for n in data["nodes"]] == [first.user_id, a.user_id]


# --- JWTs -----------------------------------------------------------------------------------------


def test_jwt_provisions_the_user_on_first_sight_and_reuses_it_after(
    admin: Actor, as_token: Any, loop: Loop, dsn: str
) -> None:
    users = count_rows(loop, dsn, "app_user")
    first = as_token(token(admin.tenant_id, "alice", "MEMBER")).ok(VIEWER)["viewer"]
    assert first["role"] == "MEMBER"
    assert first["displayName"] == "alice"
    assert count_rows(loop, dsn, "app_user") == users + 1
    again = as_token(token(admin.tenant_id, "alice", "MEMBER")).ok(VIEWER)["viewer"]
    assert again["id"] == first["id"]
    assert count_rows(loop, dsn, "app_user") == users + 1
    listed = admin.client.ok("{ users(first: 10) { nodes { id } } }")["users"]["nodes"]
    assert {"id": first["id"]} in listed


def test_jwt_role_claim_counts_only_when_the_user_is_provisioned(admin: Actor, as_token: Any) -> None:
    # The stored role wins after provisioning (README, Auth): a later token's role claim changes nothing.
    member = as_token(token(admin.tenant_id, "bob", "MEMBER")).ok(VIEWER)["viewer"]
    again = as_token(token(admin.tenant_id, "bob", "ADMIN")).ok(VIEWER)["viewer"]
    assert again == member


def test_jwt_accepts_the_raw_tenant_uuid_too(admin: Actor, as_token: Any) -> None:
    raw = admin.tenant_id[4:]
    assert as_token(token(str(uuid.UUID(hex=raw)), "carol")).ok(VIEWER)["viewer"]["displayName"] == "carol"


def test_jwt_users_can_work_with_conversations(admin: Actor, as_token: Any) -> None:
    client = as_token(token(admin.tenant_id, "dave"))
    created = client.ok(CREATE, {"i": {"title": "from a jwt"}})["conversationCreate"]
    assert client.ok(
        "query($id: ID!) { conversation(id: $id) { title owner { displayName } } }", {"id": created["id"]}
    )["conversation"] == {"title": "from a jwt", "owner": {"displayName": "dave"}}


def test_same_subject_in_two_tenants_is_two_users(make_tenant: Callable[..., Actor], as_token: Any) -> None:
    first, second = make_tenant(), make_tenant()
    a = as_token(token(first.tenant_id, "eve")).ok(VIEWER)["viewer"]["id"]
    b = as_token(token(second.tenant_id, "eve")).ok(VIEWER)["viewer"]["id"]
    assert a != b


@pytest.mark.parametrize(
    "case",
    [
        "expired",
        "wrong secret",
        "unknown tenant",
        "malformed tenant",
        "bad role",
        "no exp",
        "no sub",
        "alg none",
        "nul in sub",
        "empty sub",
    ],
)
def test_invalid_jwt_is_unauthenticated_and_provisions_nobody(
    admin: Actor, as_token: Any, loop: Loop, dsn: str, case: str
) -> None:
    tenant = admin.tenant_id
    bearer = {
        "expired": lambda: token(tenant, "mallory", expires_in=-60),
        "wrong secret": lambda: token(tenant, "mallory", secret="another-secret-that-is-long-enough-x"),
        "unknown tenant": lambda: token(encode_id(Kind.TENANT, uuid.uuid4()), "mallory"),
        "malformed tenant": lambda: token("not-a-tenant", "mallory"),
        "bad role": lambda: token(tenant, "mallory", "OWNER"),
        "no exp": lambda: jwt.encode(
            {"sub": "mallory", "tenant": tenant}, TEST_JWT_SECRET, algorithm="HS256"
        ),
        "no sub": lambda: jwt.encode(
            {"tenant": tenant, "exp": int(time.time()) + 60}, TEST_JWT_SECRET, algorithm="HS256"
        ),
        "nul in sub": lambda: token(tenant, "mal\x00lory"),
        "empty sub": lambda: token(tenant, ""),
        "alg none": lambda: jwt.encode(
            {"sub": "mallory", "tenant": tenant, "exp": int(time.time()) + 60}, None, algorithm="none"
        ),
    }[case]()
    before = snapshot(loop, dsn)
    error = as_token(bearer).error(VIEWER)
    assert error["extensions"]["code"] == "UNAUTHENTICATED"
    if case == "expired":
        assert error["message"] == "Token expired"
    assert snapshot(loop, dsn) == before


def test_jwt_signed_with_a_key_given_as_an_api_key_is_refused(admin: Actor, as_token: Any) -> None:
    # An API key used as an HS256 secret must not mint tokens.
    forged = token(admin.tenant_id, "forger", "ADMIN", secret=admin.api_key)
    assert as_token(forged).code(VIEWER) == "UNAUTHENTICATED"


# --- health ---------------------------------------------------------------------------------------


def test_healthz_and_readyz_answer_without_auth(server: ServerThread) -> None:
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{server.url}/readyz")
    assert (ready.status_code, ready.json()) == (200, {"status": "ready"})


def test_get_requests_run_queries(admin: Actor, server: ServerThread) -> None:
    response = httpx.get(
        f"{server.url}/graphql",
        params={"query": "{ viewer { id } }"},
        headers={"Authorization": f"Bearer {admin.api_key}", "Accept": "application/json"},
    )
    assert response.json()["data"]["viewer"]["id"] == admin.user_id
