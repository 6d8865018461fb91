"""Conversations end to end: create, update, lifecycle, listing, pagination, node(id)."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

from tests.api import CONVERSATION, create_conversation, reply, start_thread
from tests.harness import Actor
from threadline.ids import Kind, encode_id

FULL = """id title description tags status aiProvider model sessionId maxHistoryMessages messageCount
  tokenCount createdAt updatedAt lastActivityAt owner { id } participants { role user { id } }"""
CREATE_FULL = f"mutation($i: ConversationCreateInput!) {{ conversationCreate(input: $i) {{ {FULL} }} }}"
UPDATE = f"mutation($id: ID!, $i: ConversationUpdateInput!) {{ conversationUpdate(id: $id, input: $i) {{ {FULL} }} }}"
ARCHIVE = "mutation($id: ID!) { conversationArchive(id: $id) { id status } }"
RESTORE = "mutation($id: ID!) { conversationRestore(id: $id) { id status } }"
DELETE = "mutation($id: ID!) { conversationDelete(id: $id) { id status } }"
LIST = """query($first: Int, $after: String, $status: ConversationStatus, $tags: [String!]) {
  conversations(first: $first, after: $after, status: $status, tags: $tags) {
    totalCount edges { cursor node { id } } pageInfo { hasNextPage hasPreviousPage startCursor endCursor } } }"""


def listed(actor: Actor, **args: object) -> list[str]:
    data = actor.client.ok(LIST, {"first": 100, **args})["conversations"]
    return [e["node"]["id"] for e in data["edges"]]


def test_create_with_defaults_makes_the_caller_owner(admin: Actor) -> None:
    c = admin.client.ok(CREATE_FULL, {"i": {}})["conversationCreate"]
    assert c["title"] == "New conversation"
    assert c["description"] == ""
    assert c["tags"] == []
    assert c["status"] == "ACTIVE"
    assert (c["aiProvider"], c["model"], c["sessionId"]) == (None, None, None)
    assert c["maxHistoryMessages"] == 20
    assert (c["messageCount"], c["tokenCount"]) == (0, 0)
    assert c["owner"] == {"id": admin.user_id}
    assert c["participants"] == [{"role": "OWNER", "user": {"id": admin.user_id}}]
    assert c["id"].startswith("cnv_")


def test_create_stores_every_field_and_normalises_tags(admin: Actor) -> None:
    c = admin.client.ok(
        CREATE_FULL,
        {
            "i": {
                "title": "  Planning  ",
                "description": "the plan",
                "tags": [" Work", "work", "URGENT ", "", "  ", "q3"],
                "aiProvider": " echo ",
                "model": "echo-1",
                "sessionId": "sess-42",
                "maxHistoryMessages": 7,
            }
        },
    )["conversationCreate"]
    assert c["title"] == "Planning"
    assert c["description"] == "the plan"
    assert c["tags"] == ["work", "urgent", "q3"]
    assert (c["aiProvider"], c["model"], c["sessionId"], c["maxHistoryMessages"]) == (
        "echo",
        "echo-1",
        "sess-42",
        7,
    )
    again = admin.client.ok(f"query($id: ID!) {{ conversation(id: $id) {{ {FULL} }} }}", {"id": c["id"]})
    assert again["conversation"] == c


def test_update_changes_only_the_given_fields(admin: Actor) -> None:
    c = admin.client.ok(CREATE_FULL, {"i": {"title": "a", "description": "d", "tags": ["x"], "model": "m"}})[
        "conversationCreate"
    ]
    updated = admin.client.ok(UPDATE, {"id": c["id"], "i": {"title": "b", "tags": ["Y", "z"]}})[
        "conversationUpdate"
    ]
    assert updated["title"] == "b"
    assert updated["tags"] == ["y", "z"]
    assert (updated["description"], updated["model"]) == ("d", "m")
    assert updated["updatedAt"] > c["updatedAt"]
    assert updated["createdAt"] == c["createdAt"]


def test_update_with_nothing_changes_nothing(admin: Actor) -> None:
    c = admin.client.ok(CREATE_FULL, {"i": {"title": "same"}})["conversationCreate"]
    assert admin.client.ok(UPDATE, {"id": c["id"], "i": {}})["conversationUpdate"] == c


def test_archive_restore_delete_lifecycle(admin: Actor) -> None:
    cid = create_conversation(admin)
    assert admin.client.ok(ARCHIVE, {"id": cid})["conversationArchive"]["status"] == "ARCHIVED"
    assert admin.client.code(ARCHIVE, {"id": cid}) == "CONFLICT"
    assert admin.client.ok(RESTORE, {"id": cid})["conversationRestore"]["status"] == "ACTIVE"
    assert admin.client.code(RESTORE, {"id": cid}) == "CONFLICT"
    assert admin.client.ok(DELETE, {"id": cid})["conversationDelete"]["status"] == "DELETED"
    assert admin.client.code(DELETE, {"id": cid}) == "CONFLICT"
    assert admin.client.code(ARCHIVE, {"id": cid}) == "CONFLICT"
    assert admin.client.ok(RESTORE, {"id": cid})["conversationRestore"]["status"] == "ACTIVE"


def test_archived_conversation_can_be_deleted(admin: Actor) -> None:
    cid = create_conversation(admin)
    admin.client.ok(ARCHIVE, {"id": cid})
    assert admin.client.ok(DELETE, {"id": cid})["conversationDelete"]["status"] == "DELETED"


def test_soft_deleted_conversation_leaves_the_default_list_keeps_its_threads_and_comes_back(
    admin: Actor,
) -> None:
    cid = create_conversation(admin, "doomed")
    keep = create_conversation(admin, "kept")
    root = start_thread(admin, cid, "still here")
    admin.client.ok(DELETE, {"id": cid})
    assert listed(admin) == [keep]
    assert listed(admin, status="DELETED") == [cid]
    assert admin.client.ok(CONVERSATION, {"id": cid})["conversation"]["status"] == "DELETED"
    admin.client.ok(RESTORE, {"id": cid})
    assert set(listed(admin)) == {cid, keep}
    tree = admin.client.ok("query($r: ID!) { threadTree(rootId: $r) { nodes { content } } }", {"r": root})
    assert tree["threadTree"]["nodes"] == [{"content": "still here"}]


def test_writing_to_a_deleted_or_archived_conversation_is_a_conflict(admin: Actor) -> None:
    cid = create_conversation(admin)
    root = start_thread(admin, cid)
    admin.client.ok(ARCHIVE, {"id": cid})
    assert (
        admin.client.code(
            'mutation($c: ID!) { threadStart(conversationId: $c, input: {content: "x"}) { id } }', {"c": cid}
        )
        == "CONFLICT"
    )
    admin.client.ok(DELETE, {"id": cid})
    error = admin.client.error(
        'mutation($p: ID!) { messageReply(parentId: $p, input: {content: "x"}) { id } }', {"p": root}
    )
    assert error["extensions"]["code"] == "CONFLICT"
    assert "deleted" in error["message"]
    assert admin.client.ok(CONVERSATION, {"id": cid})["conversation"]["messageCount"] == 1


def test_list_orders_by_last_activity_and_filters_by_status_and_tags(admin: Actor) -> None:
    a = create_conversation(admin, "a", tags=["red", "big"])
    b = create_conversation(admin, "b", tags=["red"])
    c = create_conversation(admin, "c", tags=["Blue"])
    assert listed(admin) == [c, b, a]
    start_thread(admin, a)  # activity moves a to the top
    assert listed(admin) == [a, c, b]
    assert listed(admin, tags=["RED"]) == [a, b]
    assert listed(admin, tags=["red", "big"]) == [a]
    assert listed(admin, tags=["blue"]) == [c]
    assert listed(admin, tags=["none"]) == []
    admin.client.ok(ARCHIVE, {"id": b})
    assert listed(admin) == [a, c]
    assert listed(admin, status="ARCHIVED") == [b]
    assert listed(admin, status=None) == [a, c, b]
    assert admin.client.ok(LIST, {"status": None})["conversations"]["totalCount"] == 3


def test_message_counters_and_last_activity_follow_new_messages(admin: Actor) -> None:
    cid = create_conversation(admin)
    before = admin.client.ok(CONVERSATION, {"id": cid})["conversation"]
    root = start_thread(admin, cid)
    reply(admin, reply(admin, root))
    after = admin.client.ok(CONVERSATION, {"id": cid})["conversation"]
    assert after["messageCount"] == 3
    assert after["lastActivityAt"] > before["lastActivityAt"]


def test_token_count_adds_message_usage(admin: Actor) -> None:
    cid = create_conversation(admin)
    admin.client.ok(
        """mutation($c: ID!) { threadStart(conversationId: $c,
             input: {content: "x", role: ASSISTANT, model: "m", usage: {promptTokens: 10, completionTokens: 5}}) {
             usage { promptTokens completionTokens totalTokens } role model } }""",
        {"c": cid},
    )
    data = admin.client.ok("query($id: ID!) { conversation(id: $id) { tokenCount } }", {"id": cid})
    assert data["conversation"]["tokenCount"] == 15


def test_pages_have_no_duplicates_or_gaps_while_conversations_are_created(admin: Actor) -> None:
    existing = [create_conversation(admin, f"c{i}") for i in range(23)]
    seen: list[str] = []
    after = None
    pages = 0
    while True:
        page = admin.client.ok(LIST, {"first": 5, "after": after})["conversations"]
        seen += [e["node"]["id"] for e in page["edges"]]
        assert page["pageInfo"]["hasPreviousPage"] is (after is not None)
        pages += 1
        create_conversation(admin, f"new{pages}")  # lands before the cursor: must not shift the pages
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert seen == list(reversed(existing))
    assert pages == 5


def test_page_info_cursors_match_the_edges(admin: Actor) -> None:
    ids = [create_conversation(admin, str(i)) for i in range(3)]
    page = admin.client.ok(LIST, {"first": 2})["conversations"]
    assert [e["node"]["id"] for e in page["edges"]] == [ids[2], ids[1]]
    assert page["pageInfo"] == {
        "hasNextPage": True,
        "hasPreviousPage": False,
        "startCursor": page["edges"][0]["cursor"],
        "endCursor": page["edges"][1]["cursor"],
    }
    rest = admin.client.ok(LIST, {"first": 2, "after": page["pageInfo"]["endCursor"]})["conversations"]
    assert [e["node"]["id"] for e in rest["edges"]] == [ids[0]]
    assert rest["pageInfo"]["hasNextPage"] is False


def test_empty_list_has_null_cursors(admin: Actor) -> None:
    page = admin.client.ok(LIST, {"first": 5})["conversations"]
    assert page == {
        "totalCount": 0,
        "edges": [],
        "pageInfo": {"hasNextPage": False, "hasPreviousPage": False, "startCursor": None, "endCursor": None},
    }


def test_first_defaults_to_twenty(admin: Actor) -> None:
    for i in range(21):
        create_conversation(admin, str(i))
    page = admin.client.ok("{ conversations { nodes { id } pageInfo { hasNextPage } } }")["conversations"]
    assert len(page["nodes"]) == 20
    assert page["pageInfo"]["hasNextPage"] is True


def test_recent_conversations_are_active_most_recent_first(admin: Actor) -> None:
    ids = [create_conversation(admin, str(i)) for i in range(4)]
    admin.client.ok(ARCHIVE, {"id": ids[3]})
    start_thread(admin, ids[0])
    data = admin.client.ok("{ recentConversations(first: 2) { id } }")["recentConversations"]
    assert [c["id"] for c in data] == [ids[0], ids[2]]


def test_node_resolves_every_kind_of_id(admin: Actor) -> None:
    cid = create_conversation(admin, "noded")
    root = start_thread(admin, cid, "r")
    child = reply(admin, root, "c")
    query = """query($id: ID!) { node(id: $id) { __typename id
      ... on Conversation { title } ... on Message { content path } ... on Thread { replyCount root { id } }
      ... on User { role } } }"""
    assert admin.client.ok(query, {"id": cid})["node"] == {
        "__typename": "Conversation",
        "id": cid,
        "title": "noded",
    }
    assert admin.client.ok(query, {"id": child})["node"] == {
        "__typename": "Message",
        "id": child,
        "content": "c",
        "path": [root, child],
    }
    thread_id = "thr_" + root[4:]
    assert admin.client.ok(query, {"id": thread_id})["node"] == {
        "__typename": "Thread",
        "id": thread_id,
        "replyCount": 1,
        "root": {"id": root},
    }
    assert admin.client.ok(query, {"id": admin.user_id})["node"] == {
        "__typename": "User",
        "id": admin.user_id,
        "role": "ADMIN",
    }


@pytest.mark.parametrize(
    "node_id",
    [
        encode_id(Kind.CONVERSATION, uuid.uuid4()),
        encode_id(Kind.MESSAGE, uuid.uuid4()),
        encode_id(Kind.THREAD, uuid.uuid4()),
        encode_id(Kind.USER, uuid.uuid4()),
        "garbage",
        "",
    ],
)
def test_node_of_an_unknown_id_is_null(admin: Actor, node_id: str) -> None:
    assert admin.client.ok("query($id: ID!) { node(id: $id) { id } }", {"id": node_id}) == {"node": None}


def test_conversation_with_participants_and_owner_of_many(
    admin: Actor, make_user: Callable[..., Actor]
) -> None:
    from tests.api import join

    cid = create_conversation(admin)
    members = [make_user(admin) for _ in range(3)]
    for m, role in zip(members, ["MEMBER", "VIEWER", "MEMBER"], strict=True):
        join(admin, m, cid, role)
    data = admin.client.ok(
        "query($id: ID!) { conversation(id: $id) { participants { role user { id } } } }", {"id": cid}
    )["conversation"]["participants"]
    assert data == [
        {"role": "OWNER", "user": {"id": admin.user_id}},
        {"role": "MEMBER", "user": {"id": members[0].user_id}},
        {"role": "VIEWER", "user": {"id": members[1].user_id}},
        {"role": "MEMBER", "user": {"id": members[2].user_id}},
    ]
