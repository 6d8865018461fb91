"""How typed payloads (events.payloads) are stored in `stream_event.payload`, and read back.

The stored shape is the one logged events have always had: JSON with camelCase keys, public ids
(`msg_<hex>`) and ISO times. It is kept (not replaced by internal ids) because the log is replayed: rows
written before the payloads were typed are read by the same `decode`, and two readers of the log depend on
its keys - the generated column `stream_event.message_id` (a migration reads `messageId` and
`message.id`, slicing the prefix in SQL) and events.scrub (which patches `message` and `delta` in place).
This module is the only Python that knows the shape; `decode` keeps the defaults older rows need.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from threadline.events.kinds import EventType
from threadline.events.payloads import (
    BranchCurrent,
    BranchSibling,
    ConversationForked,
    EnrichmentJobChanged,
    EventPayload,
    MembershipChanged,
    MessageDelta,
    MessageDone,
    MessageFeedbackChanged,
    MessageSnapshot,
    PresenceUpdate,
    PrincipalChanged,
    RunStatusChanged,
    StreamError,
    ThreadActivity,
    ThreadNew,
    TokenUsage,
    TypingUpdate,
    UnreadUpdate,
)
from threadline.ids import Kind, encode_id

# writing -------------------------------------------------------------------------------------------


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _public(kind: Kind, value: uuid.UUID | None) -> str | None:
    return encode_id(kind, value) if value else None


def text_fields(content: str, edited_at: datetime | None, deleted_at: datetime | None) -> dict[str, Any]:
    """The stored snapshot fields that follow a message's text (events.scrub merges them into the log)."""
    return {"content": content, "editedAt": _iso(edited_at), "deletedAt": _iso(deleted_at)}


def _snapshot(s: MessageSnapshot) -> dict[str, Any]:
    return {
        "id": encode_id(Kind.MESSAGE, s.id),
        "conversationId": encode_id(Kind.CONVERSATION, s.conversation_id),
        "rootId": encode_id(Kind.MESSAGE, s.root_id),
        "parentId": _public(Kind.MESSAGE, s.parent_id),
        "depth": s.depth,
        "path": [encode_id(Kind.MESSAGE, p) for p in s.path],
        "childCount": s.child_count,
        "role": s.role,
        "content": s.content,
        "authorId": _public(Kind.USER, s.author_id),
        "model": s.model,
        "promptTokens": s.prompt_tokens,
        "completionTokens": s.completion_tokens,
        "createdAt": s.created_at.isoformat(),
        "editedAt": _iso(s.edited_at),
        "deletedAt": _iso(s.deleted_at),
        "usageImported": s.usage_imported,
    }


def _usage(usage: TokenUsage | None) -> dict[str, int] | None:
    if usage is None:
        return None
    return {
        "promptTokens": usage.prompt_tokens,
        "completionTokens": usage.completion_tokens,
        "totalTokens": usage.total_tokens,
    }


def encode(p: EventPayload) -> dict[str, Any]:
    """The JSON stored for a payload."""
    if isinstance(p, ThreadNew):
        return {
            "message": _snapshot(p.message),
            "replyCount": p.reply_count,
            "lastActivityAt": p.last_activity_at.isoformat(),
        }
    if isinstance(p, ThreadActivity):
        return {
            "action": p.action,
            "message": _snapshot(p.message),
            "replyCount": p.reply_count,
            "lastActivityAt": p.last_activity_at.isoformat(),
        }
    if isinstance(p, MessageDelta):
        return {
            "messageId": encode_id(Kind.MESSAGE, p.message_id),
            "runId": _public(Kind.RUN, p.run_id),
            "attempt": p.attempt,
            "index": p.index,
            "delta": p.delta,
        }
    if isinstance(p, MessageDone):
        return {
            "messageId": encode_id(Kind.MESSAGE, p.message_id),
            "runId": _public(Kind.RUN, p.run_id),
            "usage": _usage(p.usage),
        }
    if isinstance(p, PresenceUpdate):
        return {
            "userId": encode_id(Kind.USER, p.user_id),
            "status": p.status,
            "lastSeenAt": p.last_seen_at.isoformat(),
        }
    if isinstance(p, TypingUpdate):
        return {"userId": encode_id(Kind.USER, p.user_id), "isTyping": p.is_typing}
    if isinstance(p, UnreadUpdate):
        return {"unreadCount": p.unread_count}
    if isinstance(p, MembershipChanged):
        return {"userId": encode_id(Kind.USER, p.user_id), "change": p.change, "role": p.role}
    if isinstance(p, BranchSibling):
        # `siblingId`, not `messageId`: the generated message_id column marks events that carry a message's text.
        return {
            "parentId": encode_id(Kind.MESSAGE, p.parent_id),
            "siblingId": encode_id(Kind.MESSAGE, p.message_id),
            "siblingIndex": p.sibling_index,
            "siblingCount": p.sibling_count,
        }
    if isinstance(p, BranchCurrent):
        return {"leafId": _public(Kind.MESSAGE, p.leaf_id), "reason": p.reason}
    if isinstance(p, ConversationForked):
        return {
            "forkId": encode_id(Kind.CONVERSATION, p.fork_id),
            "forkedAtId": encode_id(Kind.MESSAGE, p.message_id),
            "mode": p.mode,
            "messageCount": p.message_count,
        }
    if isinstance(p, MessageFeedbackChanged):
        return {"ratedId": encode_id(Kind.MESSAGE, p.message_id), "up": p.up, "down": p.down}
    if isinstance(p, RunStatusChanged):
        return {"runId": encode_id(Kind.RUN, p.run_id), "status": p.status}
    if isinstance(p, EnrichmentJobChanged):
        return {"kind": p.kind, "status": p.status}
    if isinstance(p, PrincipalChanged):
        # An erasure names nobody: not even a null key.
        return (
            {"reason": p.reason}
            if p.user_id is None
            else {"userId": encode_id(Kind.USER, p.user_id), "reason": p.reason}
        )
    return {
        "code": p.code,
        "message": p.message,
        "runId": _public(Kind.RUN, p.run_id),
        "messageId": _public(Kind.MESSAGE, p.message_id),
    }


# reading -------------------------------------------------------------------------------------------


def _id(public: str) -> uuid.UUID:
    # Every id in a payload was written by encode_id: a three-letter kind, "_", the hex.
    return uuid.UUID(hex=public[4:])


def _opt_id(public: str | None) -> uuid.UUID | None:
    return uuid.UUID(hex=public[4:]) if public else None


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value)


def _read_snapshot(s: dict[str, Any]) -> MessageSnapshot:
    return MessageSnapshot(
        id=_id(s["id"]),
        conversation_id=_id(s["conversationId"]),
        root_id=_id(s["rootId"]),
        parent_id=_opt_id(s.get("parentId")),
        depth=s["depth"],
        path=tuple(_id(p) for p in s["path"]),
        child_count=s["childCount"],
        role=s["role"],
        content=s["content"],
        author_id=_opt_id(s.get("authorId")),
        model=s.get("model"),
        prompt_tokens=s.get("promptTokens"),
        completion_tokens=s.get("completionTokens"),
        created_at=_at(s["createdAt"]),
        edited_at=_dt(s.get("editedAt")),
        deleted_at=_dt(s.get("deletedAt")),
        usage_imported=bool(s.get("usageImported")),  # absent in imports logged before it was added
    )


def _read_usage(raw: dict[str, Any] | None) -> TokenUsage | None:
    if not raw or (raw.get("promptTokens") is None and raw.get("completionTokens") is None):
        return None
    return TokenUsage(raw.get("promptTokens") or 0, raw.get("completionTokens") or 0)


def decode(type: str, p: dict[str, Any]) -> EventPayload:
    """The typed payload of a logged event of kind `type`, from its stored JSON (of any age)."""
    kind = EventType(type) if type in _KINDS else None
    if kind is EventType.THREAD_NEW:
        return ThreadNew(_read_snapshot(p["message"]), p.get("replyCount", 0), _at(p["lastActivityAt"]))
    if kind is EventType.THREAD_ACTIVITY:
        return ThreadActivity(
            p.get("action", "REPLY"), _read_snapshot(p["message"]), p["replyCount"], _at(p["lastActivityAt"])
        )
    if kind is EventType.MESSAGE_DELTA:
        # Logged before attempts were announced: first attempts.
        return MessageDelta(
            _id(p["messageId"]), _opt_id(p.get("runId")), p.get("attempt", 1), p["index"], p["delta"]
        )
    if kind is EventType.MESSAGE_DONE:
        return MessageDone(_id(p["messageId"]), _opt_id(p.get("runId")), _read_usage(p.get("usage")))
    if kind is EventType.PRESENCE_UPDATE:
        return PresenceUpdate(_id(p["userId"]), p["status"], _at(p["lastSeenAt"]))
    if kind is EventType.TYPING_UPDATE:
        return TypingUpdate(_id(p["userId"]), p["isTyping"])
    if kind is EventType.UNREAD_UPDATE:
        return UnreadUpdate(p["unreadCount"])
    if kind is EventType.MEMBERSHIP_CHANGED:
        return MembershipChanged(_id(p["userId"]), p["change"], p.get("role"))
    if kind is EventType.BRANCH_SIBLING:
        return BranchSibling(_id(p["parentId"]), _id(p["siblingId"]), p["siblingIndex"], p["siblingCount"])
    if kind is EventType.BRANCH_CURRENT:
        return BranchCurrent(_opt_id(p.get("leafId")), p.get("reason", "SET"))
    if kind is EventType.CONVERSATION_FORKED:
        return ConversationForked(_id(p["forkId"]), _id(p["forkedAtId"]), p["mode"], p["messageCount"])
    if kind is EventType.MESSAGE_FEEDBACK:
        return MessageFeedbackChanged(_id(p["ratedId"]), p["up"], p["down"])
    if kind is EventType.RUN_STATUS:
        return RunStatusChanged(_id(p["runId"]), p["status"])
    if kind is EventType.ENRICHMENT_JOB:
        return EnrichmentJobChanged(p["kind"], p["status"])
    if kind is EventType.PRINCIPAL_CHANGED:
        return PrincipalChanged(_opt_id(p.get("userId")), p.get("reason", ""))
    # `error`, and any kind this version does not know: rendered as a stream error.
    known = kind is EventType.ERROR
    return StreamError(
        p.get("code", "INTERNAL"),
        p.get("message", ""),
        _opt_id(p.get("runId")) if known else None,
        _opt_id(p.get("messageId")) if known else None,
    )


_KINDS = {kind.value for kind in EventType}
