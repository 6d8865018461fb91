"""Credentials are live (ARCHITECTURE.md, Trust): a change to who a user is reaches every process.

A revoked key, an erased user or a changed role is announced with a `principal.changed` event, published in
the writer's transaction like every event (so it is announced only if it commits, and a process whose LISTEN
was down reads it from the log). Each process's hub hands it to the open sockets of that user
(streaming.sessions), which re-check their credential and close with 4403 when it no longer holds. The event
carries ids only; it is addressed to no conversation, so no subscription ever delivers it.
"""

from __future__ import annotations

import uuid

from threadline.audit.service import AuditAction, SystemActor, record
from threadline.auth import repository as repo
from threadline.auth.credentials import forget_in_process
from threadline.auth.tokens import hash_subject
from threadline.db import Executor
from threadline.events.announce import publish_principal_changed
from threadline.events.payloads import PrincipalChanged
from threadline.ids import Kind, encode_id


async def principal_changed(tx: Executor, tenant_id: uuid.UUID, user_id: uuid.UUID, reason: str) -> None:
    """Announces, in `tx`, that the user's sockets must re-check their credential (reason: revoked, role)."""
    await publish_principal_changed(tx, tenant_id, PrincipalChanged(user_id, reason))


async def user_erased(tx: Executor, tenant_id: uuid.UUID, user_id: uuid.UUID) -> None:
    """Called by erasure before the user row goes: a JWT subject of the user is remembered (as a hash) so its
    tokens provision nobody again, and open sockets of the user close. The announcement names nobody (the log
    must keep no trace of an erased user): each process checks which of the tenant's users with sockets are
    gone."""
    row = await repo.user_by_id(tx, tenant_id, user_id)
    if row is not None and row["external_subject"]:
        await repo.insert_erased_subject(tx, tenant_id, hash_subject(row["external_subject"]))
    await publish_principal_changed(tx, tenant_id, PrincipalChanged(None, "erased"))
    # Their keys are deleted by now, and with them (a trigger, migration 2026-12-10T07:00) every live key those
    # keys minted was revoked, other users' too (an admin's key mints for anyone): each such revocation is
    # audited as apiKeyRevoke's cascade is (`cascadedFrom`: the deleted key it descends from; by the server, as
    # the erasure's own entry names the admin), and those users' sockets re-check, as after a revocation.
    revoked = await repo.keys_revoked_now(tx, tenant_id)
    parents = {row["id"]: row["created_by_key"] for row in revoked}
    for row in revoked:
        root = row["created_by_key"]
        while root in parents:  # up to the deleted key (lineage has no cycles: a parent is older)
            root = parents[root]
        details = {"prefix": row["prefix"]}
        if root is not None:
            details["cascadedFrom"] = encode_id(Kind.API_KEY, root)
        await record(
            tx, SystemActor(tenant_id), AuditAction.API_KEY_REVOKE, (Kind.API_KEY, row["id"]), details
        )
    for other in sorted({row["user_id"] for row in revoked}):
        if other != user_id:
            await principal_changed(tx, tenant_id, other, "revoked")


async def tenant_changed(tx: Executor, tenant_id: uuid.UUID) -> None:
    """A tenant-wide setting that principals carry changed (the PII policy): every process empties its
    credential cache. The announcement names nobody, as after an erasure."""
    await publish_principal_changed(tx, tenant_id, PrincipalChanged(None, "tenant"))


def committed() -> None:
    """Called once the transaction that announced a change has committed: this process's cached credentials go
    at once, so the changer's next request is refused here even before the hub reads the announcement (other
    processes forget when their hub reads it, and within THREADLINE_CREDENTIAL_CACHE_SECONDS at worst)."""
    forget_in_process()
