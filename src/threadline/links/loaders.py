"""Request-wide loaders of links (graphql/loaders.py): the links (or backlinks) of every conversation in a
response in one statement, and their counts in another."""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg

from threadline.graphql.context import Info
from threadline.graphql.loaders import counting_loader, grouped_loader
from threadline.links import repository as repo


async def links(
    info: Info,
    conversation_id: uuid.UUID,
    *,
    backwards: bool,
    limit: int,
    after: tuple[datetime, uuid.UUID] | None,
) -> list[asyncpg.Record]:
    principal = await info.context.principal()
    db = info.context.db
    anchor = "to_id" if backwards else "from_id"
    # The name carries every value the fetch closes over (page size and cursor), per graphql/loaders.py.
    loader = grouped_loader(
        info,
        f"links:{anchor}:{limit}:{after!r}",
        lambda ids: repo.links_page(db, principal, ids, backwards=backwards, limit=limit, after=after),
        key=lambda row: row[anchor],
    )
    return await loader.load(conversation_id)


async def link_count(info: Info, conversation_id: uuid.UUID, *, backwards: bool) -> int:
    principal = await info.context.principal()
    db = info.context.db
    loader = counting_loader(
        info,
        f"link_count:{backwards}",
        lambda ids: repo.link_counts(db, principal, ids, backwards=backwards),
        key=lambda row: row["anchor"],
        count=lambda row: int(row["count"]),
    )
    return await loader.load(conversation_id)
