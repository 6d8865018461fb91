"""Request-wide loaders of conversation data (graphql/loaders.py): the participants of every conversation
in a response in one statement. Rows come back as stored; `conversations/types.py` builds the objects."""

from __future__ import annotations

import uuid

import asyncpg

from threadline.conversations import repository as repo
from threadline.graphql.context import Info
from threadline.graphql.loaders import grouped_loader


async def participants(info: Info, conversation_id: uuid.UUID) -> list[asyncpg.Record]:
    """A conversation's participants in joining order."""
    principal = await info.context.principal()
    db = info.context.db
    loader = grouped_loader(
        info,
        "participants",
        lambda ids: repo.participants_of(db, principal.tenant_id, ids),
        key=lambda row: row["conversation_id"],
    )
    return await loader.load(conversation_id)
