"""Share links (issue 18 item 3): a conversation or a branch, read without credentials, revocable, expiring,
counted, rate-limited per token and per address, and as a page at GET /share/{token}."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests import harness
from tests.api import count_rows, create_conversation, join, reply, start_thread
from tests.harness import Actor, Client, ServerThread

CREATE = """mutation($c: ID!, $m: ID, $e: DateTime, $l: Boolean) {
  shareLinkCreate(conversationId: $c, messageId: $m, expiresAt: $e, live: $l) {
    id token url live messageId conversationId expiresAt revokedAt viewCount } }"""
REVOKE = "mutation($id: ID!) { shareLinkRevoke(id: $id) { id revokedAt } }"
READ = """query($t: String!, $first: Int, $after: String) { sharedConversation(token: $t) {
  title live sharedAt expiresAt
  messages(first: $first, after: $after) { totalCount pageInfo { hasNextPage endCursor }
    nodes { id parentId depth role content isDeleted } } } }"""
LINKS = """query($c: ID) { shareLinks(conversationId: $c) { totalCount nodes { id viewCount lastViewedAt
  revokedAt token url } } }"""
DELETE = "mutation($id: ID!) { messageDelete(id: $id) { id } }"


def share(actor: Actor, conversation: str, **variables: Any) -> dict[str, Any]:
    link: dict[str, Any] = actor.client.ok(CREATE, {"c": conversation, **variables})["shareLinkCreate"]
    return link


def contents(body: dict[str, Any]) -> list[str]:
    return [n["content"] for n in body["data"]["sharedConversation"]["messages"]["nodes"]]


@pytest.fixture
def branches(admin: Actor) -> dict[str, str]:
    """A conversation with one thread: root -> a -> b, and a sibling branch root -> c."""
    conversation = create_conversation(admin, "Trip planning")
    root = start_thread(admin, conversation, "root question")
    a = reply(admin, root, "first answer", "ASSISTANT")
    b = reply(admin, a, "follow-up on the first")
    c = reply(admin, root, "the other branch")
    return {"conversation": conversation, "root": root, "a": a, "b": b, "c": c}


def test_share_a_branch_read_it_without_a_key_revoke_and_read_again_is_not_found(
    admin: Actor, anonymous: Client, branches: dict[str, str]
) -> None:
    link = share(admin, branches["conversation"], m=branches["b"])
    assert link["token"] and link["url"] == "/share/" + link["token"]
    assert link["messageId"] == branches["b"] and link["live"] is False and link["viewCount"] == 0

    body = anonymous.execute(READ, {"t": link["token"]})
    assert "errors" not in body, body
    shared = body["data"]["sharedConversation"]
    assert shared["title"] == "Trip planning" and shared["live"] is False
    nodes = shared["messages"]["nodes"]
    # The path from the root down to b: not the sibling branch.
    assert [n["id"] for n in nodes] == [branches["root"], branches["a"], branches["b"]]
    assert [n["content"] for n in nodes] == ["root question", "first answer", "follow-up on the first"]
    assert [n["role"] for n in nodes] == ["USER", "ASSISTANT", "USER"]
    assert [n["parentId"] for n in nodes] == [None, branches["root"], branches["a"]]
    assert shared["messages"]["totalCount"] == 3

    admin.client.ok(REVOKE, {"id": link["id"]})
    refused = anonymous.execute(READ, {"t": link["token"]})
    assert refused["data"] is None
    assert refused["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    assert refused["errors"][0]["message"] == "Shared conversation not found"


def test_a_shared_conversation_shows_no_participants_nor_emails_and_the_schema_offers_none(
    admin: Actor, anonymous: Client, branches: dict[str, str]
) -> None:
    link = share(admin, branches["conversation"])
    body = anonymous.execute(READ, {"t": link["token"]})
    assert "@" not in str(body)
    # Nothing under SharedConversation reaches a User, a Conversation or an email.
    reachable = anonymous.execute(
        """{ c: __type(name: "SharedConversation") { fields { name } }
             m: __type(name: "SharedMessage") { fields { name } } }"""
    )["data"]
    names = {f["name"] for t in reachable.values() for f in t["fields"]}
    assert not names & {"author", "participants", "owner", "email", "conversation"}


def test_a_snapshot_hides_later_messages_and_a_live_link_shows_them(
    admin: Actor, anonymous: Client, branches: dict[str, str]
) -> None:
    snapshot = share(admin, branches["conversation"])
    live = share(admin, branches["conversation"], l=True)
    branch_live = share(admin, branches["conversation"], m=branches["a"], l=True)
    later = reply(admin, branches["b"], "written after sharing")
    assert "written after sharing" not in contents(anonymous.execute(READ, {"t": snapshot["token"]}))
    assert len(contents(anonymous.execute(READ, {"t": snapshot["token"]}))) == 4
    assert "written after sharing" in contents(anonymous.execute(READ, {"t": live["token"]}))
    # A live branch: the path to a, and everything below a as it grows; never the sibling branch c.
    shown = anonymous.execute(READ, {"t": branch_live["token"]})["data"]["sharedConversation"]["messages"]
    assert [n["id"] for n in shown["nodes"]] == [branches["root"], branches["a"], branches["b"], later]


def test_a_message_deleted_after_sharing_loses_its_content_in_the_link(
    admin: Actor, anonymous: Client, branches: dict[str, str]
) -> None:
    link = share(admin, branches["conversation"], m=branches["b"])
    admin.client.ok(DELETE, {"id": branches["a"]})
    nodes = anonymous.execute(READ, {"t": link["token"]})["data"]["sharedConversation"]["messages"]["nodes"]
    assert [(n["content"], n["isDeleted"]) for n in nodes] == [
        ("root question", False),
        ("", True),
        ("follow-up on the first", False),
    ]


def test_a_deleted_conversation_closes_its_links(
    admin: Actor, anonymous: Client, branches: dict[str, str]
) -> None:
    link = share(admin, branches["conversation"])
    admin.client.ok(
        "mutation($id: ID!) { conversationDelete(id: $id) { id } }", {"id": branches["conversation"]}
    )
    assert anonymous.code(READ, {"t": link["token"]}) == "NOT_FOUND"


def test_guessed_expired_and_revoked_tokens_are_the_same_not_found_after_the_same_statements(
    admin: Actor, anonymous: Client, branches: dict[str, str]
) -> None:
    revoked = share(admin, branches["conversation"])
    admin.client.ok(REVOKE, {"id": revoked["id"]})
    soon = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    expiring = share(admin, branches["conversation"], e=soon)
    assert anonymous.execute(READ, {"t": expiring["token"]}).get("errors") is None
    time.sleep(2.5)
    guessed = "A" * len(revoked["token"])
    answers = [anonymous.raw(READ, {"t": t}) for t in (guessed, expiring["token"], revoked["token"])]
    # No timing assertion (the machine is noisy): the work done is the same, statement for statement.
    assert len({a["extensions"]["sqlStatements"] for a in answers}) == 1, answers
    for answer in answers:
        harness.without_count(answer)
    assert answers[0] == answers[1] == answers[2]
    assert answers[0]["errors"][0]["extensions"]["code"] == "NOT_FOUND"


def test_expiry_must_be_in_the_future(admin: Actor, branches: dict[str, str]) -> None:
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    error = admin.client.error(CREATE, {"c": branches["conversation"], "e": past})
    assert error["extensions"]["code"] == "BAD_USER_INPUT" and error["extensions"]["argument"] == "expiresAt"


def test_only_who_manages_the_conversation_may_share_it_and_outsiders_see_nothing(
    admin: Actor, make_user: Callable[..., Actor], branches: dict[str, str]
) -> None:
    member = make_user(admin)
    outsider = make_user(admin)
    join(admin, member, branches["conversation"])
    assert member.client.code(CREATE, {"c": branches["conversation"]}) == "FORBIDDEN"
    assert outsider.client.code(CREATE, {"c": branches["conversation"]}) == "NOT_FOUND"
    link = share(admin, branches["conversation"])
    assert member.client.code(REVOKE, {"id": link["id"]}) == "NOT_FOUND"
    assert member.client.ok("query($id: ID!) { node(id: $id) { id } }", {"id": link["id"]})["node"] is None
    mine = admin.client.ok(
        "query($id: ID!) { node(id: $id) { ... on ShareLink { id live token } } }", {"id": link["id"]}
    )
    assert mine["node"] == {"id": link["id"], "live": False, "token": None}


def test_a_message_of_another_conversation_cannot_be_shared(admin: Actor, branches: dict[str, str]) -> None:
    other = create_conversation(admin, "other")
    assert admin.client.code(CREATE, {"c": other, "m": branches["b"]}) == "NOT_FOUND"


def test_the_owner_lists_links_with_their_view_counts_and_no_tokens(
    admin: Actor, anonymous: Client, branches: dict[str, str]
) -> None:
    first = share(admin, branches["conversation"])
    second = share(admin, branches["conversation"], m=branches["b"])
    for _ in range(3):
        anonymous.ok(READ, {"t": first["token"]})
    # Every read counts, a later page too.
    page = anonymous.ok(READ, {"t": first["token"], "first": 2})["sharedConversation"]["messages"]
    anonymous.ok(READ, {"t": first["token"], "first": 2, "after": page["pageInfo"]["endCursor"]})
    listed = admin.client.ok(LINKS, {"c": branches["conversation"]})["shareLinks"]
    assert listed["totalCount"] == 2
    assert [n["id"] for n in listed["nodes"]] == [second["id"], first["id"]]
    assert [n["viewCount"] for n in listed["nodes"]] == [0, 5]
    assert all(n["token"] is None and n["url"] is None for n in listed["nodes"])


def test_shared_messages_page_through_without_gaps(
    admin: Actor, anonymous: Client, branches: dict[str, str]
) -> None:
    link = share(admin, branches["conversation"])
    seen: list[str] = []
    after = None
    while True:
        page = anonymous.ok(READ, {"t": link["token"], "first": 2, "after": after})["sharedConversation"]
        seen.extend(n["content"] for n in page["messages"]["nodes"])
        if not page["messages"]["pageInfo"]["hasNextPage"]:
            break
        after = page["messages"]["pageInfo"]["endCursor"]
    assert seen == ["root question", "first answer", "follow-up on the first", "the other branch"]


def test_anonymous_callers_get_only_the_shared_conversation(
    admin: Actor, anonymous: Client, branches: dict[str, str]
) -> None:
    link = share(admin, branches["conversation"])
    mixed = anonymous.error(
        "query($t: String!) { sharedConversation(token: $t) { title } viewer { id } }", {"t": link["token"]}
    )
    assert mixed["extensions"]["code"] == "UNAUTHENTICATED"
    # Priced and bounded like any document: an oversized page is refused before anything runs.
    too_many = anonymous.error(READ, {"t": link["token"], "first": 1000})
    assert too_many["extensions"]["code"] == "BAD_USER_INPUT"
    assert too_many["extensions"]["limitName"] == "listSize"


# -- rate limits: per link and per client address ------------------------------------------------------------


@pytest.fixture(scope="module")
def strict(dsn: str) -> Iterator[ServerThread]:
    srv = ServerThread(
        harness.test_settings(
            dsn,
            migrate_on_start=False,
            share_reads_per_token=3,
            share_reads_per_address=5,
            share_rate_window_seconds=3600,
            share_page_max_messages=3,
        )
    )
    srv.start()
    yield srv
    srv.stop()


def test_reads_are_rate_limited_per_token_and_per_address(
    strict: ServerThread, admin: Actor, branches: dict[str, str]
) -> None:
    first = share(admin, branches["conversation"])["token"]
    second = share(admin, branches["conversation"])["token"]
    with httpx.Client(base_url=strict.url) as http:

        def read(token: str) -> httpx.Response:
            return http.post("/graphql", json={"query": READ, "variables": {"t": token}})

        assert [read(first).status_code for _ in range(3)] == [200, 200, 200]
        limited = read(first)
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        error = limited.json()["errors"][0]
        assert error["extensions"]["code"] == "RATE_LIMITED"
        assert error["extensions"]["budget"] == "shareReadsPerToken" and error["extensions"]["limit"] == 3
        # Another link from the same address: its own budget, until the address's (5 reads) is spent.
        assert read(second).status_code == 200
        address = read(second)
        assert address.status_code == 429
        assert address.json()["errors"][0]["extensions"]["budget"] == "shareReadsPerAddress"
        # The page counts against the same windows.
        assert http.get(f"/share/{second}").status_code == 429


# -- the page --------------------------------------------------------------------------------------------------


def test_the_page_renders_the_messages_escaped_under_a_strict_policy(
    server: ServerThread, admin: Actor, branches: dict[str, str]
) -> None:
    reply(admin, branches["b"], "<script>alert('x')</script> & more")
    token = share(admin, branches["conversation"])["token"]
    page = httpx.get(f"{server.url}/share/{token}", headers={"Accept": "text/html"})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "unsafe-inline" not in policy and "script-src" not in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert page.headers["cache-control"] == "no-store"
    assert "<h1>Trip planning</h1>" in page.text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; more" in page.text
    assert "<script" not in page.text and "src=" not in page.text and "href=" not in page.text
    assert page.text.count("<article") == 5


def test_the_page_answers_json_when_asked(
    server: ServerThread, admin: Actor, branches: dict[str, str]
) -> None:
    token = share(admin, branches["conversation"], m=branches["b"])["token"]
    answer = httpx.get(f"{server.url}/share/{token}", headers={"Accept": "application/json"})
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
    body = answer.json()
    assert body["title"] == "Trip planning" and body["truncated"] is False and body["live"] is False
    assert [m["id"] for m in body["messages"]] == [branches["root"], branches["a"], branches["b"]]
    assert set(body["messages"][0]) == {
        "id", "parentId", "depth", "role", "content", "isDeleted", "model", "createdAt", "editedAt"
    }  # fmt: skip


def test_the_page_of_an_unknown_or_revoked_link_is_404(
    server: ServerThread, admin: Actor, branches: dict[str, str]
) -> None:
    link = share(admin, branches["conversation"])
    admin.client.ok(REVOKE, {"id": link["id"]})
    for token in (link["token"], "nope"):
        page = httpx.get(f"{server.url}/share/{token}")
        assert page.status_code == 404 and "does not exist" in page.text
        as_json = httpx.get(f"{server.url}/share/{token}", headers={"Accept": "application/json"})
        assert as_json.status_code == 404 and as_json.json()["errors"][0]["extensions"]["code"] == "NOT_FOUND"


def test_links_of_an_erased_user_close(
    admin: Actor, make_user: Callable[..., Actor], anonymous: Client, loop: harness.Loop, dsn: str
) -> None:
    owner = make_user(admin)
    conversation = create_conversation(owner, "theirs")
    start_thread(owner, conversation, "hello")
    other = create_conversation(admin, "the admin's")
    start_thread(admin, other, "kept")
    erased = share(owner, conversation)
    kept = share(admin, other)
    admin.client.ok("mutation($u: ID!) { userErase(userId: $u) { userId } }", {"u": owner.user_id})
    assert anonymous.code(READ, {"t": erased["token"]}) == "NOT_FOUND"
    assert contents(anonymous.execute(READ, {"t": kept["token"]})) == ["kept"]
    assert count_rows(loop, dsn, "share_link") == 1


def test_the_access_log_never_shows_a_token() -> None:
    import logging

    import threadline.sharing.page  # noqa: F401 - installs the filter, as the app does

    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", "/share/s3cr3t-t0ken?x=1", "1.1", 200), None,
    )  # fmt: skip
    assert logging.getLogger("uvicorn.access").filter(record)
    assert "s3cr3t" not in record.getMessage() and "/share/…?x=1" in record.getMessage()


def test_the_page_shows_at_most_its_message_count_and_says_so(
    strict: ServerThread, admin: Actor, branches: dict[str, str]
) -> None:
    token = share(admin, branches["conversation"])["token"]
    answer = httpx.get(f"{strict.url}/share/{token}", headers={"Accept": "application/json"}).json()
    assert [m["content"] for m in answer["messages"]] == [
        "root question",
        "first answer",
        "follow-up on the first",
    ]
    assert answer["truncated"] is True
    page = httpx.get(f"{strict.url}/share/{token}")
    assert page.text.count("<article") == 3 and "Showing the first 3 messages" in page.text


def test_the_page_holds_at_most_four_mebibytes_of_text(server: ServerThread, admin: Actor) -> None:
    conversation = create_conversation(admin, "long")
    root = start_thread(admin, conversation, "a" * 900_000)
    parent = root
    for letter in "bcde":
        parent = reply(admin, parent, letter * 900_000)
    token = share(admin, conversation)["token"]
    answer = httpx.get(
        f"{server.url}/share/{token}", headers={"Accept": "application/json"}, timeout=60
    ).json()
    assert [m["content"][0] for m in answer["messages"]] == ["a", "b", "c", "d"]
    assert answer["truncated"] is True


def test_creating_and_revoking_a_link_is_audited(admin: Actor, branches: dict[str, str]) -> None:
    link = share(admin, branches["conversation"], m=branches["b"])
    admin.client.ok(REVOKE, {"id": link["id"]})
    entries = admin.client.ok(
        """{ auditLog(first: 10) { nodes { action actorId targetKind targetId details } } }"""
    )["auditLog"]["nodes"]
    shared = [e for e in entries if e["action"].startswith("share_link.")]
    assert sorted(e["action"] for e in shared) == ["share_link.create", "share_link.revoke"]
    for entry in shared:
        assert entry["actorId"] == admin.user_id and entry["targetId"] == branches["conversation"]
        assert (
            entry["details"]["shareLinkId"] == link["id"] and entry["details"]["messageId"] == branches["b"]
        )


def test_sharing_a_thread_root_shows_the_root_alone(
    admin: Actor, anonymous: Client, branches: dict[str, str]
) -> None:
    link = share(admin, branches["conversation"], m=branches["root"])
    assert contents(anonymous.execute(READ, {"t": link["token"]})) == ["root question"]


def test_an_anonymous_get_request_reads_a_shared_conversation(
    server: ServerThread, admin: Actor, branches: dict[str, str]
) -> None:
    import json

    token = share(admin, branches["conversation"], m=branches["a"])["token"]
    query = "query($t: String!) { sharedConversation(token: $t) { title } }"
    answer = httpx.get(
        f"{server.url}/graphql",
        params={"query": query, "variables": json.dumps({"t": token})},
        headers={"Accept": "application/json"},
    )
    assert answer.status_code == 200 and answer.json()["data"] == {
        "sharedConversation": {"title": "Trip planning"}
    }


def test_a_link_closes_while_its_maker_may_no_longer_read_the_conversation(
    admin: Actor, anonymous: Client, make_user: Callable[..., Actor]
) -> None:
    """A second admin shares a member's conversation they are not in; demoted to MEMBER they may not read it,
    so their link answers NOT_FOUND like a revoked one; promoted back, it opens again (it was not revoked)."""
    member = make_user(admin, role="MEMBER")
    maker = make_user(admin, role="ADMIN")
    conversation = create_conversation(member, "the member's")
    start_thread(member, conversation, "member words")
    link = share(maker, conversation)
    role = "mutation($u: ID!, $r: Role!) { userRoleSet(userId: $u, role: $r) { id } }"
    assert contents(anonymous.execute(READ, {"t": link["token"]})) == ["member words"]
    admin.client.ok(role, {"u": maker.user_id, "r": "MEMBER"})
    closed = anonymous.execute(READ, {"t": link["token"]})
    assert closed["data"] is None or closed["data"]["sharedConversation"] is None
    assert closed["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    page = anonymous.http.get(f"/share/{link['token']}")
    assert page.status_code == 404 and "member words" not in page.text
    admin.client.ok(role, {"u": maker.user_id, "r": "ADMIN"})
    assert contents(anonymous.execute(READ, {"t": link["token"]})) == ["member words"]
    # A participant who made the link (its owner) and is then removed from it: closed as well.
    join(member, maker, conversation)
    admin.client.ok(role, {"u": maker.user_id, "r": "MEMBER"})
    assert contents(anonymous.execute(READ, {"t": link["token"]})) == ["member words"]  # a participant reads
    member.client.ok(
        "mutation($c: ID!, $u: ID!) { participantRemove(conversationId: $c, userId: $u) }",
        {"c": conversation, "u": maker.user_id},
    )
    assert anonymous.execute(READ, {"t": link["token"]})["errors"][0]["extensions"]["code"] == "NOT_FOUND"
