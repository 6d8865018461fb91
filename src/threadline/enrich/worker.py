"""The enrichment worker of one process: claims due jobs (FOR UPDATE SKIP LOCKED, so any number of processes
share the queue), runs up to `enrichment_workers` at once, wakes on NOTIFY from the queueing triggers and
polls as a fallback. A job whose worker died is claimed again once its lease lapses."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid

import asyncpg

from threadline import crypto
from threadline.db import Database
from threadline.db.database import WORKER, connect_settings
from threadline.enrich import jobs
from threadline.enrich import repository as repo
from threadline.enrich.generate import configured
from threadline.enrich.yielding import YIELDED, Yielding
from threadline.runs.providers import Provider, build_providers
from threadline.settings import Settings

log = logging.getLogger(__name__)


class EnrichmentWorker:
    def __init__(self, db: Database, settings: Settings, lease_seconds: float | None = None) -> None:
        self.db = db
        self.settings = settings
        self.concurrency = settings.enrichment_workers
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        # A job's lease: a generation's deadline plus the reads and writes around it, unless the caller says.
        self.lease_seconds = lease_seconds or settings.enrichment_timeout_seconds * 2 + 30
        self.active: set[asyncio.Task[None]] = set()
        self._claims: dict[asyncio.Task[None], asyncpg.Record] = {}  # the job each active task runs
        self.finished = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listener: asyncpg.Connection | None = None
        self._providers: dict[str, Provider] = {}

    async def start(self) -> None:
        if self.concurrency <= 0:
            return
        built = build_providers(self.settings)
        self._providers = configured(built, self.settings)
        for name, provider in built.items():
            if name not in self._providers:
                await provider.close()
        await self._listen()
        self._task = asyncio.create_task(self._claim_loop(), name="threadline-enrichment")

    async def stop(self) -> None:
        """Stop claiming; the jobs in flight are stopped and queued again at once, their attempt not counted,
        so another worker takes them without waiting for the lease (a job that cannot be put back, the database
        being away, is taken over when its lease lapses, as a killed worker's is)."""
        in_flight = dict(self._claims)
        tasks = [t for t in (self._task, *self.active) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        db = Yielding(self.db)
        for claimed in in_flight.values():
            with contextlib.suppress(Exception):
                async with db.transaction() as tx:
                    if await jobs.put_back(tx, self.settings, claimed, gave_way=True, wait=0.0) is not None:
                        await jobs.announce(tx, claimed, "QUEUED")
                        await repo.notify(tx)
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close()
        for provider in self._providers.values():
            await provider.close()

    async def _listen(self) -> None:
        try:
            dsn = self.settings.direct_url or self.db.dsn  # LISTEN needs a session: never through a pooler
            self._listener = await asyncpg.connect(dsn, server_settings=connect_settings(WORKER, dsn))
            await self._listener.add_listener(repo.CHANNEL, lambda *_: self._wake.set())
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("enrichment worker cannot LISTEN (%s); polling", exc)
            self._listener = None

    async def _claim_loop(self) -> None:
        context = jobs.JobContext(Yielding(self.db), self.settings, self._providers)
        while True:
            self._wake.clear()
            try:
                if self._listener is None or self._listener.is_closed():
                    await self._listen()
                while len(self.active) < self.concurrency:
                    claimed = await repo.claim_next(
                        context.db, self.id, self.lease_seconds, keyless=crypto.active() is None
                    )
                    if claimed is None:
                        break
                    task = asyncio.create_task(
                        self._run(context, claimed), name=f"threadline-enrich-{claimed['id'].hex}"
                    )
                    self.active.add(task)
                    self._claims[task] = claimed
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - e.g. the database restarting: try again at the next tick
                log.exception("claiming enrichment jobs failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.enrichment_poll_seconds)

    async def _run(self, context: jobs.JobContext, claimed: asyncpg.Record) -> None:
        try:
            await jobs.execute(context, claimed)
            self.finished += 1
        except asyncio.CancelledError:
            raise
        except YIELDED:
            with contextlib.suppress(Exception):
                await jobs.put_back(context.db, self.settings, claimed, gave_way=True)
        except Exception:  # noqa: BLE001 - put back, or else the lease lapses and the job is claimed again
            log.exception("enrichment job %s failed in the worker", claimed["id"])
            with contextlib.suppress(Exception):
                await jobs.put_back(context.db, self.settings, claimed, gave_way=False)
        finally:
            task = asyncio.current_task()
            self.active.discard(task)
            self._claims.pop(task, None)  # type: ignore[arg-type]
            self._wake.set()
