"""The audit log: `record()` inside the transaction of the change it describes, and admin reads."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

import asyncpg

from threadline.audit import repository as repo
from threadline.auth.principal import Principal
from threadline.db import Executor
from threadline.errors import forbidden
from threadline.ids import Kind

# Labels stored in target_kind: the names clients know the objects by.
_TARGET_KINDS = {
    Kind.TENANT: "Tenant",
    Kind.USER: "User",
    Kind.API_KEY: "ApiKey",
    Kind.CONVERSATION: "Conversation",
    Kind.MESSAGE: "Message",
    Kind.RUN: "Run",
}
KIND_OF_LABEL = {label: kind for kind, label in _TARGET_KINDS.items()}


class AuditAction(StrEnum):
    CONVERSATION_EXPORT = "conversation.export"
    CONVERSATION_IMPORT = "conversation.import"
    USER_EXPORT = "user.export"
    USER_ERASE = "user.erase"
    USER_CREATE = "user.create"
    USER_ROLE_SET = "user.role_set"
    API_KEY_CREATE = "api_key.create"
    API_KEY_REVOKE = "api_key.revoke"
    PARTICIPANT_ROLE_SET = "participant.role_set"
    RETENTION_SET = "tenant.retention_set"
    RETENTION_PURGE = "retention.purge"
    SHARE_LINK_CREATE = "share_link.create"  # a conversation (or branch) published by link
    SHARE_LINK_REVOKE = "share_link.revoke"
    # Issue 20: reads of a conversation by a caller who is not its participant, and the privacy settings.
    CONVERSATION_READ = "conversation.read"
    PII_POLICY_SET = "tenant.pii_policy_set"
    USER_ANONYMISE = "user.anonymise"
    AUDIT_RETENTION_SET = "tenant.audit_retention_set"
    AUDIT_PURGE = "audit.purge"
    AUDIT_EXPORT = "audit.export"


class Actor(Protocol):
    """Who acted: a Principal, or `SystemActor` for the operator's CLI and background jobs."""

    @property
    def tenant_id(self) -> uuid.UUID: ...

    @property
    def user_id(self) -> uuid.UUID | None: ...


class SystemActor:
    """The server itself (retention job) or an operator at the command line without an API key."""

    def __init__(self, tenant_id: uuid.UUID) -> None:
        self.tenant_id = tenant_id
        self.user_id: uuid.UUID | None = None


async def record(
    tx: Executor,
    actor: Actor,
    action: AuditAction,
    target: tuple[Kind, uuid.UUID] | None,
    details: dict[str, Any] | None = None,
) -> None:
    """Append an entry. Call it inside the transaction of the change, so both commit or neither does.

    Keep personal data (emails, names, content) out of `details`: user ids live in the actor and
    target columns, which erasure rewrites.
    """
    kind, target_id = target if target is not None else (None, None)
    await repo.insert_entry(
        tx,
        actor.tenant_id,
        actor_id=actor.user_id,
        action=action.value,
        target_kind=_TARGET_KINDS[kind] if kind is not None else None,
        target_id=target_id,
        details=details or {},
    )


def require_admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise forbidden("Only tenant admins may read the audit log")


async def entries_page(
    db: Executor,
    principal: Principal,
    *,
    action: str | None,
    actor_id: uuid.UUID | None,
    target_id: uuid.UUID | None,
    limit: int,
    after: tuple[datetime, uuid.UUID] | None,
) -> list[asyncpg.Record]:
    require_admin(principal)
    return await repo.entries_page(
        db,
        principal.tenant_id,
        action=action,
        actor_id=actor_id,
        target_id=target_id,
        limit=limit,
        after=after,
    )
