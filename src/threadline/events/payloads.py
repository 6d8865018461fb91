"""The event contract: one typed payload per event kind (events.kinds), in internal ids (UUIDs) and values.

Services build these and publish them with events.announce (one `publish_*` per kind); the hub routes by
their typed fields (streaming.hub) and streaming.render turns them into GraphQL events. Only events.stored
knows how they are written into the log (JSON with public ids, the shape logged events have always had) and
how they are read back.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from threadline.events.kinds import EventType


@dataclass(frozen=True, slots=True)
class MessageSnapshot:
    """A message as an event carries it (thread.new, thread.activity); built by threads.service.snapshot.
    Its text fields (content, edited_at, deleted_at) follow the message in the log (events.scrub)."""

    id: uuid.UUID
    conversation_id: uuid.UUID
    root_id: uuid.UUID
    parent_id: uuid.UUID | None
    depth: int
    path: tuple[uuid.UUID, ...]  # ancestor ids from the root, ending with the message itself
    child_count: int
    role: str
    content: str
    author_id: uuid.UUID | None
    model: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    created_at: datetime
    edited_at: datetime | None
    deleted_at: datetime | None
    usage_imported: bool


@dataclass(frozen=True, slots=True)
class ThreadNew:
    message: MessageSnapshot  # the root
    reply_count: int  # 0, or the replies an import brought along
    last_activity_at: datetime


@dataclass(frozen=True, slots=True)
class ThreadActivity:
    action: str  # REPLY, EDIT or DELETE
    message: MessageSnapshot  # the message added, edited or deleted
    reply_count: int
    last_activity_at: datetime


@dataclass(frozen=True, slots=True)
class MessageDelta:
    message_id: uuid.UUID
    run_id: uuid.UUID | None
    attempt: int  # the run's attempt that wrote it (1 for a client's own stream)
    index: int  # the chunk index of this delta
    delta: str


@dataclass(frozen=True, slots=True)
class TokenUsage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class MessageDone:
    message_id: uuid.UUID
    run_id: uuid.UUID | None
    usage: TokenUsage | None


@dataclass(frozen=True, slots=True)
class PresenceUpdate:
    user_id: uuid.UUID
    status: str  # ONLINE, AWAY or OFFLINE
    last_seen_at: datetime


@dataclass(frozen=True, slots=True)
class TypingUpdate:
    user_id: uuid.UUID
    is_typing: bool


@dataclass(frozen=True, slots=True)
class UnreadUpdate:
    unread_count: int  # the recipient's own count (the event is addressed to one user)


@dataclass(frozen=True, slots=True)
class MembershipChanged:
    user_id: uuid.UUID
    change: str  # JOINED, REMOVED or ROLE_CHANGED
    role: str | None  # after the change; None when removed


@dataclass(frozen=True, slots=True)
class BranchSibling:
    """A reply went under a message that had replies already: a new branch (a regenerated answer, an edit
    sent as a branch, or any second reply). Ids and counts only: the text travels in thread.activity."""

    parent_id: uuid.UUID
    message_id: uuid.UUID  # the new reply
    sibling_index: int  # its rank among the parent's replies, oldest first, from 0
    sibling_count: int  # the parent's replies, the new one included


@dataclass(frozen=True, slots=True)
class BranchCurrent:
    """The recipient's current leaf in a thread moved (addressed to that user only)."""

    leaf_id: uuid.UUID | None  # None: back to the thread's default (its newest branch)
    reason: str  # SET, REPLY, RUN or DELETE


@dataclass(frozen=True, slots=True)
class ConversationForked:
    """The recipient forked the conversation the event is routed to (forks.service): sent to them alone, since
    only they may read the fork when it is made."""

    fork_id: uuid.UUID  # the new conversation
    message_id: uuid.UUID  # the message forked at, in the source
    mode: str  # BRANCH, PATH_ONLY or THREAD
    message_count: int


@dataclass(frozen=True, slots=True)
class MessageFeedbackChanged:
    """Someone's feedback on a message changed: the message's counts now (who rated what stays theirs)."""

    message_id: uuid.UUID
    up: int
    down: int


@dataclass(frozen=True, slots=True)
class RunStatusChanged:
    """A run entered or left REQUIRES_ACTION (tool calls): ids and the status only; the calls are read from
    `Run.requiredAction`."""

    run_id: uuid.UUID
    status: str  # the run's status now (runs.transitions.RunStatus)


@dataclass(frozen=True, slots=True)
class EnrichmentJobChanged:
    """A conversation's title, summary or tag suggestion job changed status (enrich/): the kind and the status
    only; the result is read from the conversation."""

    kind: str  # TITLE, SUMMARY or TAGS
    status: str  # QUEUED, RUNNING, WAITING, COMPLETED, SKIPPED or FAILED


@dataclass(frozen=True, slots=True)
class PrincipalChanged:
    user_id: uuid.UUID | None  # None after an erasure: the log keeps no trace of an erased user
    reason: str  # revoked, role, erased


@dataclass(frozen=True, slots=True)
class StreamError:
    code: str
    message: str
    run_id: uuid.UUID | None
    message_id: uuid.UUID | None


EventPayload = (
    ThreadNew
    | ThreadActivity
    | MessageDelta
    | MessageDone
    | PresenceUpdate
    | TypingUpdate
    | UnreadUpdate
    | MembershipChanged
    | BranchSibling
    | BranchCurrent
    | ConversationForked
    | MessageFeedbackChanged
    | RunStatusChanged
    | EnrichmentJobChanged
    | PrincipalChanged
    | StreamError
)

KIND_OF: dict[type[EventPayload], EventType] = {
    ThreadNew: EventType.THREAD_NEW,
    ThreadActivity: EventType.THREAD_ACTIVITY,
    MessageDelta: EventType.MESSAGE_DELTA,
    MessageDone: EventType.MESSAGE_DONE,
    PresenceUpdate: EventType.PRESENCE_UPDATE,
    TypingUpdate: EventType.TYPING_UPDATE,
    UnreadUpdate: EventType.UNREAD_UPDATE,
    MembershipChanged: EventType.MEMBERSHIP_CHANGED,
    BranchSibling: EventType.BRANCH_SIBLING,
    BranchCurrent: EventType.BRANCH_CURRENT,
    ConversationForked: EventType.CONVERSATION_FORKED,
    MessageFeedbackChanged: EventType.MESSAGE_FEEDBACK,
    RunStatusChanged: EventType.RUN_STATUS,
    EnrichmentJobChanged: EventType.ENRICHMENT_JOB,
    PrincipalChanged: EventType.PRINCIPAL_CHANGED,
    StreamError: EventType.ERROR,
}


def subject(payload: EventPayload) -> uuid.UUID | None:
    """The user an event is about (membership, presence, typing, credentials), if any."""
    if isinstance(payload, MembershipChanged | PresenceUpdate | TypingUpdate | PrincipalChanged):
        return payload.user_id
    return None
