"""Request-wide loader of stored PII detections (`Message.pii`)."""

from __future__ import annotations

import uuid
from typing import Any

from threadline.graphql.context import Info
from threadline.graphql.loaders import single_loader
from threadline.privacy import repository as repo
from threadline.privacy.detectors import detect
from threadline.privacy.masking import to_json
from threadline.privacy.modes import PiiPolicy, parse


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


async def detections(info: Info, message_id: uuid.UUID, content: str) -> list[dict[str, Any]] | None:
    """`Message.pii`: the stored detections, else (content not scanned yet) those found now unless the tenant's
    policy is OFF."""
    stored = await stored_pii(info, message_id)
    if stored is not None:
        return stored
    principal = await info.context.principal()
    if parse(principal.pii_policy) is PiiPolicy.OFF:
        return None
    return to_json(detect(content))
