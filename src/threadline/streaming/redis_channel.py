"""Redis as the wake-up channel (THREADLINE_BROADCAST_URL=redis://...): the event log in PostgreSQL stays the
source of truth, Redis only says "read the log".

Why: a NOTIFY in the writer's transaction serialises every publishing commit on PostgreSQL's one notification
queue lock (the NOTIFY ceiling, bench/RESULTS.md). On Redis, a writer's transaction sends no NOTIFY; once it has
committed, `RedisWake` publishes a wake-up (coalesced: one PUBLISH however many commits happened while the
previous one was in flight), and each hub's `SupervisedRedisBackend` hears it and reads the log as before. A
wake-up can only arrive after the commit it announces, and one that is lost (Redis down, a reconnect) costs
latency, never an event: the hub also reads the log every second, and re-reads it after every reconnect.

broadcaster's own RedisBackend neither reconnects nor tells when redis-py reconnected under it (losing the
messages of the gap), so this is the same supervised shape as streaming.listener's PostgreSQL backend: a
connection of its own without hidden retries, a reader task, a periodic PING whose PONG must come back, and a
RESYNC event after every reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from broadcaster import Event
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from threadline.db import Database
from threadline.events.publish import CHANNEL
from threadline.streaming.listener import SupervisedBackend

log = logging.getLogger(__name__)

SCHEMES = ("redis://", "rediss://")
WAKE = "wake"  # the payload: hubs read the whole tail of the log on any wake-up


def is_redis_url(url: str | None) -> bool:
    return bool(url) and str(url).startswith(SCHEMES)


def _client(url: str, timeout: float) -> Redis:
    # No retries inside redis-py: a reconnect it made silently would lose the messages of its gap unseen.
    return Redis.from_url(
        url, retry=Retry(NoBackoff(), 0), socket_connect_timeout=timeout, socket_keepalive=True
    )


class SupervisedRedisBackend(SupervisedBackend):
    kind = "Redis subscription"
    reconnect_errors = (TimeoutError, OSError, RedisError)

    def __init__(self, url: str, *, ping_interval: float = 1.0, max_backoff: float = 5.0) -> None:
        super().__init__(ping_interval=ping_interval, max_backoff=max_backoff)
        self._url = url
        self._client: Redis | None = None
        self._pubsub: PubSub | None = None
        self._reader: asyncio.Task[None] | None = None
        self._heard = 0.0  # monotonic time of the last message or PONG on the subscription connection

    async def subscribe(self, channel: str) -> None:
        self._channels.add(channel)
        if self._pubsub is not None:
            await self._pubsub.subscribe(channel)

    async def unsubscribe(self, channel: str) -> None:
        self._channels.discard(channel)
        if self._pubsub is not None:
            await self._pubsub.unsubscribe(channel)

    async def publish(self, channel: str, message: Any) -> None:
        assert self._client is not None
        await self._client.publish(channel, str(message))

    async def _open(self) -> None:
        client = _client(self._url, timeout=self._ping_interval * 2)
        pubsub = client.pubsub()
        try:
            await pubsub.ping()  # connects now: an unreachable Redis fails here, not later
            if self._channels:
                await pubsub.subscribe(*self._channels)
        except BaseException:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]
                await client.aclose()
            raise
        self._client, self._pubsub = client, pubsub
        self._heard = time.monotonic()
        self._lost.clear()
        self._reader = asyncio.create_task(self._read(pubsub), name="threadline-redis-reader")

    async def _read(self, pubsub: PubSub) -> None:
        try:
            while True:
                if not pubsub.subscribed:  # redis-py returns at once while nothing is subscribed
                    await asyncio.sleep(0.05)
                    continue
                message = await pubsub.get_message(timeout=None)
                if message is None:
                    continue
                self._heard = time.monotonic()
                if message["type"] == "message":
                    channel = message["channel"]
                    data = message["data"]
                    self._queue.put_nowait(
                        Event(
                            channel=channel.decode() if isinstance(channel, bytes) else str(channel),
                            message=data.decode() if isinstance(data, bytes) else str(data),
                        )
                    )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure of the connection: the supervisor reconnects
            log.warning("Redis subscription lost (%s)", exc)
            self._lost.set()

    async def _close(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
        pubsub, self._pubsub = self._pubsub, None
        client, self._client = self._client, None
        with contextlib.suppress(Exception):
            if pubsub is not None:
                await asyncio.wait_for(pubsub.aclose(), timeout=2)  # type: ignore[no-untyped-call]
        with contextlib.suppress(Exception):
            if client is not None:
                await asyncio.wait_for(client.aclose(), timeout=2)

    async def _healthy(self) -> bool:
        if self._pubsub is None or self._lost.is_set():
            return False
        if time.monotonic() - self._heard > self._ping_interval * 3:
            return False  # PINGs went out but no PONG came back: a hung server or a black-holed connection
        try:
            await asyncio.wait_for(self._pubsub.ping(), timeout=self._ping_interval * 2)
        except (TimeoutError, RedisError, OSError):
            return False
        return True


def start_wake(db: Database, broadcast_url: str | None) -> RedisWake | None:
    """With a Redis broadcast URL: `db`'s events are announced by wake-ups on it (started here; the caller
    stops it after the last writer). Otherwise None, and events are announced by NOTIFY as ever."""
    if not is_redis_url(broadcast_url):
        return None
    assert broadcast_url is not None
    wake = RedisWake(broadcast_url, CHANNEL)
    wake.start()
    db.wake = wake
    return wake


class RedisWake:
    """The publishing side (db.database.WakeChannel): `wake()` after a commit that logged events; a background
    task PUBLISHes one wake-up per burst. A failed PUBLISH is logged (once per outage) and dropped: the hubs'
    periodic read of the log delivers those events within a second."""

    def __init__(self, url: str, channel: str) -> None:
        self._url = url
        self._channel = channel
        self._pending = asyncio.Event()
        self._client: Redis | None = None
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        self.published = 0  # wake-ups sent (benchmarks compare it with the commits announced)

    def start(self) -> None:
        self._client = _client(self._url, timeout=1.0)
        self._task = asyncio.create_task(self._run(), name="threadline-redis-wake")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._client.aclose(), timeout=2)
            self._client = None

    def wake(self) -> None:
        self._pending.set()

    async def _run(self) -> None:
        assert self._client is not None
        while True:
            await self._pending.wait()
            self._pending.clear()
            try:
                await asyncio.wait_for(self._client.publish(self._channel, WAKE), timeout=2)
                self.published += 1
                if self._failing:
                    log.warning("Redis wake-ups are published again")
                self._failing = False
            except (TimeoutError, OSError, RedisError) as exc:
                if not self._failing:
                    log.warning("Redis wake-up not published (%s); hubs poll the event log meanwhile", exc)
                self._failing = True
                await asyncio.sleep(0.2)
