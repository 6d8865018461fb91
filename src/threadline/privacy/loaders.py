"""Request-wide loader of stored PII detections (`Message.pii`)."""

from __future__ import annotations

import uuid
from typing import Any

from threadline.graphql.context import Info
from threadline.graphql.loaders import single_loader
from threadline.privacy import repository as repo


async def stored_pii(info: Info, message_id: uuid.UUID) -> list[dict[str, Any]] | None:
    """The detections stored with a message (None: never scanned), one statement for every message asked."""
    principal = await info.context.principal()
    db = info.context.db
    loader = single_loader(
        info, "pii", lambda ids: repo.stored_pii(db, principal.tenant_id, ids), key=lambda r: r["id"]
    )
    row = await loader.load(message_id)
    if row is None or row["deleted_at"] is not None:
        return None if row is None else []
    pii: list[dict[str, Any]] | None = row["pii"]
    return pii
