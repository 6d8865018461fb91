"""Subscriptions: conversationEvents and viewerEvents over graphql-transport-ws."""

from __future__ import annotations

import asyncio
import contextvars
import uuid
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import strawberry

from threadline.conversations import repository as conversation_repo
from threadline.conversations.access import Access, require
from threadline.errors import ErrorCode, ThreadlineError, not_found
from threadline.events import log as event_log
from threadline.events.kinds import EventType
from threadline.events.log import LoggedEvent
from threadline.events.payloads import MembershipChanged
from threadline.graphql.context import Context, Info
from threadline.ids import Kind, decode_id
from threadline.presence import service as presence
from threadline.ratelimits.schema import subscription_started
from threadline.streaming.direct import lane_for
from threadline.streaming.render import stream_error
from threadline.streaming.subscriber import SELECTED_ONLY, Subscriber
from threadline.streaming.types import ConversationStreamEvent
from threadline.threads import repository as thread_repo

if TYPE_CHECKING:
    from threadline.streaming.hub import StreamHub

Since = Annotated[
    str | None,
    strawberry.argument(
        description="Resume after this position: an event's `cursor`, or `streamCursor`. Events committed after "
        'it are replayed first, then the stream goes live (no gap, no duplicate). `"0"`: from the start of the '
        "retained log; older than the retention (7 days by default): CURSOR_EXPIRED; another tenant's or an "
        "altered cursor: BAD_USER_INPUT. Omitted: live events only."
    ),
]

REPLAY_BATCH = 1000
_background: set[asyncio.Task[None]] = set()


def parse_since(hub: StreamHub, tenant_id: uuid.UUID, since: str | None) -> int | None:
    """The position `since` names: one of the tenant's opaque cursors, or a numeric one (streaming.cursors)."""
    if since is None:
        return None
    return hub.cursors.decode(tenant_id, since)


# Set by the operation's runner (graphql.view): called once when the stream first idles (its setup is done).
SETTLED: contextvars.ContextVar[Callable[[], None] | None] = contextvars.ContextVar(
    "threadline_stream_settled", default=None
)


class Parked(BaseException):  # noqa: N818 - a signal, not an error
    """Raised by a live stream at an idle point whose lane takes its events (streaming.direct): the operation's
    task and every generator above it (graphql-core's, strawberry's, its extension hooks) unwind and are freed,
    sending nothing, while the subscription stays registered in the hub with its lane open. Its socket's
    handler (graphql.view) keeps the operation and starts the stream again, with `live`, when the subscriber
    wakes (an event the lane declines, the end). A BaseException: the `except Exception` blocks above it must
    not turn it into an error result. Idle sockets' memory: bench/RESULTS.md."""


async def _stream(
    info: Info, sub: Subscriber, since: str | None
) -> AsyncGenerator[ConversationStreamEvent, None]:
    context = info.context
    db = context.db
    hub = context.services.hub
    since_id = parse_since(hub, sub.tenant_id, since)
    if since_id is not None and since_id < await event_log.pruned_through(db):
        raise ThreadlineError(
            ErrorCode.CURSOR_EXPIRED,
            "This cursor is older than the event log's retention; refetch the data and subscribe without `since`",
        )
    own(context, sub)  # before it is registered: from here on, however the task ends, it leaves the hub
    await hub.subscribe(sub)
    await presence.heartbeat(db, sub.tenant_id, sub.user_id, "ONLINE")
    sub.last = sub.start
    sub.lane = lane_for(info, hub, sub.user_id)
    try:
        if since_id is not None and since_id < sub.start:
            after = since_id
            conversations = list(sub.conversations)
            while True:
                batch = await event_log.replay(
                    db,
                    sub.tenant_id,
                    after=after,
                    through=sub.start,
                    conversation_ids=conversations,
                    recipient_id=sub.user_id,
                    limit=REPLAY_BATCH,
                )
                for event in batch:
                    if sub.wants(event):
                        _fresh_caches(context)
                        yield hub.shared_events.get(event, sub.user_id)
                if len(batch) < REPLAY_BATCH:
                    break
                after = batch[-1].id
        elif since_id is not None:
            sub.last = since_id  # a cursor from a process whose hub is ahead of ours
    except BaseException:
        finish(context, sub)
        raise
    async with aclosing(live(context, sub)) as events:
        async for rendered in events:
            yield rendered


async def live(context: Context, sub: Subscriber) -> AsyncGenerator[ConversationStreamEvent, None]:
    """The live part of a subscription's stream (after any replay): what its queue holds, then idle. At an idle
    point whose lane can take the events and whose socket's handler can start the stream again, it parks
    (`Parked`); the handler runs `live` again when the subscriber wakes. Ends the subscription (`finish`) when
    it ends, unless it parked."""
    hub = context.services.hub
    parked = False
    own(context, sub)  # a parked stream's new task (graphql.view `run_parked`) takes it over
    try:
        while True:
            queued = sub.pop()
            if queued is not None:
                if queued.id <= sub.last:
                    continue
                sub.last = queued.id
                _fresh_caches(context)
                yield hub.shared_events.get(queued, sub.user_id)
                if queued.type == EventType.MEMBERSHIP_CHANGED and await _lost_access(context, sub, queued):
                    return
                continue
            if sub.overflowed:
                yield stream_error(
                    ErrorCode.SLOW_CONSUMER.value,
                    "Events arrived faster than this subscription read them; resubscribe with `since` set to "
                    "this cursor",
                    hub.cursors.encode(sub.tenant_id, sub.last),
                    next(iter(sub.conversations), None) if not sub.follows_viewer else None,
                    datetime.now(UTC),
                )
                return
            if sub.ended:
                return
            settled = SETTLED.get()
            if settled is not None:  # the socket's setup slot (graphql.view) is free once the stream idles
                SETTLED.set(None)
                settled()
            # Idle with everything sent: the hub may write events straight to the socket meanwhile.
            hub.open_lane(sub)
            lane = sub.lane
            if sub.lane_open and lane is not None and lane.socket.park(sub):
                parked = True  # the lane stays open; sub.resume starts the stream again
                sub.owner = None  # this task ends now; the subscription does not
                raise Parked
            try:
                await sub.idle()
            finally:
                sub.close_lane()
    finally:
        if not parked:
            finish(context, sub)


def own(context: Context, sub: Subscriber) -> None:
    """The running task runs `sub`'s stream: when it ends, however (a `complete`, its socket gone, cancelled while
    its send waits for a client that stopped reading, an error), the subscription ends with it, unless it parked
    first (`live`).

    Not left to the stream's own `finally`: a task cancelled while it waits in its send leaves the stream's
    generators suspended at their `yield`, and the generators above `live` (strawberry's, graphql-core's, the
    schema's) do not all close the ones they iterate; their `finally` then runs only when the event loop's
    async-generator finaliser sees them freed, which any reference still holding them (a reference cycle, a
    traceback kept by a log handler) puts off until a garbage collection, or forever. Until then the hub kept
    routing every event of the conversation to the dead subscription and holding what its queue kept."""
    task = asyncio.current_task()
    if task is None or sub.owner is task or sub.finished:
        return
    sub.owner = task
    task.add_done_callback(lambda done: _owner_done(context, sub, done))


def _owner_done(context: Context, sub: Subscriber, task: asyncio.Task[Any]) -> None:
    if sub.owner is task:  # it neither parked nor finished: its stream is gone with its task
        finish(context, sub)


def finish(context: Context, sub: Subscriber) -> None:
    """The subscription is over: out of the hub, its queue let go, and OFFLINE once the user has no other
    subscription here. Once: every way out of a stream calls it (`own`, the stream's `finally`, a parked
    operation's cleanup), in whatever order they come."""
    if sub.finished:
        return
    sub.release()
    hub = context.services.hub
    hub.unsubscribe(sub)
    if hub.local_subscriptions(sub.user_id) == 0:
        task = asyncio.create_task(presence.heartbeat(context.db, sub.tenant_id, sub.user_id, "OFFLINE"))
        _background.add(task)
        task.add_done_callback(_background.discard)


def selected_only(info: Info) -> frozenset[str]:
    """The SELECTED_ONLY event types the subscription's selection names (inline fragments or fragment spreads
    on their GraphQL types, at any depth): the only ones of them it is sent."""
    names: set[str] = set()
    pending: list[Any] = [field for field in info.selected_fields]
    while pending:
        selection = pending.pop()
        condition = getattr(selection, "type_condition", None)
        if condition:
            names.add(condition)
        pending.extend(getattr(selection, "selections", None) or [])
    # `selected_fields` is a cached_property: its tree (~3 KB) would live as long as the subscription's Info does.
    del info.selected_fields
    kinds = frozenset(kind for kind, type_name in SELECTED_ONLY.items() if type_name in names)
    return _SELECTED_ONLY_SETS.setdefault(kinds, kinds)  # one set per combination, not one per subscription


_SELECTED_ONLY_SETS: dict[frozenset[str], frozenset[str]] = {}  # subsets of SELECTED_ONLY's few keys


def _fresh_caches(context: Context) -> None:
    # The context lives as long as the socket: loaders must not serve one event's data to the next.
    context.forget_loaders()


async def _lost_access(context: Context, sub: Subscriber, event: LoggedEvent) -> bool:
    """After a membership.changed removing the subscriber itself, a conversation stream ends unless access
    remains (an admin, say)."""
    if sub.follows_viewer:
        return False
    data = event.data
    if not isinstance(data, MembershipChanged) or data.user_id != sub.user_id or data.change != "REMOVED":
        return False
    principal = await context.principal()
    try:
        await require(context.db, principal, next(iter(sub.conversations)), Access.READ)
    except ThreadlineError:
        return True
    return False


@strawberry.type
class StreamQuery:
    @strawberry.field(
        description="A stream position to pass as `since`: subscribing with it misses nothing committed after "
        "this call. Fetch it together with the data a client renders, then subscribe with it."
    )
    async def stream_cursor(self, info: Info) -> str:
        principal = await info.context.principal()
        hub: StreamHub = info.context.services.hub
        return hub.cursors.encode(principal.tenant_id, await hub.settled_cursor())


@strawberry.type
class StreamSubscription:
    @strawberry.subscription(
        description="Every event of one conversation (optionally one thread: `rootId`). With `since` (an "
        "event's cursor), first replays everything after it from the log, then continues live, with no gap "
        "and no duplicate. Presence and typing are live only. Ends if the caller loses access."
    )
    async def conversation_events(
        self,
        info: Info,
        conversation_id: Annotated[
            strawberry.ID,
            strawberry.argument(
                description="The conversation to follow (`Conversation.id`); readable by the caller."
            ),
        ],
        root_id: Annotated[
            strawberry.ID | None,
            strawberry.argument(
                description="Only the events of this thread (its root message's id); omitted: the whole conversation."
            ),
        ] = None,
        since: Since = None,
    ) -> AsyncGenerator[ConversationStreamEvent, None]:
        principal = await info.context.principal()
        await subscription_started(info)
        db = info.context.db
        cid = decode_id(conversation_id, Kind.CONVERSATION)
        await require(db, principal, cid, Access.READ)
        rid: uuid.UUID | None = None
        if root_id is not None:
            rid = decode_id(root_id, Kind.MESSAGE)
            if await thread_repo.thread_conversation(db, principal.tenant_id, rid) != cid:
                raise not_found("Thread")
        sub = Subscriber(
            tenant_id=principal.tenant_id,
            user_id=principal.user_id,
            conversations={cid},
            root_id=rid,
            follows_viewer=False,
            queue_size=info.context.settings.subscriber_queue_size,
            selected_only=selected_only(info),
            context=info.context,
        )
        async for event in _stream(info, sub, since):
            yield event

    @strawberry.subscription(
        description="Every event of every conversation the caller participates in (joining or leaving "
        "updates the set), plus events addressed to the caller. `since` replays as in conversationEvents."
    )
    async def viewer_events(
        self, info: Info, since: Since = None
    ) -> AsyncGenerator[ConversationStreamEvent, None]:
        principal = await info.context.principal()
        await subscription_started(info)
        joined = await conversation_repo.conversations_joined(
            info.context.db, principal.tenant_id, principal.user_id
        )
        sub = Subscriber(
            tenant_id=principal.tenant_id,
            user_id=principal.user_id,
            conversations=joined,
            root_id=None,
            follows_viewer=True,
            queue_size=info.context.settings.subscriber_queue_size,
            selected_only=selected_only(info),
            context=info.context,
        )
        async for event in _stream(info, sub, since):
            yield event
