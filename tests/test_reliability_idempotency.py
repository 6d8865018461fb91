"""Idempotency keys (issue 23, item 5): a retried creating mutation returns the first result and writes once.

Through HTTP against the real server: `clientMutationId` and the `Idempotency-Key` header, key reuse with
other arguments (CONFLICT), concurrent retries, per-user keys, bounds, erasure and expiry.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import pytest

from tests.api import START, create_conversation, join, start_thread
from tests.harness import Actor, Loop, ServerThread, create_admin, test_settings, unique
from threadline.ids import Kind, decode_id, encode_id

REPLY = """mutation($p: ID!, $i: MessageInput!, $k: String) {
  messageReply(parentId: $p, input: $i, clientMutationId: $k) { id content } }"""
REPLY_PLAIN = "mutation($p: ID!, $i: MessageInput!) { messageReply(parentId: $p, input: $i) { id content } }"
CREATE = """mutation($i: ConversationCreateInput!, $k: String) {
  conversationCreate(input: $i, clientMutationId: $k) { id title } }"""
START_KEYED = """mutation($c: ID!, $i: MessageInput!, $k: String) {
  threadStart(conversationId: $c, input: $i, clientMutationId: $k) { id } }"""
INVITE_KEYED = """mutation($c: ID!, $u: ID!, $k: String) {
  participantInvite(conversationId: $c, userId: $u, clientMutationId: $k) { id status } }"""
RUN_KEYED = """mutation($m: ID!, $k: String) {
  runCreate(input: {messageId: $m, provider: "echo"}, clientMutationId: $k) { id } }"""


def sql(loop: Loop, dsn: str, query: str, *args: Any) -> list[asyncpg.Record]:
    async def fetch() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetch(query, *args)
        finally:
            await conn.close()

    return loop.run(fetch())


def replies_to(loop: Loop, dsn: str, parent_id: str) -> int:
    rows = sql(
        loop,
        dsn,
        "SELECT count(*) AS n FROM message WHERE parent_id = $1",
        decode_id(parent_id, Kind.MESSAGE),
    )
    return int(rows[0]["n"])


def post(actor: Actor, query: str, variables: dict[str, Any], key: str | None = None) -> httpx.Response:
    headers = {"Idempotency-Key": key} if key is not None else {}
    return actor.client.http.post("/graphql", json={"query": query, "variables": variables}, headers=headers)


def code_of(response: httpx.Response) -> str:
    body = response.json()
    assert body.get("errors"), body
    return str(body["errors"][0]["extensions"]["code"])


@pytest.fixture
def thread(admin: Actor) -> str:
    return start_thread(admin, create_conversation(admin), "root")


# -- same key twice: the first result, one row ----------------------------------------------------------


def test_a_retried_reply_with_the_same_client_mutation_id_returns_the_first_message_and_writes_one(
    admin: Actor, thread: str, loop: Loop, dsn: str
) -> None:
    variables = {"p": thread, "i": {"content": "hello"}, "k": unique("key")}
    first = post(admin, REPLY, variables)
    again = post(admin, REPLY, variables)

    assert first.json()["data"]["messageReply"] == again.json()["data"]["messageReply"]
    assert "Idempotent-Replayed" not in first.headers
    assert again.headers["Idempotent-Replayed"] == "true"
    assert replies_to(loop, dsn, thread) == 1
    # Counters moved once: the root and one reply.
    conversation = sql(loop, dsn, "SELECT message_count FROM conversation")[0]
    assert conversation["message_count"] == 2


def test_without_a_key_a_retry_still_writes_again(admin: Actor, thread: str, loop: Loop, dsn: str) -> None:
    variables = {"p": thread, "i": {"content": "hello"}}
    first = admin.client.ok(REPLY_PLAIN, variables)["messageReply"]["id"]
    second = admin.client.ok(REPLY_PLAIN, variables)["messageReply"]["id"]
    assert first != second and replies_to(loop, dsn, thread) == 2


def test_every_creating_mutation_returns_its_first_result_on_a_retry(
    admin: Actor, make_user: Any, loop: Loop, dsn: str
) -> None:
    guest = make_user(admin)
    runs_before = int(sql(loop, dsn, "SELECT count(*) AS n FROM run")[0]["n"])

    def twice(query: str, variables: dict[str, Any]) -> str:
        key = unique("key")
        first = admin.client.ok(query, {**variables, "k": key})
        second = admin.client.ok(query, {**variables, "k": key})
        assert first == second
        field = next(iter(first))
        return str(first[field]["id"])

    conversation = twice(CREATE, {"i": {"title": "once"}})
    root = twice(START_KEYED, {"c": conversation, "i": {"content": "root"}})
    twice(INVITE_KEYED, {"c": conversation, "u": guest.user_id})
    # A second runCreate for the same message without a key would be CONFLICT (an active run exists).
    twice(RUN_KEYED, {"m": root})

    counts = sql(
        loop,
        dsn,
        """SELECT (SELECT count(*) FROM conversation WHERE title = 'once') AS conversations,
                  (SELECT count(*) FROM message WHERE parent_id IS NULL AND conversation_id = $1) AS roots,
                  (SELECT count(*) FROM invite WHERE conversation_id = $1) AS invites,
                  (SELECT count(*) FROM run WHERE message_id = $2) AS runs""",
        decode_id(conversation, Kind.CONVERSATION),
        decode_id(root, Kind.MESSAGE),
    )[0]
    assert dict(counts) == {"conversations": 1, "roots": 1, "invites": 1, "runs": 1}
    assert int(sql(loop, dsn, "SELECT count(*) AS n FROM run")[0]["n"]) == runs_before + 1


def test_a_retry_returns_the_object_as_it_is_now(admin: Actor, loop: Loop, dsn: str) -> None:
    key = unique("key")
    created = admin.client.ok(CREATE, {"i": {"title": "first"}, "k": key})["conversationCreate"]
    admin.client.ok(
        'mutation($id: ID!) { conversationUpdate(id: $id, input: {title: "renamed"}) { id } }',
        {"id": created["id"]},
    )
    again = admin.client.ok(CREATE, {"i": {"title": "first"}, "k": key})["conversationCreate"]
    assert again == {"id": created["id"], "title": "renamed"}


# -- same key, other request: refused -------------------------------------------------------------------


def test_the_same_key_with_other_arguments_is_conflict_and_writes_nothing(
    admin: Actor, thread: str, loop: Loop, dsn: str
) -> None:
    key = unique("key")
    admin.client.ok(REPLY, {"p": thread, "i": {"content": "hello"}, "k": key})
    error = admin.client.error(REPLY, {"p": thread, "i": {"content": "something else"}, "k": key})
    assert error["extensions"]["code"] == "CONFLICT"
    assert error["extensions"]["argument"] == "clientMutationId"
    # Another operation under the same key is another request too.
    conversation = admin.client.error(CREATE, {"i": {"title": "t"}, "k": key})
    assert conversation["extensions"]["code"] == "CONFLICT"
    assert replies_to(loop, dsn, thread) == 1
    assert int(sql(loop, dsn, "SELECT count(*) AS n FROM conversation")[0]["n"]) == 1


def test_a_failed_request_does_not_keep_its_key(admin: Actor, thread: str, loop: Loop, dsn: str) -> None:
    """The key is recorded in the write's transaction: a write that fails leaves the key free."""
    key = unique("key")
    assert admin.client.error(REPLY, {"p": thread, "i": {"content": "  "}, "k": key})["extensions"][
        "code"
    ] == ("BAD_USER_INPUT")
    assert sql(loop, dsn, "SELECT count(*) AS n FROM idempotency_key")[0]["n"] == 0
    reply = admin.client.ok(REPLY, {"p": thread, "i": {"content": "fixed"}, "k": key})["messageReply"]
    assert reply["content"] == "fixed" and replies_to(loop, dsn, thread) == 1


# -- concurrent retries ---------------------------------------------------------------------------------


def test_concurrent_requests_with_one_key_create_one_message(
    admin: Actor, server: ServerThread, thread: str, loop: Loop, dsn: str
) -> None:
    attempts = 8
    key = unique("key")
    barrier = threading.Barrier(attempts)
    answers: list[dict[str, Any]] = []
    lock = threading.Lock()

    def send() -> None:
        with httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {admin.api_key}"}, timeout=60
        ) as http:
            barrier.wait()
            body = http.post(
                "/graphql",
                json={"query": REPLY, "variables": {"p": thread, "i": {"content": "once"}, "k": key}},
            ).json()
        with lock:
            answers.append(body)

    workers = [threading.Thread(target=send) for _ in range(attempts)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)

    assert len(answers) == attempts
    assert all(not a.get("errors") for a in answers), answers
    assert len({a["data"]["messageReply"]["id"] for a in answers}) == 1
    assert replies_to(loop, dsn, thread) == 1


# -- the header ---------------------------------------------------------------------------------------------


def test_the_idempotency_key_header_works_like_client_mutation_id(
    admin: Actor, thread: str, loop: Loop, dsn: str
) -> None:
    key = unique("header")
    variables = {"p": thread, "i": {"content": "by header"}}
    first = post(admin, REPLY_PLAIN, variables, key=key)
    again = post(admin, REPLY_PLAIN, variables, key=key)
    assert first.json()["data"] == again.json()["data"] and again.headers["Idempotent-Replayed"] == "true"
    # The header and the argument name the same key.
    by_argument = admin.client.ok(REPLY, {**variables, "k": key})
    assert by_argument == first.json()["data"]
    assert code_of(post(admin, REPLY_PLAIN, {"p": thread, "i": {"content": "other"}}, key=key)) == "CONFLICT"
    # Both given but different: refused, nothing written.
    assert code_of(post(admin, REPLY, {**variables, "k": unique("other")}, key=key)) == "BAD_USER_INPUT"
    assert replies_to(loop, dsn, thread) == 1


def test_the_header_is_refused_on_a_request_it_cannot_cover(
    admin: Actor, thread: str, loop: Loop, dsn: str
) -> None:
    two_fields = """mutation($p: ID!) { a: messageReply(parentId: $p, input: {content: "a"}) { id }
                                         b: messageReply(parentId: $p, input: {content: "b"}) { id } }"""
    response = post(admin, two_fields, {"p": thread}, key=unique("k"))
    assert code_of(response) == "BAD_USER_INPUT" and response.json()["errors"][0]["extensions"][
        "argument"
    ] == ("Idempotency-Key")
    # A mutation that takes no key would silently not be protected: refused too.
    edit = 'mutation($id: ID!) { messageEdit(id: $id, content: "changed") { id } }'
    assert code_of(post(admin, edit, {"id": thread}, key=unique("k"))) == "BAD_USER_INPUT"
    assert replies_to(loop, dsn, thread) == 0
    assert (
        sql(loop, dsn, "SELECT content FROM message WHERE id = $1", decode_id(thread, Kind.MESSAGE))[0][0]
        == "root"
    )
    # Queries ignore it: reads are safe to retry.
    query = post(admin, "{ viewer { id } }", {}, key=unique("k"))
    assert query.json()["data"]["viewer"]["id"] == admin.user_id


# -- per user, bounded ------------------------------------------------------------------------------------


def test_another_users_same_key_is_independent(
    admin: Actor, make_user: Any, thread: str, loop: Loop, dsn: str
) -> None:
    member = make_user(admin)
    conversation = sql(
        loop, dsn, "SELECT conversation_id FROM message WHERE id = $1", decode_id(thread, Kind.MESSAGE)
    )[0][0]
    join(admin, member, encode_id(Kind.CONVERSATION, conversation))
    key = unique("shared")
    mine = admin.client.ok(REPLY, {"p": thread, "i": {"content": "same"}, "k": key})["messageReply"]["id"]
    theirs = member.client.ok(REPLY, {"p": thread, "i": {"content": "same"}, "k": key})["messageReply"]["id"]
    assert mine != theirs and replies_to(loop, dsn, thread) == 2
    # And a different request under that key is theirs to make.
    assert member.client.ok(CREATE, {"i": {"title": "x"}, "k": unique("k")})


def test_keys_are_bounded_in_length_and_count_per_request(
    admin: Actor, thread: str, loop: Loop, dsn: str
) -> None:
    for bad in ("", "k" * 201, "tab\tinside"):
        error = admin.client.error(REPLY, {"p": thread, "i": {"content": "x"}, "k": bad})
        assert error["extensions"]["code"] == "BAD_USER_INPUT", bad
    too_long = post(admin, REPLY_PLAIN, {"p": thread, "i": {"content": "x"}}, key="k" * 201)
    assert code_of(too_long) == "BAD_USER_INPUT" and too_long.json()["errors"][0]["extensions"][
        "argument"
    ] == ("Idempotency-Key")
    assert admin.client.ok(REPLY, {"p": thread, "i": {"content": "x"}, "k": "k" * 200})
    fields = " ".join(
        f'f{i}: messageReply(parentId: $p, input: {{content: "n{i}"}}, clientMutationId: "key-{i}") {{ id }}'
        for i in range(21)
    )
    error = admin.client.error(f"mutation($p: ID!) {{ {fields} }}", {"p": thread})
    assert error["extensions"]["code"] == "BAD_USER_INPUT" and error["extensions"]["limit"] == 20
    assert replies_to(loop, dsn, thread) == 1


# -- erasure ----------------------------------------------------------------------------------------------


def test_erasing_a_user_deletes_their_keys_which_hold_ids_not_content(
    admin: Actor, make_user: Any, loop: Loop, dsn: str
) -> None:
    member = make_user(admin)
    conversation = member.client.ok(CREATE, {"i": {"title": "secret title"}, "k": unique("k")})[
        "conversationCreate"
    ]
    member.client.ok(
        START_KEYED, {"c": conversation["id"], "i": {"content": "secret words"}, "k": unique("k")}
    )
    admin.client.ok(CREATE, {"i": {"title": "admin's"}, "k": unique("k")})
    member_id = decode_id(member.user_id, Kind.USER)
    stored = sql(
        loop,
        dsn,
        "SELECT key, operation, request_hash, result::text AS result FROM idempotency_key WHERE user_id = $1",
        member_id,
    )
    assert len(stored) == 2
    assert not any("secret" in str(tuple(row)) for row in stored)

    admin.client.ok("mutation($u: ID!) { userErase(userId: $u) { userId } }", {"u": member.user_id})
    assert (
        sql(loop, dsn, "SELECT count(*) AS n FROM idempotency_key WHERE user_id = $1", member_id)[0]["n"] == 0
    )
    assert sql(loop, dsn, "SELECT count(*) AS n FROM idempotency_key")[0]["n"] == 1  # the admin's stays


# -- expiry (a server keeping keys one second, purging often) -------------------------------------------


TTL_SECONDS = 1.0


@pytest.fixture(scope="module")
def short_server(dsn: str) -> Iterator[ServerThread]:
    srv = ServerThread(
        test_settings(
            dsn, migrate_on_start=False, idempotency_ttl_seconds=TTL_SECONDS, retention_interval_seconds=0.2
        )
    )
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def short_admin(short_server: ServerThread, loop: Loop) -> Iterator[Actor]:
    actor = create_admin(loop, short_server.app.state.services.settings.database_url, short_server.url)
    yield actor
    actor.client.close()


def test_keys_expire_after_the_configured_time_and_are_purged(
    short_admin: Actor, loop: Loop, dsn: str
) -> None:
    thread = str(
        short_admin.client.ok(START, {"c": create_conversation(short_admin), "i": {"content": "r"}})[
            "threadStart"
        ]["id"]
    )
    key = unique("key")
    first = short_admin.client.ok(REPLY, {"p": thread, "i": {"content": "one"}, "k": key})["messageReply"][
        "id"
    ]
    time.sleep(TTL_SECONDS + 0.5)
    # Expired: the key is free again, for the same request (a new message) or another one.
    second = short_admin.client.ok(REPLY, {"p": thread, "i": {"content": "one"}, "k": key})["messageReply"][
        "id"
    ]
    assert second != first and replies_to(loop, dsn, thread) == 2
    time.sleep(TTL_SECONDS + 0.5)
    other = short_admin.client.ok(REPLY, {"p": thread, "i": {"content": "two"}, "k": key})["messageReply"]
    assert other["content"] == "two" and replies_to(loop, dsn, thread) == 3
    # The retention pass deletes expired keys (waits for it; no timing asserted).
    deadline = time.monotonic() + 30
    while sql(loop, dsn, "SELECT count(*) AS n FROM idempotency_key")[0]["n"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert sql(loop, dsn, "SELECT count(*) AS n FROM idempotency_key")[0]["n"] == 0
