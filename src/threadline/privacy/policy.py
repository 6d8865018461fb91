"""The tenant's PII policy (issue 20 item 2), kept in `tenant.settings.piiPolicy`.

- OFF: nothing is scanned (`Message.pii` is null).
- DETECT: content is stored as written; its detections are stored with it and shown in `Message.pii`.
- MASK_ON_WRITE: each detection is replaced by a placeholder (`[EMAIL]`) before anything is written (messages,
  edits, imports, the event log, search vectors): the original never reaches the database.
- MASK_ON_READ: content is stored as written, and every read path returns it masked, except to its author and
  to the tenant's admins (privacy.reading).

The policy travels with the caller's Principal (read with the credential, no extra statement per request);
a change empties every process's credential cache like a role change does (auth.live).
"""

from __future__ import annotations

import uuid

from threadline.audit.service import AuditAction, record
from threadline.auth import live
from threadline.auth.principal import Principal
from threadline.db import Database, Executor
from threadline.errors import forbidden
from threadline.privacy import repository as repo
from threadline.privacy.modes import POLICY_KEY, PiiPolicy, parse

__all__ = ["POLICY_KEY", "PiiPolicy", "parse", "set_policy", "tenant_policy"]


async def tenant_policy(db: Executor, tenant_id: uuid.UUID) -> PiiPolicy:
    return await repo.tenant_policy(db, tenant_id)


async def set_policy(db: Database, principal: Principal, policy: PiiPolicy) -> PiiPolicy:
    if not principal.is_admin:
        raise forbidden("Only tenant admins may set the PII policy")
    async with db.transaction() as tx:
        before = await repo.tenant_setting(tx, principal.tenant_id, POLICY_KEY, lock=True)
        await repo.set_tenant_setting(tx, principal.tenant_id, POLICY_KEY, policy.value)
        await record(
            tx, principal, AuditAction.PII_POLICY_SET, None, {"from": parse(before).value, "to": policy.value}
        )
        # Every process forgets its cached credentials (they carry the policy); sockets re-check theirs.
        await live.tenant_changed(tx, principal.tenant_id)
    live.committed()
    return policy
