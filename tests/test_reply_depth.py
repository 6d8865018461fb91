"""A reply's cost does not grow with the depth it is written at beyond the path it carries (threads.service).

- A chain of replies written in one transaction (a gateway call's new messages: `add_reply` each under the last)
  reads as many message rows for its 150th reply as for its 5th: the ancestors of each are its parent's, known
  from the reply before, not looked up again (it read one row per level per reply: O(depth^2) over the chain).
- A single reply deep in a thread looks up its ancestors once, sending and reading O(depth) bytes (it sent every
  ancestor's whole path and read each back: O(depth^2) bytes).
- Path ids stay exact at depth: in the reply, in a later transaction, in the API's answer and in the event.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.api import create_conversation, start_thread
from tests.harness import Actor, Loop, ServerThread
from tests.test_streaming import live
from tests.ws import CONVERSATION_EVENTS, WsClient
from threadline.auth.principal import Principal, Role
from threadline.db import Database, count_request_statements
from threadline.db import database as db_module
from threadline.ids import Kind, decode_id, encode_id
from threadline.settings import Settings
from threadline.threads import repository as threads
from threadline.threads import service
from threadline.threads.paths import encode_rank

CHAIN = 150
MESSAGE_ROWS_READ = """SELECT coalesce(sum(seq_tup_read + coalesce(idx_tup_fetch, 0)), 0)
                       FROM pg_stat_xact_user_tables WHERE relname = 'message'"""
REPLY = (
    "mutation($p: ID!, $x: String!) { messageReply(parentId: $p, input: {content: $x}) { id depth path } }"
)


@pytest.fixture
def pool(dsn: str, loop: Loop) -> Iterator[Database]:
    db = loop.run(Database.connect(dsn, 1, 2))
    yield db
    loop.run(db.close())


def _principal(admin: Actor) -> Principal:
    return Principal(
        decode_id(admin.tenant_id, Kind.TENANT), decode_id(admin.user_id, Kind.USER), Role.ADMIN, None
    )


def _settings(server: ServerThread) -> Settings:
    settings: Settings = server.app.state.services.settings
    return settings


def production_like(loop: Loop, pool: Database, admin: Actor) -> None:
    """Plans as on a tenant of some size: 3,000 more messages of the tenant (another thread, by COPY) and fresh
    statistics. On a test's near-empty table with the statistics of an empty one, the planner reads a message by
    id through the tenant's index (every message of the tenant), which would hide what depth costs."""
    principal = _principal(admin)
    root = decode_id(start_thread(admin, create_conversation(admin)), Kind.MESSAGE)

    async def work() -> None:
        async with pool.connection() as conn:
            conversation_id = await conn.fetchval("SELECT conversation_id FROM message WHERE id = $1", root)
            await conn.copy_records_to_table(
                "message",
                records=[
                    (
                        uuid.uuid4(),
                        principal.tenant_id,
                        conversation_id,
                        root,
                        root,
                        1,
                        encode_rank(n),
                        "USER",
                        "x",
                    )
                    for n in range(3000)
                ],
                columns=[
                    "id",
                    "tenant_id",
                    "conversation_id",
                    "root_id",
                    "parent_id",
                    "depth",
                    "path",
                    "role",
                    "content",
                ],
            )
            await conn.execute("ANALYZE message")

    loop.run(work())


def chain_in_one_transaction(
    loop: Loop, pool: Database, settings: Settings, principal: Principal, root_id: uuid.UUID, length: int
) -> tuple[list[uuid.UUID], list[int], list[int]]:
    """`length` replies, each to the previous, in one transaction: the ids (root first), and for each reply the
    message rows its transaction read and the statements it sent while `add_reply` wrote it."""

    async def work() -> tuple[list[uuid.UUID], list[int], list[int]]:
        ids = [root_id]
        rows_read: list[int] = []
        statements: list[int] = []
        async with pool.transaction() as tx:
            parent = await threads.message(tx, principal.tenant_id, root_id, lock=True)
            assert parent is not None
            for n in range(length):
                read_before = await tx.conn.fetchval(MESSAGE_ROWS_READ)
                sent = count_request_statements()  # this task's statements (the server shares the process)
                row, path = await service.add_reply(
                    tx,
                    settings,
                    principal.tenant_id,
                    parent,
                    service.MessageDraft(content=f"r{n}"),
                    principal.user_id,
                )
                statements.append(sent[0])
                rows_read.append(await tx.conn.fetchval(MESSAGE_ROWS_READ) - read_before)
                ids.append(row["id"])
                assert row["depth"] == n + 1
                assert path == ids  # root first, the reply itself last
                parent = row
        return ids, rows_read, statements

    return loop.run(work())


def test_a_chain_of_replies_in_one_transaction_reads_as_many_rows_deep_as_shallow(
    admin: Actor, server: ServerThread, loop: Loop, pool: Database
) -> None:
    principal = _principal(admin)
    production_like(loop, pool, admin)
    root = decode_id(start_thread(admin, create_conversation(admin)), Kind.MESSAGE)
    ids, rows_read, statements = chain_in_one_transaction(
        loop, pool, _settings(server), principal, root, CHAIN
    )

    shallow, deep = rows_read[2:10], rows_read[-10:]  # replies at depth 3..10, and at depth 141..150
    assert max(deep) <= max(shallow), (shallow, deep)
    assert max(statements[2:]) == min(statements[2:]), statements  # the same statements at every depth

    # The stored tree agrees: every message's parent is the one before it, and a later transaction (which knows
    # nothing of the chain) finds the same path ids for its end.
    async def later() -> list[uuid.UUID]:
        async with pool.transaction() as tx:
            last = await threads.message(tx, principal.tenant_id, ids[-1])
            assert last is not None and last["depth"] == CHAIN
            (path,) = await service.path_ids(tx, principal.tenant_id, [last])
            return path

    assert loop.run(later()) == ids


class _Traffic:
    """The bytes values a transaction's statements send as parameters and get back in their rows."""

    def __init__(self) -> None:
        self.sent = 0
        self.received = 0

    @staticmethod
    def size(value: Any) -> int:
        if isinstance(value, bytes | bytearray | memoryview):
            return len(value)
        if isinstance(value, list | tuple):
            return sum(_Traffic.size(v) for v in value)
        return 0

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for name in ("fetch", "fetchrow", "fetchval", "execute"):
            original = getattr(db_module.Transaction, name)

            async def counted(tx: Any, sql: str, *args: Any, _original: Any = original) -> Any:
                self.sent += self.size(list(args))
                result = await _original(tx, sql, *args)
                rows = result if isinstance(result, list) else [result]
                for row in rows:
                    if hasattr(row, "values"):
                        self.received += self.size(list(row.values()))
                return result

            monkeypatch.setattr(db_module.Transaction, name, counted)


def test_one_reply_deep_in_a_thread_moves_bytes_linear_in_its_depth_and_its_path_is_exact(
    admin: Actor,
    server: ServerThread,
    loop: Loop,
    pool: Database,
    ws: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    principal = _principal(admin)
    settings = _settings(server)
    cid = create_conversation(admin)
    root = decode_id(start_thread(admin, cid), Kind.MESSAGE)
    ids, _, _ = chain_in_one_transaction(loop, pool, settings, principal, root, CHAIN)

    # One reply in its own transaction, under the chain's last message (depth 150): its path's bytes go once.
    traffic = _Traffic()
    traffic.install(monkeypatch)
    row, path = loop.run(
        service.reply(pool, settings, principal, ids[-1], service.MessageDraft(content="deep"))
    )
    monkeypatch.undo()
    assert path == [*ids, row["id"]]
    depth = row["depth"]
    assert depth == CHAIN + 1
    # The new path (depth bytes) goes out with the insert and comes back with its row, the parent's in its lock,
    # the ancestors' lookup sends it once more: a few times the depth, not the sum of the ancestors' paths
    # (depth^2 / 2 = 11,325 bytes each way here).
    assert traffic.sent <= 4 * depth + 512, traffic.sent
    assert traffic.received <= 4 * depth + 512, traffic.received

    # Over the API, at depth: the answer and the event carry the exact path.
    client: WsClient = ws(admin)
    client.subscribe(CONVERSATION_EVENTS, {"c": cid, "s": live(admin)})
    deeper = admin.client.ok(REPLY, {"p": encode_id(Kind.MESSAGE, row["id"]), "x": "deeper"})["messageReply"]
    expected = [encode_id(Kind.MESSAGE, m) for m in [*ids, row["id"]]] + [deeper["id"]]
    assert deeper["depth"] == CHAIN + 2 and deeper["path"] == expected
    event = client.events(1, ignore=("presence.update", "unread.update", "membership.changed"))[0]
    assert event["changedMessage"]["path"] == expected
