"""Metadata on conversations and messages: bounds, updates, filters in `conversations` and `search`, the index,
and the round trip through a Threadline export and import."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from tests.api import create_conversation
from tests.harness import Actor, Loop
from threadline.ids import Kind, decode_id
from threadline.metadata.service import FEW_HOLDERS

CREATE = """mutation($i: ConversationCreateInput!) { conversationCreate(input: $i) { id metadata } }"""
UPDATE = """mutation($id: ID!, $i: ConversationUpdateInput!) { conversationUpdate(id: $id, input: $i) { id metadata } }"""
LIST = """query($m: [MetadataFilterInput!]) { conversations(metadata: $m) { totalCount edges { node { id } } } }"""
SEARCH = """query($i: ConversationSearchInput!) { search(input: $i) { totalCount edges { node { conversation { id } } } } }"""
START = "mutation($c: ID!, $i: MessageInput!) { threadStart(conversationId: $c, input: $i) { id metadata } }"
REPLY = "mutation($p: ID!, $i: MessageInput!) { messageReply(parentId: $p, input: $i) { id metadata } }"
SET = "mutation($id: ID!, $m: JSON!) { messageMetadataSet(id: $id, metadata: $m) { id metadata } }"
TREE = "query($r: ID!) { threadTree(rootId: $r) { nodes { content metadata } } }"


def ids(data: dict[str, Any]) -> set[str]:
    return {edge["node"]["id"] for edge in data["edges"]}


def test_conversation_metadata_is_set_on_create_replaced_on_update_and_cleared_by_empty(admin: Actor) -> None:
    created = admin.client.ok(CREATE, {"i": {"title": "t", "metadata": {"project": "apollo", "team": "red"}}})
    conversation = created["conversationCreate"]
    assert conversation["metadata"] == {"project": "apollo", "team": "red"}
    kept = admin.client.ok(UPDATE, {"id": conversation["id"], "i": {"title": "renamed"}})[
        "conversationUpdate"
    ]
    assert kept["metadata"] == {"project": "apollo", "team": "red"}
    replaced = admin.client.ok(UPDATE, {"id": conversation["id"], "i": {"metadata": {"project": "gemini"}}})
    assert replaced["conversationUpdate"]["metadata"] == {"project": "gemini"}
    cleared = admin.client.ok(UPDATE, {"id": conversation["id"], "i": {"metadata": {}}})
    assert cleared["conversationUpdate"]["metadata"] == {}
    assert admin.client.ok(CREATE, {"i": {"title": "plain"}})["conversationCreate"]["metadata"] == {}


@pytest.mark.parametrize(
    ("metadata", "bound"),
    [
        ({f"k{i}": "v" for i in range(17)}, "at most 16"),
        ({"k" * 65: "v"}, "at most 64"),
        ({"k": "v" * 513}, "at most 512"),
        ({"k": 1}, "must be a string"),
        ({"": "v"}, "non-empty"),
        (["not", "an", "object"], "JSON object"),
    ],
)
def test_metadata_over_its_bounds_is_bad_user_input_naming_the_bound(
    admin: Actor, metadata: Any, bound: str
) -> None:
    error = admin.client.error(CREATE, {"i": {"title": "t", "metadata": metadata}})
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert bound in error["message"]
    conversation = create_conversation(admin)
    error = admin.client.error(START, {"c": conversation, "i": {"content": "hi", "metadata": metadata}})
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert bound in error["message"]
    assert admin.client.ok("{ conversations { totalCount } }")["conversations"]["totalCount"] == 1
    # Exactly at the bounds is fine.
    edge = {f"k{i:02d}" + "x" * 61: "v" * 512 for i in range(16)}
    assert (
        admin.client.ok(UPDATE, {"id": conversation, "i": {"metadata": edge}})["conversationUpdate"][
            "metadata"
        ]
        == edge
    )


def test_conversations_and_search_filter_by_every_given_pair(admin: Actor, make_user: Any) -> None:
    a = admin.client.ok(CREATE, {"i": {"title": "alpha", "metadata": {"project": "apollo", "team": "red"}}})
    b = admin.client.ok(CREATE, {"i": {"title": "beta", "metadata": {"project": "apollo", "team": "blue"}}})
    admin.client.ok(CREATE, {"i": {"title": "gamma", "metadata": {"project": "gemini"}}})
    a_id, b_id = a["conversationCreate"]["id"], b["conversationCreate"]["id"]
    one = admin.client.ok(LIST, {"m": {"key": "project", "value": "apollo"}})["conversations"]
    assert (one["totalCount"], ids(one)) == (2, {a_id, b_id})
    both = admin.client.ok(
        LIST, {"m": [{"key": "project", "value": "apollo"}, {"key": "team", "value": "red"}]}
    )["conversations"]
    assert (both["totalCount"], ids(both)) == (1, {a_id})
    none = admin.client.ok(LIST, {"m": {"key": "project", "value": "Apollo"}})["conversations"]
    assert none["totalCount"] == 0
    found = admin.client.ok(SEARCH, {"i": {"metadata": [{"key": "team", "value": "blue"}]}})["search"]
    assert found["totalCount"] == 1
    assert found["edges"][0]["node"]["conversation"]["id"] == b_id
    worded = admin.client.ok(
        SEARCH, {"i": {"query": "alpha", "metadata": [{"key": "project", "value": "apollo"}]}}
    )
    assert [e["node"]["conversation"]["id"] for e in worded["search"]["edges"]] == [a_id]
    # Another user of the tenant sees none of them: the filter never widens what is readable.
    other = make_user(admin)
    assert (
        other.client.ok(LIST, {"m": {"key": "project", "value": "apollo"}})["conversations"]["totalCount"]
        == 0
    )
    error = admin.client.error(LIST, {"m": [{"key": "k", "value": "1"}, {"key": "k", "value": "2"}]})
    assert error["extensions"]["code"] == "BAD_USER_INPUT"


def test_message_metadata_is_set_when_posted_and_by_messageMetadataSet(admin: Actor, make_user: Any) -> None:
    conversation = create_conversation(admin)
    root = admin.client.ok(START, {"c": conversation, "i": {"content": "q", "metadata": {"source": "web"}}})
    root_id = root["threadStart"]["id"]
    assert root["threadStart"]["metadata"] == {"source": "web"}
    answer = admin.client.ok(REPLY, {"p": root_id, "i": {"content": "a", "role": "ASSISTANT"}})[
        "messageReply"
    ]
    assert answer["metadata"] == {}
    updated = admin.client.ok(SET, {"id": answer["id"], "m": {"grade": "A"}})["messageMetadataSet"]
    assert updated["metadata"] == {"grade": "A"}
    assert admin.client.ok(TREE, {"r": root_id})["threadTree"]["nodes"] == [
        {"content": "q", "metadata": {"source": "web"}},
        {"content": "a", "metadata": {"grade": "A"}},
    ]
    stranger = make_user(admin)
    assert stranger.client.code(SET, {"id": answer["id"], "m": {"x": "y"}}) == "NOT_FOUND"
    assert admin.client.code(SET, {"id": answer["id"], "m": {"x": "y" * 513}}) == "BAD_USER_INPUT"
    cleared = admin.client.ok(SET, {"id": root_id, "m": {}})["messageMetadataSet"]
    assert cleared["metadata"] == {}


EXPORT = "query($id: ID!) { conversationExport(id: $id) }"
IMPORT = """mutation($i: ConversationImportInput!) { conversationImportReport(input: $i) { warnings
  conversations { id metadata threads { edges { node { root { id } } } } } } }"""


def test_metadata_round_trips_through_a_threadline_export_and_import(admin: Actor, make_tenant: Any) -> None:
    conversation = admin.client.ok(CREATE, {"i": {"title": "t", "metadata": {"project": "apollo"}}})
    conversation_id = conversation["conversationCreate"]["id"]
    root = admin.client.ok(
        START, {"c": conversation_id, "i": {"content": "q", "metadata": {"source": "web"}}}
    )
    root_id = root["threadStart"]["id"]
    admin.client.ok(REPLY, {"p": root_id, "i": {"content": "plain"}})
    admin.client.ok(REPLY, {"p": root_id, "i": {"content": "tagged", "metadata": {"lang": "en", "n": "2"}}})
    document = admin.client.ok(EXPORT, {"id": conversation_id})["conversationExport"]
    assert document["conversation"]["metadata"] == {"project": "apollo"}
    assert [m.get("metadata") for m in document["messages"]] == [
        {"source": "web"},
        None,
        {"lang": "en", "n": "2"},
    ]

    elsewhere = make_tenant()
    report = elsewhere.client.ok(IMPORT, {"i": {"format": "THREADLINE", "data": document}})[
        "conversationImportReport"
    ]
    (imported,) = report["conversations"]
    assert imported["metadata"] == {"project": "apollo"}
    new_root = imported["threads"]["edges"][0]["node"]["root"]["id"]
    assert elsewhere.client.ok(TREE, {"r": new_root})["threadTree"]["nodes"] == [
        {"content": "q", "metadata": {"source": "web"}},
        {"content": "plain", "metadata": {}},
        {"content": "tagged", "metadata": {"lang": "en", "n": "2"}},
    ]
    found = elsewhere.client.ok(LIST, {"m": {"key": "project", "value": "apollo"}})["conversations"]
    assert ids(found) == {imported["id"]}
    again = elsewhere.client.ok(EXPORT, {"id": imported["id"]})["conversationExport"]
    assert again["conversation"]["metadata"] == document["conversation"]["metadata"]
    assert [m.get("metadata") for m in again["messages"]] == [m.get("metadata") for m in document["messages"]]

    # Entries out of bounds in a file are dropped with a warning; the rest is kept.
    document["conversation_id"] = "cnv_other"
    document["conversation"]["metadata"] = {"ok": "yes", "long": "x" * 513}
    report = elsewhere.client.ok(IMPORT, {"i": {"format": "THREADLINE", "data": document}})[
        "conversationImportReport"
    ]
    assert report["conversations"][0]["metadata"] == {"ok": "yes"}
    assert any("metadata key 'long' was dropped" in w for w in report["warnings"])


def test_deleting_a_message_removes_its_metadata_with_its_content(admin: Actor) -> None:
    conversation = create_conversation(admin)
    root = admin.client.ok(START, {"c": conversation, "i": {"content": "q", "metadata": {"secret": "s3"}}})
    root_id = root["threadStart"]["id"]
    admin.client.ok("mutation($m: ID!) { messageDelete(id: $m) { id } }", {"m": root_id})
    assert admin.client.ok(TREE, {"r": root_id})["threadTree"]["nodes"] == [{"content": "", "metadata": {}}]
    document = admin.client.ok(EXPORT, {"id": conversation})["conversationExport"]
    assert "metadata" not in document["messages"][0]


def test_a_value_many_conversations_hold_filters_the_same_way(admin: Actor, loop: Loop, dsn: str) -> None:
    """Past FEW_HOLDERS holders the filter walks the listing's order instead of reading ids from the index
    first: the same answers either way."""
    tenant, user = decode_id(admin.tenant_id, Kind.TENANT), decode_id(admin.user_id, Kind.USER)
    many = FEW_HOLDERS + 5

    async def seed() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(
                """WITH made AS (
                       INSERT INTO conversation (id, tenant_id, owner_id, title, metadata, last_activity_at)
                       SELECT gen_random_uuid(), $1::uuid, $2::uuid, 'seeded ' || n,
                              jsonb_build_object('batch', 'big', 'n', n::text), now() - n * interval '1 minute'
                       FROM generate_series(1, $3::int) AS n RETURNING id)
                   INSERT INTO participant (id, tenant_id, conversation_id, user_id, role)
                   SELECT gen_random_uuid(), $1, id, $2, 'OWNER' FROM made""",
                tenant,
                user,
                many,
            )
        finally:
            await conn.close()

    loop.run(seed())
    query = """query($m: [MetadataFilterInput!]) { conversations(first: 3, metadata: $m) {
      totalCount edges { node { title } } } }"""
    common = admin.client.ok(query, {"m": {"key": "batch", "value": "big"}})["conversations"]
    assert common == {
        "totalCount": many,
        "edges": [{"node": {"title": f"seeded {n}"}} for n in (1, 2, 3)],
    }
    rare = admin.client.ok(query, {"m": [{"key": "batch", "value": "big"}, {"key": "n", "value": "7"}]})
    assert rare["conversations"] == {"totalCount": 1, "edges": [{"node": {"title": "seeded 7"}}]}
    searched = admin.client.ok(
        "query($i: ConversationSearchInput!) { search(input: $i, first: 2) { totalCount edges { node { "
        "conversation { title } } } } }",
        {"i": {"metadata": [{"key": "batch", "value": "big"}]}},
    )["search"]
    assert searched == {
        "totalCount": many,
        "edges": [{"node": {"conversation": {"title": f"seeded {n}"}}} for n in (1, 2)],
    }
