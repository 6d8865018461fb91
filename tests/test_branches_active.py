"""Siblings and the branch a user is on (issue 16 items 1 and 6): `Message.siblings`/`siblingIndex`/
`siblingCount`, `threadSetCurrent`, `Thread.currentLeaf`/`currentPath` after replies, deletes and imports,
and the `branch.sibling` / `branch.current` events. Through the API, with exact expected trees."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests import harness
from tests.api import create_conversation, join, reply, start_thread, stream_cursor
from tests.harness import Actor, Client, ServerThread
from tests.ws import WsClient

SIBLINGS = """query($m: ID!, $f: Int, $a: String) { message(id: $m) { siblingIndex siblingCount
  siblings(first: $f, after: $a) { totalCount edges { cursor node { id content siblingIndex parentId path } }
    pageInfo { hasNextPage hasPreviousPage endCursor } } } }"""
CURRENT = """query($r: ID!) { thread(rootId: $r) { currentLeaf { id } currentPath { id content path isDeleted } } }"""
SET_CURRENT = """mutation($r: ID!, $m: ID!) { threadSetCurrent(rootId: $r, messageId: $m) {
  currentLeaf { id } currentPath { id } } }"""
DELETE = "mutation($m: ID!) { messageDelete(id: $m) { id } }"
IMPORT = """mutation($i: ConversationImportInput!) { conversationImportReport(input: $i) {
  conversations { id } warnings } }"""
THREADS = """query($c: ID!) { conversation(id: $c) { threads(first: 10) { edges { node { root { id }
  currentLeaf { id } } } } } }"""
EVENTS = """subscription($c: ID!, $s: String) { conversationEvents(conversationId: $c, since: $s) { type rootId
  ... on ThreadActivityEvent { action changedMessage { id } }
  ... on BranchSiblingEvent { parentId messageId siblingIndex siblingCount }
  ... on BranchCurrentEvent { leafId reason } } }"""


def _leaf(actor: Actor, root: str) -> str:
    return str(actor.client.ok(CURRENT, {"r": root})["thread"]["currentLeaf"]["id"])


def _path(actor: Actor, root: str) -> list[str]:
    return [m["id"] for m in actor.client.ok(CURRENT, {"r": root})["thread"]["currentPath"]]


# --- siblings ------------------------------------------------------------------------------------------


def test_siblings_are_the_other_replies_oldest_first_in_pages_with_index_and_count(admin: Actor) -> None:
    cid = create_conversation(admin)
    root = start_thread(admin, cid, "question")
    answers = [reply(admin, root, f"answer {i}", role="ASSISTANT") for i in range(5)]
    reply(admin, answers[2], "a reply under answer 2")  # not a sibling of anything asked below

    first = admin.client.ok(SIBLINGS, {"m": answers[2], "f": 2})["message"]
    assert (first["siblingIndex"], first["siblingCount"]) == (2, 5)
    page = first["siblings"]
    assert [e["node"]["id"] for e in page["edges"]] == [answers[0], answers[1]]
    assert [e["node"]["siblingIndex"] for e in page["edges"]] == [0, 1]
    assert [e["node"]["content"] for e in page["edges"]] == ["answer 0", "answer 1"]
    assert {e["node"]["parentId"] for e in page["edges"]} == {root}
    assert page["edges"][1]["node"]["path"] == [root, answers[1]]
    assert page["pageInfo"]["hasNextPage"] is True and page["pageInfo"]["hasPreviousPage"] is False
    assert page["totalCount"] == 4

    rest = admin.client.ok(SIBLINGS, {"m": answers[2], "f": 2, "a": page["pageInfo"]["endCursor"]})
    rest_page = rest["message"]["siblings"]
    assert [e["node"]["id"] for e in rest_page["edges"]] == [answers[3], answers[4]]
    assert rest_page["pageInfo"]["hasNextPage"] is False and rest_page["pageInfo"]["hasPreviousPage"] is True

    whole = admin.client.ok(SIBLINGS, {"m": answers[0]})["message"]
    assert [e["node"]["id"] for e in whole["siblings"]["edges"]] == answers[1:]
    assert (whole["siblingIndex"], whole["siblingCount"]) == (0, 5)

    at_root = admin.client.ok(SIBLINGS, {"m": root})["message"]
    assert (at_root["siblingIndex"], at_root["siblingCount"]) == (0, 1)
    assert at_root["siblings"]["edges"] == [] and at_root["siblings"]["totalCount"] == 0


def test_siblings_page_size_is_capped_and_a_bad_cursor_is_refused(admin: Actor) -> None:
    cid = create_conversation(admin)
    root = start_thread(admin, cid, "question")
    answer = reply(admin, root, "answer")
    error = admin.client.error(SIBLINGS, {"m": answer, "f": 101})
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert "limited to 100" in error["message"]
    assert admin.client.code(SIBLINGS, {"m": answer, "a": "not-a-cursor"}) == "BAD_USER_INPUT"


def test_siblings_of_a_whole_tree_cost_the_same_statements_whatever_its_size(admin: Actor) -> None:
    query = """query($r: ID!) { threadTree(rootId: $r) { nodes { id siblingIndex siblingCount
      siblings(first: 3) { nodes { id } } } } }"""

    def tree(width: int) -> str:
        cid = create_conversation(admin)
        root = start_thread(admin, cid, "q")
        for i in range(width):
            answer = reply(admin, root, f"a{i}")
            reply(admin, answer, f"b{i}")
        return root

    small, large = tree(2), tree(12)
    assert admin.client.statements(query, {"r": small}) == admin.client.statements(query, {"r": large})


# --- the current leaf -------------------------------------------------------------------------------------


def test_current_paths_of_many_threads_cost_the_same_statements_as_of_few(admin: Actor) -> None:
    query = """query($c: ID!) { conversation(id: $c) { threads(first: 50) { nodes { currentLeaf { id }
      currentPath { id content } } } } }"""

    def conversation(threads: int) -> str:
        cid = create_conversation(admin)
        for t in range(threads):
            parent = start_thread(admin, cid, f"thread {t}")
            for i in range(3):
                parent = reply(admin, parent, f"reply {i}")
        return cid

    few, many = conversation(2), conversation(12)
    assert admin.client.statements(query, {"c": few}) == admin.client.statements(query, {"c": many})
    paths = admin.client.ok(query, {"c": many})["conversation"]["threads"]["nodes"]
    assert len(paths) == 12 and {len(t["currentPath"]) for t in paths} == {4}
    assert all(t["currentPath"][-1]["id"] == t["currentLeaf"]["id"] for t in paths)


def test_a_new_reply_moves_its_author_and_others_see_the_newest_branch(
    admin: Actor, make_user: Callable[..., Actor]
) -> None:
    member = make_user(admin)
    cid = create_conversation(admin)
    join(admin, member, cid)
    root = start_thread(admin, cid, "root")
    assert _leaf(admin, root) == root and _path(admin, root) == [root]
    a = reply(admin, root, "a")
    b = reply(admin, root, "b")
    a1 = reply(admin, a, "a1")
    # The author is on what they wrote last; the member, who chose nothing, on the newest branch: the newest
    # reply at every level (b is newer than a, though a1 came after b).
    assert _path(admin, root) == [root, a, a1]
    assert _path(member, root) == [root, b]
    b1 = reply(member, b, "b1")
    assert _path(member, root) == [root, b, b1]
    assert _path(admin, root) == [root, a, a1]  # one user's reply does not move another


def test_thread_set_current_chooses_the_branch_for_the_caller_only(
    admin: Actor, make_user: Callable[..., Actor]
) -> None:
    viewer = make_user(admin)
    cid = create_conversation(admin)
    join(admin, viewer, cid, role="VIEWER")
    root = start_thread(admin, cid, "root")
    a = reply(admin, root, "a")
    a1 = reply(admin, a, "a1")
    b = reply(admin, root, "b")
    chosen = admin.client.ok(SET_CURRENT, {"r": root, "m": a})["threadSetCurrent"]
    assert chosen == {"currentLeaf": {"id": a}, "currentPath": [{"id": root}, {"id": a}]}
    assert _path(viewer, root) == [root, b]
    # A viewer may choose their own branch (reading is enough).
    viewer.client.ok(SET_CURRENT, {"r": root, "m": a1})
    assert _path(viewer, root) == [root, a, a1]
    assert _path(admin, root) == [root, a]
    listed = admin.client.ok(THREADS, {"c": cid})["conversation"]["threads"]["edges"]
    assert [(e["node"]["root"]["id"], e["node"]["currentLeaf"]["id"]) for e in listed] == [(root, a)]


def test_a_current_leaf_outside_the_thread_is_bad_input_and_an_unreadable_thread_not_found(
    admin: Actor, make_user: Callable[..., Actor]
) -> None:
    stranger = make_user(admin)
    cid = create_conversation(admin)
    root = start_thread(admin, cid, "root")
    a = reply(admin, root, "a")
    other_root = start_thread(admin, cid, "another thread")
    other = reply(admin, other_root, "elsewhere")
    for message in (other, other_root, f"msg_{'0' * 32}"):
        error = admin.client.error(SET_CURRENT, {"r": root, "m": message})
        assert error["extensions"]["code"] == "BAD_USER_INPUT", error
        assert error["extensions"]["argument"] == "messageId"
    assert admin.client.code(SET_CURRENT, {"r": a, "m": a}) == "BAD_USER_INPUT"  # not a root
    assert stranger.client.code(SET_CURRENT, {"r": root, "m": a}) == "NOT_FOUND"
    assert _path(admin, root) == [root, a]


def test_deleting_the_leaf_someone_is_on_moves_them_to_its_parent(
    admin: Actor, make_user: Callable[..., Actor]
) -> None:
    member = make_user(admin)
    cid = create_conversation(admin)
    join(admin, member, cid)
    root = start_thread(admin, cid, "root")
    a = reply(admin, root, "a")
    a1 = reply(member, a, "a1")
    b = reply(admin, root, "b")
    admin.client.ok(SET_CURRENT, {"r": root, "m": a1})
    assert _path(member, root) == [root, a, a1]
    member.client.ok(DELETE, {"m": a1})
    assert _path(admin, root) == [root, a]
    assert _path(member, root) == [root, a]
    # Deleting a message one is not on moves no one.
    admin.client.ok(DELETE, {"m": b})
    assert _path(admin, root) == [root, a]
    # The root deleted under someone on it: back to the default, the newest branch not deleted (a).
    admin.client.ok(SET_CURRENT, {"r": root, "m": root})
    admin.client.ok(DELETE, {"m": root})
    current = admin.client.ok(CURRENT, {"r": root})["thread"]
    assert [(m["id"], m["isDeleted"]) for m in current["currentPath"]] == [(root, True), (a, False)]


def _node(key: str, parent: str | None, role: str | None, text: str, children: list[str]) -> dict[str, Any]:
    message = (
        None
        if role is None
        else {"id": key, "author": {"role": role}, "create_time": 1_700_000_000 + len(key),
              "content": {"content_type": "text", "parts": [text]}}
    )  # fmt: skip
    return {"id": key, "message": message, "parent": parent, "children": children}


def _chatgpt(external: str, current: str, *, grown: bool = False) -> dict[str, Any]:
    """question -> (first answer -> follow-up | second answer -> (hidden | later, when `grown`))."""
    mapping = {
        "sys": _node("sys", None, None, "", ["q"]),
        "q": _node("q", "sys", "user", "question", ["a1", "a2"]),
        "a1": _node("a1", "q", "assistant", "first answer", ["q2"]),
        "q2": _node("q2", "a1", "user", "follow-up", []),
        "a2": _node("a2", "q", "assistant", "second answer", ["hidden", "later"] if grown else ["hidden"]),
        "hidden": _node("hidden", "a2", "assistant", "", []),  # empty: skipped on import
    }
    if grown:
        mapping["later"] = _node("later", "a2", "user", "a later question", [])
    return {"id": external, "title": external, "mapping": mapping, "current_node": current}


def _imported_path(actor: Actor, conversation: str) -> list[str]:
    [edge] = actor.client.ok(THREADS, {"c": conversation})["conversation"]["threads"]["edges"]
    current = actor.client.ok(CURRENT, {"r": edge["node"]["root"]["id"]})["thread"]["currentPath"]
    return [m["content"] for m in current]


def test_an_imported_chatgpt_conversation_keeps_current_node_as_the_owners_leaf(admin: Actor) -> None:
    data = [_chatgpt("on-first", "q2"), _chatgpt("on-hidden", "hidden"), _chatgpt("unset", "gone")]
    report = admin.client.ok(IMPORT, {"i": {"format": "CHATGPT", "data": data}})["conversationImportReport"]
    assert [_imported_path(admin, c["id"]) for c in report["conversations"]] == [
        ["question", "first answer", "follow-up"],
        ["question", "second answer"],  # a skipped node stands for its nearest kept ancestor
        ["question", "second answer"],  # unknown current_node: the newest branch
    ]


def test_a_merge_re_import_moves_the_owner_to_the_newer_exports_current_node(
    admin: Actor, make_user: Callable[..., Actor]
) -> None:
    member = make_user(admin)
    first = admin.client.ok(IMPORT, {"i": {"format": "CHATGPT", "data": [_chatgpt("merged", "q2")]}})
    [conversation] = first["conversationImportReport"]["conversations"]
    join(admin, member, conversation["id"])
    assert _imported_path(admin, conversation["id"]) == ["question", "first answer", "follow-up"]
    grown = [_chatgpt("merged", "later", grown=True)]
    admin.client.ok(IMPORT, {"i": {"format": "CHATGPT", "data": grown}})
    assert _imported_path(admin, conversation["id"]) == ["question", "second answer", "a later question"]
    # Only the importing owner moves; the member sees the newest branch.
    assert _imported_path(member, conversation["id"]) == ["question", "second answer", "a later question"]


# --- events ----------------------------------------------------------------------------------------------


def test_new_siblings_reach_everyone_and_current_leaf_changes_only_their_user(
    admin: Actor, make_user: Callable[..., Actor], server: ServerThread
) -> None:
    member = make_user(admin)
    cid = create_conversation(admin)
    join(admin, member, cid)
    root = start_thread(admin, cid, "root")
    first = reply(admin, root, "first")
    mine = WsClient(server.ws_url, admin.api_key)
    theirs = WsClient(server.ws_url, member.api_key)
    try:
        since = stream_cursor(admin)
        for client in (mine, theirs):
            client.subscribe(EVENTS, {"c": cid, "s": since})
        second = reply(admin, root, "second")
        admin.client.ok(SET_CURRENT, {"r": root, "m": first})
        admin.client.ok(DELETE, {"m": first})
        ignore = ("presence.update", "unread.update")
        assert mine.events(6, ignore=ignore) == [
            {"type": "thread.activity", "rootId": root, "action": "REPLY", "changedMessage": {"id": second}},
            {"type": "branch.sibling", "rootId": root, "parentId": root, "messageId": second,
             "siblingIndex": 1, "siblingCount": 2},
            {"type": "branch.current", "rootId": root, "leafId": second, "reason": "REPLY"},
            {"type": "branch.current", "rootId": root, "leafId": first, "reason": "SET"},
            {"type": "thread.activity", "rootId": root, "action": "DELETE", "changedMessage": {"id": first}},
            {"type": "branch.current", "rootId": root, "leafId": root, "reason": "DELETE"},
        ]  # fmt: skip
        assert theirs.events(3, ignore=ignore) == [
            {"type": "thread.activity", "rootId": root, "action": "REPLY", "changedMessage": {"id": second}},
            {"type": "branch.sibling", "rootId": root, "parentId": root, "messageId": second,
             "siblingIndex": 1, "siblingCount": 2},
            {"type": "thread.activity", "rootId": root, "action": "DELETE", "changedMessage": {"id": first}},
        ]  # fmt: skip
        theirs.expect_quiet(0.5, ignore=ignore)
    finally:
        mine.close()
        theirs.close()


def test_branch_events_go_only_to_subscriptions_that_select_them(admin: Actor, server: ServerThread) -> None:
    cid = create_conversation(admin)
    root = start_thread(admin, cid, "root")
    first = reply(admin, root, "first")
    plain = WsClient(server.ws_url, admin.api_key)  # a client written before branch events
    spread = WsClient(server.ws_url, admin.api_key)  # selects one of them through a named fragment
    try:
        since = stream_cursor(admin)
        plain.subscribe(
            """subscription($c: ID!, $s: String) { conversationEvents(conversationId: $c, since: $s) {
              type ... on ThreadActivityEvent { changedMessage { id } } } }""",
            {"c": cid, "s": since},
        )
        spread.subscribe(
            """subscription($c: ID!, $s: String) { conversationEvents(conversationId: $c, since: $s) { type ...F } }
            fragment F on BranchCurrentEvent { leafId }""",
            {"c": cid, "s": since},
        )
        second = reply(admin, root, "second")
        ignore = ("presence.update", "unread.update")
        assert plain.events(1, ignore=ignore) == [
            {"type": "thread.activity", "changedMessage": {"id": second}}
        ]
        plain.expect_quiet(0.5, ignore=ignore)
        assert spread.events(2, ignore=ignore) == [
            {"type": "thread.activity"},
            {"type": "branch.current", "leafId": second},
        ]
        spread.expect_quiet(0.5, ignore=ignore)
        assert first != second
    finally:
        plain.close()
        spread.close()


def test_siblings_past_rank_240_where_paths_grow_a_wider_segment(admin: Actor) -> None:
    cid = create_conversation(admin)
    root = start_thread(admin, cid, "question")
    answers = [reply(admin, root, f"answer {i}", role="ASSISTANT") for i in range(245)]
    asked = admin.client.ok(SIBLINGS, {"m": answers[240], "f": 3})["message"]
    assert (asked["siblingIndex"], asked["siblingCount"]) == (240, 245)
    # After answer 238: 239, then (240 is the one asking) 241 and 242, across the 1-to-3-byte segment boundary.
    page = admin.client.ok(SIBLINGS, {"m": answers[240], "f": 3, "a": _cursor_of(admin, answers[240], 238)})
    assert [e["node"]["id"] for e in page["message"]["siblings"]["edges"]] == [
        answers[239],
        answers[241],
        answers[242],
    ]
    assert [e["node"]["siblingIndex"] for e in page["message"]["siblings"]["edges"]] == [239, 241, 242]
    last = admin.client.ok(SIBLINGS, {"m": answers[244], "f": 100, "a": _cursor_of(admin, answers[244], 242)})
    assert [e["node"]["id"] for e in last["message"]["siblings"]["edges"]] == [answers[243]]
    assert last["message"]["siblings"]["pageInfo"]["hasNextPage"] is False


def _cursor_of(actor: Actor, message: str, index: int) -> str:
    """The cursor of the sibling at `index`, as a page of `message`'s siblings hands it out."""
    after: str | None = None
    while True:
        page = actor.client.ok(SIBLINGS, {"m": message, "f": 100, "a": after})["message"]["siblings"]
        for edge in page["edges"]:
            if edge["node"]["siblingIndex"] == index:
                return str(edge["cursor"])
        assert page["pageInfo"]["hasNextPage"], index
        after = page["pageInfo"]["endCursor"]


# --- bounded cost ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def budgeted(dsn: str) -> Iterator[ServerThread]:
    server = ServerThread(harness.test_settings(dsn, migrate_on_start=False, query_max_messages=50))
    server.start()
    yield server
    server.stop()


def test_siblings_and_current_paths_count_in_the_operations_message_budget(
    admin: Actor, budgeted: ServerThread
) -> None:
    client = Client(budgeted.url, admin.api_key)
    try:
        cid = create_conversation(admin)
        root = start_thread(admin, cid, "question")
        answers = [reply(admin, root, f"answer {i}") for i in range(10)]
        query = """query($r: ID!) { threadTree(rootId: $r) { nodes { id siblings(first: 20) { nodes { id } } } } }"""
        # 11 nodes, each of the 10 answers with its 9 siblings: 101 messages, over the 50 allowed.
        error = client.error(query, {"r": root})
        assert (error["extensions"]["code"], error["extensions"]["limitName"]) == (
            "BAD_USER_INPUT",
            "messages",
        )
        one = client.ok(SIBLINGS, {"m": answers[0], "f": 20})["message"]["siblings"]
        assert len(one["edges"]) == 9
        parent = root
        for i in range(60):
            parent = reply(admin, parent, f"link {i}")
        error = client.error(CURRENT, {"r": root})
        assert (error["extensions"]["code"], error["extensions"]["limitName"]) == (
            "BAD_USER_INPUT",
            "messages",
        )
    finally:
        client.close()
