"""Metadata rules that need the database: how a conversation filter runs, and who may change a message's metadata."""

from __future__ import annotations

import uuid

import asyncpg

from threadline.auth.principal import Principal
from threadline.conversations.access import Access, access_level, require, require_writable
from threadline.db import Database, Executor
from threadline.errors import conflict, forbidden, not_found
from threadline.metadata import repository as repo
from threadline.metadata import rules
from threadline.metadata.rules import MetadataFilter
from threadline.threads import repository as threads

# Up to this many holders a filter reads their ids from the GIN index first; beyond, a page is in the first rows
# of the listing's own order (bench/metadata_filter.py).
FEW_HOLDERS = 1_000


async def conversation_filter(
    db: Executor, principal: Principal, pairs: dict[str, str] | None
) -> MetadataFilter | None:
    """How `conversations(metadata:)` runs: one statement reading at most FEW_HOLDERS + 1 index entries."""
    if not pairs:
        return None
    return MetadataFilter(pairs, await repo.held_by_at_most(db, principal.tenant_id, pairs, FEW_HOLDERS))


async def set_message_metadata(
    db: Database, principal: Principal, message_id: uuid.UUID, metadata: object
) -> asyncpg.Record:
    """Replace a message's metadata ({} clears it): its author, or whoever manages the conversation."""
    wanted = rules.validated(metadata)
    async with db.transaction() as tx:
        row = await threads.message(tx, principal.tenant_id, message_id, lock=True)
        if row is None:
            raise not_found("Message")
        # A message of a conversation the caller may not read is "Message not found", as an unknown id is.
        conversation = await require(tx, principal, row["conversation_id"], Access.READ, asked_for="Message")
        level = access_level(principal, conversation)
        if level < Access.WRITE:
            raise forbidden("You have read-only access to this conversation")
        if row["author_id"] != principal.user_id and level < Access.MANAGE:
            raise forbidden("Only the author or the conversation's owner may change a message's metadata")
        require_writable(conversation)
        if row["deleted_at"] is not None:
            # Deleted means gone: its metadata went with its content, and a tombstone takes no new data.
            raise conflict("A deleted message has no metadata; it cannot be given any")
        await repo.set_message_metadata(tx, principal.tenant_id, message_id, wanted)
    return row
