"""Semantic and hybrid search, `similar`, and the embedding indexer, through the API of a server whose
embedder is the deterministic test embedder (threadline.embeddings.concepts: synonym groups, hashed).

The paraphrases below share no word with their targets; only the synonym groups link them, so KEYWORD search
cannot find them and SEMANTIC search can (the honest difference these tests rely on).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests.api import create_conversation, join, reply, start_thread
from tests.harness import (
    TEST_METRICS_TOKEN,
    Actor,
    Client,
    Loop,
    ServerThread,
    create_admin,
    test_settings,
    unique,
)

SEARCH = """query($i: ConversationSearchInput!, $first: Int, $after: String) {
  search(input: $i, first: $first, after: $after) {
    totalCount
    pageInfo { hasNextPage endCursor }
    nodes { conversation { id title } message { id content } matchedBy keywordRank semanticRank snippet score }
  } }"""
INDEX = "{ embeddingIndex { model dimensions indexedMessages indexedChunks pending inProgress failed } }"
TARGET = "How do I repair a broken automobile on a budget"
PARAPHRASE = "fix damaged car inexpensive"
FIXTURES = Path(__file__).parent / "fixtures"


def semantic_servers(dsn: str, **more: Any) -> Iterator[ServerThread]:
    """A running server with the test embedder (or `more`'s) and an eager indexer (`more`: other settings),
    stopped after."""
    eager = {"embeddings_settle_seconds": 0.0, "embeddings_poll_seconds": 0.05, "embeddings_rate": 0.0}
    srv = ServerThread(
        test_settings(dsn, **{"migrate_on_start": False, "embeddings": "test", **eager, **more})
    )
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def semantic_server(dsn: str) -> Iterator[ServerThread]:
    yield from semantic_servers(dsn)


def admins_on(server: ServerThread, dsn: str, loop: Loop) -> Iterator[Callable[[], Actor]]:
    """A maker of tenants (their admins) on `server`, whose clients are closed after."""
    made: list[Actor] = []

    def make() -> Actor:
        actor = create_admin(loop, dsn, server.url)
        made.append(actor)
        return actor

    yield make
    for actor in made:
        actor.client.close()


@pytest.fixture
def tenant(semantic_server: ServerThread, dsn: str, loop: Loop) -> Iterator[Callable[[], Actor]]:
    yield from admins_on(semantic_server, dsn, loop)


@pytest.fixture
def member(semantic_server: ServerThread) -> Iterator[Callable[[Actor], Actor]]:
    made: list[Client] = []

    def make(admin: Actor) -> Actor:
        user = admin.client.ok(
            "mutation($i: UserCreateInput!) { userCreate(input: $i) { id } }",
            {"i": {"email": f"{unique('u')}@example.com", "role": "MEMBER"}},
        )["userCreate"]
        key = admin.client.ok(
            'mutation($u: ID!) { apiKeyCreate(userId: $u, name: "test") { secret } }', {"u": user["id"]}
        )["apiKeyCreate"]["secret"]
        client = Client(semantic_server.url, key)
        made.append(client)
        return Actor(admin.tenant_id, user["id"], key, client)

    yield make
    for client in made:
        client.close()


def wait_indexed(admin: Actor) -> dict[str, Any]:
    """Waits (up to 30 s) until the indexer has nothing left to do for the admin's tenant."""
    deadline = time.monotonic() + 30
    while True:
        status = admin.client.ok(INDEX)["embeddingIndex"]
        if status["pending"] == 0 and status["inProgress"] == 0:
            return dict(status)
        assert time.monotonic() < deadline, f"the indexer did not finish: {status}"
        time.sleep(0.05)


def search(actor: Actor, query: str, mode: str | None = None, **more: Any) -> dict[str, Any]:
    given = {"query": query, **({"mode": mode} if mode else {})}
    return dict(actor.client.ok(SEARCH, {"i": given, **more})["search"])


def found_messages(result: dict[str, Any]) -> list[str | None]:
    return [n["message"]["id"] if n["message"] else None for n in result["nodes"]]


def vectors_of(loop: Loop, dsn: str, message_ids: list[str]) -> int:
    from threadline.ids import Kind, decode_id

    async def count() -> int:
        conn = await asyncpg.connect(dsn)
        try:
            return int(
                await conn.fetchval(
                    "SELECT count(*) FROM message_embedding WHERE message_id = ANY($1::uuid[])",
                    [decode_id(m, Kind.MESSAGE) for m in message_ids],
                )
            )
        finally:
            await conn.close()

    return loop.run(count())


def seed_target(admin: Actor, text: str) -> tuple[str, str]:
    """A conversation whose root message is `text`, and another with an unrelated one: (conversation, message)."""
    target_conv = create_conversation(admin, "Weekend notes")
    target = start_thread(admin, target_conv, text)
    other_conv = create_conversation(admin, "Kitchen")
    start_thread(admin, other_conv, "Sourdough starter needs flour every morning")
    return target_conv, target


def test_a_paraphrase_is_found_by_meaning_and_not_by_keywords(tenant: Callable[[], Actor]) -> None:
    admin = tenant()
    target_conv, target = seed_target(admin, TARGET)
    status = wait_indexed(admin)
    assert status["model"] == "test:concepts@256"
    assert (status["dimensions"], status["indexedMessages"], status["indexedChunks"]) == (256, 2, 2)

    keyword = search(admin, PARAPHRASE, "KEYWORD")
    assert (keyword["totalCount"], keyword["nodes"]) == (0, [])

    semantic = search(admin, PARAPHRASE, "SEMANTIC")
    assert semantic["totalCount"] == 1  # the sourdough message shares no concept: below the similarity floor
    (hit,) = semantic["nodes"]
    assert (hit["conversation"]["id"], hit["message"]["id"]) == (target_conv, target)
    assert (hit["matchedBy"], hit["semanticRank"], hit["keywordRank"]) == ("SEMANTIC", 1, None)
    assert hit["snippet"].startswith("How do I repair a broken automobile")
    assert hit["score"] == pytest.approx(1.0, abs=1e-4)  # the same four concepts: cosine similarity 1

    # The default on a server with embeddings is HYBRID: the vector candidate survives the fusion.
    (hybrid,) = search(admin, PARAPHRASE)["nodes"]
    assert (hybrid["message"]["id"], hybrid["matchedBy"], hybrid["keywordRank"]) == (target, "SEMANTIC", None)
    assert hybrid["score"] == pytest.approx(1 / 61)


def test_hybrid_fuses_both_lists_and_says_which_part_matched(tenant: Callable[[], Actor]) -> None:
    admin = tenant()
    both = create_conversation(admin, "One")
    both_message = start_thread(admin, both, "The automobile needs a repair before the trip")
    words = create_conversation(admin, "Two")
    words_message = start_thread(admin, words, "Zorblax automobile brochure")
    meaning = create_conversation(admin, "Three")
    meaning_message = start_thread(admin, meaning, "My car needs fixing")
    wait_indexed(admin)

    result = search(admin, "automobile repair", "HYBRID", first=10)
    by_conversation = {n["conversation"]["id"]: n for n in result["nodes"]}
    assert set(by_conversation) == {both, words, meaning}
    assert result["nodes"][0]["conversation"]["id"] == both  # first in both lists
    assert by_conversation[both]["matchedBy"] == "HYBRID"
    assert by_conversation[both]["message"]["id"] == both_message
    # Nearest by meaning is "My car needs fixing" (both concepts, fewer other words), yet the conversation
    # both lists hold comes first: 1/61 + 1/62 beats 1/61.
    assert (by_conversation[both]["keywordRank"], by_conversation[both]["semanticRank"]) == (1, 2)
    assert by_conversation[both]["snippet"].count("<mark>") == 2
    assert (by_conversation[meaning]["matchedBy"], by_conversation[meaning]["semanticRank"]) == (
        "SEMANTIC",
        1,
    )
    assert by_conversation[meaning]["message"]["id"] == meaning_message
    assert by_conversation[meaning]["keywordRank"] is None
    # "Zorblax automobile brochure" lacks "repair" (full text ANDs the words): found by one shared concept only.
    assert (by_conversation[words]["matchedBy"], by_conversation[words]["semanticRank"]) == ("SEMANTIC", 3)
    assert by_conversation[words]["message"]["id"] == words_message
    assert [n["conversation"]["id"] for n in result["nodes"]] == [both, meaning, words]
    assert result["totalCount"] == 3

    # Exclusions hold for the vector list too: "repair" by meaning finds both repair messages, "-automobile" leaves
    # out the one that says automobile (and is not embedded: it would draw the brochure by meaning).
    excluded = search(admin, "repair -automobile", "SEMANTIC")
    assert [n["conversation"]["id"] for n in excluded["nodes"]] == [meaning]
    assert [n["conversation"]["id"] for n in search(admin, "repair -automobile", "HYBRID")["nodes"]] == [
        meaning
    ]
    for mode in ("SEMANTIC", "HYBRID"):
        error = admin.client.error(SEARCH, {"i": {"query": "-automobile", "mode": mode}})
        assert (error["extensions"]["code"], error["extensions"]["argument"]) == ("BAD_USER_INPUT", "query")

    keyword_only = search(admin, "zorblax", "HYBRID")
    (hit,) = keyword_only["nodes"]
    assert (hit["conversation"]["id"], hit["matchedBy"], hit["keywordRank"]) == (words, "HYBRID", 1)
    assert "<mark>Zorblax</mark>" in hit["snippet"]


def test_hybrid_matches_titles_tolerantly_of_typos_only_when_nothing_else_matched(
    tenant: Callable[[], Actor],
) -> None:
    admin = tenant()
    titled = create_conversation(admin, "Kubernetes upgrade")
    start_thread(admin, titled, "Zorblax brochure")
    other = create_conversation(admin, "Garage")
    start_thread(admin, other, "Kubernetis automobile")  # the typo itself, in a message
    wait_indexed(admin)
    # The typo is found as written (full text and vectors): the tolerant title match is not fused in.
    result = search(admin, "kubernetis", "HYBRID")
    assert [(n["conversation"]["id"], n["matchedBy"]) for n in result["nodes"]] == [(other, "HYBRID")]
    # A typo nothing holds: only then are titles matched tolerantly, as KEYWORD search does.
    result = search(admin, "kubernetas", "HYBRID")
    assert [(n["conversation"]["id"], n["matchedBy"]) for n in result["nodes"]] == [(titled, "FUZZY")]
    assert result["nodes"][0]["keywordRank"] == 1 and result["nodes"][0]["semanticRank"] is None


def test_fused_pages_continue_with_their_cursor_and_only_their_mode(tenant: Callable[[], Actor]) -> None:
    admin = tenant()
    conversations = {create_conversation(admin, f"c{i}") for i in range(5)}
    for i, conversation in enumerate(sorted(conversations)):
        start_thread(admin, conversation, f"automobile repair number {i}")
    wait_indexed(admin)
    seen: list[str] = []
    after = None
    while True:
        page = search(admin, "car fix", "SEMANTIC", first=2, after=after)
        assert page["totalCount"] == 5
        seen.extend(n["conversation"]["id"] for n in page["nodes"])
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert sorted(seen) == sorted(conversations)
    first = search(admin, "car fix", "SEMANTIC", first=2)
    error = admin.client.error(
        SEARCH, {"i": {"query": "car fix", "mode": "KEYWORD"}, "after": first["pageInfo"]["endCursor"]}
    )
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    error = admin.client.error(
        SEARCH, {"i": {"query": "car fix", "mode": "HYBRID"}, "after": first["pageInfo"]["endCursor"]}
    )
    assert error["extensions"]["code"] == "BAD_USER_INPUT"


def test_edits_and_deletes_are_reflected_and_deleted_text_leaves_no_vector(
    tenant: Callable[[], Actor], dsn: str, loop: Loop
) -> None:
    admin = tenant()
    conversation = create_conversation(admin, "Garage")
    root = start_thread(admin, conversation, "Opening words")
    target = reply(admin, root, TARGET)
    wait_indexed(admin)
    assert found_messages(search(admin, PARAPHRASE, "SEMANTIC")) == [target]

    admin.client.ok(
        'mutation($id: ID!) { messageEdit(id: $id, content: "Which physician treats an ailing puppy") { id } }',
        {"id": target},
    )
    # At once, whether the indexer has run yet or not: the old text's vectors went with the edit (no stale hit).
    assert search(admin, PARAPHRASE, "SEMANTIC")["nodes"] == []
    wait_indexed(admin)
    assert search(admin, PARAPHRASE, "SEMANTIC")["nodes"] == []
    (hit,) = search(admin, "doctor for a sick dog", "SEMANTIC")["nodes"]
    assert hit["message"]["id"] == target
    assert vectors_of(loop, dsn, [target]) == 1

    admin.client.ok("mutation($id: ID!) { messageDelete(id: $id) { id } }", {"id": target})
    assert vectors_of(loop, dsn, [target]) == 0
    wait_indexed(admin)
    assert vectors_of(loop, dsn, [target]) == 0
    result = search(admin, "doctor for a sick dog", "SEMANTIC")
    assert result["nodes"] == []
    assert target not in found_messages(search(admin, "physician puppy", "HYBRID"))
    similar = "query($m: ID!) { node(id: $m) { ... on Message { similar(first: 50) { id } } } }"
    assert admin.client.ok(similar, {"m": target})["node"]["similar"] == []
    assert target not in [m["id"] for m in admin.client.ok(similar, {"m": root})["node"]["similar"]]


def test_semantic_results_keep_the_search_filters(tenant: Callable[[], Actor]) -> None:
    admin = tenant()
    tagged = create_conversation(admin, "Tagged", tags=["cars"])
    tagged_message = start_thread(admin, tagged, TARGET)
    plain = create_conversation(admin, "Plain")
    plain_message = start_thread(admin, plain, "Mend my damaged sedan cheaply")
    wait_indexed(admin)
    assert set(found_messages(search(admin, PARAPHRASE, "SEMANTIC"))) == {tagged_message, plain_message}
    by_tag = admin.client.ok(SEARCH, {"i": {"query": PARAPHRASE, "mode": "SEMANTIC", "tags": ["cars"]}})[
        "search"
    ]
    assert found_messages(by_tag) == [tagged_message]
    later = admin.client.ok(
        SEARCH, {"i": {"query": PARAPHRASE, "mode": "HYBRID", "from": "2999-01-01T00:00:00Z"}}
    )
    assert later["search"]["nodes"] == []
    archived = admin.client.ok("mutation($c: ID!) { conversationArchive(id: $c) { status } }", {"c": plain})
    assert archived["conversationArchive"]["status"] == "ARCHIVED"
    only_active = admin.client.ok(
        SEARCH, {"i": {"query": PARAPHRASE, "mode": "SEMANTIC", "status": "ACTIVE"}}
    )
    assert found_messages(only_active["search"]) == [tagged_message]
    admin.client.ok("mutation($c: ID!) { conversationDelete(id: $c) { status } }", {"c": tagged})
    assert found_messages(search(admin, PARAPHRASE, "SEMANTIC")) == [plain_message]  # DELETED is left out
    data = admin.client.ok(
        "query($m: ID!) { node(id: $m) { ... on Message { similar { id } } } }", {"m": plain_message}
    )
    assert data["node"]["similar"] == []  # the only similar message is in a deleted conversation


def test_an_erased_users_messages_lose_their_vectors(
    tenant: Callable[[], Actor], member: Callable[[Actor], Actor], dsn: str, loop: Loop
) -> None:
    admin = tenant()
    writer = member(admin)
    conversation = create_conversation(admin, "Shared")
    join(admin, writer, conversation)
    root = start_thread(admin, conversation, "Planning the holiday")
    theirs = reply(writer, root, TARGET)
    wait_indexed(admin)
    assert vectors_of(loop, dsn, [theirs]) == 1
    admin.client.ok("mutation($u: ID!) { userErase(userId: $u) { __typename } }", {"u": writer.user_id})
    assert vectors_of(loop, dsn, [theirs]) == 0
    wait_indexed(admin)
    assert vectors_of(loop, dsn, [theirs]) == 0
    assert search(admin, PARAPHRASE, "SEMANTIC")["nodes"] == []


def test_semantic_results_and_similar_keep_tenants_and_memberships_apart(
    tenant: Callable[[], Actor], member: Callable[[Actor], Actor]
) -> None:
    admin = tenant()
    outsider_admin = tenant()
    colleague = member(admin)
    private = create_conversation(admin, "Private")
    private_message = start_thread(admin, private, TARGET)
    shared = create_conversation(admin, "Shared")
    join(admin, colleague, shared)
    shared_message = start_thread(admin, shared, "The automobile is broken again, repair it on a budget")
    elsewhere = create_conversation(outsider_admin, "Their own")
    elsewhere_message = start_thread(outsider_admin, elsewhere, TARGET)
    wait_indexed(admin)
    wait_indexed(outsider_admin)

    assert set(found_messages(search(admin, PARAPHRASE, "SEMANTIC"))) == {private_message, shared_message}
    assert found_messages(search(colleague, PARAPHRASE, "SEMANTIC")) == [shared_message]
    assert found_messages(search(colleague, PARAPHRASE, "HYBRID")) == [shared_message]
    assert found_messages(search(outsider_admin, PARAPHRASE, "SEMANTIC")) == [elsewhere_message]

    similar = """query($c: ID!, $m: ID!) {
      conversation(id: $c) { similar(first: 50) { id } }
      node(id: $m) { ... on Message { similar(first: 50) { id conversationId content } } } }"""
    mine = admin.client.ok(similar, {"c": private, "m": private_message})
    assert [c["id"] for c in mine["conversation"]["similar"]] == [shared]
    assert [m["id"] for m in mine["node"]["similar"]] == [shared_message]
    theirs = colleague.client.ok(similar, {"c": shared, "m": shared_message})
    assert theirs["conversation"]["similar"] == []  # the private one is nearest, and unreadable
    assert theirs["node"]["similar"] == []
    outside = outsider_admin.client.ok(similar, {"c": elsewhere, "m": elsewhere_message})
    assert (outside["conversation"]["similar"], outside["node"]["similar"]) == ([], [])
    # Someone else's conversation or message cannot even be named.
    assert colleague.client.execute(similar, {"c": private, "m": private_message})["data"] in (
        None,
        {"conversation": None, "node": None},
    )


def test_similar_is_bounded_and_ordered_by_meaning(tenant: Callable[[], Actor]) -> None:
    admin = tenant()
    source = create_conversation(admin, "Source")
    source_message = start_thread(admin, source, "Which physician treats an ailing puppy")
    near = create_conversation(admin, "Near")
    near_message = start_thread(admin, near, "A doctor for my sick dog")
    half = create_conversation(admin, "Half")
    start_thread(admin, half, "My dog loves the beach")
    far = create_conversation(admin, "Far")
    start_thread(admin, far, "Quarterly tax levy statement")
    wait_indexed(admin)
    data = admin.client.ok(
        """query($c: ID!, $m: ID!) { conversation(id: $c) { similar(first: 2) { id } }
           node(id: $m) { ... on Message { similar(first: 1) { id } } } }""",
        {"c": source, "m": source_message},
    )
    assert [c["id"] for c in data["conversation"]["similar"]] == [near, half]
    assert [m["id"] for m in data["node"]["similar"]] == [near_message]
    error = admin.client.error(
        "query($c: ID!) { conversation(id: $c) { similar(first: 51) { id } } }", {"c": source}
    )
    assert error["extensions"]["code"] == "BAD_USER_INPUT"


def test_nested_similar_lists_are_refused_by_the_cost_limit_before_any_work(
    tenant: Callable[[], Actor],
) -> None:
    admin = tenant()
    nested = """{ conversations(first: 100) { nodes { similar(first: 50) { similar(first: 50) {
        similar(first: 50) { id } } } } } }"""
    error = admin.client.error(nested)
    assert error["extensions"]["code"] == "BAD_USER_INPUT" and error["extensions"]["limitName"] == "cost"
    error = admin.client.error("{ conversations(first: 1) { nodes { similar(first: 51) { id } } } }")
    assert (error["extensions"]["limitName"], error["extensions"]["limit"]) == ("listSize", 50)


def test_imported_messages_are_indexed(tenant: Callable[[], Actor], dsn: str, loop: Loop) -> None:
    admin = tenant()
    data = json.loads((FIXTURES / "claude" / "conversations.json").read_text())
    imported = admin.client.ok(
        "mutation($i: ConversationImportInput!) { conversationImport(input: $i) { id } }",
        {"i": {"format": "CLAUDE", "data": data}},
    )["conversationImport"]
    assert imported
    status = wait_indexed(admin)
    from threadline.ids import Kind, decode_id

    async def with_content() -> int:
        conn = await asyncpg.connect(dsn)
        try:
            return int(
                await conn.fetchval(
                    "SELECT count(*) FROM message WHERE tenant_id = $1 AND deleted_at IS NULL AND content <> ''",
                    decode_id(admin.tenant_id, Kind.TENANT),
                )
            )
        finally:
            await conn.close()

    expected = loop.run(with_content())
    assert expected > 0
    assert status["indexedMessages"] == expected


def test_progress_is_for_admins_and_in_metrics(
    tenant: Callable[[], Actor], member: Callable[[Actor], Actor], semantic_server: ServerThread
) -> None:
    admin = tenant()
    colleague = member(admin)
    assert colleague.client.error(INDEX)["extensions"]["code"] == "FORBIDDEN"
    conversation = create_conversation(admin, "Counted")
    for i in range(3):
        start_thread(admin, conversation, f"automobile number {i}")
    status = wait_indexed(admin)
    assert (status["indexedMessages"], status["pending"], status["failed"]) == (3, 0, 0)
    metrics = httpx.get(
        f"{semantic_server.url}/metrics", headers={"Authorization": f"Bearer {TEST_METRICS_TOKEN}"}
    ).text
    assert 'threadline_embedding_queue{state="pending"}' in metrics
    indexed = [
        line
        for line in metrics.splitlines()
        if line.startswith("threadline_embedding_messages_indexed_total")
    ]
    assert indexed and float(indexed[0].split()[-1]) >= 3


def test_semantic_modes_need_a_provider(admin: Actor) -> None:
    """The session's server has no embeddings provider: KEYWORD is the default, the others are refused."""
    conversation = create_conversation(admin, "Plain")
    start_thread(admin, conversation, TARGET)
    assert admin.client.ok(INDEX) == {"embeddingIndex": None}
    for mode in ("SEMANTIC", "HYBRID"):
        error = admin.client.error(SEARCH, {"i": {"query": "automobile", "mode": mode}})
        assert (error["extensions"]["code"], error["extensions"]["argument"]) == ("BAD_USER_INPUT", "mode")
    (hit,) = admin.client.ok(SEARCH, {"i": {"query": "automobile"}})["search"]["nodes"]
    assert (hit["matchedBy"], hit["keywordRank"], hit["semanticRank"]) == ("TEXT", None, None)
    data = admin.client.ok("query($c: ID!) { conversation(id: $c) { similar { id } } }", {"c": conversation})
    assert data["conversation"]["similar"] == []
