"""Request-wide loaders of conversation data (graphql/loaders.py): the participants of every conversation
in a response in one statement. Rows come back as stored; `conversations/types.py` builds the objects."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import asyncpg

from threadline.auth import loaders as user_loaders
from threadline.auth.principal import Principal
from threadline.conversations import repository as repo
from threadline.graphql.context import Info
from threadline.graphql.loaders import DataLoader, grouped_loader
from threadline.graphql.ready import asks_for, prime

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


def page_relations(info: Info) -> repo.PageRelations | None:
    """What a connection's selection asks of its conversations' owners and participants (None: nothing)."""
    owners = any(asks_for(info, *path, "owner") for path in _NODES)
    members = any(asks_for(info, *path, "participants") for path in _NODES)
    if not owners and not members:
        return None
    member_users = members and any(asks_for(info, *path, "participants", "user") for path in _NODES)
    return repo.PageRelations(owners, members, member_users)


async def prefetch_page(
    info: Info, rows: Sequence[asyncpg.Record], relations: repo.PageRelations | None
) -> None:
    """Primes the request's loaders with the owners and participants (and their users) that a connection's page
    of conversation rows carries (`repo.list_conversations(relations=...)`, read in the page's statement): what
    each loader would have fetched itself, keys not found included, so that `Conversation.owner`,
    `.participants` and `Participant.user` answer synchronously under compiled execution (graphql.ready) and
    the stock resolvers find them loaded."""
    if not rows or relations is None:
        return
    principal = await info.context.principal()
    grouped: dict[uuid.UUID, Sequence[asyncpg.Record]] = {}
    if relations.members:
        grouped = {row["id"]: row["page_participants"] for row in rows}
        prime(participants_loader(info, principal), grouped)
    if not relations.users:
        return
    # The page's users are on its first row; a user not found is None, as the loader says.
    found = {user["id"]: user for user in rows[0]["page_users"] or ()}
    users: dict[uuid.UUID, asyncpg.Record | None] = {}
    if relations.member_users:
        for participants in grouped.values():
            for participant in participants:
                users[participant["user_id"]] = found.get(participant["user_id"])
    if relations.owners:
        for row in rows:
            owner = row["owner_id"]
            if owner is not None:
                users[owner] = found.get(owner)
    if users:
        prime(user_loaders.users(info, principal), users)
