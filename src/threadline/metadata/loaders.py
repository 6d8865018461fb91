"""Request-wide loader of message metadata: every message of a response in one statement (graphql/loaders.py)."""

from __future__ import annotations

import uuid

from threadline.graphql.context import Info
from threadline.graphql.loaders import single_loader
from threadline.metadata import repository as repo


async def message_metadata(info: Info, message_id: uuid.UUID) -> dict[str, str]:
    principal = await info.context.principal()
    db = info.context.db
    loader = single_loader(
        info,
        "metadata:messages",
        lambda ids: repo.message_metadata(db, principal.tenant_id, ids),
        key=lambda row: row["id"],
    )
    row = await loader.load(message_id)
    return dict(row["metadata"]) if row is not None else {}
