"""Message trees: writes, tree reads checked against an independent model, listing, edits, unread counts.

Big trees are seeded straight into the database (the tests that use them are about reading); every
write under test goes through the API.
"""

from __future__ import annotations

import random
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import asyncpg
import pytest

from tests import harness
from tests.api import create_conversation, join, reply, start_thread
from tests.harness import Actor, Client, Loop, ServerThread
from threadline.ids import Kind, encode_id, parse_id
from threadline.threads.paths import encode_rank

TREE = """query($r: ID!, $d: Int, $f: ID) { threadTree(rootId: $r, maxDepth: $d, fromId: $f) {
  totalCount root { id } nodes { id parentId depth path childCount } } }"""
MESSAGE_FIELDS = "id conversationId rootId parentId depth path childCount role content model createdAt"
REPLY_FULL = f"""mutation($p: ID!, $i: MessageInput!) {{ messageReply(parentId: $p, input: $i) {{
  {MESSAGE_FIELDS} author {{ id }} usage {{ promptTokens completionTokens totalTokens }} }} }}"""
EDIT = "mutation($m: ID!, $x: String!) { messageEdit(id: $m, content: $x) { id content editedAt edits { content } } }"
DELETE = "mutation($m: ID!) { messageDelete(id: $m) { id content isDeleted deletedAt childCount edits { content } } }"
THREAD = "query($r: ID!) { thread(rootId: $r) { replyCount unreadCount lastActivityAt root { id } } }"
MARK_READ = "mutation($r: ID!) { threadMarkRead(rootId: $r) { unreadCount replyCount } }"


# --- an independent model of a tree ----------------------------------------------------------------


class Model:
    """A tree as a parent list (index order = creation order); the expected API answers derive from it."""

    def __init__(self) -> None:
        self.parents: list[int | None] = []
        self.ids: list[str] = []
        self.kids: dict[int, list[int]] = {}

    def add(self, parent: int | None, public_id: str) -> int:
        index = len(self.ids)
        self.parents.append(parent)
        self.ids.append(public_id)
        if parent is not None:
            self.kids.setdefault(parent, []).append(index)
        return index

    def children(self, i: int) -> list[int]:
        return self.kids.get(i, [])

    def ancestry(self, i: int) -> list[int]:
        chain = [i]
        while (p := self.parents[chain[-1]]) is not None:
            chain.append(p)
        return chain[::-1]

    def depth(self, i: int) -> int:
        return len(self.ancestry(i)) - 1

    def dfs(self, start: int = 0, max_depth: int | None = None) -> list[int]:
        """Pre-order, siblings oldest first, at most `max_depth` levels below `start`."""
        out: list[int] = []
        stack = [(start, 0)]
        while stack:
            node, level = stack.pop()
            out.append(node)
            if max_depth is None or level < max_depth:
                stack.extend((c, level + 1) for c in reversed(self.children(node)))
        return out

    def node(self, i: int) -> dict[str, Any]:
        parent = self.parents[i]
        return {
            "id": self.ids[i],
            "parentId": self.ids[parent] if parent is not None else None,
            "depth": self.depth(i),
            "path": [self.ids[a] for a in self.ancestry(i)],
            "childCount": len(self.children(i)),
        }

    def snapshot(self, start: int = 0, max_depth: int | None = None) -> dict[str, Any]:
        nodes = [self.node(i) for i in self.dfs(start, max_depth)]
        return {"totalCount": len(nodes), "root": {"id": self.ids[start]}, "nodes": nodes}

    def nested(self, i: int, levels: int) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.ids[i], "depth": self.depth(i)}
        if levels > 0:
            out["replies"] = [self.nested(c, levels - 1) for c in self.children(i)]
        return out


def random_parents(n: int, seed: int) -> list[int | None]:
    """A random tree of `n` nodes: mostly recent parents (depth), sometimes old ones (branches)."""
    rng = random.Random(seed)
    parents: list[int | None] = [None]
    for i in range(1, n):
        parents.append(rng.randrange(max(0, i - 5), i) if rng.random() < 0.6 else rng.randrange(i))
    return parents


def uuid_of(public_id: str) -> uuid.UUID:
    parsed = parse_id(public_id)
    assert parsed is not None
    return parsed[1]


MESSAGE_INSERT = """INSERT INTO message (id, tenant_id, conversation_id, root_id, parent_id, depth, path, child_count,
    role, content, author_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"""
THREAD_INSERT = """INSERT INTO thread (id, tenant_id, conversation_id, reply_count, last_seq, created_at, last_activity_at)
    SELECT $1, $2, $3, $4, max(seq), now(), now() FROM message WHERE root_id = $1"""


def tree_rows(
    tenant: uuid.UUID, author: uuid.UUID, conversation: uuid.UUID, parents: list[int | None]
) -> tuple[Model, list[tuple[Any, ...]], tuple[Any, ...]]:
    """The model, message rows and thread row of a thread, stored the way the service stores replies."""
    ids = [uuid.uuid4() for _ in parents]
    model = Model()
    for i, p in enumerate(parents):
        model.add(p, encode_id(Kind.MESSAGE, ids[i]))
    paths: list[bytes] = []
    rows = []
    for i, p in enumerate(parents):
        paths.append(b"" if p is None else paths[p] + encode_rank(model.children(p).index(i)))
        rows.append(
            (
                ids[i],
                tenant,
                conversation,
                ids[0],
                ids[p] if p is not None else None,
                model.depth(i),
                paths[i],
                len(model.children(i)),
                "USER",
                f"node {i}",
                author,
            )
        )
    return model, rows, (ids[0], tenant, conversation, len(parents) - 1)


def seed_tree(loop: Loop, dsn: str, actor: Actor, conversation_id: str, parents: list[int | None]) -> Model:
    """Insert a whole thread in one transaction."""
    conversation = uuid_of(conversation_id)
    model, rows, thread = tree_rows(uuid_of(actor.tenant_id), uuid_of(actor.user_id), conversation, parents)

    async def insert() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            async with conn.transaction():
                await conn.executemany(MESSAGE_INSERT, rows)
                await conn.execute(THREAD_INSERT, *thread)
                await conn.execute(
                    "UPDATE conversation SET message_count = message_count + $2 WHERE id = $1",
                    conversation,
                    len(rows),
                )
        finally:
            await conn.close()

    loop.run(insert())
    return model


def build_through_api(actor: Actor, conversation_id: str, parents: list[int | None]) -> Model:
    model = Model()
    for i, p in enumerate(parents):
        if p is None:
            model.add(None, start_thread(actor, conversation_id, f"node {i}"))
        else:
            model.add(p, reply(actor, model.ids[p], f"node {i}"))
    return model


def tree(
    client: Client, root: str, max_depth: int | None = None, from_id: str | None = None
) -> dict[str, Any]:
    return client.ok(TREE, {"r": root, "d": max_depth, "f": from_id})["threadTree"]


# --- writes -----------------------------------------------------------------------------------------


def test_thread_start_and_reply_record_every_field(admin: Actor) -> None:
    cid = create_conversation(admin)
    root = admin.client.ok(
        f'mutation($c: ID!) {{ threadStart(conversationId: $c, input: {{content: "hi"}}) {{ {MESSAGE_FIELDS} }} }}',
        {"c": cid},
    )["threadStart"]
    assert root == {
        "id": root["id"],
        "conversationId": cid,
        "rootId": root["id"],
        "parentId": None,
        "depth": 0,
        "path": [root["id"]],
        "childCount": 0,
        "role": "USER",
        "content": "hi",
        "model": None,
        "createdAt": root["createdAt"],
    }
    child = admin.client.ok(
        REPLY_FULL,
        {
            "p": root["id"],
            "i": {
                "content": "answer",
                "role": "ASSISTANT",
                "model": "echo-1",
                "usage": {"promptTokens": 3, "completionTokens": 4},
            },
        },
    )["messageReply"]
    assert child == {
        "id": child["id"],
        "conversationId": cid,
        "rootId": root["id"],
        "parentId": root["id"],
        "depth": 1,
        "path": [root["id"], child["id"]],
        "childCount": 0,
        "role": "ASSISTANT",
        "content": "answer",
        "model": "echo-1",
        "createdAt": child["createdAt"],
        "author": {"id": admin.user_id},
        "usage": {"promptTokens": 3, "completionTokens": 4, "totalTokens": 7},
    }
    assert child["createdAt"] >= root["createdAt"]


@pytest.mark.parametrize("role", ["USER", "ASSISTANT", "SYSTEM", "TOOL"])
def test_every_role_is_recorded_as_given(admin: Actor, role: str) -> None:
    cid = create_conversation(admin)
    root = start_thread(admin, cid)
    got = admin.client.ok(REPLY_FULL, {"p": root, "i": {"content": "x", "role": role}})["messageReply"]
    assert (got["role"], got["usage"]) == (role, None)


def test_random_tree_written_through_the_api_reads_back_in_depth_first_order(admin: Actor) -> None:
    cid = create_conversation(admin)
    model = build_through_api(admin, cid, random_parents(80, seed=7))
    assert max(model.depth(i) for i in range(80)) >= 5
    assert tree(admin.client, model.ids[0]) == model.snapshot()


def test_branches_keep_siblings_oldest_first(admin: Actor) -> None:
    cid = create_conversation(admin)
    # root -> a, b, c; a -> a1, a2; c -> c1; replies added interleaved across branches
    model = Model()
    model.add(None, start_thread(admin, cid))
    for parent in [0, 0, 1, 0, 3, 1, 2]:
        model.add(parent, reply(admin, model.ids[parent]))
    snap = tree(admin.client, model.ids[0])
    assert snap == model.snapshot()
    assert [n["id"] for n in snap["nodes"]] == [model.ids[i] for i in [0, 1, 3, 5, 6, 2, 7, 4]]


def test_fan_crossing_the_one_byte_rank_boundary_stays_in_reply_order(
    admin: Actor, loop: Loop, dsn: str
) -> None:
    cid = create_conversation(admin)
    model = seed_tree(loop, dsn, admin, cid, [None] + [0] * 238)
    for _ in range(4):  # ranks 238..241: the sibling encoding grows from one byte to three at 240
        model.add(0, reply(admin, model.ids[0]))
    assert tree(admin.client, model.ids[0]) == model.snapshot()


def test_deep_chain_of_500_reads_back_with_full_ancestry_and_takes_more_replies(
    admin: Actor, loop: Loop, dsn: str
) -> None:
    cid = create_conversation(admin)
    model = seed_tree(loop, dsn, admin, cid, [None, *range(500)])
    snap = tree(admin.client, model.ids[0])
    assert snap == model.snapshot()
    assert snap["nodes"][-1]["depth"] == 500
    assert len(snap["nodes"][-1]["path"]) == 501
    deeper = admin.client.ok(REPLY_FULL, {"p": model.ids[500], "i": {"content": "deeper"}})["messageReply"]
    assert deeper["depth"] == 501
    assert deeper["path"] == [*model.ids, deeper["id"]]
    side = model.add(250, reply(admin, model.ids[250], "side branch"))
    model.add(500, deeper["id"])
    assert tree(admin.client, model.ids[0]) == model.snapshot()
    assert tree(admin.client, model.ids[side])["nodes"] == [model.node(side)]


def test_wide_fan_of_2000_children_reads_back_in_reply_order(admin: Actor, loop: Loop, dsn: str) -> None:
    cid = create_conversation(admin)
    model = seed_tree(loop, dsn, admin, cid, [None] + [0] * 2000)
    model.add(0, reply(admin, model.ids[0], "the 2001st"))
    model.add(1, reply(admin, model.ids[1], "under the first"))
    snap = tree(admin.client, model.ids[0])
    assert snap["totalCount"] == 2003
    assert snap == model.snapshot()
    replies = admin.client.ok(
        "query($m: ID!) { message(id: $m) { childCount replies { id } } }", {"m": model.ids[0]}
    )["message"]
    assert replies["childCount"] == 2001
    assert [r["id"] for r in replies["replies"]] == [model.ids[i] for i in model.children(0)]


# --- subtree reads and maxDepth -------------------------------------------------------------------


@pytest.fixture
def random_tree(admin: Actor, loop: Loop, dsn: str) -> Model:
    cid = create_conversation(admin)
    return seed_tree(loop, dsn, admin, cid, random_parents(300, seed=11))


def test_seeded_random_tree_reads_back_in_depth_first_order(admin: Actor, random_tree: Model) -> None:
    assert tree(admin.client, random_tree.ids[0]) == random_tree.snapshot()


def test_thread_tree_of_a_non_root_id_is_that_subtree_with_full_ancestry(
    admin: Actor, random_tree: Model
) -> None:
    inner = [i for i in range(1, 300) if random_tree.children(i) and random_tree.depth(i) >= 2]
    for i in inner[:5]:
        snap = tree(admin.client, random_tree.ids[i])
        assert snap == random_tree.snapshot(i)
        assert snap["nodes"][0]["path"][0] == random_tree.ids[0]


def test_from_id_starts_at_a_descendant(admin: Actor, random_tree: Model) -> None:
    start = max(range(300), key=lambda i: len(random_tree.dfs(i)) if random_tree.depth(i) == 3 else 0)
    assert tree(admin.client, random_tree.ids[0], from_id=random_tree.ids[start]) == random_tree.snapshot(
        start
    )


def test_from_id_outside_the_given_subtree_is_not_found(admin: Actor, random_tree: Model) -> None:
    a, b = random_tree.children(0)[:2]
    error = admin.client.error(TREE, {"r": random_tree.ids[a], "f": random_tree.ids[b]})
    assert error["extensions"]["code"] == "NOT_FOUND"
    other = start_thread(admin, create_conversation(admin))
    assert admin.client.code(TREE, {"r": other, "f": random_tree.ids[a]}) == "NOT_FOUND"


@pytest.mark.parametrize("max_depth", [0, 1, 3, 8])
def test_max_depth_limits_levels_below_the_start(admin: Actor, random_tree: Model, max_depth: int) -> None:
    assert tree(admin.client, random_tree.ids[0], max_depth) == random_tree.snapshot(0, max_depth)
    inner = next(i for i in range(1, 300) if random_tree.depth(i) == 2 and random_tree.children(i))
    assert tree(admin.client, random_tree.ids[inner], max_depth) == random_tree.snapshot(inner, max_depth)


def test_negative_max_depth_is_bad_user_input(admin: Actor, random_tree: Model) -> None:
    assert admin.client.code(TREE, {"r": random_tree.ids[0], "d": -1}) == "BAD_USER_INPUT"


def test_largest_max_depth_below_a_non_root_is_the_whole_subtree(admin: Actor, random_tree: Model) -> None:
    inner = next(i for i in range(1, 300) if random_tree.depth(i) == 2 and random_tree.children(i))
    assert tree(admin.client, random_tree.ids[inner], 2**31 - 1) == random_tree.snapshot(inner)


# --- nested replies -------------------------------------------------------------------------------

NESTED_5 = """query($r: ID!) { message(id: $r) { id depth
  replies { id depth replies { id depth replies { id depth replies { id depth replies { id depth } } } } } } }"""


def test_nested_replies_five_levels_deep_match_the_tree(admin: Actor, random_tree: Model) -> None:
    got = admin.client.ok(NESTED_5, {"r": random_tree.ids[0]})["message"]
    assert got == random_tree.nested(0, 5)
    inner = next(i for i in range(1, 300) if random_tree.depth(i) == 4 and random_tree.children(i))
    assert admin.client.ok(NESTED_5, {"r": random_tree.ids[inner]})["message"] == random_tree.nested(inner, 5)


def test_nested_replies_through_threads_and_thread_tree(admin: Actor, loop: Loop, dsn: str) -> None:
    cid = create_conversation(admin)
    first = seed_tree(loop, dsn, admin, cid, random_parents(40, seed=1))
    second = seed_tree(loop, dsn, admin, cid, random_parents(40, seed=2))
    data = admin.client.ok(
        """query($c: ID!) { conversation(id: $c) { threads { nodes { root { id depth
             replies { id depth replies { id depth replies { id depth } } } } } } } }""",
        {"c": cid},
    )["conversation"]["threads"]["nodes"]
    assert sorted([t["root"] for t in data], key=lambda r: r["id"]) == sorted(
        [first.nested(0, 3), second.nested(0, 3)], key=lambda r: r["id"]
    )
    nodes = admin.client.ok(
        "query($r: ID!) { threadTree(rootId: $r) { nodes { id replies { id } } } }", {"r": first.ids[0]}
    )["threadTree"]["nodes"]
    assert nodes == [
        {"id": first.ids[i], "replies": [{"id": first.ids[c]} for c in first.children(i)]}
        for i in first.dfs()
    ]


# --- counts under concurrency ---------------------------------------------------------------------


def test_counts_and_paths_stay_correct_under_concurrent_replies(
    admin: Actor, make_user: Callable[..., Actor], server: ServerThread
) -> None:
    cid = create_conversation(admin)
    writers = [make_user(admin) for _ in range(3)]
    for w in writers:
        join(admin, w, cid)
    model = Model()
    model.add(None, start_thread(admin, cid))
    lock = threading.Lock()
    errors: list[BaseException] = []
    per_writer = 15

    def write(actor: Actor, seed: int) -> None:
        rng = random.Random(seed)
        client = Client(server.url, actor.api_key)
        try:
            for _ in range(per_writer):
                with lock:
                    # Half the replies go to the root, so writers collide on one parent.
                    parent = 0 if rng.random() < 0.5 else rng.randrange(len(model.ids))
                    parent_id = model.ids[parent]
                new = client.ok(
                    'mutation($p: ID!) { messageReply(parentId: $p, input: {content: "c"}) { id } }',
                    {"p": parent_id},
                )["messageReply"]["id"]
                with lock:
                    model.add(parent, new)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            client.close()

    actors = [admin, *writers] * 2
    threads = [threading.Thread(target=write, args=(a, n)) for n, a in enumerate(actors)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    total = 1 + per_writer * len(actors)
    conv = admin.client.ok(
        "query($c: ID!) { conversation(id: $c) { messageCount lastActivityAt } }", {"c": cid}
    )["conversation"]
    assert conv["messageCount"] == total
    thread = admin.client.ok(THREAD, {"r": model.ids[0]})["thread"]
    assert thread["replyCount"] == total - 1
    created = admin.client.ok(
        "query($r: ID!) { threadTree(rootId: $r) { nodes { createdAt } } }", {"r": model.ids[0]}
    )["threadTree"]["nodes"]
    latest = max(datetime.fromisoformat(n["createdAt"]) for n in created)
    assert datetime.fromisoformat(thread["lastActivityAt"]) == latest
    assert datetime.fromisoformat(conv["lastActivityAt"]) == latest
    snap = tree(admin.client, model.ids[0])
    # Concurrent siblings get distinct ranks in commit order; the set of children per parent is exact.
    assert snap["totalCount"] == total
    assert sorted(n["id"] for n in snap["nodes"]) == sorted(model.ids)
    for n in snap["nodes"]:
        i = model.ids.index(n["id"])
        assert n["childCount"] == len(model.children(i))
        assert n["path"] == [model.ids[a] for a in model.ancestry(i)]


# --- listing --------------------------------------------------------------------------------------

MESSAGES_RELAY = """query($c: ID!, $first: Int, $after: String) { conversation(id: $c) {
  messages(first: $first, after: $after) { totalCount edges { cursor node { id content path } }
    pageInfo { hasNextPage hasPreviousPage endCursor } } } }"""
MESSAGES_OFFSET = """query($c: ID!, $limit: Int, $offset: Int) { conversation(id: $c) {
  messages(limit: $limit, offset: $offset) { nodes { id } pageInfo { hasNextPage hasPreviousPage } } } }"""
THREADS = """query($c: ID!, $first: Int, $after: String) { conversation(id: $c) {
  threads(first: $first, after: $after) { totalCount nodes { id replyCount root { id } }
    pageInfo { hasNextPage hasPreviousPage endCursor } } } }"""


def test_messages_are_oldest_first_across_threads_with_paths(admin: Actor) -> None:
    cid = create_conversation(admin)
    a = start_thread(admin, cid, "a")
    b = start_thread(admin, cid, "b")
    a1 = reply(admin, a, "a1")
    b1 = reply(admin, b, "b1")
    a11 = reply(admin, a1, "a11")
    page = admin.client.ok(MESSAGES_RELAY, {"c": cid})["conversation"]["messages"]
    assert page["totalCount"] == 5
    assert [e["node"] for e in page["edges"]] == [
        {"id": a, "content": "a", "path": [a]},
        {"id": b, "content": "b", "path": [b]},
        {"id": a1, "content": "a1", "path": [a, a1]},
        {"id": b1, "content": "b1", "path": [b, b1]},
        {"id": a11, "content": "a11", "path": [a, a1, a11]},
    ]


def test_message_pages_have_no_duplicates_or_gaps_while_replies_arrive(admin: Actor) -> None:
    cid = create_conversation(admin)
    root = start_thread(admin, cid)
    existing = [root] + [reply(admin, root, str(i)) for i in range(21)]
    seen: list[str] = []
    after = None
    while True:
        page = admin.client.ok(MESSAGES_RELAY, {"c": cid, "first": 4, "after": after})["conversation"][
            "messages"
        ]
        seen += [e["node"]["id"] for e in page["edges"]]
        assert page["pageInfo"]["hasPreviousPage"] is (after is not None)
        if not page["pageInfo"]["hasNextPage"]:
            break
        if len(seen) < len(existing):
            reply(admin, root, "arrived while paging")  # appended after every existing message
        after = page["pageInfo"]["endCursor"]
    assert seen[: len(existing)] == existing
    assert len(seen) == len(set(seen))
    total = admin.client.ok(MESSAGES_RELAY, {"c": cid, "first": 1})["conversation"]["messages"]["totalCount"]
    assert len(seen) == total


def test_message_pages_never_step_over_a_reply_that_commits_late(
    admin: Actor, loop: Loop, dsn: str, server: ServerThread
) -> None:
    """A reply that waits for another writer of the same conversation must not end up ordered before a
    message that committed while it waited, or a page read in between steps over it for good.

    Two held row locks stage the interleaving: `other` stands for a writer of the same conversation that
    got there first (it commits a new thread directly), `gate` keeps the API reply from committing until
    the reader has paged past what is visible.
    """
    cid = create_conversation(admin)
    root = start_thread(admin, cid, "root")
    conversation, root_uuid = uuid_of(cid), uuid_of(root)
    tenant, author = uuid_of(admin.tenant_id), uuid_of(admin.user_id)

    async def connect() -> asyncpg.Connection:
        return await asyncpg.connect(dsn)

    other, gate, probe = loop.run(connect()), loop.run(connect()), loop.run(connect())
    other_tx, gate_tx = other.transaction(), gate.transaction()
    loop.run(other_tx.start())
    loop.run(gate_tx.start())

    async def waiting() -> int:
        return int(
            await probe.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        )

    def wait_for_a_blocked_writer() -> None:
        for _ in range(500):
            if loop.run(waiting()) >= 1:
                return
            threading.Event().wait(0.02)
        raise AssertionError("the reply never waited for the held locks")

    late: list[str] = []
    writer_client = Client(server.url, admin.api_key)
    writer = threading.Thread(
        target=lambda: late.append(
            writer_client.ok(
                'mutation($p: ID!) { messageReply(parentId: $p, input: {content: "late"}) { id } }',
                {"p": root},
            )["messageReply"]["id"]
        )
    )
    try:
        loop.run(other.execute("SELECT 1 FROM conversation WHERE id = $1 FOR NO KEY UPDATE", conversation))
        loop.run(gate.execute("SELECT 1 FROM thread WHERE id = $1 FOR NO KEY UPDATE", root_uuid))
        writer.start()
        wait_for_a_blocked_writer()
        first_id = uuid.uuid4()
        loop.run(
            other.execute(
                """INSERT INTO message (id, tenant_id, conversation_id, root_id, parent_id, depth, path, child_count, role,
                   content, author_id) VALUES ($1, $2, $3, $1, NULL, 0, ''::bytea, 0, 'USER', 'first', $4)""",
                first_id,
                tenant,
                conversation,
                author,
            )
        )
        loop.run(
            other.execute(
                """INSERT INTO thread (id, tenant_id, conversation_id, reply_count, last_seq)
               SELECT id, tenant_id, conversation_id, 0, seq FROM message WHERE id = $1""",
                first_id,
            )
        )
        loop.run(other_tx.commit())
        wait_for_a_blocked_writer()  # the reply now waits at the gate, uncommitted
        seen: list[str] = []
        page = admin.client.ok(MESSAGES_RELAY, {"c": cid, "first": 10})["conversation"]["messages"]
        seen += [e["node"]["id"] for e in page["edges"]]
        assert seen == [root, encode_id(Kind.MESSAGE, first_id)]
        loop.run(gate_tx.rollback())
        writer.join(timeout=30)
        assert len(late) == 1
        rest = admin.client.ok(
            MESSAGES_RELAY, {"c": cid, "first": 10, "after": page["pageInfo"]["endCursor"]}
        )
        seen += [e["node"]["id"] for e in rest["conversation"]["messages"]["edges"]]
        assert seen == [root, encode_id(Kind.MESSAGE, first_id), late[0]]
    finally:
        writer_client.close()
        for conn in (other, gate, probe):
            loop.run(conn.close())


def test_limit_offset_pages_have_no_duplicates_or_gaps_while_replies_arrive(admin: Actor) -> None:
    cid = create_conversation(admin)
    root = start_thread(admin, cid)
    existing = [root] + [reply(admin, root, str(i)) for i in range(9)]
    seen: list[str] = []
    offset = 0
    while True:
        page = admin.client.ok(MESSAGES_OFFSET, {"c": cid, "limit": 3, "offset": offset})["conversation"][
            "messages"
        ]
        seen += [n["id"] for n in page["nodes"]]
        assert page["pageInfo"]["hasPreviousPage"] is (offset > 0)
        if not page["pageInfo"]["hasNextPage"]:
            break
        if len(seen) < len(existing):
            reply(admin, root, "late")
        offset += 3
    assert seen[: len(existing)] == existing
    assert len(seen) == len(set(seen)) == len(existing) + 3


def test_messages_limit_defaults_to_fifty(admin: Actor, loop: Loop, dsn: str) -> None:
    cid = create_conversation(admin)
    model = seed_tree(loop, dsn, admin, cid, [None] + [0] * 59)
    page = admin.client.ok(MESSAGES_OFFSET, {"c": cid, "offset": 0})["conversation"]["messages"]
    assert [n["id"] for n in page["nodes"]] == model.ids[:50]
    assert page["pageInfo"]["hasNextPage"] is True
    rest = admin.client.ok(MESSAGES_OFFSET, {"c": cid, "offset": 50})["conversation"]["messages"]
    assert [n["id"] for n in rest["nodes"]] == model.ids[50:]


def test_threads_are_newest_activity_first_and_page_without_gaps_while_threads_start(admin: Actor) -> None:
    cid = create_conversation(admin)
    roots = [start_thread(admin, cid, str(i)) for i in range(7)]
    reply(admin, roots[2])  # activity moves thread 2 to the top
    expected = [roots[2], roots[6], roots[5], roots[4], roots[3], roots[1], roots[0]]
    seen: list[str] = []
    after = None
    while True:
        page = admin.client.ok(THREADS, {"c": cid, "first": 3, "after": after})["conversation"]["threads"]
        seen += [n["root"]["id"] for n in page["nodes"]]
        start_thread(admin, cid, "new")  # newer than the cursor: lands on a page already read
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert seen == expected
    first = admin.client.ok(THREADS, {"c": cid, "first": 1})["conversation"]["threads"]
    assert first["nodes"][0]["id"] == "thr_" + first["nodes"][0]["root"]["id"][4:]
    assert first["totalCount"] == 7 + 3


# --- edits and tombstones -------------------------------------------------------------------------


def test_edits_keep_the_history_oldest_first(admin: Actor) -> None:
    cid = create_conversation(admin)
    root = start_thread(admin, cid, "v1")
    first = admin.client.ok(EDIT, {"m": root, "x": "v2"})["messageEdit"]
    assert (first["content"], first["edits"]) == ("v2", [{"content": "v1"}])
    assert first["editedAt"] is not None
    second = admin.client.ok(EDIT, {"m": root, "x": "v3"})["messageEdit"]
    assert second["edits"] == [{"content": "v1"}, {"content": "v2"}]
    assert second["editedAt"] >= first["editedAt"]
    same = admin.client.ok(EDIT, {"m": root, "x": "v3"})["messageEdit"]
    assert same == second  # an edit to the same content is not a new version
    node = admin.client.ok(
        "query($m: ID!) { node(id: $m) { ... on Message { content editedAt edits { content editedAt } } } }",
        {"m": root},
    )["node"]
    assert node["content"] == "v3"
    assert [e["content"] for e in node["edits"]] == ["v1", "v2"]
    assert node["edits"][0]["editedAt"] <= node["edits"][1]["editedAt"]


def test_tombstone_keeps_replies_reachable_and_drops_content_and_history(admin: Actor) -> None:
    cid = create_conversation(admin)
    model = Model()
    model.add(None, start_thread(admin, cid, "root"))
    model.add(0, reply(admin, model.ids[0], "doomed"))
    model.add(1, reply(admin, model.ids[1], "child of doomed"))
    model.add(2, reply(admin, model.ids[2], "grandchild"))
    admin.client.ok(EDIT, {"m": model.ids[1], "x": "doomed, edited"})
    deleted = admin.client.ok(DELETE, {"m": model.ids[1]})["messageDelete"]
    assert deleted["content"] == ""
    assert deleted["isDeleted"] is True
    assert deleted["deletedAt"] is not None
    assert deleted["childCount"] == 1
    assert deleted["edits"] == []
    assert tree(admin.client, model.ids[0]) == model.snapshot()
    nested = admin.client.ok(
        "query($m: ID!) { message(id: $m) { replies { content isDeleted replies { content replies { content } } } } }",
        {"m": model.ids[0]},
    )["message"]["replies"]
    assert nested == [
        {
            "content": "",
            "isDeleted": True,
            "replies": [{"content": "child of doomed", "replies": [{"content": "grandchild"}]}],
        }
    ]
    assert admin.client.code(DELETE, {"m": model.ids[1]}) == "CONFLICT"
    assert admin.client.code(EDIT, {"m": model.ids[1], "x": "revive"}) == "CONFLICT"
    assert (
        admin.client.code(
            'mutation($p: ID!) { messageReply(parentId: $p, input: {content: "x"}) { id } }',
            {"p": model.ids[1]},
        )
        == "CONFLICT"
    )
    # The grandchild still takes replies, and the counters keep the tombstone.
    reply(admin, model.ids[3])
    conv = admin.client.ok("query($c: ID!) { conversation(id: $c) { messageCount } }", {"c": cid})
    assert conv["conversation"]["messageCount"] == 5


def test_deleting_a_root_keeps_the_thread(admin: Actor) -> None:
    cid = create_conversation(admin)
    root = start_thread(admin, cid, "root")
    child = reply(admin, root, "child")
    admin.client.ok(DELETE, {"m": root})
    snap = admin.client.ok(
        "query($r: ID!) { threadTree(rootId: $r) { nodes { id content isDeleted } } }", {"r": root}
    )["threadTree"]["nodes"]
    assert snap == [
        {"id": root, "content": "", "isDeleted": True},
        {"id": child, "content": "child", "isDeleted": False},
    ]
    assert admin.client.ok(THREAD, {"r": root})["thread"]["replyCount"] == 1


# --- unread counts --------------------------------------------------------------------------------


def unread(actor: Actor, root: str) -> int:
    return int(actor.client.ok(THREAD, {"r": root})["thread"]["unreadCount"])


def listed_unread(actor: Actor, cid: str) -> int:
    nodes = actor.client.ok(
        "query($c: ID!) { conversation(id: $c) { threads { nodes { unreadCount } } } }", {"c": cid}
    )["conversation"]["threads"]["nodes"]
    return int(nodes[0]["unreadCount"])


def test_unread_counts_for_two_users_follow_replies_edits_deletes_and_marks(
    admin: Actor, make_user: Callable[..., Actor]
) -> None:
    alice, bob = admin, make_user(admin)
    cid = create_conversation(alice)
    join(alice, bob, cid)
    root = start_thread(alice, cid, "question")
    assert (unread(alice, root), unread(bob, root)) == (0, 1)  # nobody counts their own messages
    b1 = reply(bob, root, "b1")
    b2 = reply(bob, b1, "b2")
    assert (unread(alice, root), unread(bob, root)) == (2, 1)
    assert listed_unread(alice, cid) == 2
    assert bob.client.ok(MARK_READ, {"r": root})["threadMarkRead"] == {"unreadCount": 0, "replyCount": 2}
    assert (unread(alice, root), unread(bob, root)) == (2, 0)
    a1 = reply(alice, b2, "a1")
    assert (unread(alice, root), unread(bob, root)) == (2, 1)
    alice.client.ok(EDIT, {"m": a1, "x": "a1 edited"})  # an edit is not a new message
    assert (unread(alice, root), unread(bob, root)) == (2, 1)
    bob.client.ok(DELETE, {"m": b2})  # a deleted message is no longer unread
    assert (unread(alice, root), unread(bob, root)) == (1, 1)
    alice.client.ok(DELETE, {"m": a1})
    assert (unread(alice, root), unread(bob, root)) == (1, 0)
    assert alice.client.ok(MARK_READ, {"r": root})["threadMarkRead"]["unreadCount"] == 0
    assert listed_unread(alice, cid) == 0
    reply(bob, root, "b3")
    assert (unread(alice, root), unread(bob, root)) == (1, 0)
    assert listed_unread(bob, cid) == 0


def test_mark_read_takes_a_root_id(admin: Actor) -> None:
    cid = create_conversation(admin)
    child = reply(admin, start_thread(admin, cid))
    error = admin.client.error(MARK_READ, {"r": child})
    assert error["extensions"]["code"] == "BAD_USER_INPUT"


# --- limits and refusals --------------------------------------------------------------------------

ONE_MIB = 1024 * 1024


def test_content_over_one_mib_is_refused_naming_the_limit_and_exactly_one_mib_is_accepted(
    admin: Actor, loop: Loop, dsn: str
) -> None:
    from tests.api import snapshot

    cid = create_conversation(admin)
    root = start_thread(admin, cid)
    before = snapshot(loop, dsn)
    for content in ["x" * (ONE_MIB + 1), "\u00e9" * (ONE_MIB // 2 + 1)]:  # bytes count, not characters
        error = admin.client.error(
            "mutation($p: ID!, $x: String!) { messageReply(parentId: $p, input: {content: $x}) { id } }",
            {"p": root, "x": content},
        )
        assert error["extensions"]["code"] == "BAD_USER_INPUT"
        assert "1048576 bytes" in error["message"]
        assert error["extensions"]["limit"] == ONE_MIB
        assert admin.client.code(EDIT, {"m": root, "x": content}) == "BAD_USER_INPUT"
    assert snapshot(loop, dsn) == before
    big = admin.client.ok(
        "mutation($p: ID!, $x: String!) { messageReply(parentId: $p, input: {content: $x}) { id content } }",
        {"p": root, "x": "y" * ONE_MIB},
    )["messageReply"]
    assert len(big["content"]) == ONE_MIB


def test_reply_in_a_deleted_conversation_is_a_conflict_and_writes_nothing(
    admin: Actor, loop: Loop, dsn: str
) -> None:
    from tests.api import snapshot

    cid = create_conversation(admin)
    root = start_thread(admin, cid)
    admin.client.ok("mutation($c: ID!) { conversationDelete(id: $c) { id } }", {"c": cid})
    before = snapshot(loop, dsn)
    error = admin.client.error(
        'mutation($p: ID!) { messageReply(parentId: $p, input: {content: "x"}) { id } }', {"p": root}
    )
    assert error["extensions"]["code"] == "CONFLICT"
    assert error["message"] == "The conversation is deleted; restore it before writing to it"
    assert (
        admin.client.code(
            'mutation($c: ID!) { threadStart(conversationId: $c, input: {content: "x"}) { id } }', {"c": cid}
        )
        == "CONFLICT"
    )
    assert snapshot(loop, dsn) == before


def test_viewer_cannot_write_to_a_thread(
    admin: Actor, make_user: Callable[..., Actor], loop: Loop, dsn: str
) -> None:
    from tests.api import snapshot

    viewer = make_user(admin)
    cid = create_conversation(admin)
    root = start_thread(admin, cid)
    join(admin, viewer, cid, "VIEWER")
    before = snapshot(loop, dsn)
    for role in ["USER", "ASSISTANT"]:
        error = viewer.client.error(REPLY_FULL, {"p": root, "i": {"content": "x", "role": role}})
        assert error["extensions"]["code"] == "FORBIDDEN"
    assert snapshot(loop, dsn) == before
    assert tree(viewer.client, root)["totalCount"] == 1


@pytest.fixture(scope="module")
def shallow(dsn: str) -> Iterator[ServerThread]:
    """A second in-process server on the session database, with replies limited to 5 levels."""
    srv = ServerThread(harness.test_settings(dsn, migrate_on_start=False, thread_max_depth=5))
    srv.start()
    yield srv
    srv.stop()


def test_replies_beyond_the_depth_limit_are_refused(
    admin: Actor, shallow: ServerThread, loop: Loop, dsn: str
) -> None:
    from tests.api import snapshot

    client = Client(shallow.url, admin.api_key)
    try:
        cid = create_conversation(admin)
        chain = [start_thread(admin, cid)]
        for _ in range(5):
            chain.append(
                client.ok(
                    'mutation($p: ID!) { messageReply(parentId: $p, input: {content: "x"}) { id } }',
                    {"p": chain[-1]},
                )["messageReply"]["id"]
            )
        before = snapshot(loop, dsn)
        error = client.error(
            'mutation($p: ID!) { messageReply(parentId: $p, input: {content: "x"}) { id } }', {"p": chain[-1]}
        )
        assert error["extensions"]["code"] == "BAD_USER_INPUT"
        assert error["extensions"]["limit"] == 5
        assert "5 levels" in error["message"]
        assert snapshot(loop, dsn) == before
        # A sibling at the limit is still fine.
        client.ok(
            'mutation($p: ID!) { messageReply(parentId: $p, input: {content: "x"}) { depth } }',
            {"p": chain[-2]},
        )
    finally:
        client.close()


# --- statement counts: tree reads never issue a query per node ------------------------------------


@pytest.fixture
def quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    """Count only statements of requests: the servers' own background tasks (stream hub polling, upkeep;
    all named `threadline-...`) share the process-wide counter and would make the counts noisy."""
    import asyncio

    from threadline.db import database

    counted = database._count

    def count_requests_only() -> None:
        task = asyncio.current_task()
        if task is not None and task.get_name().startswith("threadline-"):
            return
        counted()

    monkeypatch.setattr(database, "_count", count_requests_only)


def statements(client: Client, query: str, variables: dict[str, Any]) -> int:
    """SQL statements one request costs, counted by the server for that request alone."""
    return client.statements(query, variables)


TREE_ALL = """query($r: ID!) { threadTree(rootId: $r) { totalCount nodes { id parentId depth path childCount role
  content createdAt author { id displayName } edits { content } chunks { index } } } }"""
NESTED_ALL = """query($r: ID!) { thread(rootId: $r) { replyCount unreadCount root { id author { id }
  replies { id author { id } replies { id edits { content } replies { id replies { id replies { id content } } } } } } } }"""


def test_tree_reads_cost_the_same_statements_for_10_and_1000_nodes(
    admin: Actor, loop: Loop, dsn: str, quiet: None
) -> None:
    cid = create_conversation(admin)
    small = seed_tree(loop, dsn, admin, cid, random_parents(10, seed=3))
    large = seed_tree(loop, dsn, admin, cid, random_parents(1000, seed=4))
    deep_small = next(i for i in range(10) if small.depth(i) >= 2 and small.children(i))
    deep_large = next(i for i in range(1000) if large.depth(i) >= 2 and len(large.dfs(i)) > 100)
    for query, args_small, args_large in [
        (TREE_ALL, {"r": small.ids[0]}, {"r": large.ids[0]}),
        (TREE_ALL, {"r": small.ids[deep_small]}, {"r": large.ids[deep_large]}),
        (NESTED_ALL, {"r": small.ids[0]}, {"r": large.ids[0]}),
        (NESTED_5, {"r": small.ids[deep_small]}, {"r": large.ids[deep_large]}),
    ]:
        few, many = statements(admin.client, query, args_small), statements(admin.client, query, args_large)
        assert few == many, query
        assert many <= 9, query  # auth, rate limit, access, the range scan, and one per nested list
    assert admin.client.ok(TREE_ALL, {"r": large.ids[0]})["threadTree"]["totalCount"] == 1000


def seed_conversations(loop: Loop, dsn: str, owner: Actor, member: Actor, n: int) -> None:
    """`n` conversations of `owner` with `member` in them, each with three threads of four messages."""
    tenant, owner_id, member_id = uuid_of(owner.tenant_id), uuid_of(owner.user_id), uuid_of(member.user_id)

    async def insert() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            ids = [uuid.uuid4() for _ in range(n)]
            await conn.executemany(
                """INSERT INTO conversation (id, tenant_id, owner_id, title, description, tags, status,
                       max_history_messages, message_count, token_count)
                   VALUES ($1, $2, $3, $4, '', $5, 'ACTIVE', 20, 0, 0)""",
                [(c, tenant, owner_id, f"c{i}", ["t"]) for i, c in enumerate(ids)],
            )
            await conn.executemany(
                "INSERT INTO participant (id, tenant_id, conversation_id, user_id, role) VALUES ($1, $2, $3, $4, $5)",
                [
                    (uuid.uuid4(), tenant, c, u, r)
                    for c in ids
                    for u, r in ((owner_id, "OWNER"), (member_id, "MEMBER"))
                ],
            )
            # Three threads of four messages in each conversation.
            threads = [tree_rows(tenant, member_id, c, [None, 0, 1, 1]) for c in ids for _ in range(3)]
            await conn.executemany(MESSAGE_INSERT, [row for _, rows, _ in threads for row in rows])
            await conn.executemany(THREAD_INSERT, [thread for _, _, thread in threads])
        finally:
            await conn.close()

    loop.run(insert())


LIST_ALL = """query($n: Int) { conversations(first: $n) { totalCount pageInfo { hasNextPage endCursor }
  nodes { id title tags status messageCount lastActivityAt owner { id displayName }
    participants { role user { id email } }
    threads(first: 2) { totalCount nodes { replyCount unreadCount root { id content author { id } } } }
    messages(first: 3) { totalCount nodes { id path } } } } }"""


@pytest.mark.parametrize("who", ["owner", "member"])
def test_conversation_list_costs_the_same_statements_whatever_first_is(
    admin: Actor, make_user: Callable[..., Actor], loop: Loop, dsn: str, quiet: None, who: str
) -> None:
    member = make_user(admin, team="t")
    seed_conversations(loop, dsn, admin, member, 60)
    caller = admin if who == "owner" else member
    costs = {n: statements(caller.client, LIST_ALL, {"n": n}) for n in (1, 10, 50)}
    assert costs[1] == costs[10] == costs[50], costs
    assert costs[50] <= 12  # includes the rate-limit check of the request
    nodes = caller.client.ok(LIST_ALL, {"n": 50})["conversations"]["nodes"]
    assert len(nodes) == 50
    assert {
        (len(n["threads"]["nodes"]), n["threads"]["totalCount"], len(n["messages"]["nodes"])) for n in nodes
    } == {(2, 3, 3)}
    assert {n["messages"]["totalCount"] for n in nodes} == {3 * 4}


def test_conversation_messages_and_threads_pages_cost_the_same_whatever_first_is(
    admin: Actor, loop: Loop, dsn: str, quiet: None
) -> None:
    cid = create_conversation(admin)
    for seed in range(12):
        seed_tree(loop, dsn, admin, cid, random_parents(8, seed=seed))
    messages = """query($c: ID!, $n: Int) { conversation(id: $c) { messages(first: $n) {
      nodes { id path author { id } edits { content } } } } }"""
    threads = """query($c: ID!, $n: Int) { conversation(id: $c) { threads(first: $n) {
      nodes { unreadCount replyCount root { id author { id } } } } } }"""
    for query in (messages, threads):
        few, many = (
            statements(admin.client, query, {"c": cid, "n": 2}),
            statements(admin.client, query, {"c": cid, "n": 12}),
        )
        assert few == many, query
