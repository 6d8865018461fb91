"""Link rules: both ends must be readable by the caller (NOT_FOUND otherwise, the same answer as for a
conversation that does not exist), the caller must be able to write to the conversation the link starts from,
links are bounded per conversation, and a conversation cannot link to itself."""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import Any

import asyncpg

from threadline.auth.principal import Principal
from threadline.conversations import repository as conversations
from threadline.conversations.access import Access, access_level
from threadline.db import Database, Executor
from threadline.errors import bad_input, forbidden, not_found
from threadline.ids import Kind, encode_id
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


async def links_for_export(
    db: Executor, tenant_id: uuid.UUID, viewer: Principal | None, conversation_id: uuid.UUID
) -> list[dict[str, Any]]:
    """Every link from and to a conversation, as export entries (oldest first): those whose other end `viewer`
    may read, or all of them for the operator (`viewer` None)."""
    rows = await repo.all_links_of(db, tenant_id, conversation_id)
    if viewer is not None and rows:
        others = list({r["id"] for r in rows})
        readable = {
            r["id"]
            for r in await conversations.conversations_with_access(db, tenant_id, others, viewer.user_id)
            if access_level(viewer, r) >= Access.READ
        }
        rows = [r for r in rows if r["id"] in readable]
    return [
        {
            "id": encode_id(Kind.CONVERSATION_LINK, r["link_id"]),
            "kind": r["link_kind"].lower(),
            "direction": "out" if r["from_id"] == conversation_id else "in",
            "from_id": encode_id(Kind.CONVERSATION, r["from_id"]),
            "to_id": encode_id(Kind.CONVERSATION, r["to_id"]),
            "title": r["title"],
            "created_at": r["linked_at"].isoformat(),
        }
        for r in rows
    ]
