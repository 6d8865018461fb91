"""Reads of a conversation by someone who is not its participant (issue 20 item 3): a tenant admin, a team
manager, or a share link's reader. Each is an audit entry `conversation.read` naming who (the actor; none for a
share link), what (the conversation) and why (`details.via`: the role or the link that allowed it).

Recorded in `conversations.access.require`, which every read of a conversation's content passes (queries,
exports, subscriptions), at most once per conversation per request (per socket over WebSockets).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping

from threadline.audit.service import Actor, AuditAction, record
from threadline.auth.principal import Principal, Role
from threadline.db import Executor
from threadline.ids import Kind
from threadline.privacy import reading


def via_role(principal: Principal) -> str:
    return "ADMIN" if principal.role is Role.ADMIN else "MANAGER"


async def record_read(
    db: Executor,
    actor: Actor,
    conversation_id: uuid.UUID,
    via: str,
    details: Mapping[str, object] | None = None,
) -> None:
    if not reading.first_audit(conversation_id):
        return
    await record(
        db,
        actor,
        AuditAction.CONVERSATION_READ,
        (Kind.CONVERSATION, conversation_id),
        {"via": via, **(details or {})},
    )
