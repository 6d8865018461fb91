"""Metadata of messages after they are written: who may change it, in a transaction of its own."""

from __future__ import annotations

import uuid

import asyncpg

from threadline.auth.principal import Principal
from threadline.conversations.access import Access, access_level, require, require_writable
from threadline.db import Database
from threadline.errors import forbidden, not_found
from threadline.metadata import repository as repo
from threadline.metadata import rules
from threadline.threads import repository as threads


async def set_message_metadata(
    db: Database, principal: Principal, message_id: uuid.UUID, metadata: object
) -> asyncpg.Record:
    """Replace a message's metadata ({} clears it): its author, or whoever manages the conversation."""
    wanted = rules.validated(metadata)
    async with db.transaction() as tx:
        row = await threads.message(tx, principal.tenant_id, message_id, lock=True)
        if row is None:
            raise not_found("Message")
        conversation = await require(tx, principal, row["conversation_id"], Access.READ)
        level = access_level(principal, conversation)
        if level < Access.WRITE:
            raise forbidden("You have read-only access to this conversation")
        if row["author_id"] != principal.user_id and level < Access.MANAGE:
            raise forbidden("Only the author or the conversation's owner may change a message's metadata")
        require_writable(conversation)
        await repo.set_message_metadata(tx, principal.tenant_id, message_id, wanted)
    return row
