"""Search over GraphQL: ranking, filters, visibility, snippets, freshness, fallback, tags, bulk archive."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from tests.api import create_conversation, join, reply, start_thread
from tests.harness import Actor, Loop

SEARCH = """query($i: ConversationSearchInput!) { search(input: $i) {
  totalCount
  pageInfo { hasNextPage hasPreviousPage endCursor }
  edges { cursor node { score snippet matchedBy conversation { id title status } message { id content } } } } }"""

TAGS = "query($f: Int) { tags(first: $f) { tag count } }"
BATCH_TAG = """mutation($ids: [ID!]!, $add: [String!], $remove: [String!]) {
  conversationsBatchTag(ids: $ids, add: $add, remove: $remove) { id tags } }"""
ARCHIVE = "mutation($d: Int!) { conversationsArchiveOlderThan(days: $d) }"
EDIT = "mutation($id: ID!, $c: String!) { messageEdit(id: $id, content: $c) { id } }"
DELETE_MESSAGE = "mutation($id: ID!) { messageDelete(id: $id) { id } }"
DELETE_CONVERSATION = "mutation($id: ID!) { conversationDelete(id: $id) { id } }"
ARCHIVE_ONE = "mutation($id: ID!) { conversationArchive(id: $id) { id } }"
LANGUAGE_SET = "mutation($l: String!) { searchLanguageSet(language: $l) { language } }"


def search(actor: Actor, **input: Any) -> dict[str, Any]:
    result: dict[str, Any] = actor.client.ok(SEARCH, {"i": input})["search"]
    return result


def titles(actor: Actor, **input: Any) -> list[str]:
    return [e["node"]["conversation"]["title"] for e in search(actor, **input)["edges"]]


def search_error(actor: Actor, **input: Any) -> str:
    return actor.client.code(SEARCH, {"i": input})


def talk(actor: Actor, title: str, *messages: str, **fields: Any) -> str:
    """A conversation with one thread holding `messages` (first is the root, the rest reply in a chain)."""
    conversation = create_conversation(actor, title, **fields)
    parent = None
    for content in messages:
        parent = (
            start_thread(actor, conversation, content) if parent is None else reply(actor, parent, content)
        )
    return conversation


def sql(loop: Loop, dsn: str, statement: str, *args: Any) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(statement, *args)
        finally:
            await conn.close()

    loop.run(run())


def uuid_of(public_id: str) -> str:
    return public_id[4:]


# --- ranking and matching -------------------------------------------------------------------------


def test_title_match_outranks_message_matches_and_more_mentions_rank_higher(admin: Actor) -> None:
    talk(admin, "Nothing relevant", "the weather is fine")
    talk(admin, "Random chat", "we tried kafka once")
    talk(admin, "Weekly sync", "kafka kafka kafka rebalancing again")
    talk(admin, "Kafka consumer lag", "hello")

    result = search(admin, query="kafka")

    assert [e["node"]["conversation"]["title"] for e in result["edges"]] == [
        "Kafka consumer lag",
        "Weekly sync",
        "Random chat",
    ]
    scores = [e["node"]["score"] for e in result["edges"]]
    assert scores == sorted(scores, reverse=True) and scores[1] > scores[2] > 0
    assert result["totalCount"] == 3
    assert {e["node"]["matchedBy"] for e in result["edges"]} == {"TEXT"}


def test_equal_relevance_is_ordered_by_most_recent_activity(admin: Actor) -> None:
    first = talk(admin, "One", "deploy rollback")
    talk(admin, "Two", "deploy rollback")
    talk(admin, "Three", "deploy rollback")
    start_thread(admin, first, "unrelated later activity")

    assert titles(admin, query="rollback") == ["One", "Three", "Two"]


def test_hit_names_the_best_matching_message_and_marks_the_snippet(admin: Actor) -> None:
    talk(admin, "Proxy trouble", "hello there", "the ECONNRESET error came from the proxy", "thanks")

    (edge,) = search(admin, query="econnreset")["edges"]

    assert edge["node"]["message"]["content"] == "the ECONNRESET error came from the proxy"
    assert edge["node"]["snippet"] == "the <mark>ECONNRESET</mark> error came from the proxy"


def test_title_hit_has_no_message_and_a_snippet_from_the_title(admin: Actor) -> None:
    talk(admin, "Postgres vacuum tuning", "hello")

    (edge,) = search(admin, query="vacuum")["edges"]

    assert edge["node"]["message"] is None
    assert edge["node"]["snippet"].startswith("Postgres <mark>vacuum</mark> tuning")


def test_snippet_escapes_html_so_only_marks_are_markup(admin: Actor) -> None:
    talk(admin, "Markup", "<b>kafka</b> & <script>friends</script>")

    (edge,) = search(admin, query="kafka")["edges"]

    assert edge["node"]["snippet"] == (
        "&lt;b&gt;<mark>kafka</mark>&lt;/b&gt; &amp; &lt;script&gt;friends&lt;/script&gt;"
    )


@pytest.mark.parametrize(
    "query",
    [
        "ECONNRESET",
        "src/app/main.py",
        "get_user_by_id",
        "getUserById",
        "node_modules/left-pad/index.js",
        "0x1F3A",
    ],
)
def test_code_like_tokens_are_findable(admin: Actor, query: str) -> None:
    talk(admin, "Stack trace", "failed in src/app/main.py: get_user_by_id raised ECONNRESET")
    talk(admin, "JS", "node_modules/left-pad/index.js calls getUserById with 0x1F3A")
    talk(admin, "Noise", "nothing to see here")

    expected = "Stack trace" if query in {"ECONNRESET", "src/app/main.py", "get_user_by_id"} else "JS"
    assert titles(admin, query=query) == [expected]


def test_english_stemming_matches_other_forms_of_a_word(admin: Actor) -> None:
    talk(admin, "Stemming", "connecting to the databases failed")

    assert titles(admin, query="database connection") == ["Stemming"]


def test_phrase_or_and_exclusion_follow_web_search_syntax(admin: Actor) -> None:
    talk(admin, "Adjacent", "a quick fox jumps")
    talk(admin, "Apart", "a quick brown fox")
    talk(admin, "Beta", "beta release notes")

    assert titles(admin, query='"quick fox"') == ["Adjacent"]
    assert sorted(titles(admin, query="quick fox")) == ["Adjacent", "Apart"]
    assert sorted(titles(admin, query="adjacent OR beta")) == ["Adjacent", "Beta"]
    assert titles(admin, query="fox -brown") == ["Adjacent"]


def test_pages_follow_the_ranking_without_gaps_or_repeats(admin: Actor) -> None:
    for i in range(5):
        talk(admin, f"Page {i}", "paging " * (i + 1))

    first = search(admin, query="paging", first=2)
    second = search(admin, query="paging", first=2, after=first["pageInfo"]["endCursor"])
    third = search(admin, query="paging", first=2, after=second["pageInfo"]["endCursor"])

    seen = [e["node"]["conversation"]["title"] for page in (first, second, third) for e in page["edges"]]
    assert seen == ["Page 4", "Page 3", "Page 2", "Page 1", "Page 0"]
    assert [
        first["pageInfo"]["hasNextPage"],
        second["pageInfo"]["hasNextPage"],
        third["pageInfo"]["hasNextPage"],
    ] == [
        True,
        True,
        False,
    ]
    assert second["pageInfo"]["hasPreviousPage"] is True
    assert first["totalCount"] == 5


# --- filters ------------------------------------------------------------------------------------------


@pytest.fixture
def corpus(admin: Actor, make_user: Callable[..., Actor]) -> dict[str, Any]:
    """Five conversations about 'release' that differ in one attribute each, plus a time split."""
    other = make_user(admin)
    ids = {
        "plain": talk(admin, "Plain", "release notes"),
        "tagged": talk(admin, "Tagged", "release notes", tags=["ops", "prod"]),
        "half_tagged": talk(admin, "Half tagged", "release notes", tags=["ops"]),
        "openai": talk(admin, "OpenAI", "release notes", aiProvider="openai"),
        "long": talk(admin, "Long", "release notes", "more", "and more"),
    }
    split = datetime.now(UTC).isoformat()
    ids["other_owner"] = talk(other, "Other owner", "release notes", tags=["ops", "prod"])
    ids["archived"] = talk(admin, "Archived", "release notes")
    admin.client.ok(ARCHIVE_ONE, {"id": ids["archived"]})
    ids["deleted"] = talk(admin, "Deleted", "release notes")
    admin.client.ok(DELETE_CONVERSATION, {"id": ids["deleted"]})
    return {"ids": ids, "split": split, "other": other}


ALL_LIVE = ["Archived", "Other owner", "Long", "OpenAI", "Half tagged", "Tagged", "Plain"]


def test_without_filters_active_and_archived_are_searched_but_not_deleted(
    admin: Actor, corpus: dict[str, Any]
) -> None:
    assert titles(admin, query="release") == ALL_LIVE


def test_tags_filter_keeps_conversations_carrying_every_tag(admin: Actor, corpus: dict[str, Any]) -> None:
    assert titles(admin, query="release", tags=["ops"]) == ["Other owner", "Half tagged", "Tagged"]
    assert titles(admin, query="release", tags=["OPS ", "prod"]) == ["Other owner", "Tagged"]


def test_user_filter_keeps_conversations_owned_by_that_user(admin: Actor, corpus: dict[str, Any]) -> None:
    assert titles(admin, query="release", userId=corpus["other"].user_id) == ["Other owner"]


def test_from_keeps_conversations_active_since_and_to_those_created_before(
    admin: Actor, corpus: dict[str, Any]
) -> None:
    assert titles(admin, query="release", **{"from": corpus["split"]}) == ["Archived", "Other owner"]
    assert titles(admin, query="release", to=corpus["split"]) == [
        "Long",
        "OpenAI",
        "Half tagged",
        "Tagged",
        "Plain",
    ]


def test_ai_provider_filter_ignores_case(admin: Actor, corpus: dict[str, Any]) -> None:
    assert titles(admin, query="release", aiProvider="OpenAI") == ["OpenAI"]


def test_min_messages_filter(admin: Actor, corpus: dict[str, Any]) -> None:
    assert titles(admin, query="release", minMessages=3) == ["Long"]


def test_status_filter_selects_one_status_even_deleted(admin: Actor, corpus: dict[str, Any]) -> None:
    assert titles(admin, query="release", status="ARCHIVED") == ["Archived"]
    assert titles(admin, query="release", status="DELETED") == ["Deleted"]


def test_filters_combine(admin: Actor, corpus: dict[str, Any]) -> None:
    result = search(admin, query="release", tags=["ops"], to=corpus["split"], status="ACTIVE")
    assert [e["node"]["conversation"]["title"] for e in result["edges"]] == ["Half tagged", "Tagged"]
    assert result["totalCount"] == 2
    assert titles(admin, tags=["ops"], userId=corpus["other"].user_id) == ["Other owner"]
    assert titles(admin, query="release", tags=["ops"], minMessages=2) == []


def test_unknown_tags_find_nothing(admin: Actor, corpus: dict[str, Any]) -> None:
    result = search(admin, query="release", tags=["no-such-tag"])
    assert result["edges"] == [] and result["totalCount"] == 0


# --- visibility -----------------------------------------------------------------------------------------


def test_other_users_and_other_tenants_conversations_never_appear_not_even_in_counts(
    admin: Actor, make_user: Callable[..., Actor], make_tenant: Callable[..., Actor]
) -> None:
    member = make_user(admin)
    colleague = make_user(admin)
    stranger = make_tenant()
    talk(member, "Mine", "secret kafka plan")
    talk(colleague, "Theirs kafka", "secret kafka plan", tags=["hidden"])
    talk(stranger, "Foreign kafka", "secret kafka plan", tags=["hidden"])

    for query in ("kafka", "secret plan", "theirs", "foreign", "kafak", "foriegn", ""):
        result = search(member, query=query)
        assert [e["node"]["conversation"]["title"] for e in result["edges"]] in ([], ["Mine"]), query
        assert result["totalCount"] == len(result["edges"]), query
    assert search(member, query="", tags=["hidden"])["totalCount"] == 0
    assert titles(admin, query="kafka") == ["Theirs kafka", "Mine"]
    assert titles(stranger, query="kafka") == ["Foreign kafka"]


def test_shared_conversations_and_a_managers_team_are_visible(
    admin: Actor, make_user: Callable[..., Actor]
) -> None:
    manager = make_user(admin, role="MANAGER", team="red")
    teammate = make_user(admin, team="red")
    outsider = make_user(admin, team="blue")
    shared = talk(outsider, "Shared with teammate", "kafka notes")
    join(outsider, teammate, shared, role="VIEWER")
    talk(teammate, "Teammate own", "kafka notes")
    talk(outsider, "Outsider private", "kafka notes")

    assert titles(teammate, query="kafka") == ["Teammate own", "Shared with teammate"]
    assert titles(manager, query="kafka") == ["Teammate own"]
    assert search(manager, query="kafka")["totalCount"] == 1


# --- freshness ------------------------------------------------------------------------------------------


def test_edits_and_deletes_are_reflected_immediately(admin: Actor) -> None:
    conversation = create_conversation(admin, "Freshness")
    message = start_thread(admin, conversation, "we use kafka")
    assert titles(admin, query="kafka") == ["Freshness"]

    admin.client.ok(EDIT, {"id": message, "c": "we use pulsar"})
    assert titles(admin, query="kafka") == []
    assert titles(admin, query="pulsar") == ["Freshness"]

    admin.client.ok(DELETE_MESSAGE, {"id": message})
    assert titles(admin, query="pulsar") == []


def test_renaming_a_conversation_is_reflected_immediately(admin: Actor) -> None:
    conversation = create_conversation(admin, "Old name")
    admin.client.ok(
        'mutation($id: ID!) { conversationUpdate(id: $id, input: {title: "Brand new", tags: ["fresh"]}) { id } }',
        {"id": conversation},
    )
    assert titles(admin, query="old") == []
    assert titles(admin, query="brand") == ["Brand new"]
    assert titles(admin, query="fresh") == ["Brand new"]


# --- typo tolerance -------------------------------------------------------------------------------------


def test_typos_in_titles_and_tags_are_matched_when_nothing_matches_exactly(admin: Actor) -> None:
    talk(admin, "Kubernetes deployment", "hello", tags=["observability"])
    talk(admin, "Gardening", "tomatoes")

    (edge,) = search(admin, query="kubernets deploymnt")["edges"]
    assert edge["node"]["matchedBy"] == "FUZZY"
    assert edge["node"]["conversation"]["title"] == "Kubernetes deployment"
    assert edge["node"]["snippet"].startswith("<mark>Kubernetes</mark> <mark>deployment</mark>")
    assert titles(admin, query="observabilty") == ["Kubernetes deployment"]
    assert search(admin, query="kubernets")["totalCount"] == 1
    assert titles(admin, query="zzyzx") == []


def test_exact_matches_suppress_the_typo_fallback(admin: Actor) -> None:
    talk(admin, "Terraform", "hello")
    talk(admin, "Terrafrom typo in title", "hello")

    result = search(admin, query="terrafrom")
    assert [(e["node"]["conversation"]["title"], e["node"]["matchedBy"]) for e in result["edges"]] == [
        ("Terrafrom typo in title", "TEXT")
    ]


# --- search language ------------------------------------------------------------------------------------


def test_tenant_can_switch_stemming_off_and_back(admin: Actor, make_user: Callable[..., Actor]) -> None:
    talk(admin, "Stemming", "connecting to the databases")
    member = make_user(admin)
    assert member.client.code(LANGUAGE_SET, {"l": "simple"}) == "FORBIDDEN"
    assert admin.client.code(LANGUAGE_SET, {"l": "klingon"}) == "BAD_USER_INPUT"
    assert admin.client.ok("{ searchSettings { language } }")["searchSettings"]["language"] == "english"

    admin.client.ok(LANGUAGE_SET, {"l": "simple"})
    assert titles(admin, query="connection") == []
    assert titles(admin, query="connecting") == ["Stemming"]
    talk(admin, "Later", "databases again")
    assert titles(admin, query="database") == []

    admin.client.ok(LANGUAGE_SET, {"l": "english"})
    assert titles(admin, query="database") == ["Later", "Stemming"]


# --- bad input ------------------------------------------------------------------------------------------


def test_empty_query_lists_by_recent_activity_with_filters(admin: Actor) -> None:
    talk(admin, "Old", "a", tags=["x"])
    talk(admin, "Middle", "b")
    talk(admin, "New", "c", tags=["x"])

    for query in (None, "", "   "):
        result = search(admin, **({} if query is None else {"query": query}))
        assert [e["node"]["conversation"]["title"] for e in result["edges"]] == ["New", "Middle", "Old"]
        assert {(e["node"]["matchedBy"], e["node"]["score"]) for e in result["edges"]} == {("RECENT", 0.0)}
    assert titles(admin, query="", tags=["x"]) == ["New", "Old"]
    page = search(admin, first=2)
    assert titles(admin, after=page["pageInfo"]["endCursor"]) == ["Old"]


@pytest.mark.parametrize("query", ['"', "(((", "- & | !", '"" -', ":*"])
def test_queries_without_words_list_by_recency(admin: Actor, query: str) -> None:
    talk(admin, "Only", "content")
    assert search(admin, query=query)["edges"][0]["node"]["matchedBy"] == "RECENT"


@pytest.mark.parametrize(
    "query",
    [
        '"kafka lag',
        "kafka OR",
        "kafka & | ! lag",
        "(kafka",
        "kafka)",
        "kafka:*",
        "'kafka'",
        "kafka\\",
        "kafka\x00lag",
    ],
)
def test_unbalanced_quotes_and_stray_operators_still_search(admin: Actor, query: str) -> None:
    talk(admin, "Kafka lag", "consumer lag")
    assert titles(admin, query=query) == ["Kafka lag"]


def test_exclusion_alone_is_bad_input(admin: Actor) -> None:
    assert search_error(admin, query="-kafka") == "BAD_USER_INPUT"


def test_ten_thousand_character_query_is_answered(admin: Actor) -> None:
    talk(admin, "Kafka", "kafka")
    long_query = ("kafka " * 2000)[:10_000]
    assert titles(admin, query=long_query) == ["Kafka"]
    assert titles(admin, query="x" * 10_000) == []
    words = " ".join(f"w{i}" for i in range(2000))[:10_000]
    assert titles(admin, query=words) == []
    assert search_error(admin, query="k" * 10_001) == "BAD_USER_INPUT"


def test_words_after_the_32nd_are_ignored(admin: Actor) -> None:
    talk(admin, "Kafka", "kafka")

    def matched(query: str) -> list[tuple[str, str]]:
        return [
            (e["node"]["conversation"]["title"], e["node"]["matchedBy"])
            for e in search(admin, query=query)["edges"]
        ]

    assert matched("kafka " * 32 + "zzzunknownzzz") == [("Kafka", "TEXT")]
    # With the 33rd word counted nothing matches exactly; the typo fallback drops unknown words.
    assert matched("kafka " * 31 + "zzzunknownzzz") == [("Kafka", "FUZZY")]


def test_text_postgres_cannot_store_is_not_an_error(admin: Actor) -> None:
    talk(admin, "Kafka", "kafka", tags=["ops"], aiProvider="openai")

    def ascii_titles(**input: Any) -> list[str]:
        # json.dumps escapes a lone surrogate as \ud800, which a JSON parser turns back into one.
        body = json.dumps({"query": SEARCH, "variables": {"i": input}})
        response = admin.client.http.post(
            "/graphql", content=body, headers={"content-type": "application/json"}
        )
        data = response.json()
        assert "errors" not in data, data
        return [e["node"]["conversation"]["title"] for e in data["data"]["search"]["edges"]]

    assert ascii_titles(query="kafka", aiProvider="open\x00ai") == []
    assert ascii_titles(query="kafka\x00") == ["Kafka"]
    # A lone surrogate is not text at all: refused for every argument (tests/test_hostile_input.py).
    body = json.dumps({"query": SEARCH, "variables": {"i": {"query": "kafka\ud800"}}})
    response = admin.client.http.post("/graphql", content=body, headers={"content-type": "application/json"})
    assert response.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


def test_malformed_arguments_are_bad_input(admin: Actor) -> None:
    assert search_error(
        admin, query="x", **{"from": "2026-02-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}
    ) == ("BAD_USER_INPUT")
    assert search_error(admin, query="x", first=101) == "BAD_USER_INPUT"
    assert search_error(admin, query="x", first=-1) == "BAD_USER_INPUT"
    assert search_error(admin, query="x", after="not-a-cursor") == "BAD_USER_INPUT"
    assert search_error(admin, query="x", userId="cnv_00000000000000000000000000000000") == "BAD_USER_INPUT"
    assert search_error(admin, query="x", minMessages=-1) == "BAD_USER_INPUT"
    recent_cursor = search(admin, first=1)["pageInfo"]["endCursor"]
    if recent_cursor is not None:
        assert search_error(admin, query="kafka", after=recent_cursor) == "BAD_USER_INPUT"


def test_search_requires_authentication(anonymous: Any) -> None:
    assert anonymous.code(SEARCH, {"i": {"query": "x"}}) == "UNAUTHENTICATED"


# --- tags -----------------------------------------------------------------------------------------------


def test_tags_count_readable_not_deleted_conversations(
    admin: Actor, make_user: Callable[..., Actor], make_tenant: Callable[..., Actor]
) -> None:
    member = make_user(admin)
    create_conversation(member, "a", tags=["ops", "prod"])
    create_conversation(member, "b", tags=["ops"])
    gone = create_conversation(member, "c", tags=["ops", "gone"])
    member.client.ok(DELETE_CONVERSATION, {"id": gone})
    create_conversation(admin, "d", tags=["ops", "admin-only"])
    create_conversation(make_tenant(), "e", tags=["ops"])

    assert member.client.ok(TAGS)["tags"] == [{"tag": "ops", "count": 2}, {"tag": "prod", "count": 1}]
    assert admin.client.ok(TAGS)["tags"] == [
        {"tag": "ops", "count": 3},
        {"tag": "admin-only", "count": 1},
        {"tag": "prod", "count": 1},
    ]
    assert admin.client.ok(TAGS, {"f": 1})["tags"] == [{"tag": "ops", "count": 3}]
    assert admin.client.code(TAGS, {"f": 1001}) == "BAD_USER_INPUT"


def test_batch_tag_adds_and_removes_on_every_conversation(admin: Actor) -> None:
    a = create_conversation(admin, "a", tags=["old", "keep"])
    b = create_conversation(admin, "b")

    changed = admin.client.ok(BATCH_TAG, {"ids": [a, b], "add": ["New", "keep"], "remove": ["old"]})

    assert changed["conversationsBatchTag"] == [
        {"id": a, "tags": ["keep", "new"]},
        {"id": b, "tags": ["new", "keep"]},
    ]
    listed = admin.client.ok('{ conversations(tags: ["new", "keep"]) { nodes { id } } }')
    assert sorted(n["id"] for n in listed["conversations"]["nodes"]) == sorted([a, b])
    assert titles(admin, query="new") == ["b", "a"]


def test_batch_tag_is_all_or_nothing(
    admin: Actor, make_user: Callable[..., Actor], make_tenant: Callable[..., Actor]
) -> None:
    member = make_user(admin)
    mine = create_conversation(member, "mine")
    viewed = create_conversation(admin, "viewed")
    join(admin, member, viewed, role="VIEWER")
    invisible = create_conversation(admin, "invisible")
    foreign = create_conversation(make_tenant(), "foreign")
    crowded = create_conversation(member, "crowded", tags=[f"t{i}" for i in range(50)])

    assert member.client.code(BATCH_TAG, {"ids": [mine, invisible], "add": ["x"]}) == "NOT_FOUND"
    assert member.client.code(BATCH_TAG, {"ids": [mine, foreign], "add": ["x"]}) == "NOT_FOUND"
    assert member.client.code(BATCH_TAG, {"ids": [mine, viewed], "add": ["x"]}) == "FORBIDDEN"
    assert member.client.code(BATCH_TAG, {"ids": [mine, crowded], "add": ["x"]}) == "BAD_USER_INPUT"
    assert member.client.code(BATCH_TAG, {"ids": [mine], "add": ["x"], "remove": ["x"]}) == "BAD_USER_INPUT"
    assert member.client.code(BATCH_TAG, {"ids": [], "add": ["x"]}) == "BAD_USER_INPUT"
    assert member.client.ok(TAGS)["tags"][:1] == [{"tag": "t0", "count": 1}]
    assert "x" not in {t["tag"] for t in member.client.ok(TAGS)["tags"]}


# --- archive older than ---------------------------------------------------------------------------------


def test_archive_older_than_archives_idle_active_conversations(
    admin: Actor, make_user: Callable[..., Actor], make_tenant: Callable[..., Actor], loop: Loop, dsn: str
) -> None:
    member = make_user(admin)
    old = [create_conversation(member, f"old {i}") for i in range(3)]
    create_conversation(member, "recent")
    already = create_conversation(member, "already archived")
    member.client.ok(ARCHIVE_ONE, {"id": already})
    foreign = make_tenant()
    foreign_old = create_conversation(foreign, "foreign old")
    backdate = [uuid_of(i) for i in (*old, already, foreign_old)]
    sql(
        loop,
        dsn,
        "UPDATE conversation SET last_activity_at = now() - interval '40 days' WHERE id = ANY($1::uuid[])",
        backdate,
    )

    assert member.client.code(ARCHIVE, {"d": 30}) == "FORBIDDEN"
    assert admin.client.code(ARCHIVE, {"d": 0}) == "BAD_USER_INPUT"
    assert admin.client.ok(ARCHIVE, {"d": 41})["conversationsArchiveOlderThan"] == 0
    assert admin.client.ok(ARCHIVE, {"d": 30})["conversationsArchiveOlderThan"] == 3
    assert admin.client.ok(ARCHIVE, {"d": 30})["conversationsArchiveOlderThan"] == 0

    statuses = {
        e["node"]["conversation"]["title"]: e["node"]["conversation"]["status"]
        for e in search(admin)["edges"]
    }
    assert statuses == {
        "old 0": "ARCHIVED",
        "old 1": "ARCHIVED",
        "old 2": "ARCHIVED",
        "recent": "ACTIVE",
        "already archived": "ARCHIVED",
    }
    assert titles(foreign, status="ACTIVE") == ["foreign old"]


# --- very common words ----------------------------------------------------------------------------------


def bulk_messages(
    loop: Loop, dsn: str, conversation: str, author: str, content: str, count: int, age: str
) -> None:
    """`count` thread roots saying `content`, written `age` ago and before (volume the API would take minutes for)."""
    sql(
        loop,
        dsn,
        """INSERT INTO message (id, tenant_id, conversation_id, root_id, depth, path, role, content, author_id,
                                created_at)
           SELECT x.id, c.tenant_id, c.id, x.id, 0, ''::bytea, 'USER', $3, $4::uuid, now() - $5::text::interval - g * interval '1 second'
           FROM conversation c, generate_series(1, $2) g, LATERAL (SELECT gen_random_uuid() AS id, g AS n) x
           WHERE c.id = $1::uuid""",
        uuid_of(conversation),
        count,
        content,
        uuid_of(author),
        age,
    )


def test_a_very_common_word_ranks_the_most_recent_matches_within_visibility(
    admin: Actor, make_user: Callable[..., Actor], loop: Loop, dsn: str
) -> None:
    member = make_user(admin)
    older = create_conversation(member, "Older")
    newer = create_conversation(admin, "Newer")
    bulk_messages(loop, dsn, older, member.user_id, "common word here", 400, "1 hour")
    bulk_messages(loop, dsn, newer, admin.user_id, "common word here", 400, "1 minute")

    # A word in every recent message is ranked over its 300 most recent matches: for the admin all
    # in "Newer"; the member cannot read "Newer", so theirs are all in "Older".
    admin_result = search(admin, query="common")
    member_result = search(member, query="common")
    assert [e["node"]["conversation"]["title"] for e in admin_result["edges"]] == ["Newer"]
    assert admin_result["totalCount"] == 1
    assert [e["node"]["conversation"]["title"] for e in member_result["edges"]] == ["Older"]
    assert member_result["totalCount"] == 1
    assert titles(admin, query="common", userId=member.user_id) == ["Older"]
