"""Folders: per user, nestable with a bounded depth, ordered, one folder per conversation and user; move,
rename, delete (conversations back at the root); the tree in one statement; consistent under concurrency."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tests import harness
from tests.api import create_conversation, join
from tests.harness import Actor, Client, Loop, ServerThread

CREATE = """mutation($n: String!, $p: ID, $pos: Int) {
  folderCreate(name: $n, parentId: $p, position: $pos) { id name position depth parentId } }"""
MOVE = """mutation($id: ID!, $p: ID, $pos: Int) {
  folderMove(id: $id, parentId: $p, position: $pos) { id position depth parentId } }"""
RENAME = "mutation($id: ID!, $n: String!) { folderRename(id: $id, name: $n) { id name } }"
DELETE = "mutation($id: ID!) { folderDelete(id: $id) { foldersDeleted conversationsUnfiled } }"
FILE = "mutation($c: ID!, $f: ID) { conversationFile(conversationId: $c, folderId: $f) { id } }"
TREE = """{ folders { id name position depth conversationCount
  children { id name position depth conversationCount children { id name position children { id } } } } }"""
IN_FOLDER = """query($f: ID, $first: Int, $after: String) {
  conversations(folderId: $f, first: $first, after: $after) {
    totalCount edges { node { id title } } pageInfo { hasNextPage endCursor } } }"""


def folder(actor: Actor, name: str, parent: str | None = None, position: int | None = None) -> str:
    data = actor.client.ok(CREATE, {"n": name, "p": parent, "pos": position})["folderCreate"]
    return str(data["id"])


def names(nodes: list[dict[str, Any]]) -> list[str]:
    return [n["name"] for n in nodes]


def in_folder(actor: Actor, folder_id: str) -> list[str]:
    data = actor.client.ok(IN_FOLDER, {"f": folder_id})["conversations"]
    return [e["node"]["title"] for e in data["edges"]]


def test_folders_nest_in_order_and_the_whole_tree_is_one_statement(admin: Actor) -> None:
    work = folder(admin, "Work")
    home = folder(admin, "Home")
    first = folder(admin, "First", position=0)
    folder(admin, "Alpha", parent=work)
    beta = folder(admin, "Beta", parent=work)
    folder(admin, "Deep", parent=beta)
    tree = admin.client.ok(TREE)["folders"]
    assert names(tree) == ["First", "Work", "Home"]
    assert [f["position"] for f in tree] == [0, 1, 2]
    assert [f["id"] for f in tree] == [first, work, home]
    assert names(tree[1]["children"]) == ["Alpha", "Beta"]
    assert [c["depth"] for c in tree[1]["children"]] == [2, 2]
    assert names(tree[1]["children"][1]["children"]) == ["Deep"]
    # However many folders and levels: the tree read, the conversation counts, and the credentials.
    few = admin.client.statements(TREE)
    for n in range(5):
        folder(admin, f"more {n}", parent=beta)
    assert admin.client.statements(TREE) == few
    # The tree is read once: three levels of `children` cost no statement more than the root folders.
    deep = "{ folders { id children { id children { id children { id } } } } }"
    assert admin.client.statements(deep) == admin.client.statements("{ folders { id } }")


def test_folders_are_per_user_and_another_users_folder_is_not_found(
    admin: Actor, make_user: Callable[..., Actor]
) -> None:
    other = make_user(admin)
    mine = folder(admin, "Mine")
    cid = create_conversation(admin, "shared")
    join(admin, other, cid)
    admin.client.ok(FILE, {"c": cid, "f": mine})
    assert other.client.ok(TREE)["folders"] == []
    assert other.client.code(RENAME, {"id": mine, "n": "x"}) == "NOT_FOUND"
    assert other.client.code(FILE, {"c": cid, "f": mine}) == "NOT_FOUND"
    assert other.client.code(IN_FOLDER, {"f": mine}) == "NOT_FOUND"
    assert other.client.code(CREATE, {"n": "child", "p": mine}) == "NOT_FOUND"
    # Each participant files the same conversation in a folder of their own.
    theirs = folder(other, "Theirs")
    other.client.ok(FILE, {"c": cid, "f": theirs})
    assert in_folder(admin, mine) == ["shared"]
    assert in_folder(other, theirs) == ["shared"]


def test_a_conversation_sits_in_at_most_one_folder_per_user(admin: Actor) -> None:
    a, b = folder(admin, "A"), folder(admin, "B")
    cid = create_conversation(admin, "talk")
    create_conversation(admin, "elsewhere")
    admin.client.ok(FILE, {"c": cid, "f": a})
    admin.client.ok(FILE, {"c": cid, "f": b})
    assert in_folder(admin, a) == []
    assert in_folder(admin, b) == ["talk"]
    tree = admin.client.ok(TREE)["folders"]
    assert [f["conversationCount"] for f in tree] == [0, 1]
    admin.client.ok(FILE, {"c": cid, "f": None})
    assert in_folder(admin, b) == []


def test_filing_a_conversation_the_caller_cannot_read_is_not_found(
    admin: Actor, make_user: Callable[..., Actor]
) -> None:
    stranger = make_user(admin)
    theirs = folder(stranger, "Theirs")
    cid = create_conversation(admin, "private")
    assert stranger.client.code(FILE, {"c": cid, "f": theirs}) == "NOT_FOUND"


def test_folder_conversations_page_with_cursors(admin: Actor) -> None:
    f = folder(admin, "Many")
    for n in range(5):
        admin.client.ok(FILE, {"c": create_conversation(admin, f"c{n}"), "f": f})
    create_conversation(admin, "outside")
    first = admin.client.ok(IN_FOLDER, {"f": f, "first": 3})["conversations"]
    assert first["totalCount"] == 5
    assert first["pageInfo"]["hasNextPage"] is True
    rest = admin.client.ok(IN_FOLDER, {"f": f, "first": 3, "after": first["pageInfo"]["endCursor"]})
    titles = [e["node"]["title"] for e in first["edges"] + rest["conversations"]["edges"]]
    assert sorted(titles) == ["c0", "c1", "c2", "c3", "c4"]


def test_move_rename_and_delete_returns_conversations_to_the_root(admin: Actor) -> None:
    a, b = folder(admin, "A"), folder(admin, "B")
    sub = folder(admin, "Sub", parent=a)
    inner = folder(admin, "Inner", parent=sub)
    moved = admin.client.ok(MOVE, {"id": sub, "p": b, "pos": 0})["folderMove"]
    assert moved == {"id": sub, "position": 0, "depth": 2, "parentId": b}
    tree = admin.client.ok(TREE)["folders"]
    assert [names(f["children"]) for f in tree] == [[], ["Sub"]]
    assert tree[1]["children"][0]["children"][0]["id"] == inner
    assert admin.client.ok(RENAME, {"id": b, "n": "  Bee  "})["folderRename"] == {"id": b, "name": "Bee"}
    cid = create_conversation(admin, "kept")
    admin.client.ok(FILE, {"c": cid, "f": inner})
    # Deleting B deletes Sub and Inner too; the conversation stays, at the root.
    assert admin.client.ok(DELETE, {"id": b})["folderDelete"] == {
        "foldersDeleted": 3,
        "conversationsUnfiled": 1,
    }
    assert names(admin.client.ok(TREE)["folders"]) == ["A"]
    assert admin.client.ok("query($id: ID!) { conversation(id: $id) { title } }", {"id": cid}) == {
        "conversation": {"title": "kept"}
    }
    assert admin.client.code(IN_FOLDER, {"f": inner}) == "NOT_FOUND"


def test_moving_a_folder_into_itself_or_its_subtree_is_bad_input(admin: Actor) -> None:
    top = folder(admin, "Top")
    mid = folder(admin, "Mid", parent=top)
    low = folder(admin, "Low", parent=mid)
    for target in (top, mid, low):
        error = admin.client.error(MOVE, {"id": top, "p": target})
        assert error["extensions"]["code"] == "BAD_USER_INPUT"
        assert "subfolders" in error["message"]
    # Nothing moved.
    tree = admin.client.ok(TREE)["folders"]
    assert names(tree) == ["Top"] and names(tree[0]["children"]) == ["Mid"]


def test_depth_and_count_are_bounded(dsn: str, loop: Loop) -> None:
    srv = ServerThread(harness.test_settings(dsn, migrate_on_start=False, folders_max=4, folder_depth_max=3))
    srv.start()
    try:
        actor = harness.create_admin(loop, dsn, srv.url)
        try:
            one = folder(actor, "1")
            two = folder(actor, "2", parent=one)
            three = folder(actor, "3", parent=two)
            error = actor.client.error(CREATE, {"n": "4", "p": three})
            assert error["extensions"] == {"code": "BAD_USER_INPUT", "argument": "parentId", "limit": 3}
            other = folder(actor, "other")
            # Moving `two` (two levels) under `other` (depth 1) fits; under `three`'s sibling chain it would not.
            actor.client.ok(MOVE, {"id": two, "p": other})
            assert actor.client.code(MOVE, {"id": other, "p": one}) == "BAD_USER_INPUT"
            error = actor.client.error(CREATE, {"n": "fifth"})
            assert error["extensions"]["limit"] == 4
            assert "at most 4 folders" in error["message"]
            assert actor.client.code(CREATE, {"n": "   "}) == "BAD_USER_INPUT"
            assert actor.client.code(CREATE, {"n": "x" * 201}) == "BAD_USER_INPUT"
        finally:
            actor.client.close()
    finally:
        srv.stop()


def test_concurrent_moves_keep_every_sibling_list_numbered_densely(
    admin: Actor, server: ServerThread
) -> None:
    roots = [folder(admin, f"r{n}") for n in range(4)]
    kids = [folder(admin, f"k{n}", parent=roots[n % 2]) for n in range(12)]
    moves = [
        {"id": kid, "p": roots[(n * 7) % 4] if n % 3 else None, "pos": (n * 5) % 4}
        for n, kid in enumerate(kids)
    ] * 2

    def run(variables: dict[str, Any]) -> None:
        client = Client(server.url, admin.api_key)
        try:
            client.ok(MOVE, variables)
        finally:
            client.close()

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(run, moves))
    tree = admin.client.ok(TREE)["folders"]
    seen: list[str] = []

    def check(siblings: list[dict[str, Any]]) -> None:
        assert [s["position"] for s in siblings] == list(range(len(siblings)))
        for s in siblings:
            seen.append(s["id"])
            check(s.get("children") or [])

    check(tree)
    assert sorted(seen) == sorted(roots + kids)


EXPORT = "query($id: ID!) { conversationExport(id: $id) }"
USER_EXPORT = "query($u: ID!) { userExport(userId: $u) }"
IMPORT = """mutation($d: JSON!) { conversationImportReport(input: {format: THREADLINE, data: $d}) {
  conversations { id title } warnings } }"""
PIN = "mutation($c: ID!) { conversationPin(conversationId: $c) { id } }"
BOOKMARK = 'mutation($m: ID!) { bookmarkSet(messageId: $m, note: "read this") { id } }'
BOOKMARKS = "{ bookmarks { nodes { note message { content } } } }"
PINNED = "{ conversations(pinnedFirst: true) { nodes { title } } }"


def test_export_and_import_keep_the_users_folder_pin_and_bookmarks(
    admin: Actor, make_user: Callable[..., Actor]
) -> None:
    from tests.api import reply, start_thread

    work = folder(admin, "Work")
    sub = folder(admin, "Sub", parent=work)
    cid = create_conversation(admin, "talk")
    create_conversation(admin, "newer")
    root = start_thread(admin, cid, "question")
    answer = reply(admin, root, "answer")
    admin.client.ok(FILE, {"c": cid, "f": sub})
    admin.client.ok(PIN, {"c": cid})
    admin.client.ok(BOOKMARK, {"m": answer})
    document = admin.client.ok(EXPORT, {"id": cid})["conversationExport"]
    organisation = document["organisation"]
    assert organisation["folder"] == ["Work", "Sub"]
    assert organisation["pinned"] == 0
    assert [(b["message_id"], b["note"]) for b in organisation["bookmarks"]] == [(answer, "read this")]
    # Another user of the tenant imports it: their own folders, pin and bookmark, as the export had them.
    other = make_user(admin)
    folder(other, "Work")  # an existing folder of the same name is reused, not duplicated
    report = other.client.ok(IMPORT, {"d": document})["conversationImportReport"]
    assert report["warnings"] == []
    (imported,) = report["conversations"]
    tree = other.client.ok(TREE)["folders"]
    assert names(tree) == ["Work"]
    assert names(tree[0]["children"]) == ["Sub"]
    assert tree[0]["children"][0]["conversationCount"] == 1
    assert in_folder(other, tree[0]["children"][0]["id"]) == ["talk"]
    assert other.client.ok(PINNED)["conversations"]["nodes"][0] == {"title": "talk"}
    assert other.client.ok(BOOKMARKS)["bookmarks"]["nodes"] == [
        {"note": "read this", "message": {"content": "answer"}}
    ]
    # Importing it again (a merge) restores nothing twice.
    other.client.ok(IMPORT, {"d": document})
    assert names(other.client.ok(TREE)["folders"]) == ["Work"]
    assert len(other.client.ok(BOOKMARKS)["bookmarks"]["nodes"]) == 1
    assert imported["title"] == "talk"


def test_a_user_export_holds_their_folders_pins_and_bookmarks(admin: Actor) -> None:
    from tests.api import start_thread

    top = folder(admin, "Top")
    inner = folder(admin, "Inner", parent=top)
    cid = create_conversation(admin, "talk")
    root = start_thread(admin, cid, "question")
    admin.client.ok(FILE, {"c": cid, "f": inner})
    admin.client.ok(PIN, {"c": cid})
    admin.client.ok(BOOKMARK, {"m": root})
    data = admin.client.ok(USER_EXPORT, {"u": admin.user_id})["userExport"]
    assert [(f["id"], f["name"], f["parent_id"], f["conversation_ids"]) for f in data["folders"]] == [
        (top, "Top", None, []),
        (inner, "Inner", top, [cid]),
    ]
    assert data["pins"] == [{"conversation_id": cid, "position": 0}]
    assert [(b["conversation_id"], b["message_id"], b["note"]) for b in data["bookmarks"]] == [
        (cid, root, "read this")
    ]
    assert data["conversations"][0]["organisation"]["folder"] == ["Top", "Inner"]


def test_erasing_a_user_erases_their_folders_pins_and_bookmarks(
    admin: Actor, make_user: Callable[..., Actor], loop: Loop, dsn: str
) -> None:
    from tests.api import start_thread

    member = make_user(admin)
    cid = create_conversation(admin, "shared")
    join(admin, member, cid)
    root = start_thread(admin, cid, "question")
    mine = folder(admin, "Admin's")
    admin.client.ok(FILE, {"c": cid, "f": mine})
    theirs = folder(member, "Theirs")
    folder(member, "Child", parent=theirs)
    member.client.ok(FILE, {"c": cid, "f": theirs})
    member.client.ok(PIN, {"c": cid})
    member.client.ok(BOOKMARK, {"m": root})
    admin.client.ok("mutation($u: ID!) { userErase(userId: $u) { userId } }", {"u": member.user_id})

    async def left() -> dict[str, int]:
        import asyncpg

        conn = await asyncpg.connect(dsn)
        try:
            return {
                table: int(await conn.fetchval(f"SELECT count(*) FROM {table}"))
                for table in ("folder", "conversation_folder", "conversation_pin", "message_bookmark")
            }
        finally:
            await conn.close()

    # Only the admin's own folder and placement are left.
    assert loop.run(left()) == {
        "folder": 1,
        "conversation_folder": 1,
        "conversation_pin": 0,
        "message_bookmark": 0,
    }
    assert in_folder(admin, mine) == ["shared"]


def test_each_conversation_shows_the_callers_folder_and_pin_in_a_fixed_number_of_statements(
    admin: Actor, make_user: Callable[..., Actor]
) -> None:
    listing = "{ conversations(first: 50) { nodes { title pinPosition folder { id name } } } }"
    work = folder(admin, "Work")
    first = create_conversation(admin, "first")
    admin.client.ok(FILE, {"c": first, "f": work})
    admin.client.ok(PIN, {"c": first})
    few = admin.client.statements(listing)
    for n in range(5):
        cid = create_conversation(admin, f"more {n}")
        admin.client.ok(FILE, {"c": cid, "f": folder(admin, f"f{n}")})
        admin.client.ok(PIN, {"c": cid})
    assert admin.client.statements(listing) == few
    nodes = admin.client.ok(listing)["conversations"]["nodes"]
    assert nodes[-1] == {"title": "first", "pinPosition": 0, "folder": {"id": work, "name": "Work"}}
    assert [n["pinPosition"] for n in nodes] == [5, 4, 3, 2, 1, 0]
    # Another participant sees their own view: nothing filed, nothing pinned.
    member = make_user(admin)
    join(admin, member, first)
    assert member.client.ok(listing)["conversations"]["nodes"] == [
        {"title": "first", "pinPosition": None, "folder": None}
    ]


def test_a_retried_folder_create_with_the_same_key_creates_one_folder(admin: Actor) -> None:
    create = """mutation($n: String!, $k: String) {
      folderCreate(name: $n, clientMutationId: $k) { id name } }"""
    first = admin.client.ok(create, {"n": "Once", "k": "folder-key-1"})["folderCreate"]
    again = admin.client.ok(create, {"n": "Once", "k": "folder-key-1"})["folderCreate"]
    assert again == first
    assert names(admin.client.ok(TREE)["folders"]) == ["Once"]


def test_unfiled_lists_the_conversations_in_none_of_the_callers_folders(
    admin: Actor, make_user: Callable[..., Actor]
) -> None:
    unfiled = "query($f: ID) { conversations(unfiled: true, folderId: $f) { totalCount nodes { title } } }"
    box = folder(admin, "Box")
    filed = create_conversation(admin, "filed")
    create_conversation(admin, "loose")
    admin.client.ok(FILE, {"c": filed, "f": box})
    assert admin.client.ok(unfiled)["conversations"] == {"totalCount": 1, "nodes": [{"title": "loose"}]}
    # Another participant's view: nothing of theirs is filed.
    member = make_user(admin)
    join(admin, member, filed)
    assert member.client.ok(unfiled)["conversations"]["nodes"] == [{"title": "filed"}]
    error = admin.client.error(unfiled, {"f": box})
    assert error["extensions"] == {"code": "BAD_USER_INPUT", "argument": "unfiled"}


def test_an_import_with_a_malformed_or_oversized_organisation_imports_and_warns(admin: Actor) -> None:
    from tests.api import start_thread

    cid = create_conversation(admin, "talk")
    start_thread(admin, cid, "hello")
    document = admin.client.ok(EXPORT, {"id": cid})["conversationExport"]
    for organisation, warned in (
        ({"folder": "not a list", "pinned": "first", "bookmarks": 5}, 0),
        ({"folder": [1, 2], "pinned": -1, "bookmarks": ["x", {"message_id": "msg_nope"}]}, 1),
        ({"folder": ["x" * 201]}, 1),
        ({"folder": [f"level {n}" for n in range(9)]}, 1),
    ):
        report = admin.client.ok(
            IMPORT, {"d": {**document, "conversation_id": unique_id(), "organisation": organisation}}
        )
        result = report["conversationImportReport"]
        assert [c["title"] for c in result["conversations"]] == ["talk"]
        assert len(result["warnings"]) == warned, result["warnings"]
    # The nine-level path stopped at the depth limit without leaving a folder deeper than it.
    assert max(f["depth"] for f in all_folders(admin)) <= 8


def unique_id() -> str:
    import uuid

    return f"cnv_{uuid.uuid4().hex}"


def all_folders(actor: Actor) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    pending = actor.client.ok("{ folders { id depth } }")["folders"]
    while pending:
        found += pending
        pending = [
            c
            for f in pending
            for c in actor.client.ok(
                "query($id: ID!) { folder(id: $id) { children { id depth } } }", {"id": f["id"]}
            )["folder"]["children"]
        ]
    return found
