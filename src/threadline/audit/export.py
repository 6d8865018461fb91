"""The audit log as JSON lines (`threadline audit export`): the entries as `auditLog` gives them."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import datetime

from threadline.audit import repository as repo
from threadline.audit.service import KIND_OF_LABEL, AuditAction, SystemActor, record
from threadline.db import Database
from threadline.ids import Kind, encode_id


async def write_lines(
    db: Database, tenant_id: uuid.UUID, since: datetime | None, write: Callable[[str], object]
) -> int:
    """Writes the tenant's entries oldest first; the export is recorded (after them) as `audit.export`."""
    rows = await repo.all_entries(db, tenant_id, since)
    for row in rows:
        kind = KIND_OF_LABEL.get(row["target_kind"]) if row["target_kind"] else None
        target = row["target_id"]
        entry = {
            "id": "aud_" + row["id"].hex,
            "action": row["action"],
            "actorId": encode_id(Kind.USER, row["actor_id"]) if row["actor_id"] else None,
            "targetKind": row["target_kind"],
            "targetId": (encode_id(kind, target) if kind else target.hex) if target is not None else None,
            "details": row["details"],
            "createdAt": row["created_at"].isoformat(),
        }
        write(json.dumps(entry, sort_keys=True))
    async with db.transaction() as tx:
        await record(
            tx,
            SystemActor(tenant_id),
            AuditAction.AUDIT_EXPORT,
            None,
            {"entries": len(rows), "since": since.isoformat() if since else None},
        )
    return len(rows)
