"""Retention of the audit log (issue 20 item 3): per-tenant `auditRetentionDays`; entries older than that are
deleted by the retention job (the only deletes the append-only trigger lets through), each pass leaving an
`audit.purge` entry with how many went. Without a setting the log is kept for ever."""

from __future__ import annotations

import uuid

from threadline.audit import repository as repo
from threadline.audit.service import AuditAction, SystemActor, record
from threadline.auth.principal import Principal
from threadline.db import Database
from threadline.errors import bad_input, forbidden

RETENTION_KEY = "auditRetentionDays"
MIN_DAYS = 1
MAX_DAYS = 36_500


async def set_retention(db: Database, principal: Principal, days: int | None) -> int | None:
    if not principal.is_admin:
        raise forbidden("Only tenant admins may set the audit log's retention")
    if days is not None and not MIN_DAYS <= days <= MAX_DAYS:
        raise bad_input(
            f"auditRetentionDays must be between {MIN_DAYS} and {MAX_DAYS}, or null to keep every entry",
            argument="days",
        )
    async with db.transaction() as tx:
        await repo.set_tenant_retention(tx, principal.tenant_id, RETENTION_KEY, days)
        await record(tx, principal, AuditAction.AUDIT_RETENTION_SET, None, {RETENTION_KEY: days})
    return days


async def retention_days(db: Database, tenant_id: uuid.UUID) -> int | None:
    value = await repo.tenant_retention(db, tenant_id, RETENTION_KEY)
    return value if isinstance(value, int) else None


async def purge_expired(db: Database) -> int:
    """One pass over the tenants with a retention; returns how many entries were deleted."""
    total = 0
    for tenant in await repo.tenants_with_retention(db, RETENTION_KEY):
        async with db.transaction() as tx:
            await repo.allow_rewrite(tx, "retention")
            deleted = await repo.delete_older_than(tx, tenant["id"], tenant["days"])
            if deleted:
                await record(
                    tx,
                    SystemActor(tenant["id"]),
                    AuditAction.AUDIT_PURGE,
                    None,
                    {"entries": deleted, RETENTION_KEY: tenant["days"]},
                )
        total += deleted
    return total
