"""Safe cursors and bounded stalls: a cursor never passes an id that an open transaction may still commit,
one open writer holds back only its own conversations, and the replay memo is bounded by bytes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tests.harness import Actor, Client, Loop, ServerThread, serve_process, test_settings
from tests.test_streaming import REPLY, START, conversation, live
from tests.ws import CONVERSATION_EVENTS, VIEWER_EVENTS, WsClient, position
from threadline.ids import Kind, decode_id


class OpenWriter:
    """A transaction that published one event and stays open until `commit()` (or rollback on exit)."""

    def __init__(self, loop: Loop, dsn: str, actor: Actor, cid: str) -> None:
        from threadline.db import Database
        from threadline.events.kinds import EventType
        from threadline.events.publish import publish

        self.loop = loop
        self.db = loop.run(Database.connect(dsn, 1, 1))
        self.conn = loop.run(self.db.pool.acquire())
        self.transaction = self.conn.transaction()
        loop.run(self.transaction.start())
        self.event_id = loop.run(
            publish(
                self.conn,
                decode_id(actor.tenant_id, Kind.TENANT),
                EventType.TYPING_UPDATE,
                conversation_id=decode_id(cid, Kind.CONVERSATION),
                payload={"userId": actor.user_id, "isTyping": True},
            )
        )
        self.open = True

    def commit(self) -> None:
        self.loop.run(self.transaction.commit())
        self.open = False

    def close(self) -> None:
        if self.open:
            self.loop.run(self.transaction.rollback())
        self.loop.run(self.db.pool.release(self.conn))
        self.db.pool.terminate()


@contextmanager
def open_writer(loop: Loop, dsn: str, actor: Actor, cid: str) -> Iterator[OpenWriter]:
    writer = OpenWriter(loop, dsn, actor, cid)
    try:
        yield writer
    finally:
        writer.close()


@contextmanager
def second_process(dsn: str) -> Iterator[str]:
    """`threadline serve` in a new process on the same database; yields its base URL once ready."""
    with serve_process(dsn) as url:
        yield url


def conversation_in_another_bucket(actor: Actor, cid: str) -> str:
    """A conversation whose events an open writer on `cid` cannot hold back (buckets are hashed)."""
    from threadline.events.publish import bucket_of

    taken = bucket_of(decode_id(cid, Kind.CONVERSATION))
    for _ in range(20):
        other = conversation(actor)
        if bucket_of(decode_id(other, Kind.CONVERSATION)) != taken:
            return other
    raise AssertionError("no conversation in another bucket")


def test_a_process_started_while_a_publisher_is_open_delivers_its_event_and_its_cursor_does_not_skip_it(
    admin: Actor, server: ServerThread, loop: Loop, dsn: str
) -> None:
    def at(cursor: str) -> int:  # the position an opaque cursor names (both processes share the key)
        return position(server, admin.tenant_id, cursor)

    cid = conversation(admin)
    root = admin.client.ok(START, {"c": cid, "x": "root"})["threadStart"]["id"]
    with open_writer(loop, dsn, admin, cid) as writer:
        admin.client.ok(REPLY, {"p": root, "x": "committed meanwhile"})  # a later id, committed
        with second_process(dsn) as url:
            other = Client(url, admin.api_key)
            fresh = WsClient(url.replace("http", "ws") + "/graphql", admin.api_key)
            resumed = WsClient(url.replace("http", "ws") + "/graphql", admin.api_key)
            try:
                cursor = other.ok("{ streamCursor }")["streamCursor"]
                assert at(cursor) < writer.event_id  # the open transaction's id may still commit
                fresh.subscribe(CONVERSATION_EVENTS, {"c": cid})
                resumed.subscribe(CONVERSATION_EVENTS, {"c": cid, "s": cursor})
                fresh.expect_quiet(0.3)  # nothing is delivered before the open id settles
                writer.commit()
                other.ok(REPLY, {"p": root, "x": "after"})
                for client in (fresh, resumed):
                    events = client.events(3)
                    assert [e["type"] for e in events] == [
                        "typing.update",
                        "thread.activity",
                        "thread.activity",
                    ]
                    assert at(events[0]["cursor"]) == writer.event_id
                    assert [e["changedMessage"]["content"] for e in events[1:]] == [
                        "committed meanwhile",
                        "after",
                    ]
            finally:
                fresh.close()
                resumed.close()
                other.close()


def test_stream_cursor_stays_below_an_open_publisher(
    admin: Actor, server: ServerThread, loop: Loop, dsn: str
) -> None:
    cid = conversation(admin)
    with open_writer(loop, dsn, admin, cid) as writer:
        admin.client.ok(START, {"c": cid, "x": "later"})
        assert position(server, admin.tenant_id, live(admin)) < writer.event_id
        writer.commit()
    assert position(server, admin.tenant_id, live(admin)) > writer.event_id


def test_an_open_writer_on_one_conversation_does_not_hold_back_another(
    admin: Actor, server: ServerThread, loop: Loop, dsn: str
) -> None:
    slow = conversation(admin)
    other = conversation_in_another_bucket(admin, slow)
    on_other = WsClient(server.ws_url, admin.api_key)
    on_slow = WsClient(server.ws_url, admin.api_key)
    viewer = WsClient(server.ws_url, admin.api_key)
    try:
        on_other.subscribe(CONVERSATION_EVENTS, {"c": other, "s": live(admin)})
        on_slow.subscribe(CONVERSATION_EVENTS, {"c": slow, "s": live(admin)})
        viewer.subscribe(VIEWER_EVENTS, {"s": live(admin)})
        with open_writer(loop, dsn, admin, slow) as writer:
            started = admin.client.ok(START, {"c": other, "x": "not held back"})["threadStart"]["id"]
            # Arrives while the writer on the other conversation is still open (an ordering assertion).
            got = on_other.events(1, timeout=30)
            assert writer.open
            assert got[0]["type"] == "thread.new" and got[0]["thread"]["root"]["id"] == started
            assert position(server, admin.tenant_id, got[0]["cursor"]) > writer.event_id
            # Its own conversation and viewer streams (which span conversations) keep the global order.
            admin.client.ok(START, {"c": slow, "x": "behind the writer"})
            on_slow.expect_quiet(0.5)
            writer.commit()
            slow_events = on_slow.events(2)
            assert [e["type"] for e in slow_events] == ["typing.update", "thread.new"]
            assert position(server, admin.tenant_id, slow_events[0]["cursor"]) == writer.event_id
            viewer_events = viewer.events(2, ignore=("presence.update", "typing.update"))
            cursors = [position(server, admin.tenant_id, e["cursor"]) for e in viewer_events]
            assert cursors == sorted(cursors)
            assert [e["thread"]["root"]["content"] for e in viewer_events if e["type"] == "thread.new"] == [
                "not held back",
                "behind the writer",
            ]
        # Nothing is delivered twice when the cursor later passes the early event.
        admin.client.ok(START, {"c": other, "x": "next"})
        assert on_other.events(1)[0]["thread"]["root"]["content"] == "next"
        on_other.expect_quiet(0.3)
    finally:
        for client in (on_other, on_slow, viewer):
            client.close()


def test_a_subscription_resumed_from_an_early_cursor_misses_nothing(
    admin: Actor, server: ServerThread, loop: Loop, dsn: str
) -> None:
    slow = conversation(admin)
    other = conversation_in_another_bucket(admin, slow)
    root = admin.client.ok(START, {"c": other, "x": "root"})["threadStart"]["id"]
    first = WsClient(server.ws_url, admin.api_key)
    try:
        first.subscribe(CONVERSATION_EVENTS, {"c": other, "s": live(admin)})
        with open_writer(loop, dsn, admin, slow):
            admin.client.ok(REPLY, {"p": root, "x": "early"})
            cursor = first.events(1, timeout=30)[0]["cursor"]
            first.close()
            admin.client.ok(REPLY, {"p": root, "x": "while away"})
            again = WsClient(server.ws_url, admin.api_key)
            try:
                again.subscribe(CONVERSATION_EVENTS, {"c": other, "s": cursor})
                admin.client.ok(REPLY, {"p": root, "x": "live"})
                got = [e["changedMessage"]["content"] for e in again.events(2, timeout=30)]
                assert got == ["while away", "live"]
                again.expect_quiet(0.3)
            finally:
                again.close()
    finally:
        first.close()


def test_the_event_memo_is_bounded_by_bytes(admin: Actor, dsn: str) -> None:
    srv = ServerThread(test_settings(dsn, migrate_on_start=False, event_memo_max_bytes=1_000_000))
    srv.start()
    try:
        owner = Client(srv.url, admin.api_key)
        client = WsClient(srv.ws_url, admin.api_key)
        try:
            cid = owner.ok('mutation { conversationCreate(input: {title: "big"}) { id } }')[
                "conversationCreate"
            ]["id"]
            root = owner.ok(START, {"c": cid, "x": "root"})["threadStart"]["id"]
            client.subscribe(
                CONVERSATION_EVENTS, {"c": cid, "s": owner.ok("{ streamCursor }")["streamCursor"]}
            )
            big = "x" * 200_000
            for _ in range(20):
                owner.ok(REPLY, {"p": root, "x": big})
            got = client.events(20, timeout=30)
            assert all(e["changedMessage"]["content"] == big for e in got)
            memo: Any = srv.app.state.services.hub.shared_events
            assert 0 < memo.bytes <= 1_000_000
            assert len(memo) < 20
        finally:
            client.close()
            owner.close()
    finally:
        srv.stop()


def test_pool_connections_have_statement_and_idle_transaction_timeouts(server: ServerThread) -> None:
    import asyncio

    services: Any = server.app.state.services
    settings = services.settings
    db = services.db
    query = (
        "SELECT (SELECT setting FROM pg_settings WHERE name = 'statement_timeout') AS s, "
        "(SELECT setting FROM pg_settings WHERE name = 'idle_in_transaction_session_timeout') AS i"
    )
    # The pool belongs to the server's event loop: ask it there.
    row = asyncio.run_coroutine_threadsafe(db.fetchrow(query), db.pool._loop).result(timeout=10)
    assert settings.db_statement_timeout_seconds > 0 and settings.db_idle_in_transaction_timeout_seconds > 0
    assert (row["s"], row["i"]) == (
        str(int(settings.db_statement_timeout_seconds * 1000)),
        str(int(settings.db_idle_in_transaction_timeout_seconds * 1000)),
    )
