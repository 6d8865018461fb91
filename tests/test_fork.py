"""conversationFork: each mode against an independent model of the tree, provenance and who sees it, the size
cap. Everything through the API."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api import create_conversation, join, stream_cursor
from tests.harness import Actor, Client, ServerThread, serve_process
from tests.ws import WsClient
from threadline.ids import Kind, decode_id

FORK = """mutation($m: ID!, $mode: ConversationForkMode!, $t: String) {
  conversationFork(messageId: $m, mode: $mode, title: $t) {
    id title messageCount tokenCount metadata
    forkedFrom { conversation { id } message { id content } }
    threads { edges { node { root { id } } } } } }"""
TREE = """query($r: ID!) { threadTree(rootId: $r) { totalCount nodes {
  id parentId depth childCount role content model createdAt usage { promptTokens completionTokens imported } } } }"""
PROVENANCE = """query($id: ID!) { conversation(id: $id) {
  forkedFrom { conversation { id } message { id } } forks { totalCount edges { node { id } } } } }"""
REPLY = """mutation($p: ID!, $i: MessageInput!) { messageReply(parentId: $p, input: $i) { id depth } }"""
START = "mutation($c: ID!, $i: MessageInput!) { threadStart(conversationId: $c, input: $i) { id } }"

# The source tree: (key, parent key, role, content). Siblings in creation order.
SHAPE = [
    ("r", None, "USER", "root question"),
    ("a", "r", "ASSISTANT", "first answer"),
    ("b", "r", "ASSISTANT", "second answer"),
    ("a1", "a", "USER", "follow-up one"),
    ("a2", "a", "USER", "follow-up two"),
    ("a1x", "a1", "ASSISTANT", "deep answer"),
    ("a1y", "a1", "ASSISTANT", "deep answer, again"),
    ("a1x1", "a1x", "USER", "deepest"),
    ("b1", "b", "USER", "on the second"),
]


class TreeModel:
    """The tree as parent links; expected forks are computed from it alone (no paths, no ranks)."""

    def __init__(self, shape: list[tuple[str, str | None, str, str]]) -> None:
        self.order = [key for key, *_ in shape]
        self.parent = {key: parent for key, parent, *_ in shape}
        self.content = {key: content for key, _, _, content in shape}

    def children(self, key: str, kept: set[str]) -> list[str]:
        return [k for k in self.order if self.parent[k] == key and k in kept]

    def ancestry(self, key: str) -> list[str]:
        chain = [key]
        while (p := self.parent[chain[-1]]) is not None:
            chain.append(p)
        return chain[::-1]

    def descendants(self, key: str) -> set[str]:
        out = {key}
        for k in self.order:  # creation order: parents come first
            if self.parent[k] in out:
                out.add(k)
        return out

    def kept(self, key: str, mode: str) -> set[str]:
        if mode == "PATH_ONLY":
            return set(self.ancestry(key))
        if mode == "BRANCH":
            return set(self.ancestry(key)) | self.descendants(key)
        return self.descendants(self.ancestry(key)[0])

    def expected(self, key: str, mode: str) -> list[tuple[str, str | None, int, int]]:
        """(content, parent's content, depth, child count) depth-first, siblings oldest first."""
        kept = self.kept(key, mode)
        out: list[tuple[str, str | None, int, int]] = []

        def walk(k: str, depth: int) -> None:
            parent = self.parent[k]
            kids = self.children(k, kept)
            out.append((self.content[k], self.content[parent] if parent else None, depth, len(kids)))
            for kid in kids:
                walk(kid, depth + 1)

        walk(self.ancestry(key)[0], 0)
        return out


def build(actor: Actor, conversation_id: str) -> dict[str, str]:
    ids: dict[str, str] = {}
    for key, parent, role, content in SHAPE:
        message = {"content": content, "role": role, "model": "m-1" if role == "ASSISTANT" else None}
        if role == "ASSISTANT":
            message["usage"] = {"promptTokens": 3, "completionTokens": 4}
        if parent is None:
            ids[key] = actor.client.ok(START, {"c": conversation_id, "i": message})["threadStart"]["id"]
        else:
            ids[key] = actor.client.ok(REPLY, {"p": ids[parent], "i": message})["messageReply"]["id"]
    return ids


def observed(client: Client, root_id: str) -> list[tuple[str, str | None, int, int]]:
    nodes = client.ok(TREE, {"r": root_id})["threadTree"]["nodes"]
    content = {n["id"]: n["content"] for n in nodes}
    return [
        (n["content"], content.get(n["parentId"]) if n["parentId"] else None, n["depth"], n["childCount"])
        for n in nodes
    ]


def fork(client: Client, message_id: str, mode: str, title: str | None = None) -> dict[str, Any]:
    return dict(client.ok(FORK, {"m": message_id, "mode": mode, "t": title})["conversationFork"])


@pytest.mark.parametrize("mode", ["PATH_ONLY", "BRANCH", "THREAD"])
@pytest.mark.parametrize("at", ["a1", "r", "a1x1", "b"])
def test_fork_copies_what_each_mode_selects_as_the_model_says(admin: Actor, mode: str, at: str) -> None:
    source = create_conversation(admin, "source")
    ids = build(admin, source)
    model = TreeModel(SHAPE)
    forked = fork(admin.client, ids[at], mode)
    expected = model.expected(at, mode)
    assert forked["messageCount"] == len(expected)
    assert forked["title"] == "source"
    (thread,) = forked["threads"]["edges"]
    assert observed(admin.client, thread["node"]["root"]["id"]) == expected
    assert forked["forkedFrom"]["conversation"]["id"] == source
    assert forked["forkedFrom"]["message"] == {"id": ids[at], "content": model.content[at]}
    # The source is untouched.
    assert observed(admin.client, ids["r"]) == model.expected("r", "THREAD")


def test_a_fork_keeps_roles_timestamps_models_and_usage_and_grows_like_any_thread(admin: Actor) -> None:
    source = create_conversation(admin, "source")
    ids = build(admin, source)
    forked = fork(admin.client, ids["a1x"], "PATH_ONLY", title="my branch")
    assert forked["title"] == "my branch"
    assert forked["tokenCount"] == 0  # the copies' usage was spent by the source
    root = forked["threads"]["edges"][0]["node"]["root"]["id"]
    original = {n["content"]: n for n in admin.client.ok(TREE, {"r": ids["r"]})["threadTree"]["nodes"]}
    copies = admin.client.ok(TREE, {"r": root})["threadTree"]["nodes"]
    assert [c["content"] for c in copies] == ["root question", "first answer", "follow-up one", "deep answer"]
    for copy in copies:
        source_node = original[copy["content"]]
        assert copy["id"] != source_node["id"]
        assert (copy["role"], copy["model"], copy["createdAt"]) == (
            source_node["role"],
            source_node["model"],
            source_node["createdAt"],
        )
        if source_node["usage"] is None:
            assert copy["usage"] is None
        else:
            assert copy["usage"] == {"promptTokens": 3, "completionTokens": 4, "imported": True}
    # Replies under a copied ancestor (whose other replies were not copied) sort after the copied one.
    first_answer = copies[1]["id"]
    admin.client.ok(REPLY, {"p": first_answer, "i": {"content": "a new turn"}})
    admin.client.ok(REPLY, {"p": copies[3]["id"], "i": {"content": "under the leaf"}})
    after = observed(admin.client, root)
    assert after == [
        ("root question", None, 0, 1),
        ("first answer", "root question", 1, 2),
        ("follow-up one", "first answer", 2, 1),
        ("deep answer", "follow-up one", 3, 1),
        ("under the leaf", "deep answer", 4, 0),
        ("a new turn", "first answer", 2, 0),
    ]


def test_provenance_is_shown_only_to_those_who_may_read_both(admin: Actor, make_user: Any) -> None:
    reader = make_user(admin)  # reads the source, not the fork
    guest = make_user(admin)  # reads the fork, not the source
    source = create_conversation(admin, "source")
    ids = build(admin, source)
    join(admin, reader, source, "VIEWER")
    forked = fork(admin.client, ids["a"], "BRANCH")
    join(admin, guest, forked["id"], "VIEWER")

    own = admin.client.ok(PROVENANCE, {"id": source})["conversation"]["forks"]
    assert own == {"totalCount": 1, "edges": [{"node": {"id": forked["id"]}}]}
    assert reader.client.ok(PROVENANCE, {"id": source})["conversation"]["forks"] == {
        "totalCount": 0,
        "edges": [],
    }
    assert guest.client.ok(PROVENANCE, {"id": forked["id"]})["conversation"]["forkedFrom"] is None
    assert admin.client.ok(PROVENANCE, {"id": forked["id"]})["conversation"]["forkedFrom"] == {
        "conversation": {"id": source},
        "message": {"id": ids["a"]},
    }
    # A reader of the source may fork it for themselves: the fork is theirs, its provenance visible to them.
    theirs = fork(reader.client, ids["b1"], "PATH_ONLY")
    assert theirs["forkedFrom"]["conversation"]["id"] == source
    assert reader.client.ok(PROVENANCE, {"id": source})["conversation"]["forks"]["totalCount"] == 1


def test_fork_of_a_message_you_cannot_read_is_not_found(
    admin: Actor, make_user: Any, make_tenant: Any
) -> None:
    source = create_conversation(admin, "source")
    ids = build(admin, source)
    stranger = make_user(admin)
    other_tenant = make_tenant()
    for client in (stranger.client, other_tenant.client):
        error = client.error(FORK, {"m": ids["a"], "mode": "THREAD"})
        assert error["extensions"]["code"] == "NOT_FOUND"
    assert admin.client.ok("{ conversations { totalCount } }")["conversations"]["totalCount"] == 1


def test_a_fork_bigger_than_the_configured_cap_is_refused_with_the_limit(admin: Actor, dsn: str) -> None:
    source = create_conversation(admin, "source")
    ids = build(admin, source)
    with serve_process(dsn, THREADLINE_FORK_MAX_MESSAGES="4", THREADLINE_RUN_WORKERS="0") as url:
        client = Client(url, admin.api_key)
        try:
            error = client.error(FORK, {"m": ids["a1"], "mode": "THREAD"})
            assert error["extensions"]["code"] == "BAD_USER_INPUT"
            assert error["extensions"]["limit"] == 4
            assert "more than 4 messages" in error["message"]
            assert "THREADLINE_FORK_MAX_MESSAGES" in error["message"]
            # Within the cap, the same server forks.
            assert fork(client, ids["a1"], "PATH_ONLY")["messageCount"] == 3
        finally:
            client.close()
    assert admin.client.ok("{ conversations { totalCount } }")["conversations"]["totalCount"] == 2


def test_a_fork_is_priced_by_the_messages_it_copies(admin: Actor, make_user: Any, dsn: str) -> None:
    """One `mutations` unit per started THREADLINE_IMPORT_ITEMS_PER_MUTATION messages copied, drawn before anything
    is copied: a reader could copy the largest thread the fork cap allows once per mutation."""
    source = create_conversation(admin, "priced")
    ids = build(admin, source)
    reader = make_user(admin)
    join(admin, reader, source)
    settings = {"THREADLINE_RATE_LIMIT_MUTATIONS": "6", "THREADLINE_IMPORT_ITEMS_PER_MUTATION": "1"}
    with serve_process(dsn, THREADLINE_RUN_WORKERS="0", **settings) as url:
        client = Client(url, reader.api_key)
        try:
            # The whole thread (9 messages) costs 9 units of the 6 (429, as every refusal of a budget); accepting
            # the invitation drew one.
            error = _limited(client, {"m": ids["a1"], "mode": "THREAD"})
            assert (error["extensions"]["code"], error["extensions"]["budget"]) == (
                "RATE_LIMITED",
                "mutations",
            )
            # Nothing was copied; the path to a1 (3 messages) costs 3 and is forked.
            assert fork(client, ids["a1"], "PATH_ONLY")["messageCount"] == 3
            error = _limited(client, {"m": ids["a1"], "mode": "PATH_ONLY"})  # 3 more: past the 6
            assert error["extensions"]["code"] == "RATE_LIMITED", error
        finally:
            client.close()
    assert reader.client.ok("{ conversations { totalCount } }")["conversations"]["totalCount"] == 2


def _limited(client: Client, variables: dict[str, Any]) -> dict[str, Any]:
    response = client.http.post("/graphql", json={"query": FORK, "variables": variables})
    assert response.status_code == 429, response.text
    (error,) = response.json()["errors"]
    return dict(error)


def test_fork_ids_are_new_and_the_fork_is_owned_by_the_caller(admin: Actor, make_user: Any) -> None:
    member = make_user(admin)
    source = create_conversation(admin, "source")
    ids = build(admin, source)
    join(admin, member, source, "VIEWER")
    forked = fork(member.client, ids["a1"], "BRANCH")
    owner = member.client.ok(
        "query($id: ID!) { conversation(id: $id) { owner { id } } }", {"id": forked["id"]}
    )
    assert owner["conversation"]["owner"]["id"] == member.user_id
    root = forked["threads"]["edges"][0]["node"]["root"]["id"]
    assert decode_id(root, Kind.MESSAGE) != decode_id(ids["r"], Kind.MESSAGE)


EVENTS = """subscription($c: ID!, $s: String) { conversationEvents(conversationId: $c, since: $s) { type rootId
  ... on ConversationForkedEvent { forkId forkedAtId mode messageCount } } }"""


def test_a_fork_is_announced_to_the_forker_alone_on_the_source(
    admin: Actor, make_user: Any, server: ServerThread
) -> None:
    reader = make_user(admin)
    source = create_conversation(admin, "source")
    ids = build(admin, source)
    join(admin, reader, source, "VIEWER")
    mine = WsClient(server.ws_url, admin.api_key)
    theirs = WsClient(server.ws_url, reader.api_key)
    try:
        since = stream_cursor(admin)
        for client in (mine, theirs):
            client.subscribe(EVENTS, {"c": source, "s": since})
        forked = fork(admin.client, ids["a1"], "BRANCH")
        ignore = ("presence.update", "unread.update")
        assert mine.events(1, ignore=ignore) == [
            {
                "type": "conversation.forked",
                "rootId": ids["r"],
                "forkId": forked["id"],
                "forkedAtId": ids["a1"],
                "mode": "BRANCH",
                "messageCount": 6,
            }
        ]
        theirs.expect_quiet(0.5, ignore=ignore)
    finally:
        mine.close()
        theirs.close()


def test_a_retried_fork_with_the_same_client_mutation_id_forks_once(admin: Actor) -> None:
    source = create_conversation(admin, "source")
    ids = build(admin, source)
    keyed = """mutation($m: ID!, $k: String) {
      conversationFork(messageId: $m, mode: PATH_ONLY, clientMutationId: $k) { id messageCount } }"""
    first = admin.client.ok(keyed, {"m": ids["a1x"], "k": "fork-1"})["conversationFork"]
    again = admin.client.ok(keyed, {"m": ids["a1x"], "k": "fork-1"})["conversationFork"]
    assert again == first == {"id": first["id"], "messageCount": 4}
    assert admin.client.ok("{ conversations { totalCount } }")["conversations"]["totalCount"] == 2


def tree_metadata(actor: Actor, root: str) -> list[Any]:
    tree = actor.client.ok("query($r: ID!) { threadTree(rootId: $r) { nodes { metadata } } }", {"r": root})
    return [node["metadata"] for node in tree["threadTree"]["nodes"]]


def test_a_fork_copies_metadata_and_outlives_its_source(admin: Actor, make_user: Any) -> None:
    owner = make_user(admin)
    reader = make_user(admin)
    created = owner.client.ok(
        'mutation { conversationCreate(input: {title: "src", metadata: {project: "apollo"}}) { id } }'
    )
    source = created["conversationCreate"]["id"]
    root = owner.client.ok(START, {"c": source, "i": {"content": "q", "metadata": {"k": "v"}}})[
        "threadStart"
    ]["id"]
    join(owner, reader, source, "VIEWER")
    forked = fork(reader.client, root, "THREAD")
    assert forked["metadata"] == {"project": "apollo"}
    copy = forked["threads"]["edges"][0]["node"]["root"]["id"]
    tree = reader.client.ok(
        "query($r: ID!) { threadTree(rootId: $r) { nodes { content metadata } } }", {"r": copy}
    )
    assert tree["threadTree"]["nodes"] == [{"content": "q", "metadata": {"k": "v"}}]
    # The source's owner is erased (their conversations go): the fork stays, its provenance is gone.
    admin.client.ok("mutation($u: ID!) { userErase(userId: $u) { userId } }", {"u": owner.user_id})
    after = reader.client.ok(PROVENANCE, {"id": forked["id"]})["conversation"]
    assert after["forkedFrom"] is None
    # Copies keep their author, so the erasure reached the copy of the owner's message as well.
    assert observed(reader.client, copy) == [("", None, 0, 0)]
    assert tree_metadata(reader, copy) == [{}]


def test_the_forker_is_on_the_copy_of_the_message_they_forked_at(admin: Actor) -> None:
    source = create_conversation(admin, "source")
    ids = build(admin, source)
    current = """query($r: ID!) { thread(rootId: $r) { currentLeaf { content } currentPath { content } } }"""
    for mode, at in (("PATH_ONLY", "a1x"), ("BRANCH", "a1"), ("THREAD", "b")):
        forked = fork(admin.client, ids[at], mode)
        root = forked["threads"]["edges"][0]["node"]["root"]["id"]
        thread = admin.client.ok(current, {"r": root})["thread"]
        model = TreeModel(SHAPE)
        assert thread["currentLeaf"] == {"content": model.content[at]}
        assert [m["content"] for m in thread["currentPath"]] == [model.content[k] for k in model.ancestry(at)]


def test_a_fork_costs_the_same_statements_whatever_the_size_and_refuses_a_bad_title(admin: Actor) -> None:
    source = create_conversation(admin, "source")
    ids = build(admin, source)
    plain = """mutation($m: ID!) { conversationFork(messageId: $m, mode: THREAD) { id } }"""
    small = admin.client.statements(plain, {"m": ids["r"]})
    parent = ids["a1x1"]
    for n in range(25):
        parent = admin.client.ok(REPLY, {"p": parent if n % 2 else ids["b1"], "i": {"content": f"more {n}"}})[
            "messageReply"
        ]["id"]
    assert admin.client.statements(plain, {"m": ids["r"]}) == small  # set-based: no statement per message
    for title in ("", "   ", "x" * 501):
        error = admin.client.error(FORK, {"m": ids["r"], "mode": "THREAD", "t": title})
        assert (error["extensions"]["code"], error["extensions"]["argument"]) == ("BAD_USER_INPUT", "title")
    assert admin.client.ok("{ conversations { totalCount } }")["conversations"]["totalCount"] == 3


def test_a_fork_keeps_its_files_readable_after_the_forker_leaves_the_source(
    server: ServerThread, admin: Actor, make_user: Any
) -> None:
    from tests.test_files import PNG, attach, download, upload

    forker = make_user(admin)
    outsider = make_user(admin)
    source = create_conversation(admin, "with a file")
    join(admin, forker, source)
    file_id = upload(server.url, admin, PNG).json()["id"]
    message = attach(admin, source, file_id)
    forked = forker.client.ok(FORK, {"m": message["id"], "mode": "THREAD", "t": None})["conversationFork"]
    fork_root = forked["threads"]["edges"][0]["node"]["root"]["id"]
    parts = forker.client.ok(
        "query($id: ID!) { node(id: $id) { ... on Message { parts { __typename ... on FilePart { fileId } } } } }",
        {"id": fork_root},
    )["node"]["parts"]
    assert {"__typename": "FilePart", "fileId": file_id} in parts
    admin.client.ok(
        "mutation($c: ID!, $u: ID!) { participantRemove(conversationId: $c, userId: $u) }",
        {"c": source, "u": forker.user_id},
    )
    # The file is theirs through the fork alone now (before, the copy held no file: 404).
    got = download(server.url, forker, file_id)
    assert got.status_code == 200 and got.content == PNG
    assert download(server.url, outsider, file_id).status_code == 404
    # Deleting the fork's message lets go of the file for them, as deleting any message does.
    forker.client.ok("mutation($id: ID!) { messageDelete(id: $id) { id } }", {"id": fork_root})
    assert download(server.url, forker, file_id).status_code == 404


def test_provenance_of_a_page_of_forks_costs_the_same_statements_however_many_forks(admin: Actor) -> None:
    source = create_conversation(admin, "source")
    ids = build(admin, source)
    page = """{ conversations(first: 50) { edges { node {
      forkedFrom { conversation { id } message { id content } } } } } }"""

    def forked_at(keys: list[str]) -> None:
        for key in keys:
            fork(admin.client, ids[key], "PATH_ONLY")

    forked_at(["a1", "b1"])
    few = admin.client.statements(page)
    forked_at(["a1x", "a1y", "a1x1", "a2"])
    nodes = admin.client.ok(page)["conversations"]["edges"]
    seen = sorted(n["node"]["forkedFrom"]["message"]["id"] for n in nodes if n["node"]["forkedFrom"])
    assert seen == sorted(ids[k] for k in ["a1", "b1", "a1x", "a1y", "a1x1", "a2"])
    assert admin.client.statements(page) == few  # one loader for every fork's message and its path
