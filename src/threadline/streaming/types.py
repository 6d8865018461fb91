"""GraphQL types of stream events, built from logged events (no query per event for the common fields)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import strawberry

from threadline.events.kinds import EventType
from threadline.events.log import LoggedEvent
from threadline.ids import Kind, encode_id
from threadline.threads.types import Message, MessageRole, Thread, Usage


@strawberry.interface(description="An event on a conversation's stream. `cursor` resumes a stream with `since`.")
class ConversationStreamEvent:
    # Opaque and per tenant (streaming.cursors): the caller encodes the position with the event's tenant key.
    cursor: str = strawberry.field(description="Position in the stream; pass it as `since` to resume after it.")
    type: str = strawberry.field(description="Dotted event type, e.g. `thread.new`.")
    conversation_id: strawberry.ID = strawberry.field(description="The conversation the event belongs to.")
    root_id: strawberry.ID | None = strawberry.field(description="The thread root, where the event concerns a thread.")
    occurred_at: datetime = strawberry.field(description="When the event was committed.")


@strawberry.type(description="`thread.new`: a thread was started.")
class ThreadNewEvent(ConversationStreamEvent):
    thread: Thread = strawberry.field(description="The new thread and its root message.")


@strawberry.type(description="`thread.activity`: a reply, edit or delete happened in a thread.")
class ThreadActivityEvent(ConversationStreamEvent):
    last_activity_at: datetime = strawberry.field(description="The thread's last activity.")
    reply_count: int = strawberry.field(description="The thread's reply count after the change.")
    action: str = strawberry.field(description="REPLY, EDIT or DELETE.")
    changed_message: Message = strawberry.field(description="The message that was added, edited or deleted.")


@strawberry.type(description="`message.delta`: streamed output appended to an assistant message.")
class MessageDeltaEvent(ConversationStreamEvent):
    message_id: strawberry.ID = strawberry.field(description="The message being written.")
    run_id: strawberry.ID | None = strawberry.field(description="The run producing it, if any.")
    index: int = strawberry.field(description="Index of the first chunk in this delta.")
    delta: str = strawberry.field(description="Text appended (several tokens may be coalesced).")
    attempt: int = strawberry.field(
        description="The run's attempt that wrote it (1 for a client's own stream). A run whose worker was lost "
        "may be requeued and write the message again from index 0: a delta with a higher attempt than any seen "
        "before for the message resets its text (drop what was shown, then append this delta); deltas of a "
        "lower attempt are to be ignored."
    )


@strawberry.type(description="`message.done`: a streamed message is final.")
class MessageDoneEvent(ConversationStreamEvent):
    message_id: strawberry.ID = strawberry.field(description="The finished message.")
    run_id: strawberry.ID | None = strawberry.field(description="The run that produced it, if any.")
    usage: Usage | None = strawberry.field(description="Token usage of the message.")


@strawberry.type(description="`presence.update`: a participant's presence changed.")
class PresenceUpdateEvent(ConversationStreamEvent):
    user_id: strawberry.ID = strawberry.field(description="Whose presence changed.")
    status: str = strawberry.field(description="ONLINE, AWAY or OFFLINE.")
    last_seen_at: datetime = strawberry.field(description="Last sign of life.")


@strawberry.type(description="`typing.update`: a participant started or stopped typing.")
class TypingUpdateEvent(ConversationStreamEvent):
    user_id: strawberry.ID = strawberry.field(description="Who is typing.")
    is_typing: bool = strawberry.field(description="False when they stopped or the indicator expired.")


@strawberry.type(description="`unread.update`: the receiving user's unread count in a thread changed.")
class UnreadUpdateEvent(ConversationStreamEvent):
    unread_count: int = strawberry.field(description="The receiver's unread messages in the thread.")


@strawberry.type(description="`membership.changed`: a participant joined, left or changed role.")
class MembershipChangedEvent(ConversationStreamEvent):
    user_id: strawberry.ID = strawberry.field(description="Whose membership changed.")
    change: str = strawberry.field(description="JOINED, REMOVED or ROLE_CHANGED.")
    role: str | None = strawberry.field(description="The role after the change (null when removed).")


@strawberry.type(description="`error`: a stream-level failure, e.g. SLOW_CONSUMER or a failed run.")
class StreamErrorEvent(ConversationStreamEvent):
    code: str = strawberry.field(description="Machine-readable code.")
    message: str = strawberry.field(description="Human-readable explanation.")


EVENT_TYPES = [
    ThreadNewEvent,
    ThreadActivityEvent,
    MessageDeltaEvent,
    MessageDoneEvent,
    PresenceUpdateEvent,
    TypingUpdateEvent,
    UnreadUpdateEvent,
    MembershipChangedEvent,
    StreamErrorEvent,
]


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def message_from_snapshot(s: dict[str, Any]) -> Message:
    import uuid

    def raw(public: str | None) -> uuid.UUID | None:
        return uuid.UUID(hex=public[4:]) if public else None

    created = _dt(s["createdAt"])
    assert created is not None
    message = Message(
        id=strawberry.ID(s["id"]),
        uuid=raw(s["id"]),  # type: ignore[arg-type]
        root_uuid=raw(s["rootId"]),  # type: ignore[arg-type]
        author_uuid=raw(s.get("authorId")),
        conversation_id=strawberry.ID(s["conversationId"]),
        root_id=strawberry.ID(s["rootId"]),
        parent_id=strawberry.ID(s["parentId"]) if s.get("parentId") else None,
        depth=s["depth"],
        path=[strawberry.ID(p) for p in s["path"]],
        child_count=s["childCount"],
        role=MessageRole(s["role"]),
        content=s["content"],
        model=s.get("model"),
        usage=Usage.of(s.get("promptTokens"), s.get("completionTokens"), bool(s.get("usageImported"))),
        created_at=created,
        edited_at=_dt(s.get("editedAt")),
        deleted_at=_dt(s.get("deletedAt")),
        is_deleted=s.get("deletedAt") is not None,
    )
    return message


def _usage(raw: dict[str, Any] | None) -> Usage | None:
    if not raw:
        return None
    return Usage.of(raw.get("promptTokens"), raw.get("completionTokens"))


def to_graphql(event: LoggedEvent, viewer_id: Any, cursor: str) -> ConversationStreamEvent:
    """The GraphQL object for a logged event, as seen by `viewer_id` (for per-viewer fields); `cursor` is the
    event's position as its tenant sees it (streaming.cursors)."""
    p = event.payload
    common: dict[str, Any] = {
        "cursor": cursor,
        "type": event.type,
        "conversation_id": strawberry.ID(encode_id(Kind.CONVERSATION, event.conversation_id))
        if event.conversation_id
        else strawberry.ID(""),
        "root_id": strawberry.ID(encode_id(Kind.MESSAGE, event.root_id)) if event.root_id else None,
        "occurred_at": event.created_at,
    }
    kind = EventType(event.type)
    if kind is EventType.THREAD_NEW:
        root = message_from_snapshot(p["message"])
        unread = 0 if root.author_uuid == viewer_id else 1
        thread = Thread(
            id=strawberry.ID(encode_id(Kind.THREAD, root.uuid)),
            root=root,
            reply_count=p.get("replyCount", 0),
            last_activity_at=_dt(p["lastActivityAt"]),  # type: ignore[arg-type]
            unread_count=unread,
        )
        return ThreadNewEvent(**common, thread=thread)
    if kind is EventType.THREAD_ACTIVITY:
        return ThreadActivityEvent(
            **common,
            last_activity_at=_dt(p["lastActivityAt"]),  # type: ignore[arg-type]
            reply_count=p["replyCount"],
            action=p.get("action", "REPLY"),
            changed_message=message_from_snapshot(p["message"]),
        )
    if kind is EventType.MESSAGE_DELTA:
        return MessageDeltaEvent(
            **common,
            message_id=p["messageId"],
            run_id=p.get("runId"),
            index=p["index"],
            delta=p["delta"],
            attempt=p.get("attempt", 1),  # logged before attempts were announced: first attempts
        )
    if kind is EventType.MESSAGE_DONE:
        return MessageDoneEvent(**common, message_id=p["messageId"], run_id=p.get("runId"), usage=_usage(p.get("usage")))
    if kind is EventType.PRESENCE_UPDATE:
        return PresenceUpdateEvent(
            **common, user_id=p["userId"], status=p["status"], last_seen_at=_dt(p["lastSeenAt"])  # type: ignore[arg-type]
        )
    if kind is EventType.TYPING_UPDATE:
        return TypingUpdateEvent(**common, user_id=p["userId"], is_typing=p["isTyping"])
    if kind is EventType.UNREAD_UPDATE:
        return UnreadUpdateEvent(**common, unread_count=p["unreadCount"])
    if kind is EventType.MEMBERSHIP_CHANGED:
        return MembershipChangedEvent(**common, user_id=p["userId"], change=p["change"], role=p.get("role"))
    return StreamErrorEvent(**common, code=p.get("code", "INTERNAL"), message=p.get("message", ""))


def stream_error(code: str, message: str, cursor: str, conversation_id: Any, at: datetime) -> StreamErrorEvent:
    """An error generated by the stream itself (not logged); its cursor is the last one delivered (encoded)."""
    return StreamErrorEvent(
        cursor=cursor,
        type=EventType.ERROR.value,
        conversation_id=strawberry.ID(encode_id(Kind.CONVERSATION, conversation_id)) if conversation_id else strawberry.ID(""),
        root_id=None,
        occurred_at=at,
        code=code,
        message=message,
    )
