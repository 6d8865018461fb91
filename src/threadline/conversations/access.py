"""Who may read, write or manage a conversation. Every conversation read and write passes here.

The rule itself lives in `access_rule` (also the source of the SQL form, `repository.visibility_sql`);
this module applies it to rows and turns a shortfall into the API's errors.
"""

from __future__ import annotations

import uuid

import asyncpg

from threadline.audit import reads
from threadline.auth.principal import Principal
from threadline.conversations import access_rule
from threadline.conversations import repository as repo
from threadline.conversations.access_rule import Access
from threadline.db import Executor
from threadline.errors import conflict, forbidden, not_found
from threadline.tiers import service as tiers

__all__ = ["Access", "access_level", "require", "require_writable"]


def access_level(principal: Principal, row: asyncpg.Record) -> Access:
    """What `principal` may do with a conversation row fetched by `conversation_with_access`."""
    return access_rule.access_level(principal, row["tenant_id"], row["viewer_role"], row["owner_team"])


async def require(
    db: Executor,
    principal: Principal,
    conversation_id: uuid.UUID,
    need: Access,
    *,
    lock: bool = False,
    metadata_only: bool = False,
    explicit: bool = False,
    asked_for: str = "Conversation",
) -> asyncpg.Record:
    """The conversation row if `principal` has `need` on it: NOT_FOUND if invisible, FORBIDDEN if read-only.
    `asked_for`: what the caller named, when it was something in the conversation (a message, a run): an invisible
    conversation is then that thing NOT_FOUND, the answer for an id that does not exist or is another tenant's (a
    colleague outside the conversation learns nothing of what it holds).

    A cold conversation's content comes back first (tiers/), unless the caller reads only the row
    (`metadata_only`: its content fields restore it if asked); one in deep storage only when `explicit`
    (conversationRestore), else CONFLICT."""
    row = await repo.conversation_with_access(
        db, principal.tenant_id, conversation_id, principal.user_id, lock=lock
    )
    if row is None:
        raise not_found(asked_for)
    level = access_level(principal, row)
    if level is Access.NONE:
        raise not_found(asked_for)
    if level < need:
        if need is Access.MANAGE:
            raise forbidden("Only the conversation's owner (or a tenant admin) may do this")
        raise forbidden("You have read-only access to this conversation")
    if row["viewer_role"] is None and need is Access.READ:
        # Read by an admin or a team manager who is not a participant: audited (audit.reads).
        await reads.record_read(db, principal, conversation_id, reads.via_role(principal))
    if row["cold"] and not metadata_only:
        # Its content is in a cold document (tiers/): back first, in the caller's transaction if it has one.
        await tiers.restore(db, principal.tenant_id, conversation_id, explicit=explicit)
    return row


def require_writable(conversation: asyncpg.Record) -> None:
    """Only an ACTIVE conversation can be written to: messages, edits, runs, streamed output and imports into
    it. An ARCHIVED or DELETED one is CONFLICT until it is restored. The one home of this rule."""
    status = conversation["status"]
    if status != "ACTIVE":
        raise conflict(f"The conversation is {status.lower()}; restore it before writing to it")
