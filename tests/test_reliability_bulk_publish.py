"""Bulk writers publish at their end (issue 23 item 2): an import's transaction holds back no stream, not even
the viewer streams that keep the global order, until its last statement, and its events still arrive exactly
once, in the order announced."""

from __future__ import annotations

from tests.harness import Actor, Loop, ServerThread
from tests.test_streaming import REPLY, START, conversation, live
from tests.ws import CONVERSATION_EVENTS, VIEWER_EVENTS, WsClient
from threadline.ids import Kind, decode_id


def test_a_bulk_writer_holds_back_no_viewer_stream_until_it_publishes(
    admin: Actor, make_tenant: object, server: ServerThread, loop: Loop, dsn: str
) -> None:
    from threadline.db import Database
    from threadline.events.kinds import EventType
    from threadline.events.publish import deferring, publish

    other = make_tenant("Other")  # type: ignore[operator]
    slow = conversation(admin)
    theirs = conversation(other)
    root = other.client.ok(START, {"c": theirs, "x": "root"})["threadStart"]["id"]
    mine = WsClient(server.ws_url, admin.api_key)
    viewer = WsClient(server.ws_url, other.api_key)
    db = loop.run(Database.connect(dsn, 1, 2))  # one connection for the writer, one to look at the locks
    conn = loop.run(db.pool.acquire())
    transaction = conn.transaction()
    try:
        mine.subscribe(CONVERSATION_EVENTS, {"c": slow, "s": live(admin)})
        viewer.subscribe(VIEWER_EVENTS, {"s": live(other)})
        loop.run(transaction.start())
        block = deferring(conn)
        loop.run(block.__aenter__())
        tenant = decode_id(admin.tenant_id, Kind.TENANT)
        for n in range(3):  # a bulk writer between its events: they are collected, no id is drawn
            ids = loop.run(
                publish(
                    conn,
                    tenant,
                    EventType.TYPING_UPDATE,
                    conversation_id=decode_id(slow, Kind.CONVERSATION),
                    payload={"userId": admin.user_id, "isTyping": n % 2 == 0},
                )
            )
            assert ids == 0
        # Nothing drawn, nothing locked: the writer holds no floor and no bucket (which would hold streams back).
        held = loop.run(
            db.fetchval(
                "SELECT count(*) FROM pg_locks WHERE pid = $1 AND locktype = 'advisory'",
                conn.get_server_pid(),
            )
        )
        assert held == 0
        # Another tenant's reply reaches its viewer stream while the bulk transaction is still open (before,
        # the writer's first event held every viewer stream back until its commit: this waited forever).
        other.client.ok(REPLY, {"p": root, "x": "not held back"})
        got = viewer.events(1, timeout=30, ignore=("presence.update", "unread.update"))
        assert got[0]["changedMessage"]["content"] == "not held back"
        loop.run(block.__aexit__(None, None, None))  # one statement publishes the three, still uncommitted
        mine.expect_quiet(0.3)
        loop.run(transaction.commit())
        events = mine.events(3, timeout=30)
        assert [e["type"] for e in events] == ["typing.update"] * 3
        assert [e["isTyping"] for e in events] == [True, False, True]
        admin.client.ok(START, {"c": slow, "x": "after"})
        assert mine.events(1)[0]["type"] == "thread.new"
        mine.expect_quiet(0.3)
    finally:
        mine.close()
        viewer.close()
        if conn.is_in_transaction():  # rolled back if the test failed midway
            loop.run(transaction.rollback())
        loop.run(db.pool.release(conn))
        db.pool.terminate()


def test_a_bulk_writer_that_fails_publishes_nothing(admin: Actor, loop: Loop, dsn: str) -> None:
    from threadline.db import Database
    from threadline.events.kinds import EventType
    from threadline.events.publish import deferring, publish

    cid = conversation(admin)

    async def fail() -> None:
        db = await Database.connect(dsn, 1, 1)
        try:
            async with db.transaction() as tx, deferring(tx):
                await publish(
                    tx,
                    decode_id(admin.tenant_id, Kind.TENANT),
                    EventType.TYPING_UPDATE,
                    conversation_id=decode_id(cid, Kind.CONVERSATION),
                    payload={"userId": admin.user_id, "isTyping": True},
                )
                raise RuntimeError("the import failed midway")
        except RuntimeError:
            pass
        finally:
            await db.close()

    loop.run(fail())

    async def count() -> int:
        db = await Database.connect(dsn, 1, 1)
        try:
            return int(
                await db.fetchval(
                    "SELECT count(*) FROM stream_event WHERE conversation_id = $1",
                    decode_id(cid, Kind.CONVERSATION),
                )
            )
        finally:
            await db.close()

    assert loop.run(count()) == 0
