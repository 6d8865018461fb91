"""Feedback rules: who may rate a message (whoever may read it), one rating per user and message."""

from __future__ import annotations

import uuid

import asyncpg

from threadline.auth.principal import Principal
from threadline.conversations.access import Access, require
from threadline.db import Database
from threadline.errors import not_found
from threadline.events.announce import publish_message_feedback
from threadline.events.payloads import MessageFeedbackChanged
from threadline.feedback import repository as repo
from threadline.feedback import rules
from threadline.threads import repository as threads


async def set_feedback(
    db: Database,
    principal: Principal,
    message_id: uuid.UUID,
    rating: str | None,
    reasons: list[str] | None,
    comment: str | None,
) -> asyncpg.Record:
    """Set (or with `rating` None, remove) the caller's feedback on a message they may read; NOT_FOUND for one
    they may not. Returns the message."""
    feedback = rules.validated(rating, reasons, comment) if rating is not None else None
    async with db.transaction() as tx:
        message = await threads.message(tx, principal.tenant_id, message_id)
        if message is None:
            raise not_found("Message")
        # A message of a conversation the caller may not read is "Message not found", as an unknown id is.
        await require(tx, principal, message["conversation_id"], Access.READ, asked_for="Message")
        if feedback is None:
            await repo.remove(tx, principal.tenant_id, message_id, principal.user_id)
        else:
            await repo.upsert(
                tx,
                principal.tenant_id,
                message_id,
                principal.user_id,
                feedback.rating,
                feedback.reasons,
                feedback.comment,
            )
        # Readers see the counts move; who rated it, and how, stays the rater's.
        up, down = await repo.summary(tx, principal.tenant_id, message_id)
        await publish_message_feedback(
            tx,
            principal.tenant_id,
            MessageFeedbackChanged(message_id, up, down),
            conversation_id=message["conversation_id"],
            root_id=message["root_id"],
        )
    return message
