"""A broadcaster backend for PostgreSQL LISTEN that survives dropped connections.

broadcaster 0.3.1's own Postgres backend never reconnects. This one owns a dedicated (never pooled)
connection, watches it (termination callback plus a periodic ping), reconnects with backoff, and
after every reconnect emits a RESYNC event on each channel so the hub catches up from the log. The reconnect
loop (`SupervisedBackend`) serves the Redis wake-up channel too (streaming.redis_channel).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import asyncpg
from broadcaster import BroadcastBackend, Event

from threadline.db.database import HUB, connect_settings
from threadline.streaming import repository as stream_repo

log = logging.getLogger(__name__)

RESYNC = "\x00resync"


class SupervisedBackend(BroadcastBackend):
    """The reconnect loop of a wake-up channel (PostgreSQL LISTEN here, Redis in streaming.redis_channel): the
    subclass opens, closes and checks its connection; this watches it (a loss reported by the subclass, or a
    failed check every `ping_interval`), reconnects with backoff, and then emits RESYNC on each channel."""

    kind = "wake-up"  # for the log lines
    reconnect_errors: tuple[type[BaseException], ...] = (TimeoutError, OSError)

    def __init__(self, *, ping_interval: float, max_backoff: float) -> None:
        self._ping_interval = ping_interval
        self._max_backoff = max_backoff
        self._channels: set[str] = set()
        self._queue: asyncio.Queue[Event] = asyncio.Queue()
        self._lost = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None
        self.reconnects = 0

    async def connect(self) -> None:
        await self._open()
        self._supervisor = asyncio.create_task(self._supervise(), name=f"threadline-{self.kind}-supervisor")

    async def disconnect(self) -> None:
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        await self._close()

    async def next_published(self) -> Event:
        return await self._queue.get()

    async def _open(self) -> None:
        raise NotImplementedError

    async def _close(self) -> None:
        raise NotImplementedError

    async def _healthy(self) -> bool:
        raise NotImplementedError

    async def _supervise(self) -> None:
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._lost.wait(), timeout=self._ping_interval)
            if await self._healthy():
                continue
            log.warning("%s connection lost; reconnecting", self.kind)
            await self._close()
            delay = 0.05
            while True:
                try:
                    await self._open()
                    break
                except self.reconnect_errors as exc:
                    log.warning("%s reconnect failed (%s); retrying in %.2fs", self.kind, exc, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self._max_backoff)
            self.reconnects += 1
            # Notifications sent while we were away are lost; the hub re-reads the log instead.
            for channel in self._channels:
                self._queue.put_nowait(Event(channel=channel, message=RESYNC))


class SupervisedPostgresBackend(SupervisedBackend):
    kind = "LISTEN"
    reconnect_errors = (TimeoutError, OSError, asyncpg.PostgresError)

    def __init__(self, dsn: str, *, ping_interval: float = 2.0, max_backoff: float = 5.0) -> None:
        super().__init__(ping_interval=ping_interval, max_backoff=max_backoff)
        self._dsn = dsn
        self._conn: asyncpg.Connection | None = None

    async def subscribe(self, channel: str) -> None:
        self._channels.add(channel)
        if self._conn is not None and not self._conn.is_closed():
            await self._conn.add_listener(channel, self._on_notify)

    async def unsubscribe(self, channel: str) -> None:
        self._channels.discard(channel)
        if self._conn is not None and not self._conn.is_closed():
            await self._conn.remove_listener(channel, self._on_notify)

    async def publish(self, channel: str, message: Any) -> None:
        # Threadline publishes with pg_notify inside the writer's transaction; this is for completeness.
        assert self._conn is not None
        await stream_repo.notify(self._conn, channel, str(message))

    def connection_pid(self) -> int | None:
        """The backend pid of the LISTEN connection (tests terminate it to prove recovery)."""
        if self._conn is None or self._conn.is_closed():
            return None
        return int(self._conn.get_server_pid())

    def _on_notify(self, connection: Any, pid: int, channel: str, payload: str) -> None:
        self._queue.put_nowait(Event(channel=channel, message=payload))

    def _on_terminate(self, connection: Any) -> None:
        self._lost.set()

    async def _open(self) -> None:
        conn = await asyncpg.connect(self._dsn, server_settings=connect_settings(HUB, self._dsn))
        conn.add_termination_listener(self._on_terminate)
        for channel in self._channels:
            await conn.add_listener(channel, self._on_notify)
        self._conn = conn
        self._lost.clear()

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), timeout=2)

    async def _healthy(self) -> bool:
        if self._conn is None or self._conn.is_closed() or self._lost.is_set():
            return False
        try:
            await asyncio.wait_for(stream_repo.ping(self._conn), timeout=self._ping_interval * 2)
        except (TimeoutError, Exception):
            return False
        return True
