"""Recovering runs whose worker stopped heartbeating: every live instance does it, any number at once.

A run executing without a heartbeat for `THREADLINE_RUN_STALE_SECONDS` is, by the policy
`THREADLINE_RUN_ON_LOST_WORKER`, either EXPIRED (`expire`, the default: the partial output stays,
an `error` event with code RUN_EXPIRED is published) or put back in the queue (`requeue`: the
next attempt writes the output from the start; after `THREADLINE_RUN_MAX_ATTEMPTS` attempts it
expires instead). A run that was being cancelled is cancelled. Rows are taken with SKIP LOCKED, so
two instances never recover the same run, and the lost worker's own writes are fenced off by the
attempt number (see `execution`). On the same beat the leases of /v1 calls whose process died are deleted
once they ran out (`repository.drop_lapsed_call_places`).
"""

from __future__ import annotations

import logging
from enum import StrEnum

import asyncpg

from threadline.db import Database, Executor
from threadline.runs import repository as repo
from threadline.runs.output import Usage
from threadline.runs.service import end_run, stored_usage
from threadline.runs.tools import expire_waiting
from threadline.runs.transitions import RunStatus
from threadline.settings import Settings

log = logging.getLogger(__name__)

BATCH = 100


class LostWorkerPolicy(StrEnum):
    EXPIRE = "expire"
    REQUEUE = "requeue"


def policy(settings: Settings) -> LostWorkerPolicy:
    try:
        return LostWorkerPolicy(settings.run_on_lost_worker.strip().lower())
    except ValueError as exc:
        raise ValueError(
            f"THREADLINE_RUN_ON_LOST_WORKER must be 'expire' or 'requeue', got {settings.run_on_lost_worker!r}"
        ) from exc


async def release(tx: Executor, settings: Settings, run: asyncpg.Record, reason: str) -> RunStatus:
    """End or requeue a locked run whose worker is gone; returns the status it got."""
    if run["status"] == RunStatus.CANCELLING:
        await end_run(tx, run, RunStatus.CANCELLED, usage=stored_usage(run))
        return RunStatus.CANCELLED
    if policy(settings) is LostWorkerPolicy.REQUEUE and run["attempt"] < settings.run_max_attempts:
        await end_run(tx, run, RunStatus.QUEUED, usage=Usage(0, 0))
        await repo.notify_workers(tx, f"queued:{run['queue']}")
        return RunStatus.QUEUED
    await end_run(tx, run, RunStatus.EXPIRED, usage=stored_usage(run), error=("RUN_EXPIRED", reason))
    return RunStatus.EXPIRED


async def reap(db: Database, settings: Settings) -> int:
    """Recover every run whose worker stopped heartbeating; returns how many."""
    recovered = 0
    for candidate in await repo.stale_run_ids(db, settings.run_stale_seconds, BATCH):
        async with db.transaction() as tx:
            run = await repo.lock_if_stale(
                tx, candidate["tenant_id"], candidate["id"], settings.run_stale_seconds
            )
            if run is None:
                continue
            status = await release(
                tx,
                settings,
                run,
                f"The worker executing the run stopped (no heartbeat for {settings.run_stale_seconds:g} s)",
            )
        recovered += 1
        log.warning(
            "run %s: worker %s stopped heartbeating; run is now %s", run["id"], run["worker_id"], status.value
        )
    # The leases of gateway calls whose process died, once they ran out (they count toward nothing by then).
    await repo.drop_lapsed_call_places(db, BATCH * 10)
    # Runs waiting for tool outputs past THREADLINE_RUN_TOOL_OUTPUTS_TIMEOUT_SECONDS expire on the same beat.
    return recovered + await expire_waiting(db, settings)
