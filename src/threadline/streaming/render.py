"""The one place a logged event becomes its GraphQL event (streaming.types): from its typed payload
(events.payloads, via `LoggedEvent.data`) and its routing columns. SharedEvents (streaming.fanout) calls it
once per event and viewer class; both delivery paths (stock and direct frames) serialise what it returns.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import strawberry

from threadline.events.kinds import EventType
from threadline.events.log import LoggedEvent
from threadline.events.payloads import (
    BranchCurrent,
    BranchSibling,
    ConversationForked,
    EnrichmentJobChanged,
    MembershipChanged,
    MessageDelta,
    MessageDone,
    MessageFeedbackChanged,
    MessageSnapshot,
    PresenceUpdate,
    RunStatusChanged,
    StreamError,
    ThreadActivity,
    ThreadNew,
    TokenUsage,
    TypingUpdate,
    UnreadUpdate,
)
from threadline.ids import Kind, encode_id
from threadline.streaming.types import (
    BranchCurrentEvent,
    BranchSiblingEvent,
    ConversationForkedEvent,
    ConversationStreamEvent,
    EnrichmentJobEvent,
    MembershipChangedEvent,
    MessageDeltaEvent,
    MessageDoneEvent,
    MessageFeedbackEvent,
    PresenceUpdateEvent,
    RunStatusEvent,
    StreamErrorEvent,
    ThreadActivityEvent,
    ThreadNewEvent,
    TypingUpdateEvent,
    UnreadUpdateEvent,
)
from threadline.threads.types import Message, MessageRole, Thread, Usage


def _id(kind: Kind, value: uuid.UUID) -> strawberry.ID:
    return strawberry.ID(encode_id(kind, value))


def _opt_id(kind: Kind, value: uuid.UUID | None) -> strawberry.ID | None:
    return strawberry.ID(encode_id(kind, value)) if value else None


def message_from_snapshot(s: MessageSnapshot) -> Message:
    return Message(
        id=_id(Kind.MESSAGE, s.id),
        uuid=s.id,
        root_uuid=s.root_id,
        author_uuid=s.author_id,
        conversation_id=_id(Kind.CONVERSATION, s.conversation_id),
        root_id=_id(Kind.MESSAGE, s.root_id),
        parent_id=_opt_id(Kind.MESSAGE, s.parent_id),
        depth=s.depth,
        path=[_id(Kind.MESSAGE, p) for p in s.path],
        child_count=s.child_count,
        role=MessageRole(s.role),
        content=s.content,
        model=s.model,
        usage=Usage.of(s.prompt_tokens, s.completion_tokens, s.usage_imported),
        created_at=s.created_at,
        edited_at=s.edited_at,
        deleted_at=s.deleted_at,
        is_deleted=s.deleted_at is not None,
    )


def _usage(usage: TokenUsage | None) -> Usage | None:
    return Usage.of(usage.prompt_tokens, usage.completion_tokens) if usage is not None else None


def to_graphql(event: LoggedEvent, viewer_id: Any, cursor: str) -> ConversationStreamEvent:
    """The GraphQL object for a logged event, as seen by `viewer_id` (for per-viewer fields: only a thread's
    unreadCount, see streaming.fanout.viewer_class); `cursor` is the event's position as its tenant sees it
    (streaming.cursors)."""
    p = event.data
    common: dict[str, Any] = {
        "cursor": cursor,
        "type": event.type,
        "conversation_id": _id(Kind.CONVERSATION, event.conversation_id)
        if event.conversation_id
        else strawberry.ID(""),
        "root_id": _opt_id(Kind.MESSAGE, event.root_id),
        "occurred_at": event.created_at,
    }
    if isinstance(p, ThreadNew):
        root = message_from_snapshot(p.message)
        thread = Thread(
            id=_id(Kind.THREAD, p.message.id),
            root=root,
            reply_count=p.reply_count,
            last_activity_at=p.last_activity_at,
            unread_count=0 if p.message.author_id == viewer_id else 1,
        )
        return ThreadNewEvent(**common, thread=thread)
    if isinstance(p, ThreadActivity):
        return ThreadActivityEvent(
            **common,
            last_activity_at=p.last_activity_at,
            reply_count=p.reply_count,
            action=p.action,
            changed_message=message_from_snapshot(p.message),
        )
    if isinstance(p, MessageDelta):
        return MessageDeltaEvent(
            **common,
            message_id=_id(Kind.MESSAGE, p.message_id),
            run_id=_opt_id(Kind.RUN, p.run_id),
            index=p.index,
            delta=p.delta,
            attempt=p.attempt,
        )
    if isinstance(p, MessageDone):
        return MessageDoneEvent(
            **common,
            message_id=_id(Kind.MESSAGE, p.message_id),
            run_id=_opt_id(Kind.RUN, p.run_id),
            usage=_usage(p.usage),
        )
    if isinstance(p, PresenceUpdate):
        return PresenceUpdateEvent(
            **common, user_id=_id(Kind.USER, p.user_id), status=p.status, last_seen_at=p.last_seen_at
        )
    if isinstance(p, TypingUpdate):
        return TypingUpdateEvent(**common, user_id=_id(Kind.USER, p.user_id), is_typing=p.is_typing)
    if isinstance(p, UnreadUpdate):
        return UnreadUpdateEvent(**common, unread_count=p.unread_count)
    if isinstance(p, MembershipChanged):
        return MembershipChangedEvent(
            **common, user_id=_id(Kind.USER, p.user_id), change=p.change, role=p.role
        )
    if isinstance(p, BranchSibling):
        return BranchSiblingEvent(
            **common,
            parent_id=_id(Kind.MESSAGE, p.parent_id),
            message_id=_id(Kind.MESSAGE, p.message_id),
            sibling_index=p.sibling_index,
            sibling_count=p.sibling_count,
        )
    if isinstance(p, BranchCurrent):
        return BranchCurrentEvent(**common, leaf_id=_opt_id(Kind.MESSAGE, p.leaf_id), reason=p.reason)
    if isinstance(p, ConversationForked):
        return ConversationForkedEvent(
            **common,
            fork_id=_id(Kind.CONVERSATION, p.fork_id),
            forked_at_id=_id(Kind.MESSAGE, p.message_id),
            mode=p.mode,
            message_count=p.message_count,
        )
    if isinstance(p, MessageFeedbackChanged):
        return MessageFeedbackEvent(
            **common, message_id=_id(Kind.MESSAGE, p.message_id), up=p.up, down=p.down
        )
    if isinstance(p, RunStatusChanged):
        return RunStatusEvent(**common, run_id=_id(Kind.RUN, p.run_id), status=p.status)
    if isinstance(p, EnrichmentJobChanged):
        return EnrichmentJobEvent(**common, kind=p.kind, status=p.status)
    if isinstance(p, StreamError):
        return StreamErrorEvent(**common, code=p.code, message=p.message)
    # principal.changed reaches sockets, never a subscription (streaming.sessions).
    return StreamErrorEvent(**common, code="INTERNAL", message="")


def stream_error(
    code: str, message: str, cursor: str, conversation_id: Any, at: datetime
) -> StreamErrorEvent:
    """An error generated by the stream itself (not logged); its cursor is the last one delivered (encoded)."""
    return StreamErrorEvent(
        cursor=cursor,
        type=EventType.ERROR.value,
        conversation_id=_id(Kind.CONVERSATION, conversation_id) if conversation_id else strawberry.ID(""),
        root_id=None,
        occurred_at=at,
        code=code,
        message=message,
    )
