"""Retention: per-tenant `retentionDays`; a background job hard-deletes conversations past it.

A conversation goes when it was deleted (status DELETED) longer ago than that, or has had no
activity for that long. Any number of server processes may run the job: rows are claimed with
SKIP LOCKED, in batches, one transaction per batch, each with an audit entry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid

from threadline.audit import retention as audit_retention
from threadline.audit.service import AuditAction, SystemActor, record
from threadline.auth.principal import Principal
from threadline.db import Database, Executor
from threadline.errors import bad_input, forbidden
from threadline.idempotency import service as idempotency
from threadline.porting import repository as repo
from threadline.settings import Settings
from threadline.sharing import service as share_links

log = logging.getLogger("threadline.retention")
RETENTION_KEY = "retentionDays"
MAX_DAYS = 36_500


async def retention_days(db: Executor, tenant_id: uuid.UUID) -> int | None:
    value = (await repo.tenant_settings(db, tenant_id)).get(RETENTION_KEY)
    return value if isinstance(value, int) else None


async def set_retention(db: Database, principal: Principal, days: int | None) -> int | None:
    if not principal.is_admin:
        raise forbidden("Only tenant admins may set the retention policy")
    if days is not None and not 1 <= days <= MAX_DAYS:
        raise bad_input(
            f"retentionDays must be between 1 and {MAX_DAYS}, or null for no limit", argument="retentionDays"
        )
    async with db.transaction() as tx:
        if days is None:
            await repo.drop_tenant_setting(tx, principal.tenant_id, RETENTION_KEY)
        else:
            await repo.merge_tenant_settings(tx, principal.tenant_id, {RETENTION_KEY: days})
        await record(tx, principal, AuditAction.RETENTION_SET, None, {RETENTION_KEY: days})
    return days


async def purge_expired(db: Database, batch: int = 200) -> int:
    """One pass over every tenant with a policy; returns how many conversations were deleted."""
    tenants = await repo.tenants_with_retention(db)
    total = 0
    for tenant in tenants:
        while True:
            async with db.transaction() as tx:
                ids = await repo.lock_expired_conversations(tx, tenant["id"], tenant["days"], batch)
                if not ids:
                    break
                await repo.delete_conversations(tx, tenant["id"], ids)
                await record(
                    tx,
                    SystemActor(tenant["id"]),
                    AuditAction.RETENTION_PURGE,
                    None,
                    {"conversations": len(ids), RETENTION_KEY: tenant["days"]},
                )
            total += len(ids)
            if len(ids) < batch:
                break
    return total


async def _run_forever(db: Database, interval: float) -> None:
    while True:
        try:
            deleted = await purge_expired(db)
            if deleted:
                log.info("retention: deleted %d conversations", deleted)
            await idempotency.purge_expired(db)  # expired idempotency keys go with the same pass
            await audit_retention.purge_expired(db)  # and audit entries past their tenant's audit retention
            await share_links.forget_old_windows(db)  # share-link read counts of quiet tokens and addresses
        except Exception:  # noqa: BLE001 - the job must survive a bad pass and try again later
            log.exception("retention pass failed")
        await asyncio.sleep(interval)


def start_retention(db: Database, settings: Settings) -> asyncio.Task[None] | None:
    """The background job, owned by the app's lifespan; None when disabled (interval <= 0)."""
    if settings.retention_interval_seconds <= 0:
        return None
    return asyncio.create_task(
        _run_forever(db, settings.retention_interval_seconds), name="threadline-retention"
    )


async def stop_retention(task: asyncio.Task[None] | None) -> None:
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
