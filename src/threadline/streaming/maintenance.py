"""Periodic upkeep every process runs: expiring typing and presence, and pruning the event log.

Each step claims rows atomically (UPDATE/DELETE ... SKIP LOCKED), so any number of processes can run
it at once without announcing anything twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from threadline.db import Database
from threadline.events import log as event_log
from threadline.presence import service as presence
from threadline.settings import Settings

log = logging.getLogger(__name__)

PRUNE_EVERY_SECONDS = 600.0


async def run_maintenance(db: Database, settings: Settings) -> None:
    last_prune = 0.0
    while True:
        await asyncio.sleep(settings.maintenance_interval_seconds)
        try:
            await presence.expire_typing(db)
            await presence.expire_presence(db, settings)
            if time.monotonic() - last_prune > PRUNE_EVERY_SECONDS:
                last_prune = time.monotonic()
                pruned = await event_log.prune(db, settings.event_retention_days)
                if pruned:
                    log.info("pruned %d events older than %s days", pruned, settings.event_retention_days)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - keep the loop alive across database restarts
            log.exception("maintenance step failed")


def start_maintenance(db: Database, settings: Settings) -> asyncio.Task[None]:
    return asyncio.create_task(run_maintenance(db, settings), name="threadline-maintenance")


async def stop_task(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
