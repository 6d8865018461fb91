"""How vector candidates are found (threadline.embeddings.repository.nearest_conversations): an exact scan of the
chunks the caller may read, or the model's HNSW index walked iteratively past the others, chosen from the
planner's estimates or forced by THREADLINE_EMBEDDINGS_VECTOR_SCAN. Whatever the path, a member sees only the
conversations they may read and a tenant only its own.

The data is written through the API and embedded by the real indexer (the deterministic test embedder); the
index path is checked to walk the index by the transaction's own statistics (pg_stat_xact_user_indexes).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import pytest

from tests.api import create_conversation, join, start_thread
from tests.harness import Actor, Client, Loop, ServerThread, unique
from tests.test_embeddings import (  # noqa: F401 - member, semantic_server, tenant: fixtures
    PARAPHRASE,
    TARGET,
    found_messages,
    member,
    search,
    semantic_server,
    semantic_servers,
    tenant,
    wait_indexed,
)
from threadline.auth.principal import Principal, Role
from threadline.db import Database, Executor
from threadline.embeddings import repository as repo
from threadline.embeddings.concepts import concept_vector
from threadline.embeddings.repository import Model, Nearest, VectorScan, choose_scan, vector_text
from threadline.embeddings.service import model_id
from threadline.ids import Kind, decode_id
from threadline.search.repository import SearchFilters

FILTERS = SearchFilters(statuses=("ACTIVE", "ARCHIVED"))
T = TypeVar("T")
# The member's shared conversation: six chunks near the paraphrase, none as near as the others' TARGET.
SHARED = [
    "The automobile is broken again, repair it on a budget",
    "Mend my damaged sedan cheaply",
    "Our vehicle is broken; fix it for little money",
    "Repair the damaged car, inexpensive parts only",
    "The broken automobile needs a cheap mechanic",
    "Fix the sedan on a budget this weekend",
]


def test_the_scan_is_chosen_by_what_it_would_cost() -> None:
    # A member reading 2% of a million chunks: an index scan would visit ~10,000 tuples to find 200 readable.
    assert choose_scan(20_000, 1_000_000, 200).scan is VectorScan.EXACT
    # A tenant admin reading every chunk: the index finds 200 among the first few hundred.
    assert choose_scan(1_000_000, 1_000_000, 200).scan is VectorScan.INDEX
    # A small tenant in a large database: most tuples the index visits are another tenant's.
    assert choose_scan(30_000, 10_000_000, 200).scan is VectorScan.EXACT
    # A large reader of a larger database: the index, allowed to visit 4x what it should need.
    big = choose_scan(500_000, 20_000_000, 200)
    assert (big.scan, big.max_tuples) == (VectorScan.INDEX, 32_000)
    # The walk is bounded whatever the estimates (the CPU of one search), and never below pgvector's default.
    assert choose_scan(1, 10**9, 200).max_tuples == repo.HNSW_MAX_SCAN_TUPLES
    assert choose_scan(10**6, 10**6, 200).max_tuples == repo.HNSW_SCAN_TUPLES


@pytest.fixture(scope="module")
def index_server(dsn: str) -> Iterator[ServerThread]:
    """A server whose vector candidates always come from the HNSW index (THREADLINE_EMBEDDINGS_VECTOR_SCAN=index)."""
    yield from semantic_servers(dsn, embeddings_vector_scan="index")


def principal_of(actor: Actor, role: Role) -> Principal:
    return Principal(decode_id(actor.tenant_id, Kind.TENANT), decode_id(actor.user_id, Kind.USER), role, None)


def crowded(make_admin: Callable[[], Actor], make_member: Callable[[Actor], Actor]) -> dict[str, Any]:
    """A tenant whose admin holds 12 private conversations with TARGET (nearer to the paraphrase than anything a
    member reads), a member who reads one shared conversation of six chunks, and another tenant with 12 TARGETs."""
    admin, outsider = make_admin(), make_admin()
    colleague = make_member(admin)
    private = [create_conversation(admin, f"Private {n}") for n in range(12)]
    for conversation in private:
        start_thread(admin, conversation, TARGET)
    shared = create_conversation(admin, "Shared")
    join(admin, colleague, shared)
    shared_messages = [start_thread(admin, shared, text) for text in SHARED]
    theirs = [create_conversation(outsider, f"Theirs {n}") for n in range(12)]
    theirs_messages = [start_thread(outsider, conversation, TARGET) for conversation in theirs]
    wait_indexed(admin)
    wait_indexed(outsider)
    return {
        "admin": admin,
        "outsider": outsider,
        "member": colleague,
        "private": private,
        "shared": shared,
        "shared_messages": shared_messages,
        "theirs": theirs,
        "theirs_messages": theirs_messages,
    }


MODEL = Model("test:concepts@256", model_id("test:concepts@256"), 256)


async def in_one_transaction(
    dsn: str, work: Callable[[Executor, str], Awaitable[T]]
) -> tuple[T, int, tuple[str, str]]:
    """`work(tx, the paraphrase's vector)` in one transaction: its result, how many times the transaction walked
    the HNSW index, and the planner settings after it."""
    vector = concept_vector(PARAPHRASE, 256)
    assert vector is not None
    db = await Database.connect(dsn, 1, 1)
    try:
        async with db.transaction() as tx:
            result = await work(tx, vector_text(vector))
            walks = await tx.fetchval(
                "SELECT pg_stat_get_xact_numscans(to_regclass($1))", f"message_embedding_hnsw_{MODEL.id}"
            )
            settings = await tx.fetchrow(
                "SELECT current_setting('random_page_cost') AS rpc, current_setting('enable_sort') AS sort"
            )
            assert settings is not None
            return result, int(walks or 0), (settings["rpc"], settings["sort"])  # no index yet: none
    finally:
        await db.close()


async def nearest(
    dsn: str, principal: Principal, scan: VectorScan, chunks: int
) -> tuple[Nearest, int, tuple[str, str]]:
    """The paraphrase's nearest conversations for `principal` (`in_one_transaction`)."""
    return await in_one_transaction(
        dsn,
        lambda tx, vector: repo.nearest_conversations(
            tx,
            principal,
            FILTERS,
            MODEL,
            vector,
            chunks=chunks,
            conversations=50,
            min_similarity=-1.0,
            scan=scan,
        ),
    )


async def similar(
    dsn: str, principal: Principal, conversation: uuid.UUID, scan: VectorScan, chunks: int
) -> tuple[list[Any], int]:
    """`similar_conversations` of the paraphrase's vector for `principal`: its rows, and the index walks."""
    rows, walks, _ = await in_one_transaction(
        dsn,
        lambda tx, vector: repo.similar_conversations(
            tx, principal, MODEL, vector, conversation, chunks=chunks, first=10, scan=scan
        ),
    )
    return list(rows), walks


def test_a_members_candidates_from_the_index_walk_are_only_conversations_they_read(
    semantic_server: ServerThread,  # noqa: F811 - the fixture
    tenant: Callable[[], Actor],  # noqa: F811 - the fixture
    member: Callable[[Actor], Actor],  # noqa: F811 - the fixture
    dsn: str,
    loop: Loop,
) -> None:
    made = crowded(tenant, member)
    shared = decode_id(made["shared"], Kind.CONVERSATION)
    colleague = principal_of(made["member"], Role.MEMBER)
    before = loop.run(nearest(dsn, colleague, VectorScan.EXACT, 5))[2]

    # The index path, met from the index: the walk went past the 24 nearer chunks the member may not read.
    walked, walks, after = loop.run(nearest(dsn, colleague, VectorScan.INDEX, 5))
    assert (walked.choice.scan, walked.retried, walks) == (VectorScan.INDEX, False, 1)
    assert [c.conversation_id for c in walked.conversations] == [shared]
    assert after == before  # the statement's planner settings do not outlive it
    # The exact path agrees, and does not touch the index.
    exact, walks, _ = loop.run(nearest(dsn, colleague, VectorScan.EXACT, 5))
    assert (exact.choice.scan, walks) == (VectorScan.EXACT, 0)
    assert [c.conversation_id for c in exact.conversations] == [shared]
    # Left to the estimates, a member reading six chunks of a table of many is answered exactly.
    auto, walks, _ = loop.run(nearest(dsn, colleague, VectorScan.AUTO, 5))
    assert (auto.choice.scan, walks) == (VectorScan.EXACT, 0)
    assert 1 <= auto.choice.readable < auto.choice.total

    # An index walk short of its LIMIT (the member reads 6 chunks, 50 are asked) is done again exactly.
    short, walks, _ = loop.run(nearest(dsn, colleague, VectorScan.INDEX, 50))
    assert (short.retried, short.choice.scan, walks) == (True, VectorScan.EXACT, 1)
    assert [c.conversation_id for c in short.conversations] == [shared]

    # The admin's walk stays in the tenant: its 13 conversations, none of the other tenant's.
    admin = principal_of(made["admin"], Role.ADMIN)
    mine, walks, _ = loop.run(nearest(dsn, admin, VectorScan.INDEX, 15))
    assert (mine.choice.scan, mine.retried, walks) == (VectorScan.INDEX, False, 1)
    expected = {decode_id(c, Kind.CONVERSATION) for c in [*made["private"], made["shared"]]}
    assert {c.conversation_id for c in mine.conversations} <= expected
    assert len(mine.conversations) >= 3  # 15 chunks: 12 private TARGETs nearest, then the shared ones

    # `similar` finds its chunks the same way: the admin's walk met its 5 chunks in the tenant (no exact retry).
    first_private = decode_id(made["private"][0], Kind.CONVERSATION)
    rows, walks = loop.run(similar(dsn, admin, first_private, VectorScan.INDEX, 5))
    assert walks == 1 and rows
    assert {r["id"] for r in rows} <= expected - {first_private}
    # The member reads nothing but the shared conversation: nothing similar to it, by the walk or exactly.
    assert loop.run(similar(dsn, colleague, shared, VectorScan.INDEX, 5)) == ([], 1)
    assert loop.run(similar(dsn, colleague, shared, VectorScan.AUTO, 5)) == ([], 0)


def test_tenants_and_memberships_stay_apart_when_search_walks_the_index(
    index_server: ServerThread,
    tenant: Callable[[], Actor],  # noqa: F811 - the fixture
    member: Callable[[Actor], Actor],  # noqa: F811 - the fixture
) -> None:
    made = crowded(tenant, member)
    # The same users through the server that always walks the index.
    as_member = Client(index_server.url, made["member"].api_key)
    as_outsider = Client(index_server.url, made["outsider"].api_key)
    as_admin = Client(index_server.url, made["admin"].api_key)
    try:
        colleague = Actor(made["member"].tenant_id, made["member"].user_id, made["member"].api_key, as_member)
        outsider = Actor(
            made["outsider"].tenant_id, made["outsider"].user_id, made["outsider"].api_key, as_outsider
        )
        for mode in ("SEMANTIC", "HYBRID"):
            result = search(colleague, PARAPHRASE, mode, first=50)
            assert {n["conversation"]["id"] for n in result["nodes"]} == {made["shared"]}
            assert set(found_messages(result)) <= set(made["shared_messages"])
            theirs = search(outsider, PARAPHRASE, mode, first=50)
            assert {n["conversation"]["id"] for n in theirs["nodes"]} == set(made["theirs"])
        # A query of the member's own words that is nowhere else they may read finds nothing else either.
        assert search(colleague, unique("zebra"), "SEMANTIC")["nodes"] == []
        # `similar` walks the index too: the member's only readable conversation has no readable neighbour, the
        # admin's neighbours are the tenant's own, and the other tenant's are theirs.
        similar = """query($c: ID!, $m: ID!) {
          conversation(id: $c) { similar(first: 50) { id } }
          node(id: $m) { ... on Message { similar(first: 50) { id conversationId } } } }"""
        first_shared = made["shared_messages"][0]
        mine = as_member.ok(similar, {"c": made["shared"], "m": first_shared})
        assert mine["conversation"]["similar"] == []
        assert {m["id"] for m in mine["node"]["similar"]} <= set(made["shared_messages"]) - {first_shared}
        theirs_similar = as_outsider.ok(similar, {"c": made["theirs"][0], "m": made["theirs_messages"][0]})
        assert {c["id"] for c in theirs_similar["conversation"]["similar"]} == set(made["theirs"][1:])
        assert {m["conversationId"] for m in theirs_similar["node"]["similar"]} == set(made["theirs"][1:])
        admins = as_admin.ok(similar, {"c": made["private"][0], "m": first_shared})
        tenant_conversations = {*made["private"][1:], made["shared"]}
        assert {c["id"] for c in admins["conversation"]["similar"]} == tenant_conversations
        assert {m["conversationId"] for m in admins["node"]["similar"]} <= {*made["private"], made["shared"]}
    finally:
        as_member.close()
        as_outsider.close()
        as_admin.close()


@pytest.fixture(scope="module")
def two_connection_server(dsn: str) -> Iterator[ServerThread]:
    """A server whose pool holds two connections at most (its indexer uses them too)."""
    yield from semantic_servers(dsn, db_pool_min=2, db_pool_max=2)


def test_hybrid_searches_at_once_never_wait_for_a_second_connection_they_cannot_get(
    two_connection_server: ServerThread,
    tenant: Callable[[], Actor],  # noqa: F811 - the fixture
    member: Callable[[Actor], Actor],  # noqa: F811 - the fixture
) -> None:
    """HYBRID finds its vector candidates on a second connection only when one is idle as it starts: eight
    searches at once on a pool of two all finish, with the same results as one alone."""
    made = crowded(tenant, member)
    clients = [Client(two_connection_server.url, made["member"].api_key) for _ in range(8)]
    try:
        actors = [
            Actor(made["member"].tenant_id, made["member"].user_id, made["member"].api_key, c)
            for c in clients
        ]
        alone = search(actors[0], PARAPHRASE, "HYBRID", first=50)
        assert {n["conversation"]["id"] for n in alone["nodes"]} == {made["shared"]}
        with ThreadPoolExecutor(len(actors)) as pool:
            results = list(pool.map(lambda a: search(a, PARAPHRASE, "HYBRID", first=50), actors * 3))
        assert all(r["nodes"] == alone["nodes"] for r in results)
    finally:
        for c in clients:
            c.close()


def test_an_estimate_of_filters_no_row_can_meet_is_an_exact_scan(dsn: str, loop: Loop) -> None:
    """The planner leaves a branch it proves empty out of the estimate's plan: the choice is then an exact scan."""
    choice, walks, _ = loop.run(
        in_one_transaction(
            dsn,
            lambda tx, vector: repo.estimate_scan(
                tx, MODEL, "SELECT $1::text AS v FROM message_embedding e WHERE false", [vector], 200
            ),
        )
    )
    assert (choice.scan, choice.readable, walks) == (VectorScan.EXACT, 0.0, 0)


def test_a_forced_scan_setting_is_checked() -> None:
    import os

    from threadline.settings import Settings

    os.environ["THREADLINE_EMBEDDINGS_VECTOR_SCAN"] = "sideways"
    try:
        with pytest.raises(ValueError, match="THREADLINE_EMBEDDINGS_VECTOR_SCAN"):
            Settings.from_env()
    finally:
        del os.environ["THREADLINE_EMBEDDINGS_VECTOR_SCAN"]
