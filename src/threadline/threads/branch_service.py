"""Branch writes built on thread writes: choosing the current leaf (`threadSetCurrent`) and edit-and-resend
(`messageEdit(asBranch: true)`). The rules are in threads.branches."""

from __future__ import annotations

import uuid

import asyncpg

from threadline.auth.principal import Principal
from threadline.conversations.access import Access, access_level, require, require_writable
from threadline.db import Database
from threadline.errors import bad_input, conflict, forbidden, not_found
from threadline.parts import model as message_parts
from threadline.settings import Settings
from threadline.threads import branches
from threadline.threads import repository as repo
from threadline.threads.service import MessageDraft, add_reply, readable_message, validate_content


async def set_current(db: Database, principal: Principal, root_id: uuid.UUID, message_id: uuid.UUID) -> None:
    """Put the caller on `message_id` in the thread of `root_id` (reading the thread is enough: the branch one
    looks at is one's own). NOT_FOUND for a thread they cannot read; BAD_USER_INPUT for a message outside it."""
    async with db.transaction() as tx:
        root = await readable_message(tx, principal, root_id)
        if root["parent_id"] is not None:
            raise bad_input("threadSetCurrent takes the id of a thread's root message", argument="rootId")
        message = await repo.message(tx, principal.tenant_id, message_id)
        if message is None or message["root_id"] != root_id:
            raise bad_input("The message is not in this thread", argument="messageId")
        await branches.move_current(tx, principal.tenant_id, principal.user_id, message, branches.SET)


async def edit_as_branch(
    db: Database, settings: Settings, principal: Principal, message_id: uuid.UUID, content: str
) -> tuple[asyncpg.Record, list[uuid.UUID]]:
    """Edit-and-resend: a new reply to the message's parent with the new text (same role and model), by the
    caller, who is moved onto it. The message and the answers under it stay as they were, one branch over."""
    validate_content(content, settings)
    async with db.transaction() as tx:
        row = await repo.message(tx, principal.tenant_id, message_id)
        if row is None:
            raise not_found("Message")
        conversation = await require(tx, principal, row["conversation_id"], Access.READ)
        if row["author_id"] != principal.user_id:
            raise forbidden("Only the author may edit a message")
        if access_level(principal, conversation) < Access.WRITE:
            raise forbidden("You have read-only access to this conversation")
        require_writable(conversation)
        if row["deleted_at"] is not None:
            raise conflict("A deleted message cannot be edited")
        if row["parent_id"] is None:
            raise bad_input(
                "A thread's root has no parent to branch from: edit it in place, or start a new thread",
                argument="asBranch",
            )
        # The parent is the row a reply locks (lock order: message, then conversation, then thread).
        parent = await repo.message(tx, principal.tenant_id, row["parent_id"], lock=True)
        assert parent is not None
        # The new version keeps the message's other parts (an image, a file) with the new text.
        stored = await repo.parts_of(tx, principal.tenant_id, [message_id])
        edited = message_parts.with_text(stored[0]["parts"], content) if stored else None
        kept = None if edited is None or message_parts.is_plain_text(edited) else edited
        draft = MessageDraft(content=content, role=row["role"], model=row["model"], parts=kept)
        return await add_reply(tx, settings, principal.tenant_id, parent, draft, principal.user_id)
