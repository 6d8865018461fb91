"""Query fields of the audit log (admins only)."""

from __future__ import annotations

from typing import Annotated

import strawberry

from threadline.audit import repository as repo
from threadline.audit import retention as audit_retention
from threadline.audit import service
from threadline.audit.types import AuditEntry
from threadline.errors import bad_input
from threadline.graphql.arguments import given
from threadline.graphql.context import Info
from threadline.graphql.pagination import (
    After,
    Connection,
    First,
    as_datetime,
    as_uuid,
    connection,
    decode_cursor,
    page_size,
)
from threadline.ids import Kind, decode_id, parse_id


@strawberry.type
class AuditQuery:
    @strawberry.field(
        description="The tenant's audit log, newest first (admins only). Filter by `action` (e.g. user.erase), "
        "by the acting user, or by the object acted on (any id)."
    )
    async def audit_log(
        self,
        info: Info,
        first: First = None,
        after: After = None,
        action: Annotated[
            str | None,
            strawberry.argument(
                description="Only entries of this action, as in `AuditEntry.action` (e.g. `user.erase`, "
                "`conversation.export`, `api_key.revoke`)."
            ),
        ] = None,
        actor_id: Annotated[
            strawberry.ID | None, strawberry.argument(description="Only entries by this user (`User.id`).")
        ] = None,
        target_id: Annotated[
            strawberry.ID | None,
            strawberry.argument(
                description="Only entries about this object: the id of any user, key, conversation, "
                "message or run."
            ),
        ] = None,
    ) -> Connection[AuditEntry]:
        principal = await info.context.principal()
        service.require_admin(principal)
        settings = info.context.settings
        limit = page_size(first, settings.page_size_default, settings.page_size_max)
        cursor = decode_cursor(after, (as_datetime, as_uuid)) if after else None
        actor = decode_id(actor_id, Kind.USER) if actor_id is not None else None
        target = None
        if target_id is not None:
            parsed = parse_id(target_id)
            if parsed is None:
                raise bad_input(f"Malformed id {target_id[:80]!r}", argument="targetId")
            target = parsed[1]
        db = info.context.db
        rows = await service.entries_page(
            db, principal, action=action, actor_id=actor, target_id=target, limit=limit + 1, after=cursor
        )
        return connection(
            rows,
            limit,
            AuditEntry.from_row,
            lambda r: (r["created_at"], r["id"]),
            lambda: repo.count_entries(
                db, principal.tenant_id, action=action, actor_id=actor, target_id=target
            ),
            has_previous=cursor is not None,
        )


@strawberry.type
class AuditMutation:
    @strawberry.mutation(
        description="Set how long the tenant's audit log keeps entries (admins only; audited): entries older than "
        "`days` are deleted by the retention job, which records how many in an `audit.purge` entry. Null keeps "
        "every entry (the default). Nothing else can update or delete an entry. Returns the retention now in force."
    )
    async def tenant_audit_retention_set(
        self,
        info: Info,
        days: Annotated[
            int | None,
            strawberry.argument(description="Days to keep entries (1 to 36,500), or null to keep them all."),
        ] = strawberry.UNSET,
    ) -> int | None:
        days = given(days, "days", "keeps every entry")
        principal = await info.context.principal()
        return await audit_retention.set_retention(info.context.db, principal, days)
