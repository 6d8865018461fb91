"""GraphQL types of stream events; streaming.render builds them from logged events (no query per event for
the common fields)."""

from __future__ import annotations

from datetime import datetime

import strawberry

from threadline.threads.types import Message, Thread, Usage


# Events carry no `id`: they are not entities a client refetches or updates, and a normalising cache (Apollo,
# urql's graphcache, Relay) gains nothing from storing them. Clients read them with a `no-cache` policy
# (README, "Client caching of events") and apply each one to the cached objects it names.
@strawberry.interface(
    description="An event on a conversation's stream. `cursor` resumes a stream with `since`. Events have no "
    "`id` and are not objects to cache: read subscriptions with a `no-cache` fetch policy (Apollo: "
    "`fetchPolicy: 'no-cache'`) and apply each event to the cached objects it names (`conversationId`, "
    "`rootId`, the message or run in its payload). `cursor` identifies an event within its tenant if a client "
    "needs a key (the same event has the same cursor on every process and in every replay)."
)
class ConversationStreamEvent:
    # Opaque and per tenant (streaming.cursors): the caller encodes the position with the event's tenant key.
    cursor: str = strawberry.field(
        description="Position in the stream; pass it as `since` to resume after it."
    )
    type: str = strawberry.field(description="Dotted event type, e.g. `thread.new`.")
    conversation_id: strawberry.ID = strawberry.field(description="The conversation the event belongs to.")
    root_id: strawberry.ID | None = strawberry.field(
        description="The thread root, where the event concerns a thread."
    )
    occurred_at: datetime = strawberry.field(description="When the event was committed.")


@strawberry.type(description="`thread.new`: a thread was started.")
class ThreadNewEvent(ConversationStreamEvent):
    thread: Thread = strawberry.field(description="The new thread and its root message.")


@strawberry.type(description="`thread.activity`: a reply, edit or delete happened in a thread.")
class ThreadActivityEvent(ConversationStreamEvent):
    last_activity_at: datetime = strawberry.field(description="The thread's last activity.")
    reply_count: int = strawberry.field(description="The thread's reply count after the change.")
    action: str = strawberry.field(
        description="REPLY, EDIT or DELETE. A re-import that merges several new messages into a branch sends one "
        "REPLY per new branch tip: its `changedMessage.path` names every new message above it."
    )
    changed_message: Message = strawberry.field(
        description="The message that was added (for a merge, the new branch tip), edited or deleted."
    )


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


@strawberry.type(
    description="`branch.sibling`: a reply went under a message that had replies already, so the parent now has "
    "another branch (a regenerated answer, an edit sent as a branch, or any further reply). The new message "
    "itself arrives in the `thread.activity` REPLY event before it. Sent only to subscriptions whose selection "
    "names this type (`... on BranchSiblingEvent`)."
)
class BranchSiblingEvent(ConversationStreamEvent):
    parent_id: strawberry.ID = strawberry.field(description="The message that has a new reply.")
    message_id: strawberry.ID = strawberry.field(description="The new reply.")
    sibling_index: int = strawberry.field(
        description="The new reply's position among the parent's replies, oldest first, from 0."
    )
    sibling_count: int = strawberry.field(
        description="How many replies the parent has now, the new one included."
    )


@strawberry.type(
    description="`branch.current`: the receiving user's current leaf in a thread (`Thread.currentLeaf`) moved. "
    "Sent only to that user's own streams, and only to subscriptions whose selection names this type."
)
class BranchCurrentEvent(ConversationStreamEvent):
    leaf_id: strawberry.ID | None = strawberry.field(
        description="The message the user is now on; null when the thread is back to its default branch (the "
        "newest one), as after deleting the root they were on."
    )
    reason: str = strawberry.field(
        description="SET (threadSetCurrent), REPLY (they replied or edited as a branch), RUN (a run they started "
        "began its answer), DELETE (the message they were on was deleted: they are on its parent) or IMPORT (a re-import "
        "of a newer ChatGPT export put them on its current node)."
    )


@strawberry.type(
    description="`conversation.forked`: the receiving user forked this conversation (`conversationFork`). Sent only "
    "to them, on the source conversation: nobody else may read the fork when it is made."
)
class ConversationForkedEvent(ConversationStreamEvent):
    fork_id: strawberry.ID = strawberry.field(description="The new conversation (`Conversation.id`).")
    forked_at_id: strawberry.ID = strawberry.field(description="The message of this conversation forked at.")
    mode: str = strawberry.field(description="BRANCH, PATH_ONLY or THREAD (`ConversationForkMode`).")
    message_count: int = strawberry.field(description="Messages copied into the fork.")


@strawberry.type(
    description="`message.feedback`: someone's feedback on a message changed (`messageFeedbackSet`): the message's "
    "counts now. Who rated it, and how, is not sent."
)
class MessageFeedbackEvent(ConversationStreamEvent):
    message_id: strawberry.ID = strawberry.field(description="The rated message.")
    up: int = strawberry.field(description="Its UP ratings now (`Message.feedbackSummary.up`).")
    down: int = strawberry.field(description="Its DOWN ratings now (`Message.feedbackSummary.down`).")


@strawberry.type(
    description="`run.status`: a run entered REQUIRES_ACTION (the model called tools: read `Run.requiredAction` "
    "and answer with `runSubmitToolOutputs`) or left it (QUEUED after the outputs, EXPIRED, CANCELLED). Sent only "
    "to subscriptions whose selection names this type (`... on RunStatusEvent`)."
)
class RunStatusEvent(ConversationStreamEvent):
    run_id: strawberry.ID = strawberry.field(description="The run (`Run.id`).")
    status: str = strawberry.field(description="Its status now (a `RunStatus` value).")


@strawberry.type(
    description="`enrichment.job`: a title, summary or tag suggestion job of the conversation changed status "
    "(`Conversation.enrichmentJobs`); on COMPLETED read `Conversation.title`, `summary` or `suggestedTags`. Sent "
    "only to subscriptions whose selection names this type (`... on EnrichmentJobEvent`)."
)
class EnrichmentJobEvent(ConversationStreamEvent):
    kind: str = strawberry.field(description="Which job: TITLE, SUMMARY or TAGS (an `EnrichmentKind` value).")
    status: str = strawberry.field(description="Its status now (an `EnrichmentStatus` value).")


@strawberry.type(description="`error`: a stream-level failure, e.g. SLOW_CONSUMER or a failed run.")
class StreamErrorEvent(ConversationStreamEvent):
    code: str = strawberry.field(
        description="What failed: SLOW_CONSUMER (the subscriber fell behind and the stream ends; resubscribe with "
        "`since` set to this event's `cursor`), or a run's `RunError.code` when a run failed or expired (the "
        "stream goes on)."
    )
    message: str = strawberry.field(
        description="An explanation for people (logs, a notice); match on `code`, not on it."
    )


EVENT_TYPES = [
    ThreadNewEvent,
    ThreadActivityEvent,
    MessageDeltaEvent,
    MessageDoneEvent,
    PresenceUpdateEvent,
    TypingUpdateEvent,
    UnreadUpdateEvent,
    MembershipChangedEvent,
    BranchSiblingEvent,
    BranchCurrentEvent,
    ConversationForkedEvent,
    MessageFeedbackEvent,
    RunStatusEvent,
    EnrichmentJobEvent,
    StreamErrorEvent,
]
