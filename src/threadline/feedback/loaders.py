"""Request-wide loaders of feedback: the viewer's own and the counts, each one statement per response."""

from __future__ import annotations

import uuid

import asyncpg

from threadline.feedback import repository as repo
from threadline.graphql.context import Info
from threadline.graphql.loaders import single_loader


async def viewer_feedback(info: Info, message_id: uuid.UUID) -> asyncpg.Record | None:
    principal = await info.context.principal()
    db = info.context.db
    loader = single_loader(
        info,
        "feedback:viewer",
        lambda ids: repo.of_viewer(db, principal.tenant_id, principal.user_id, ids),
        key=lambda row: row["message_id"],
    )
    return await loader.load(message_id)


async def summary(info: Info, message_id: uuid.UUID) -> tuple[int, int]:
    principal = await info.context.principal()
    db = info.context.db
    loader = single_loader(
        info,
        "feedback:summaries",
        lambda ids: repo.summaries(db, principal.tenant_id, ids),
        key=lambda row: row["message_id"],
    )
    row = await loader.load(message_id)
    return (int(row["up"]), int(row["down"])) if row is not None else (0, 0)
