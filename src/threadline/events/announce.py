"""Typed publishing: one `publish_*` per event kind, the only way services announce an event.

Each takes the kind's typed payload (events.payloads) and the event's routing columns (which conversation,
which thread, which recipient), stores the payload in its logged shape (events.stored) and publishes it in
the writer's transaction (events.publish). Where the payload itself names the conversation and thread (a
message snapshot), the columns are taken from it, so they cannot disagree.
"""

from __future__ import annotations

import uuid

from threadline.db import Executor
from threadline.events.payloads import (
    KIND_OF,
    BranchCurrent,
    BranchSibling,
    ConversationForked,
    EnrichmentJobChanged,
    EventPayload,
    MembershipChanged,
    MessageDelta,
    MessageDone,
    MessageFeedbackChanged,
    PresenceUpdate,
    PrincipalChanged,
    RunStatusChanged,
    StreamError,
    ThreadActivity,
    ThreadNew,
    TypingUpdate,
    UnreadUpdate,
)
from threadline.events.publish import deferring, publish
from threadline.events.stored import encode

__all__ = ["deferring"]  # bulk writers publish their events in one statement at the end (events.publish)


async def _publish(
    tx: Executor,
    tenant_id: uuid.UUID,
    payload: EventPayload,
    *,
    conversation_id: uuid.UUID | None,
    root_id: uuid.UUID | None = None,
    recipient_id: uuid.UUID | None = None,
) -> int:
    return await publish(
        tx,
        tenant_id,
        KIND_OF[type(payload)],
        conversation_id=conversation_id,
        root_id=root_id,
        recipient_id=recipient_id,
        payload=encode(payload),
    )


async def publish_thread_new(tx: Executor, tenant_id: uuid.UUID, payload: ThreadNew) -> int:
    root = payload.message
    return await _publish(tx, tenant_id, payload, conversation_id=root.conversation_id, root_id=root.id)


async def publish_thread_activity(tx: Executor, tenant_id: uuid.UUID, payload: ThreadActivity) -> int:
    message = payload.message
    return await _publish(
        tx, tenant_id, payload, conversation_id=message.conversation_id, root_id=message.root_id
    )


async def publish_message_delta(
    tx: Executor,
    tenant_id: uuid.UUID,
    payload: MessageDelta,
    *,
    conversation_id: uuid.UUID,
    root_id: uuid.UUID,
) -> int:
    return await _publish(tx, tenant_id, payload, conversation_id=conversation_id, root_id=root_id)


async def publish_message_done(
    tx: Executor,
    tenant_id: uuid.UUID,
    payload: MessageDone,
    *,
    conversation_id: uuid.UUID,
    root_id: uuid.UUID,
) -> int:
    return await _publish(tx, tenant_id, payload, conversation_id=conversation_id, root_id=root_id)


async def publish_presence_update(tx: Executor, tenant_id: uuid.UUID, payload: PresenceUpdate) -> int:
    # One row for any number of conversations: the hub scopes it to each conversation the user is in.
    return await _publish(tx, tenant_id, payload, conversation_id=None)


async def publish_typing_update(
    tx: Executor,
    tenant_id: uuid.UUID,
    payload: TypingUpdate,
    *,
    conversation_id: uuid.UUID,
    root_id: uuid.UUID | None,
) -> int:
    return await _publish(tx, tenant_id, payload, conversation_id=conversation_id, root_id=root_id)


async def publish_unread_update(
    tx: Executor,
    tenant_id: uuid.UUID,
    payload: UnreadUpdate,
    *,
    conversation_id: uuid.UUID,
    root_id: uuid.UUID,
    recipient_id: uuid.UUID,
) -> int:
    return await _publish(
        tx, tenant_id, payload, conversation_id=conversation_id, root_id=root_id, recipient_id=recipient_id
    )


async def publish_membership_changed(
    tx: Executor, tenant_id: uuid.UUID, payload: MembershipChanged, *, conversation_id: uuid.UUID
) -> int:
    return await _publish(tx, tenant_id, payload, conversation_id=conversation_id)


async def publish_principal_changed(tx: Executor, tenant_id: uuid.UUID, payload: PrincipalChanged) -> int:
    # Addressed to no conversation: no subscription ever delivers it; the hub hands it to sockets.
    return await _publish(tx, tenant_id, payload, conversation_id=None)


async def publish_error(
    tx: Executor,
    tenant_id: uuid.UUID,
    payload: StreamError,
    *,
    conversation_id: uuid.UUID,
    root_id: uuid.UUID | None,
) -> int:
    return await _publish(tx, tenant_id, payload, conversation_id=conversation_id, root_id=root_id)


async def publish_branch_sibling(
    tx: Executor,
    tenant_id: uuid.UUID,
    payload: BranchSibling,
    *,
    conversation_id: uuid.UUID,
    root_id: uuid.UUID,
) -> int:
    return await _publish(tx, tenant_id, payload, conversation_id=conversation_id, root_id=root_id)


async def publish_run_status(
    tx: Executor,
    tenant_id: uuid.UUID,
    payload: RunStatusChanged,
    *,
    conversation_id: uuid.UUID,
    root_id: uuid.UUID,
) -> int:
    return await _publish(tx, tenant_id, payload, conversation_id=conversation_id, root_id=root_id)


async def publish_enrichment_job(
    tx: Executor, tenant_id: uuid.UUID, payload: EnrichmentJobChanged, *, conversation_id: uuid.UUID
) -> int:
    return await _publish(tx, tenant_id, payload, conversation_id=conversation_id)


async def publish_branch_current(
    tx: Executor,
    tenant_id: uuid.UUID,
    payload: BranchCurrent,
    *,
    conversation_id: uuid.UUID,
    root_id: uuid.UUID,
    recipient_id: uuid.UUID,
) -> int:
    # The branch a user is on is theirs: only their own streams receive it.
    return await _publish(
        tx, tenant_id, payload, conversation_id=conversation_id, root_id=root_id, recipient_id=recipient_id
    )


async def publish_conversation_forked(
    tx: Executor,
    tenant_id: uuid.UUID,
    payload: ConversationForked,
    *,
    conversation_id: uuid.UUID,
    root_id: uuid.UUID,
    recipient_id: uuid.UUID,
) -> int:
    # On the source conversation, to the forker alone: the fork is theirs, others may not read it.
    return await _publish(
        tx, tenant_id, payload, conversation_id=conversation_id, root_id=root_id, recipient_id=recipient_id
    )


async def publish_message_feedback(
    tx: Executor,
    tenant_id: uuid.UUID,
    payload: MessageFeedbackChanged,
    *,
    conversation_id: uuid.UUID,
    root_id: uuid.UUID,
) -> int:
    return await _publish(tx, tenant_id, payload, conversation_id=conversation_id, root_id=root_id)
