"""Link rules: both ends must be readable by the caller (NOT_FOUND otherwise, the same answer as for a
conversation that does not exist), the caller must be able to write to the conversation the link starts from,
links are bounded per conversation, and a conversation cannot link to itself."""

from __future__ import annotations

import uuid
from enum import StrEnum

import asyncpg

from threadline.auth.principal import Principal
from threadline.conversations import repository as conversations
from threadline.conversations.access import Access, access_level
from threadline.db import Database, Executor
from threadline.errors import bad_input, forbidden, not_found
from threadline.links import repository as repo
from threadline.settings import Settings


class LinkKind(StrEnum):
    RELATED = "RELATED"
    CONTINUES = "CONTINUES"
    CITES = "CITES"
    DUPLICATE = "DUPLICATE"


async def _levels(
    db: Executor, principal: Principal, from_id: uuid.UUID, to_id: uuid.UUID
) -> tuple[Access, Access]:
    rows = {
        r["id"]: r
        for r in await conversations.conversations_with_access(
            db, principal.tenant_id, [from_id, to_id], principal.user_id
        )
    }

    def level(cid: uuid.UUID) -> Access:
        return access_level(principal, rows[cid]) if cid in rows else Access.NONE

    return level(from_id), level(to_id)


async def link(
    db: Database,
    settings: Settings,
    principal: Principal,
    from_id: uuid.UUID,
    to_id: uuid.UUID,
    kind: LinkKind,
) -> asyncpg.Record:
    if from_id == to_id:
        raise bad_input("A conversation cannot link to itself", argument="toId")
    async with db.transaction() as tx:
        source, target = await _levels(tx, principal, from_id, to_id)
        # Both looked at before any other answer: FORBIDDEN must not tell that an unreadable target exists.
        if source is Access.NONE or target is Access.NONE:
            raise not_found("Conversation")
        if source < Access.WRITE:
            raise forbidden("You have read-only access to the conversation the link starts from")
        # Serialises concurrent links from one conversation, so the bound holds.
        await conversations.conversation_with_access(
            tx, principal.tenant_id, from_id, principal.user_id, lock=True
        )
        if await repo.count_links_from(tx, principal.tenant_id, from_id) >= settings.links_max:
            raise bad_input(
                f"A conversation may link to at most {settings.links_max} others",
                argument="fromId",
                limit=settings.links_max,
            )
        return await repo.insert_link(tx, principal.tenant_id, from_id, to_id, kind.value, principal.user_id)


async def _readable(db: Executor, principal: Principal, link_id: uuid.UUID) -> tuple[asyncpg.Record, Access]:
    row = await repo.link_by_id(db, principal.tenant_id, link_id)
    if row is None:
        raise not_found("ConversationLink")
    source, target = await _levels(db, principal, row["from_id"], row["to_id"])
    if source is Access.NONE or target is Access.NONE:
        raise not_found("ConversationLink")
    return row, source


async def readable_link(db: Executor, principal: Principal, link_id: uuid.UUID) -> asyncpg.Record:
    """A link both of whose ends the caller may read (NOT_FOUND otherwise)."""
    row, _ = await _readable(db, principal, link_id)
    return row


async def unlink(db: Database, principal: Principal, link_id: uuid.UUID) -> bool:
    """Remove a link: whoever may write to the conversation it starts from (and read both ends)."""
    async with db.transaction() as tx:
        row, source = await _readable(tx, principal, link_id)
        if source < Access.WRITE:
            raise forbidden("You have read-only access to the conversation the link starts from")
        await repo.delete_link(tx, principal.tenant_id, link_id)
    return True
