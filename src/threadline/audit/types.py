"""GraphQL types of the audit log."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg
import strawberry
from strawberry.scalars import JSON

from threadline.audit.service import KIND_OF_LABEL
from threadline.auth.types import User, load_user
from threadline.graphql.context import Info
from threadline.ids import Kind, encode_id

# Audit entries are not Nodes (they cannot be fetched one by one), so their ids need no Kind.
AUDIT_ID_PREFIX = "aud_"


@strawberry.type(description="One audited action: who did what to which object, and when.")
class AuditEntry:
    id: strawberry.ID = strawberry.field(description="The entry's id.")
    action: str = strawberry.field(
        description="Dotted action name: conversation.export, conversation.import, user.export, user.erase, "
        "user.create, user.role_set, api_key.create, api_key.revoke, participant.role_set, tenant.retention_set, "
        "retention.purge, share_link.create, share_link.revoke; conversation.read (a read by someone who is not a "
        "participant: `details.via` is ADMIN, MANAGER or SHARE_LINK), tenant.pii_policy_set, user.anonymise, "
        "tenant.audit_retention_set, audit.purge, audit.export."
    )
    actor_id: strawberry.ID | None = strawberry.field(
        description="The user who acted; null for the server itself (retention) or an operator's CLI."
    )
    target_kind: str | None = strawberry.field(
        description="Type of the object acted on (User, Conversation, ...)."
    )
    target_id: strawberry.ID | None = strawberry.field(description="Id of the object acted on.")
    details: JSON = strawberry.field(
        description="Action-specific facts (counts, roles, formats); no personal data."
    )
    created_at: datetime = strawberry.field(description="When it happened.")
    actor_uuid: strawberry.Private[uuid.UUID | None]

    @strawberry.field(
        description="The user who acted, if they still exist (erased users read as the placeholder)."
    )
    async def actor(self, info: Info) -> User | None:
        return await load_user(info, self.actor_uuid)

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> AuditEntry:
        kind = KIND_OF_LABEL.get(row["target_kind"]) if row["target_kind"] else None
        target: Any = None
        if row["target_id"] is not None:
            target = strawberry.ID(encode_id(kind, row["target_id"]) if kind else row["target_id"].hex)
        return cls(
            id=strawberry.ID(AUDIT_ID_PREFIX + row["id"].hex),
            action=row["action"],
            actor_id=strawberry.ID(encode_id(Kind.USER, row["actor_id"])) if row["actor_id"] else None,
            actor_uuid=row["actor_id"],
            target_kind=row["target_kind"],
            target_id=target,
            details=row["details"],
            created_at=row["created_at"],
        )
