"""Request-wide loaders of conversation data (graphql/loaders.py): the participants of every conversation
in a response in one statement. Rows come back as stored; `conversations/types.py` builds the objects."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Sequence
from typing import Any

import asyncpg

from threadline.auth import loaders as user_loaders
from threadline.auth.principal import Principal
from threadline.conversations import repository as repo
from threadline.graphql.context import Info
from threadline.graphql.loaders import DataLoader, grouped_loader
from threadline.graphql.ready import NOT_READY, asks_for, loaded, settle

PARTICIPANTS = "participants"  # the loader's name (graphql.ready reads what it holds)
# Where a connection's selection holds its conversations.
_NODES = (("edges", "node"), ("nodes",))


def participants_loader(info: Info, principal: Principal) -> DataLoader[uuid.UUID, list[asyncpg.Record]]:
    db = info.context.db
    return grouped_loader(
        info,
        PARTICIPANTS,
        lambda ids: repo.participants_of(db, principal.tenant_id, ids),
        key=lambda row: row["conversation_id"],
    )


async def participants(info: Info, conversation_id: uuid.UUID) -> list[asyncpg.Record]:
    """A conversation's participants in joining order."""
    principal = await info.context.principal()
    return await participants_loader(info, principal).load(conversation_id)


async def prefetch_page(info: Info, rows: Sequence[asyncpg.Record]) -> None:
    """Loads the owners and participants (and their users) of a connection's page of conversation rows, if its
    selection asks for them, through the request's loaders: one statement each, as the fields' own loads
    would batch, but before the page is returned, so that `Conversation.owner`, `.participants` and
    `Participant.user` answer synchronously under compiled execution (graphql.ready). A failed load stays in
    its loader: the fields that need it report it as they would have."""
    if not rows:
        return
    owners = any(asks_for(info, *path, "owner") for path in _NODES)
    members = any(asks_for(info, *path, "participants") for path in _NODES)
    if not owners and not members:
        return
    principal = await info.context.principal()
    loads: list[Awaitable[Any]] = []
    if owners:
        owner_ids = [row["owner_id"] for row in rows if row["owner_id"] is not None]
        loads.append(user_loaders.users(info, principal).load_many(owner_ids))
    if members:
        loads.append(participants_loader(info, principal).load_many([row["id"] for row in rows]))
    await settle(*loads)
    if members and any(asks_for(info, *path, "participants", "user") for path in _NODES):
        grouped = [loaded(info.context, PARTICIPANTS, row["id"]) for row in rows]
        user_ids = {p["user_id"] for found in grouped if found is not NOT_READY for p in found}
        await settle(user_loaders.users(info, principal).load_many(user_ids))
