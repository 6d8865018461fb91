"""Streaming under stress: dropped LISTEN, two processes, slow consumers, retention, hostile sockets."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import asyncpg
import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from tests.harness import Actor, Client, Loop, ServerThread, free_port, test_settings
from tests.test_streaming import CREATE, REPLY, START, conversation, join, live
from tests.ws import CONVERSATION_EVENTS, StalledWsClient, WsClient, position


@pytest.fixture(scope="module")
def tuned(dsn: str) -> Iterator[ServerThread]:
    """A second in-process server with tiny queues and timeouts, sharing the session database."""
    srv = ServerThread(
        test_settings(
            dsn,
            migrate_on_start=False,
            subscriber_queue_size=4,
            presence_timeout_seconds=1.0,
            typing_timeout_seconds=1.0,
            ws_init_timeout_seconds=1.0,
            ws_max_operations=5,
            maintenance_interval_seconds=0.2,
        )
    )
    srv.start()
    yield srv
    srv.stop()


def test_every_event_arrives_after_the_listen_connection_is_terminated(
    admin: Actor, server: ServerThread, loop: Loop, dsn: str
) -> None:
    cid = conversation(admin)
    root = admin.client.ok(START, {"c": cid, "x": "root"})["threadStart"]["id"]
    client = WsClient(server.ws_url, admin.api_key)
    try:
        client.subscribe(CONVERSATION_EVENTS, {"c": cid, "s": live(admin)})
        admin.client.ok(REPLY, {"p": root, "x": "before"})
        assert client.events(1)[0]["changedMessage"]["content"] == "before"
        hub = server.app.state.services.hub
        pid = hub.backend.connection_pid()
        assert pid is not None

        async def kill() -> None:
            conn = await asyncpg.connect(dsn)
            try:
                assert await conn.fetchval("SELECT pg_terminate_backend($1)", pid)
            finally:
                await conn.close()

        loop.run(kill())
        for i in range(10):
            admin.client.ok(REPLY, {"p": root, "x": f"after-{i}"})
        got = [e["changedMessage"]["content"] for e in client.events(10, timeout=20)]
        assert got == [f"after-{i}" for i in range(10)]
        deadline = time.monotonic() + 10
        while hub.backend.connection_pid() in (None, pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert hub.backend.connection_pid() not in (None, pid), "the hub did not reconnect its LISTEN"
        admin.client.ok(REPLY, {"p": root, "x": "live again"})
        assert client.events(1)[0]["changedMessage"]["content"] == "live again"
    finally:
        client.close()


def test_subscriber_on_one_process_sees_writes_made_through_another(
    admin: Actor, server: ServerThread, dsn: str
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": dsn,
        "THREADLINE_MIGRATE_ON_START": "false",
        "THREADLINE_PORT": str(port),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "threadline.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "second server did not start"
            time.sleep(0.1)
        cid = conversation(admin)
        client = WsClient(server.ws_url, admin.api_key)
        other = Client(f"http://127.0.0.1:{port}", admin.api_key)
        try:
            client.subscribe(CONVERSATION_EVENTS, {"c": cid, "s": live(admin)})
            root = other.ok(START, {"c": cid, "x": "from the other process"})["threadStart"]["id"]
            for i in range(5):
                other.ok(REPLY, {"p": root, "x": str(i)})
            events = client.events(6)
            assert events[0]["thread"]["root"]["content"] == "from the other process"
            assert [e["changedMessage"]["content"] for e in events[1:]] == ["0", "1", "2", "3", "4"]
        finally:
            client.close()
            other.close()
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_large_event_content_is_delivered_intact(admin: Actor, server: ServerThread) -> None:
    cid = conversation(admin)
    root = admin.client.ok(START, {"c": cid, "x": "root"})["threadStart"]["id"]
    big = "é" * 30_000 + "end"  # far beyond NOTIFY's 8000-byte limit
    client = WsClient(server.ws_url, admin.api_key)
    try:
        client.subscribe(CONVERSATION_EVENTS, {"c": cid, "s": live(admin)})
        admin.client.ok(REPLY, {"p": root, "x": big})
        assert client.events(1)[0]["changedMessage"]["content"] == big
    finally:
        client.close()


def test_slow_consumer_gets_an_error_and_resumes_from_its_cursor(admin: Actor, tuned: ServerThread) -> None:
    owner = Client(tuned.url, admin.api_key)
    cid = owner.ok(CREATE, {"t": "slow"})["conversationCreate"]["id"]
    root = owner.ok(START, {"c": cid, "x": "root"})["threadStart"]["id"]
    stalled = StalledWsClient(tuned.ws_url, admin.api_key, CONVERSATION_EVENTS, {"c": cid})
    try:
        hub = tuned.app.state.services.hub
        deadline = time.monotonic() + 10
        while (
            not any(s.user_id for subs in hub._by_conversation.values() for s in subs)
            and time.monotonic() < deadline
        ):
            time.sleep(0.05)
        payload = "x" * 200_000
        sent = 0
        while not any(s.overflowed for subs in hub._by_conversation.values() for s in subs):
            owner.ok(REPLY, {"p": root, "x": payload})
            sent += 1
            assert sent < 200, "the subscriber never overflowed"
        # The stream ends with an error event whose cursor is the last event delivered.
        messages = stalled.read_until_complete()
        events = [m["payload"]["data"]["conversationEvents"] for m in messages if m["type"] == "next"]
        delivered = [e for e in events if e["type"] == "thread.activity"]
        error = events[-1]
        assert error["type"] == "error" and error["code"] == "SLOW_CONSUMER"
        assert error["cursor"] == events[-2]["cursor"]
        assert len(delivered) < sent
        # Resuming from that cursor yields exactly the replies it missed.
        for _ in range(3):
            owner.ok(REPLY, {"p": root, "x": "after"})
        resumed = WsClient(tuned.ws_url, admin.api_key)
        try:
            resumed.subscribe(CONVERSATION_EVENTS, {"c": cid, "s": error["cursor"]})
            rest = resumed.events(sent - len(delivered) + 3, timeout=30)
            assert [e["changedMessage"]["content"] for e in rest] == [payload] * (sent - len(delivered)) + [
                "after"
            ] * 3
            resumed.expect_quiet(0.3)
        finally:
            resumed.close()
    finally:
        stalled.close()
        owner.close()


def test_since_older_than_retention_is_cursor_expired(
    admin: Actor, server: ServerThread, loop: Loop, dsn: str
) -> None:
    from threadline.db import Database
    from threadline.events.log import prune

    cid = conversation(admin)
    admin.client.ok(START, {"c": cid, "x": "old"})

    async def prune_everything() -> int:
        db = await Database.connect(dsn, 1, 1)
        try:
            return await prune(db, older_than_days=0)
        finally:
            await db.close()

    assert loop.run(prune_everything()) >= 1
    client = WsClient(server.ws_url, admin.api_key)
    try:
        client.subscribe(CONVERSATION_EVENTS, {"c": cid, "s": "0"})
        message = client.receive()
        errors = message["payload"]["errors"] if message["type"] == "next" else message["payload"]
        assert errors[0]["extensions"]["code"] == "CURSOR_EXPIRED"
    finally:
        client.close()


def test_presence_goes_offline_after_silence(
    admin: Actor, make_user: Callable[..., Actor], tuned: ServerThread
) -> None:
    member = make_user(admin)
    cid = conversation(admin)
    join(admin, member, cid)
    watcher = WsClient(tuned.ws_url, admin.api_key)
    other = Client(tuned.url, member.api_key)
    try:
        watcher.subscribe(CONVERSATION_EVENTS, {"c": cid, "s": live(admin)})
        # Presence is live only (never replayed): the stream must be open before the member shows up.
        admin.client.ok(START, {"c": cid, "x": "open"})
        assert watcher.events(1)[0]["type"] == "thread.new"
        other.ok("mutation { presenceHeartbeat(status: ONLINE) }")
        seen: list[tuple[str, str]] = []
        deadline = time.monotonic() + 15
        while ("OFFLINE" not in [s for u, s in seen if u == member.user_id]) and time.monotonic() < deadline:
            event = watcher.events(1, ignore=(), timeout=15)[0]
            if event["type"] == "presence.update":
                seen.append((event["userId"], event["status"]))
        member_states = [s for u, s in seen if u == member.user_id]
        assert member_states == ["ONLINE", "OFFLINE"]
    finally:
        watcher.close()
        other.close()


def test_socket_without_connection_init_is_closed_after_the_timeout(tuned: ServerThread) -> None:
    client = WsClient(tuned.ws_url, None, init=False)
    with pytest.raises(ConnectionClosed) as closed:
        client.receive(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4408


def test_subscriptions_per_socket_are_bounded_and_others_keep_working(
    admin: Actor, tuned: ServerThread
) -> None:
    cid = conversation(admin)
    client = WsClient(tuned.ws_url, admin.api_key)
    try:
        attempts = 10_000
        for i in range(attempts):
            client.subscribe(CONVERSATION_EVENTS, {"c": cid}, op_id=f"op{i}")
        refused = 0
        deadline = time.monotonic() + 60
        while refused < attempts - 5 and time.monotonic() < deadline:
            message = client.receive(timeout=30)
            if message["type"] == "error":
                refused += 1
                assert "limit" in message["payload"][0]["message"].lower()
        assert refused == attempts - 5  # the tuned server allows 5 operations per socket
        client.send({"id": "unknown-op", "type": "complete"})  # completing an unknown id is harmless
        healthy = Client(tuned.url, admin.api_key)
        try:
            assert healthy.ok("{ viewer { id } }")["viewer"]["id"] == admin.user_id
        finally:
            healthy.close()
    finally:
        client.close()


def test_oversized_and_malformed_socket_messages_close_only_that_socket(
    admin: Actor, tuned: ServerThread
) -> None:
    big = WsClient(tuned.ws_url, admin.api_key)
    big.ws.send("x" * (2 * 1024 * 1024))
    with pytest.raises(ConnectionClosed) as closed:
        big.receive(timeout=10)
    # 1009 (message too big), or an abrupt close if the server hung up while the frame was in flight.
    assert closed.value.rcvd is None or closed.value.rcvd.code == 1009
    garbage = WsClient(tuned.ws_url, admin.api_key)
    garbage.ws.send("{not json")
    with pytest.raises(ConnectionClosed) as closed2:
        garbage.receive(timeout=10)
    assert closed2.value.rcvd is not None and closed2.value.rcvd.code == 4400
    healthy = Client(tuned.url, admin.api_key)
    try:
        assert healthy.ok("{ viewer { id } }")["viewer"]["id"] == admin.user_id
    finally:
        healthy.close()


def test_the_listen_connection_uses_the_broadcast_url(admin: Actor, loop: Loop, dsn: str) -> None:
    listen_dsn = dsn + ("&" if "?" in dsn else "?") + "application_name=threadline-listen-test"
    srv = ServerThread(test_settings(dsn, migrate_on_start=False, broadcast_url=listen_dsn))
    srv.start()
    try:

        async def listeners() -> list[str]:
            conn = await asyncpg.connect(dsn)
            try:
                rows = await conn.fetch(
                    "SELECT query FROM pg_stat_activity WHERE application_name = 'threadline-listen-test'"
                )
                return [r["query"] for r in rows]
            finally:
                await conn.close()

        assert any(q.startswith("LISTEN") for q in loop.run(listeners()))
        cid = conversation(admin)
        client = WsClient(srv.ws_url, admin.api_key)
        try:
            client.subscribe(CONVERSATION_EVENTS, {"c": cid, "s": live(admin)})
            admin.client.ok(START, {"c": cid, "x": "through the broadcast connection"})
            assert client.events(1)[0]["thread"]["root"]["content"] == "through the broadcast connection"
        finally:
            client.close()
    finally:
        srv.stop()


def test_a_broadcast_url_that_is_neither_postgresql_nor_redis_stops_the_server_from_starting(
    dsn: str,
) -> None:
    srv = ServerThread(test_settings(dsn, migrate_on_start=False, broadcast_url="kafka://127.0.0.1:9092"))
    with pytest.raises(RuntimeError, match="did not start"):
        srv.start()
    srv.stop()


def test_an_open_publisher_holds_later_events_back_until_it_commits_or_rolls_back(
    admin: Actor, server: ServerThread, dsn: str, loop: Loop
) -> None:
    """Ids are drawn before commit: a later event must wait while an earlier id may still commit (then both
    arrive, in id order), and must not wait forever once that id's transaction rolled back."""
    from threadline.db import Database
    from threadline.events.kinds import EventType
    from threadline.events.publish import publish
    from threadline.ids import Kind, decode_id

    cid = conversation(admin)
    tenant = decode_id(admin.tenant_id, Kind.TENANT)
    conversation_uuid = decode_id(cid, Kind.CONVERSATION)
    db = loop.run(Database.connect(dsn, 1, 1))
    client = WsClient(server.ws_url, admin.api_key)
    try:
        client.subscribe(CONVERSATION_EVENTS, {"c": cid, "s": live(admin)})
        for outcome in ("commit", "rollback"):
            conn = loop.run(db.pool.acquire())
            transaction = conn.transaction()
            loop.run(transaction.start())
            held = loop.run(
                publish(
                    conn,
                    tenant,
                    EventType.TYPING_UPDATE,
                    conversation_id=conversation_uuid,
                    payload={"userId": admin.user_id, "isTyping": True},
                )
            )
            root = admin.client.ok(START, {"c": cid, "x": outcome})["threadStart"][
                "id"
            ]  # a later id, committed
            client.expect_quiet(0.8)  # thread.new waits behind the open transaction's id
            loop.run(getattr(transaction, outcome)())
            loop.run(db.pool.release(conn))
            expected = ["typing.update", "thread.new"] if outcome == "commit" else ["thread.new"]
            events = client.events(len(expected))
            assert [e["type"] for e in events] == expected
            if outcome == "commit":
                held_at, later_at = (position(server, admin.tenant_id, e["cursor"]) for e in events)
                assert held_at == held < later_at
            assert events[-1]["thread"]["root"]["id"] == root
            client.expect_quiet(0.3)
    finally:
        client.close()
        db.pool.terminate()  # does not wait for a connection left in its transaction by a failed assertion
