"""The run worker of one process: claims runs, executes up to `concurrency` at once, heartbeats, and
recovers runs of dead workers. The server starts one in its lifespan (`THREADLINE_RUN_WORKERS`
slots; 0 keeps only the recovery); `threadline worker` runs one on its own.

Runs are claimed with FOR UPDATE SKIP LOCKED, so any number of workers share one database; fairly: the tenant
with the fewest runs executing goes first, and none has more than THREADLINE_RUN_MAX_EXECUTING_PER_TENANT
executing across all workers, its gateway calls in progress counted with them (`repository.claim_next`). A worker wakes on NOTIFY (a run queued, a cancel
requested) and polls as a fallback, so a dropped LISTEN connection only slows it down.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
import uuid
from dataclasses import dataclass

import asyncpg

from threadline import crypto
from threadline.db import Database
from threadline.db.database import WORKER, connect_settings
from threadline.runs import execution, recovery
from threadline.runs import repository as repo
from threadline.runs.execution import Signals
from threadline.runs.providers import Provider, build_providers
from threadline.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class ActiveRun:
    tenant_id: uuid.UUID
    attempt: int
    signals: Signals
    task: asyncio.Task[None]


def tenant_cap(settings: Settings) -> int | None:
    """THREADLINE_RUN_MAX_EXECUTING_PER_TENANT as `claim_next` takes it: None for 0 (no cap). A negative value is
    refused (it silently meant no cap, the opposite of a cap an operator set too low by mistake)."""
    cap = settings.run_max_executing_per_tenant
    if cap < 0:
        raise ValueError(f"THREADLINE_RUN_MAX_EXECUTING_PER_TENANT must be 0 (no cap) or more, got {cap}")
    return cap or None


class Worker:
    def __init__(self, db: Database, settings: Settings, concurrency: int | None = None) -> None:
        self.db = db
        self.settings = settings
        self.concurrency = settings.run_workers if concurrency is None else concurrency
        self.queue = settings.run_queue
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.active: dict[uuid.UUID, ActiveRun] = {}
        self.executed = 0
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._listener: asyncpg.Connection | None = None
        self._providers: dict[str, Provider] = {}

    async def start(self) -> None:
        recovery.policy(self.settings)  # refuse a bad setting at start, not at the first dead worker
        tenant_cap(self.settings)
        if self.concurrency > 0:
            self._providers = build_providers(self.settings)
            await self._listen()
            self._tasks.append(asyncio.create_task(self._claim_loop(), name="threadline-run-claims"))
            self._tasks.append(asyncio.create_task(self._heartbeat_loop(), name="threadline-run-heartbeats"))
        if self.settings.run_recovery_seconds > 0:
            self._tasks.append(asyncio.create_task(self._recovery_loop(), name="threadline-run-recovery"))
        log.info("run worker %s: queue %r, concurrency %d", self.id, self.queue, self.concurrency)

    async def stop(self, requeue: bool = False) -> None:
        """Stop claiming; runs in flight are released at once (requeued or expired, by the policy; with
        `requeue`, as for a graceful server shutdown, back to the queue while attempts remain)."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        in_flight = dict(self.active)
        for active in in_flight.values():
            active.task.cancel()
        for active in in_flight.values():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await active.task
        for run_id, active in in_flight.items():
            with contextlib.suppress(Exception):
                await self._release(run_id, active, requeue)
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close()
        for provider in self._providers.values():
            await provider.close()

    async def _release(self, run_id: uuid.UUID, active: ActiveRun, requeue: bool = False) -> None:
        settings = (
            dataclasses.replace(self.settings, run_on_lost_worker="requeue") if requeue else self.settings
        )
        async with self.db.transaction() as tx:
            run = await repo.run(tx, active.tenant_id, run_id, lock=True)
            if run is None or run["attempt"] != active.attempt or run["worker_id"] != self.id:
                return
            status = await recovery.release(tx, settings, run, "The worker executing the run stopped")
        log.info("run %s released at shutdown: %s", run_id, status.value)

    # waking up ------------------------------------------------------------------------------------

    async def _listen(self) -> None:
        try:
            dsn = self.settings.direct_url or self.db.dsn  # LISTEN needs a session: never through a pooler
            self._listener = await asyncpg.connect(dsn, server_settings=connect_settings(WORKER, dsn))
            await self._listener.add_listener(repo.CHANNEL, self._notified)
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning(
                "run worker cannot LISTEN (%s); polling every %s s", exc, self.settings.run_poll_seconds
            )
            self._listener = None

    def _notified(self, connection: object, pid: int, channel: str, payload: str) -> None:
        kind, _, value = payload.partition(":")
        if kind == "queued" and value == self.queue:
            self._wake.set()
        elif kind == "cancel":
            with contextlib.suppress(ValueError):
                active = self.active.get(uuid.UUID(hex=value))
                if active is not None:
                    active.signals.cancel.set()

    # loops ----------------------------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        while True:
            self._wake.clear()
            try:
                if self._listener is None or self._listener.is_closed():
                    await self._listen()
                while len(self.active) < self.concurrency:
                    claimed = await self._claim()
                    if claimed is None:
                        break
                    self._spawn(claimed)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - e.g. the database restarting: try again at the next tick
                log.exception("claiming runs failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.run_poll_seconds)

    async def _claim(self) -> asyncpg.Record | None:
        async with self.db.transaction() as tx:
            return await repo.claim_next(
                tx,
                self.queue,
                self.id,
                keyless=crypto.active() is None,
                max_per_tenant=tenant_cap(self.settings),
            )

    def _spawn(self, claimed: asyncpg.Record) -> None:
        run_id = claimed["id"]
        signals = Signals()
        task = asyncio.create_task(self._execute(claimed, signals), name=f"threadline-run-{run_id.hex}")
        self.active[run_id] = ActiveRun(claimed["tenant_id"], claimed["attempt"], signals, task)

    async def _execute(self, claimed: asyncpg.Record, signals: Signals) -> None:
        try:
            if await execution.execute(self.db, self.settings, self._providers, claimed, signals):
                self.executed += 1
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - the run stops heartbeating and recovery takes it over
            log.exception("run %s failed in the worker; recovery will take it over", claimed["id"])
        finally:
            self.active.pop(claimed["id"], None)
            self._wake.set()

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.run_heartbeat_seconds)
            if not self.active:
                continue
            snapshot = dict(self.active)
            try:
                rows = await repo.heartbeat(
                    self.db, self.id, [(a.tenant_id, run_id, a.attempt) for run_id, a in snapshot.items()]
                )
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001
                log.exception("heartbeat failed")
                continue
            owned = {r["id"]: r["status"] for r in rows}
            for run_id, active in snapshot.items():
                status = owned.get(run_id)
                if status is None:
                    active.signals.lost.set()
                elif status == "CANCELLING":
                    active.signals.cancel.set()

    async def _recovery_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.run_recovery_seconds)
            try:
                await recovery.reap(self.db, self.settings)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001
                log.exception("recovering runs failed")
