"""One live subscription inside a process: what it wants, and its bounded queue."""

from __future__ import annotations

import asyncio
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from threadline.events.kinds import EventType
from threadline.events.log import LoggedEvent
from threadline.events.payloads import subject
from threadline.streaming.direct import Lane, LaneGroup

# Event types a subscription receives only if its selection names their GraphQL type (`... on BranchSiblingEvent`):
# types added after clients were written, so a client that does not know them sees the stream it always saw.
SELECTED_ONLY: dict[str, str] = {
    EventType.BRANCH_SIBLING.value: "BranchSiblingEvent",
    EventType.BRANCH_CURRENT.value: "BranchCurrentEvent",
    EventType.CONVERSATION_FORKED.value: "ConversationForkedEvent",
    EventType.MESSAGE_FEEDBACK.value: "MessageFeedbackEvent",
    EventType.RUN_STATUS.value: "RunStatusEvent",
    EventType.ENRICHMENT_JOB.value: "EnrichmentJobEvent",
}


def subject_of(event: LoggedEvent) -> uuid.UUID | None:
    """The user an event is about (membership, presence, typing, credentials), from its typed payload."""
    return subject(event.data)


# Slots and no idle queue or event: an idle subscription costs what it must, not an asyncio.Queue (three deques,
# ~3 KB) and an asyncio.Event (~0.9 KB) each (bench/RESULTS.md, idle sockets). The queue exists while events wait
# in it; the stream awaits a bare future while it idles.
@dataclass(eq=False, slots=True)
class Subscriber:
    tenant_id: uuid.UUID
    user_id: uuid.UUID
    # conversationEvents: exactly one conversation; viewerEvents: every conversation the user is in.
    conversations: set[uuid.UUID]
    root_id: uuid.UUID | None
    follows_viewer: bool
    queue_size: int
    start: int = 0  # the hub's cursor when the subscriber was registered
    # Events for the stock path, oldest first (at most queue_size: one more overflows); None while empty.
    queue: deque[LoggedEvent] | None = None
    overflowed: bool = False
    ended: str | None = None  # why the hub ended this stream (membership lost), if it did
    waiter: asyncio.Future[None] | None = None  # what the idle stream awaits; `wake` resolves it
    last: int = 0  # the highest event id delivered (an event at or below it is a duplicate)
    # Direct delivery (streaming.direct): open while the stream is idle with nothing queued.
    lane: Lane | None = None
    lane_open: bool = False
    group: LaneGroup | None = None  # while its lane is open, the group it shares frames with (if any)
    # The SELECTED_ONLY event types this subscription's selection names (the others of them are not sent).
    selected_only: frozenset[str] = frozenset()
    # While parked (its stream's task and generators are gone, its lane open: streaming.schema `Parked`): what
    # starts its stream again when something needs the stock path (an event the lane declines, the end).
    resume: Callable[[], None] | None = None
    # The GraphQL context of the socket or HTTP stream it runs on (streaming.sessions ends the subscriptions of
    # one whose credential is revoked, at once, whether or not its close can be written yet).
    context: object = None
    # The task running its stream (None while parked): when that task ends, however it ends, the subscription is
    # over (streaming.schema `own`), whenever its stream's generators are finalised.
    owner: asyncio.Task[Any] | None = None
    finished: bool = False  # out of the hub for good (streaming.schema `finish` ran)

    tenant_int: int = field(init=False)  # tenant_id.int: the hub's hot path compares ints, not UUIDs

    def __post_init__(self) -> None:
        self.tenant_int = self.tenant_id.int

    def pop(self) -> LoggedEvent | None:
        """The oldest queued event, or None when nothing waits."""
        queue = self.queue
        if not queue:
            return None
        event = queue.popleft()
        if not queue:
            self.queue = None
        return event

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            if not waiter.done():
                waiter.set_result(None)
            return
        resume = self.resume
        if resume is not None:  # parked: its stream starts again (once) and finds what woke it
            self.resume = None
            resume()

    async def idle(self) -> None:
        """Waits for `wake` (an event queued, an overflow, the end)."""
        waiter = self.waiter = asyncio.get_running_loop().create_future()
        try:
            await waiter
        finally:
            self.waiter = None

    def wants(self, event: LoggedEvent) -> bool:
        if event.tenant_id != self.tenant_id:
            return False
        if event.recipient_id is not None and event.recipient_id != self.user_id:
            return False
        if event.type in SELECTED_ONLY and event.type not in self.selected_only:
            return False
        if event.conversation_id is None:
            return False
        if event.conversation_id not in self.conversations:
            # A viewer stream also hears that it joined a conversation it was not yet following.
            return (
                self.follows_viewer
                and event.type == EventType.MEMBERSHIP_CHANGED
                and subject_of(event) == self.user_id
            )
        if self.root_id is not None and event.root_id is not None and event.root_id != self.root_id:
            return False
        return True

    def offer(self, event: LoggedEvent, frames: dict[Any, Any]) -> bool:
        """Deliver an event through the open lane (True), or queue it (a full queue marks the subscriber as
        too slow: it will be closed). `frames` is the event's frame cache, shared by every subscriber it is
        routed to."""
        if self.overflowed or self.ended:
            return False
        if self.lane_open:
            if event.id <= self.last:
                return False
            if self.lane.deliver(event, frames):  # type: ignore[union-attr]
                self.last = event.id
                return True
            # The stock path takes this event and every later one until the queue is drained again.
            self.close_lane()
        queue = self.queue
        if queue is None:
            queue = self.queue = deque()
        if len(queue) >= self.queue_size:
            self.overflowed = True
        else:
            queue.append(event)
        self.wake()
        return False

    def release(self) -> None:
        """The subscription is over: nothing more is queued for it, and what was queued is let go."""
        self.finished = True
        self.ended = self.ended or "finished"
        self.queue = None
        self.resume = None
        self.owner = None
        self.close_lane()
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def end(self, reason: str) -> None:
        self.ended = reason
        self.close_lane()  # nothing more goes straight to the socket (the hub's hot path relies on it)
        self.wake()

    def close_lane(self) -> None:
        self.lane_open = False
        group = self.group
        if group is not None:
            self.group = None
            group.leave(self)
