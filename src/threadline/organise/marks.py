"""Pin and bookmark rules: a user's ordered pins (bounded), and bookmarks on messages they may read, with an
optional note (bounded count and length)."""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg

from threadline.auth.principal import Principal
from threadline.conversations.access import Access, require
from threadline.db import Database
from threadline.errors import bad_input, not_found
from threadline.organise import mark_repository as mark_repo
from threadline.organise import repository as repo
from threadline.settings import Settings
from threadline.threads.service import readable_message


async def pin(
    db: Database, settings: Settings, principal: Principal, conversation_id: uuid.UUID, position: int | None
) -> asyncpg.Record:
    """Pin a readable conversation at `position` (the end by default); pinning a pinned one moves it. The
    conversation row."""
    if position is not None and position < 0:
        raise bad_input("`position` must not be negative", argument="position")
    async with db.transaction() as tx:
        conversation = await require(tx, principal, conversation_id, Access.READ)
        # The lock makes read-shift-write one step: concurrent pins and moves never share a position.
        await repo.lock_user(tx, principal.tenant_id, principal.user_id)
        await mark_repo.drop_unreadable_pins(tx, principal)
        order = [
            r["conversation_id"] for r in await mark_repo.pins_of(tx, principal.tenant_id, principal.user_id)
        ]
        if conversation_id in order:
            order.remove(conversation_id)
        else:
            if len(order) >= settings.pins_max:
                raise bad_input(
                    f"A user may pin at most {settings.pins_max} conversations; unpin one first",
                    argument="conversationId",
                    limit=settings.pins_max,
                )
            await mark_repo.insert_pin(
                tx, principal.tenant_id, principal.user_id, conversation_id, len(order)
            )
        order.insert(len(order) if position is None else min(position, len(order)), conversation_id)
        await mark_repo.set_pin_positions(tx, principal.tenant_id, principal.user_id, order)
    return conversation


async def unpin(db: Database, principal: Principal, conversation_id: uuid.UUID) -> asyncpg.Record:
    async with db.transaction() as tx:
        conversation = await require(tx, principal, conversation_id, Access.READ)
        await repo.lock_user(tx, principal.tenant_id, principal.user_id)
        await mark_repo.drop_unreadable_pins(tx, principal)
        await mark_repo.delete_pin(tx, principal.tenant_id, principal.user_id, conversation_id)
        order = [
            r["conversation_id"] for r in await mark_repo.pins_of(tx, principal.tenant_id, principal.user_id)
        ]
        await mark_repo.set_pin_positions(tx, principal.tenant_id, principal.user_id, order)
    return conversation


async def bookmark(
    db: Database, settings: Settings, principal: Principal, message_id: uuid.UUID, note: str | None
) -> asyncpg.Record:
    """Bookmark a message the caller may read, or change the note of their bookmark on it."""
    if note is not None:
        note = note.strip() or None
    if note is not None and len(note) > settings.bookmark_note_max_chars:
        raise bad_input(
            f"A bookmark note is at most {settings.bookmark_note_max_chars} characters",
            argument="note",
            limit=settings.bookmark_note_max_chars,
        )
    async with db.transaction() as tx:
        message = await readable_message(tx, principal, message_id)
        await repo.lock_user(tx, principal.tenant_id, principal.user_id)
        if not await mark_repo.bookmark_exists(tx, principal.tenant_id, principal.user_id, message_id):
            # Those in conversations the user may still read: the others no longer show, nor can they be
            # removed (the rows are kept, as they come back with the access), so they must not hold places.
            if await mark_repo.count_visible_bookmarks(tx, principal, None) >= settings.bookmarks_max:
                raise bad_input(
                    f"A user may keep at most {settings.bookmarks_max} bookmarks; remove some first",
                    argument="messageId",
                    limit=settings.bookmarks_max,
                )
        return await mark_repo.upsert_bookmark(
            tx, principal.tenant_id, principal.user_id, message_id, message["conversation_id"], note
        )


async def unbookmark(db: Database, principal: Principal, message_id: uuid.UUID) -> bool:
    async with db.transaction() as tx:
        await readable_message(tx, principal, message_id)
        if not await mark_repo.delete_bookmark(tx, principal.tenant_id, principal.user_id, message_id):
            raise not_found("Bookmark")
    return True


async def bookmarks_page(
    db: Database,
    principal: Principal,
    conversation_id: uuid.UUID | None,
    limit: int,
    after: tuple[datetime, uuid.UUID] | None,
) -> list[asyncpg.Record]:
    if conversation_id is not None:
        await require(db, principal, conversation_id, Access.READ)
    return await mark_repo.list_bookmarks(
        db, principal, conversation_id=conversation_id, limit=limit, after=after
    )
