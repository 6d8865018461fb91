"""The background pass: conversations past their tenant's `coldAfterDays` go cold, in bounded batches.

Any number of processes may run it at once (`threadline tiers run`, `threadline worker`): candidates are
claimed with FOR UPDATE SKIP LOCKED, a batch is one transaction, and a pass that stops half way resumes
where it was on the next run (what is cold is no candidate any more). A conversation that fails to freeze
is logged and left hot; the pass goes on past it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass, field

from threadline.db import Database
from threadline.tiers import document_repository as plans
from threadline.tiers import repository as repo
from threadline.tiers.service import Frozen, deepen, freeze

log = logging.getLogger("threadline.tiers")
BATCH = 20


@dataclass
class PassResult:
    frozen: list[Frozen] = field(default_factory=list)
    kept_hot: int = 0  # candidates something kept hot (a fork, a share link, a run not finished)
    failed: int = 0
    deepened: int = 0  # cold documents moved to deep storage

    @property
    def hot_bytes(self) -> int:
        return sum(f.hot_bytes for f in self.frozen)

    @property
    def cold_bytes(self) -> int:
        return sum(f.cold_bytes for f in self.frozen)


async def run_pass(
    db: Database,
    *,
    tenant_id: uuid.UUID | None = None,
    older_than_days: float | None = None,
    batch: int = BATCH,
    limit: int | None = None,
    deep_after_days: float | None = None,
) -> PassResult:
    """One pass over every tenant with a policy (or `tenant_id` only). `older_than_days` overrides the
    tenants' policies (an operator's one-off pass); `limit` bounds how many conversations go cold. Then cold
    documents older than the tenants' `deepAfterDays` (or `deep_after_days`) move to deep storage."""
    result = PassResult()
    plan = await plans.read_plan(db)
    if tenant_id is not None:
        days = older_than_days if older_than_days is not None else await repo.tenant_policy(db, tenant_id)
        work = [(tenant_id, days)] if days is not None else []
    else:
        work = [
            (r["id"], older_than_days if older_than_days is not None else r["days"])
            for r in await repo.tenants_with_policy(db)
        ]
    for tenant, days in work:
        after: uuid.UUID | None = None
        while limit is None or len(result.frozen) < limit:
            size = batch if limit is None else min(batch, limit - len(result.frozen))
            try:
                ids = await _freeze_batch(db, plan, tenant, float(days), after, size, result)
            except Exception:  # noqa: BLE001 - one bad conversation must not stop the pass: retry one by one
                log.exception("tiers: batch after %s failed; freezing its conversations one at a time", after)
                ids = await _freeze_singly(db, plan, tenant, float(days), after, size, result)
            if not ids:
                break
            after = ids[-1]
    if tenant_id is not None:
        days = (
            deep_after_days if deep_after_days is not None else await repo.tenant_deep_policy(db, tenant_id)
        )
        deep = [(tenant_id, days)] if days is not None else []
    else:
        deep = [
            (r["id"], deep_after_days if deep_after_days is not None else r["days"])
            for r in await repo.tenants_with_deep_policy(db)
        ]
    for tenant, days in deep:
        while True:
            async with db.transaction() as tx:
                moved = await deepen(tx, tenant, float(days), batch)
            result.deepened += moved
            if moved < batch:
                break
    return result


async def _freeze_batch(
    db: Database,
    plan: plans.Plan,
    tenant: uuid.UUID,
    days: float,
    after: uuid.UUID | None,
    size: int,
    result: PassResult,
) -> list[uuid.UUID]:
    done: list[Frozen] = []
    kept = 0
    async with db.transaction() as tx:
        ids = await repo.claim_candidates(tx, tenant, days, after, size)
        for conversation_id in ids:
            frozen = await freeze(tx, plan, tenant, conversation_id)
            if frozen is None:
                kept += 1
            else:
                done.append(frozen)
    result.frozen.extend(done)
    result.kept_hot += kept
    return ids


async def _freeze_singly(
    db: Database,
    plan: plans.Plan,
    tenant: uuid.UUID,
    days: float,
    after: uuid.UUID | None,
    size: int,
    result: PassResult,
) -> list[uuid.UUID]:
    seen: list[uuid.UUID] = []
    for _ in range(size):
        try:
            async with db.transaction() as tx:
                ids = await repo.claim_candidates(tx, tenant, days, seen[-1] if seen else after, 1)
                if not ids:
                    break
                seen.append(ids[0])
                frozen = await freeze(tx, plan, tenant, ids[0])
        except Exception:  # noqa: BLE001 - logged, left hot, passed over
            log.exception("tiers: conversation %s could not go cold", seen[-1] if seen else None)
            result.failed += 1
            continue
        if frozen is None:
            result.kept_hot += 1
        else:
            result.frozen.append(frozen)
    return seen


async def _run_forever(db: Database, interval: float) -> None:
    while True:
        try:
            done = await run_pass(db)
            if done.frozen:
                log.info(
                    "tiers: %d conversations went cold (%d bytes hot, %d cold)",
                    len(done.frozen),
                    done.hot_bytes,
                    done.cold_bytes,
                )
        except Exception:  # noqa: BLE001 - the job must survive a bad pass and try again later
            log.exception("tiers pass failed")
        await asyncio.sleep(interval)


def start_tiers(db: Database, interval: float) -> asyncio.Task[None] | None:
    """The background pass every `interval` seconds; None when disabled (interval <= 0)."""
    if interval <= 0:
        return None
    return asyncio.create_task(_run_forever(db, interval), name="threadline-tiers")


async def stop_tiers(task: asyncio.Task[None] | None) -> None:
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
