"""Bad input of every kind: the right error code, nothing written, and the server keeps serving."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest

from tests.api import CREATE, create_conversation, snapshot, start_thread
from tests.harness import TEST_JWT_SECRET, Actor, Client, Loop, ServerThread
from threadline.ids import Kind, encode_id

CONVERSATION = "query($id: ID!) { conversation(id: $id) { id } }"
UPDATE = "mutation($id: ID!, $i: ConversationUpdateInput!) { conversationUpdate(id: $id, input: $i) { id } }"


@pytest.fixture
def world(admin: Actor, loop: Loop, dsn: str) -> Iterator[dict[str, Any]]:
    """A conversation with a thread; after the test, the database is unchanged and the server still answers."""
    cid = create_conversation(admin, "kept", tags=["a"])
    root = start_thread(admin, cid, "root")
    before = snapshot(loop, dsn)
    yield {"c": cid, "r": root}
    assert snapshot(loop, dsn) == before, "a rejected request wrote to the database"
    assert admin.client.ok("{ viewer { id } }")["viewer"]["id"] == admin.user_id


def unknown(kind: Kind) -> str:
    return encode_id(kind, uuid.uuid4())


# --- ids ------------------------------------------------------------------------------------------

ID_OPERATIONS = [
    ("conversation", CONVERSATION, "id", Kind.CONVERSATION, {}),
    ("conversationUpdate", UPDATE, "id", Kind.CONVERSATION, {"i": {"title": "x"}}),
    (
        "conversationArchive",
        "mutation($id: ID!) { conversationArchive(id: $id) { id } }",
        "id",
        Kind.CONVERSATION,
        {},
    ),
    (
        "conversationRestore",
        "mutation($id: ID!) { conversationRestore(id: $id) { id } }",
        "id",
        Kind.CONVERSATION,
        {},
    ),
    (
        "conversationDelete",
        "mutation($id: ID!) { conversationDelete(id: $id) { id } }",
        "id",
        Kind.CONVERSATION,
        {},
    ),
    (
        "threadStart",
        'mutation($id: ID!) { threadStart(conversationId: $id, input: {content: "x"}) { id } }',
        "id",
        Kind.CONVERSATION,
        {},
    ),
    (
        "messageReply",
        'mutation($id: ID!) { messageReply(parentId: $id, input: {content: "x"}) { id } }',
        "id",
        Kind.MESSAGE,
        {},
    ),
    (
        "messageEdit",
        'mutation($id: ID!) { messageEdit(id: $id, content: "x") { id } }',
        "id",
        Kind.MESSAGE,
        {},
    ),
    ("messageDelete", "mutation($id: ID!) { messageDelete(id: $id) { id } }", "id", Kind.MESSAGE, {}),
    ("threadTree", "query($id: ID!) { threadTree(rootId: $id) { totalCount } }", "id", Kind.MESSAGE, {}),
    ("message", "query($id: ID!) { message(id: $id) { id } }", "id", Kind.MESSAGE, {}),
    ("thread", "query($id: ID!) { thread(rootId: $id) { replyCount } }", "id", Kind.MESSAGE, {}),
    (
        "threadMarkRead",
        "mutation($id: ID!) { threadMarkRead(rootId: $id) { unreadCount } }",
        "id",
        Kind.MESSAGE,
        {},
    ),
    ("inviteAccept", "mutation($id: ID!) { inviteAccept(id: $id) { id } }", "id", Kind.INVITE, {}),
    ("apiKeyRevoke", "mutation($id: ID!) { apiKeyRevoke(id: $id) { id } }", "id", Kind.API_KEY, {}),
    ("apiKeyCreate", "mutation($id: ID!) { apiKeyCreate(userId: $id) { secret } }", "id", Kind.USER, {}),
]


@pytest.mark.parametrize("name,query,var,kind,extra", ID_OPERATIONS, ids=[o[0] for o in ID_OPERATIONS])
def test_unknown_ids_are_not_found_and_malformed_ids_bad_user_input(
    admin: Actor, world: dict[str, Any], name: str, query: str, var: str, kind: Kind, extra: dict[str, Any]
) -> None:
    error = admin.client.error(query, {var: unknown(kind), **extra})
    assert error["extensions"]["code"] == "NOT_FOUND"
    assert error["message"].endswith("not found")
    for bad in [
        "",
        "nonsense",
        "cnv_not-hex-at-all-0000000000000000",
        "x" * 10_000,
        encode_id(Kind.RUN, uuid.uuid4()),
    ]:
        error = admin.client.error(query, {var: bad, **extra})
        assert error["extensions"]["code"] == "BAD_USER_INPUT", bad[:40]
        assert error["message"].startswith("Malformed id")
        assert len(error["message"]) < 200


def test_participant_invite_of_an_unknown_user_or_conversation_is_not_found(
    admin: Actor, world: dict[str, Any]
) -> None:
    query = "mutation($c: ID!, $u: ID!) { participantInvite(conversationId: $c, userId: $u) { id } }"
    assert admin.client.code(query, {"c": world["c"], "u": unknown(Kind.USER)}) == "NOT_FOUND"
    assert admin.client.code(query, {"c": unknown(Kind.CONVERSATION), "u": admin.user_id}) == "NOT_FOUND"
    assert admin.client.code(query, {"c": world["c"], "u": world["c"]}) == "BAD_USER_INPUT"


# --- conversation fields --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields,fragment",
    [
        ({"title": ""}, "title must not be empty"),
        ({"title": "   \n\t "}, "title must not be empty"),
        ({"title": "t" * 501}, "title is limited to 500 characters"),
        ({"title": "t" * 10_000_000}, "title is limited to 500 characters"),
        ({"tags": [f"tag{i}" for i in range(1000)]}, "at most 50 tags"),
        ({"tags": ["x" * 65]}, "A tag is limited to 64 characters"),
        ({"description": "d" * 10_001}, "description is limited to 10000 characters"),
        ({"maxHistoryMessages": 0}, "maxHistoryMessages must be between 1 and 10000"),
        ({"maxHistoryMessages": -5}, "maxHistoryMessages must be between 1 and 10000"),
        ({"maxHistoryMessages": 10_001}, "maxHistoryMessages must be between 1 and 10000"),
        ({"sessionId": "s" * 256}, "sessionId is limited to 255 characters"),
        ({"model": "m" * 129}, "model is limited to 128 characters"),
    ],
    ids=[
        "empty",
        "blank",
        "501",
        "10MB",
        "1000 tags",
        "long tag",
        "description",
        "history 0",
        "history -5",
        "history big",
        "session",
        "model",
    ],
)
def test_bad_conversation_fields_are_refused_on_create_and_update(
    admin: Actor, world: dict[str, Any], fields: dict[str, Any], fragment: str
) -> None:
    for query, variables in [(CREATE, {"i": fields}), (UPDATE, {"id": world["c"], "i": fields})]:
        error = admin.client.error(query, variables)
        assert error["extensions"]["code"] == "BAD_USER_INPUT"
        assert fragment in error["message"]


def test_thousand_copies_of_one_tag_are_one_tag(admin: Actor) -> None:
    created = admin.client.ok(CREATE, {"i": {"tags": [" Same "] * 1000}})["conversationCreate"]
    assert created["tags"] == ["same"]


def test_filtering_by_too_many_tags_is_bad_user_input(admin: Actor, world: dict[str, Any]) -> None:
    error = admin.client.error(
        "query($t: [String!]) { conversations(tags: $t) { totalCount } }",
        {"t": [f"t{i}" for i in range(1000)]},
    )
    assert error["extensions"]["code"] == "BAD_USER_INPUT"


# --- enums and types ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query,variables",
    [
        ("{ conversations(status: GONE) { totalCount } }", {}),
        ("query($s: ConversationStatus) { conversations(status: $s) { totalCount } }", {"s": "GONE"}),
        ("query($s: ConversationStatus) { conversations(status: $s) { totalCount } }", {"s": "active"}),
        ('mutation { userCreate(input: {email: "a@b.c", role: OWNER}) { id } }', {}),
        (
            'mutation($c: ID!) { threadStart(conversationId: $c, input: {content: "x", role: BOT}) { id } }',
            None,
        ),
        (
            "mutation($c: ID!, $u: ID!) { participantInvite(conversationId: $c, userId: $u, role: ADMIN) { id } }",
            None,
        ),
        ("{ conversations(first: 2147483648) { totalCount } }", {}),
        ('{ conversations(first: "ten") { totalCount } }', {}),
        ("mutation { conversationCreate(input: {maxHistoryMessages: 99999999999}) { id } }", {}),
        ("mutation { conversationCreate(input: {title: 5}) { id } }", {}),
        ("mutation { conversationCreate(input: {nonsense: 1}) { id } }", {}),
        ("{ conversations { nodes { nonsense } } }", {}),
        ("{ conversations( }", {}),
        (
            "mutation($i: ConversationCreateInput!) { conversationCreate(input: $i) { id } }",
            {"i": "not an object"},
        ),
        ("mutation($i: ConversationCreateInput!) { conversationCreate(input: $i) { id } }", {}),
    ],
)
def test_invalid_types_and_enum_values_are_bad_user_input(
    admin: Actor, make_user: Any, world: dict[str, Any], query: str, variables: dict[str, Any] | None
) -> None:
    if variables is None:
        variables = {"c": world["c"], "u": admin.user_id}
    assert admin.client.code(query, variables) == "BAD_USER_INPUT"


# --- messages -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "message_input,fragment",
    [
        ({"content": ""}, "content must not be empty"),
        ({"content": " \n\t "}, "content must not be empty"),
        ({"content": "a\x00b"}, "NUL"),
        ({"content": "x", "usage": {"promptTokens": -1}}, "usage.promptTokens"),
        ({"content": "x", "model": "m" * 129}, "model is limited to 128 characters"),
    ],
)
def test_bad_message_input_is_refused_for_roots_and_replies(
    admin: Actor, world: dict[str, Any], message_input: dict[str, Any], fragment: str
) -> None:
    for query, variables in [
        (
            "mutation($c: ID!, $i: MessageInput!) { threadStart(conversationId: $c, input: $i) { id } }",
            {"c": world["c"], "i": message_input},
        ),
        (
            "mutation($p: ID!, $i: MessageInput!) { messageReply(parentId: $p, input: $i) { id } }",
            {"p": world["r"], "i": message_input},
        ),
    ]:
        error = admin.client.error(query, variables)
        assert error["extensions"]["code"] == "BAD_USER_INPUT"
        assert fragment in error["message"]


def test_edit_to_empty_content_is_refused(admin: Actor, world: dict[str, Any]) -> None:
    query = "mutation($m: ID!, $x: String!) { messageEdit(id: $m, content: $x) { id } }"
    assert admin.client.code(query, {"m": world["r"], "x": "  "}) == "BAD_USER_INPUT"


# --- page sizes and cursors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "query,argument",
    [
        ("{ conversations(first: 101) { totalCount } }", "first"),
        ("{ conversations(first: -1) { totalCount } }", "first"),
        ("{ recentConversations(first: 101) { id } }", "first"),
        ("{ users(first: 101) { totalCount } }", "first"),
        ("query($c: ID!) { conversation(id: $c) { threads(first: 101) { totalCount } } }", "first"),
        ("query($c: ID!) { conversation(id: $c) { messages(first: 101) { totalCount } } }", "first"),
        ("query($c: ID!) { conversation(id: $c) { messages(limit: 101) { totalCount } } }", "limit"),
        ("query($c: ID!) { conversation(id: $c) { messages(offset: -1) { totalCount } } }", "offset"),
        ("query($c: ID!) { conversation(id: $c) { messages(first: 5, limit: 5) { totalCount } } }", "limit"),
    ],
)
def test_page_sizes_over_the_cap_or_negative_are_refused(
    admin: Actor, world: dict[str, Any], query: str, argument: str
) -> None:
    error = admin.client.error(query, {"c": world["c"]})
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["extensions"].get("argument") == argument or f"`{argument}`" in error["message"]
    if "101" in query:
        assert "limited to 100" in error["message"]
        assert error["extensions"]["limit"] == 100


def _cursor(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "garbage!",
        _cursor({"a": 1}),
        _cursor([]),
        _cursor([5, 5]),
        _cursor(["2024-01-01T00:00:00+00:00", 5]),
        _cursor([None, None]),
        _cursor(["not a date", uuid.uuid4().hex]),
        _cursor([[1], uuid.uuid4().hex]),
        _cursor(["2024-01-01T00:00:00+00:00", "not-a-uuid"]),
        _cursor(["2024-01-01T00:00:00", uuid.uuid4().hex]),
        _cursor(["0001-01-01T00:00:00+05:00", uuid.uuid4().hex]),
        _cursor(["9999-12-31T23:59:59-05:00", uuid.uuid4().hex]),
        _cursor([10**30]),
        _cursor([True]),
    ],
)
def test_malformed_cursors_are_bad_user_input(admin: Actor, world: dict[str, Any], cursor: str) -> None:
    for query in [
        "query($a: String) { conversations(after: $a) { totalCount } }",
        "query($a: String) { users(after: $a) { totalCount } }",
        "query($c: ID!, $a: String) { conversation(id: $c) { threads(after: $a) { totalCount } } }",
        "query($c: ID!, $a: String) { conversation(id: $c) { messages(after: $a) { totalCount } } }",
    ]:
        error = admin.client.error(query, {"a": cursor, "c": world["c"]})
        assert error["extensions"]["code"] == "BAD_USER_INPUT", (query, error)
        assert error["message"] == "Malformed cursor in `after`"


# --- transport ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"",
        b"[]",
        b'"just a string"',
        b"null",
        b'{"query": 5}',
        b'{"variables": {}}',
        b'{"query": "{ viewer { id } }", "variables": "nope"}',
        b"\xff\xfe\x00",
    ],
)
def test_malformed_request_bodies_get_a_graphql_error_and_the_server_keeps_serving(
    admin: Actor, server: ServerThread, world: dict[str, Any], body: bytes
) -> None:
    response = httpx.post(
        f"{server.url}/graphql",
        content=body,
        headers={"Authorization": f"Bearer {admin.api_key}", "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    payload = response.json()
    assert payload["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert payload["errors"][0]["message"]


def test_mutation_over_get_is_refused(admin: Actor, server: ServerThread, world: dict[str, Any]) -> None:
    response = httpx.get(
        f"{server.url}/graphql",
        params={"query": 'mutation { conversationCreate(input: {title: "via get"}) { id } }'},
        headers={"Authorization": f"Bearer {admin.api_key}", "Accept": "application/json"},
    )
    assert response.status_code == 405  # GraphQL over HTTP: MUST, with the method that works
    assert response.headers["Allow"] == "POST"
    error = response.json()["errors"][0]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert "GET" in error["message"]


@pytest.mark.parametrize("bearer", ["missing", "wrong key", "expired jwt", "wrong-secret jwt"])
def test_writes_without_valid_credentials_are_unauthenticated(
    admin: Actor, server: ServerThread, world: dict[str, Any], bearer: str
) -> None:
    now = int(time.time())
    token = {
        "missing": None,
        "wrong key": "tlk_" + "B" * 43,
        "expired jwt": jwt.encode(
            {"sub": "x", "tenant": admin.tenant_id, "exp": now - 5}, TEST_JWT_SECRET, "HS256"
        ),
        "wrong-secret jwt": jwt.encode(
            {"sub": "x", "tenant": admin.tenant_id, "exp": now + 60}, "z" * 40, "HS256"
        ),
    }[bearer]
    client = Client(server.url, token)
    try:
        for query, variables in [
            (CREATE, {"i": {"title": "x"}}),
            (
                'mutation($c: ID!) { threadStart(conversationId: $c, input: {content: "x"}) { id } }',
                {"c": world["c"]},
            ),
            (
                'mutation($r: ID!) { messageReply(parentId: $r, input: {content: "x"}) { id } }',
                {"r": world["r"]},
            ),
            ("query($c: ID!) { conversation(id: $c) { id } }", {"c": world["c"]}),
        ]:
            assert client.code(query, variables) == "UNAUTHENTICATED"
    finally:
        client.close()


def test_odd_but_valid_unicode_is_stored_as_given(admin: Actor) -> None:
    title = "\U0001f600 \u202e rtl \ufeff"
    created = admin.client.ok(CREATE, {"i": {"title": title, "tags": ["\u00c9t\u00c9"]}})[
        "conversationCreate"
    ]
    assert created["title"] == title.strip()
    assert created["tags"] == ["\u00e9t\u00e9"]


@pytest.mark.parametrize(
    "query,variables",
    [
        (CREATE, {"i": {"title": "a\x00b"}}),
        (CREATE, {"i": {"description": "a\x00b"}}),
        (CREATE, {"i": {"tags": ["a\x00b"]}}),
        (CREATE, {"i": {"sessionId": "a\x00b"}}),
        (CREATE, {"i": {"model": "a\x00b"}}),
        (UPDATE, {"i": {"title": "a\x00b"}}),
        (
            "mutation($i: UserCreateInput!) { userCreate(input: $i) { id } }",
            {"i": {"email": "a\x00b@example.com"}},
        ),
        (
            "mutation($i: UserCreateInput!) { userCreate(input: $i) { id } }",
            {"i": {"email": "ok@example.com", "displayName": "a\x00b"}},
        ),
        (
            "mutation($i: UserCreateInput!) { userCreate(input: $i) { id } }",
            {"i": {"email": "ok@example.com", "team": "a\x00b"}},
        ),
        ('mutation($u: ID!) { apiKeyCreate(userId: $u, name: "a\\u0000b") { secret } }', {}),
        ('{ conversations(tags: ["a\\u0000"]) { totalCount } }', {}),
        (
            'mutation($c: ID!) { threadStart(conversationId: $c, input: {content: "x", model: "m\\u0000"}) { id } }',
            {},
        ),
    ],
)
def test_nul_characters_in_any_text_are_bad_user_input(
    admin: Actor, world: dict[str, Any], query: str, variables: dict[str, Any]
) -> None:
    error = admin.client.error(query, {"id": world["c"], "c": world["c"], "u": admin.user_id, **variables})
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert "NUL" in error["message"]


# --- DateTime arguments at the edges (found by tests/test_fuzz.py) ---------------------------------

INSIGHTS = """query($f: DateTime, $t: DateTime) { insights(from: $f, to: $t) {
  from to conversationCount messageCount conversationsPerDay { count } averageMessagesPerConversation
  tokenUsagePerDay { messages } popularTags { tag } providerDistribution { count } peakUsageHours { hour } } }"""
SEARCH_WINDOW = """query($f: DateTime, $t: DateTime) { search(input: {from: $f, to: $t}) {
  totalCount nodes { conversation { id } } } }"""


@pytest.mark.parametrize(
    "variables",
    [
        {"t": "9999-12-31T23:59:59-05:00"},
        {"f": "9999-12-31T23:59:59-05:00", "t": "9999-12-31T23:59:59-05:00"},
        {"f": "0001-01-01T00:00:00+05:00"},
        {"f": "0001-01-01T00:00:00+05:00", "t": "0001-01-02T00:00:00+00:00"},
    ],
)
@pytest.mark.parametrize("query", [INSIGHTS, SEARCH_WINDOW], ids=["insights", "search"])
def test_instants_beyond_the_datetime_range_are_bad_user_input(
    admin: Actor, world: dict[str, Any], query: str, variables: dict[str, Any]
) -> None:
    """An offset that moves the instant past 9999 or before year 1 in UTC was an INTERNAL error (asyncpg)."""
    error = admin.client.error(query, variables)
    assert error["extensions"]["code"] == "BAD_USER_INPUT", error
    assert "DateTime" in error["message"]
    literal = "{" + query.split(") {", 1)[1]  # the same document with literals instead of variables
    for name in ("f", "t"):
        literal = literal.replace(f"${name}", json.dumps(variables.get(name)))
    assert admin.client.code(literal) == "BAD_USER_INPUT"


@pytest.mark.parametrize(
    "variables",
    [
        {"f": "2024-01-01T00:00:00", "t": "2024-02-01T00:00:00+00:00"},  # naive and aware: was INTERNAL
        {"f": "2024-01-01T00:00:00+02:00", "t": "2024-02-01T00:00:00"},
        {"t": "0001-01-05T00:00:00Z"},  # the default `from` (30 days earlier) was before year 1
        {"f": "0001-01-01T00:00:00Z", "t": "0001-01-01T00:00:00Z"},
        {"f": "0001-01-01T00:00:00Z", "t": "0001-01-03T00:00:00Z"},
        {"f": "9999-12-30T00:00:00Z", "t": "9999-12-31T23:59:59.999999Z"},
    ],
)
@pytest.mark.parametrize("query", [INSIGHTS, SEARCH_WINDOW], ids=["insights", "search"])
def test_datetime_windows_at_the_edges_of_the_range_are_answered(
    admin: Actor, world: dict[str, Any], query: str, variables: dict[str, Any]
) -> None:
    admin.client.ok(query, variables)


def test_a_naive_datetime_means_utc(admin: Actor, world: dict[str, Any]) -> None:
    naive = admin.client.ok(INSIGHTS, {"f": "2024-01-01T00:00:00", "t": "2024-01-03T00:00:00"})["insights"]
    aware = admin.client.ok(INSIGHTS, {"f": "2024-01-01T00:00:00Z", "t": "2024-01-03T00:00:00Z"})["insights"]
    assert naive == aware
    assert len(naive["conversationsPerDay"]) == 2
