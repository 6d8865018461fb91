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
from threadline.graphql.ready import asks_for

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
    selection asks for them, in one statement (`repo.page_relations`), and primes the request's loaders with
    them (what each loader would have fetched itself, keys not found included), so that `Conversation.owner`,
    `.participants` and `Participant.user` answer synchronously under compiled execution (graphql.ready) and
    the stock resolvers find them loaded. If the statement fails, nothing is primed: the fields load on their
    own and report what fails as they always did."""
    if not rows:
        return
    owners = any(asks_for(info, *path, "owner") for path in _NODES)
    members = any(asks_for(info, *path, "participants") for path in _NODES)
    if not owners and not members:
        return
    member_users = members and any(asks_for(info, *path, "participants", "user") for path in _NODES)
    principal = await info.context.principal()
    conversation_ids = [row["id"] for row in rows] if members else []
    owner_ids = [row["owner_id"] for row in rows if row["owner_id"] is not None] if owners else []
    try:
        found = await repo.page_relations(
            info.context.db,
            principal.tenant_id,
            conversation_ids,
            list(dict.fromkeys(owner_ids)),
            member_users,
        )
    except Exception:  # noqa: BLE001 - the fields' own loads run (and fail) as without the prefetch
        return
    grouped: dict[uuid.UUID, list[asyncpg.Record]] = {key: [] for key in conversation_ids}
    users: dict[uuid.UUID, asyncpg.Record] = {}
    for row in found:
        if row["kind"] == 0:
            grouped[row["conversation_id"]].append(row)
        else:
            users[row["id"]] = row
    if members:
        participants_loader(info, principal).prime_many(grouped)
    wanted = dict.fromkeys(owner_ids)
    if member_users:
        wanted.update(dict.fromkeys(row["user_id"] for found_rows in grouped.values() for row in found_rows))
    if wanted:
        user_loaders.users(info, principal).prime_many({key: users.get(key) for key in wanted})
