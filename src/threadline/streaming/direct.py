"""Direct frames: live events written to each socket as one frame serialised once per event and query.

The stock path delivers an event to a subscriber by waking its operation task: our stream generator
yields, graphql-core builds a per-event executor, strawberry runs its per-result extension hooks and
builds the `next` message, the message is JSON-encoded and goes through Starlette and uvicorn's ASGI
send. That is ~30 us per subscriber and event: 1,000 subscribers at 100 events/s is three seconds of
CPU per second.

Once a subscription is live and idle (everything queued was sent), the hub hands it events through its
`Lane` instead: the selection's result for (event, viewer class, query, variables) is executed once
(`FanoutExecutionContext`'s shared result), serialised once, framed once per operation id, and the
same bytes are written to every socket's transport, in the hub's routing pass, without waking any task.
Idle subscriptions of one conversation with the same frame key form a `LaneGroup`: per event the hub
appends one frame per group, and at the end of the pass writes each member's frames in one call.

The lane only takes what it can deliver exactly as the stock path would; for everything else it
declines and the event goes to the subscriber's queue, which wakes the stock path (and the lane stays
closed until that queue is drained, so frames stay in order):

- results with errors, values orjson cannot encode, results still awaited (a field whose resolver loads, e.g.
  `Message.author`: the hub awaits such a result once, for every group of its query, before its pass routes
  anything: `Lane.start_shared`; a lane outside a group, or a result not ready in time, declines);
- `membership.changed` events (the stream re-checks the subscriber's access after each);
- a socket that is closing, or whose transport is paused (its buffer is full: the stock path waits for
  it and the queue bounds it, ending with SLOW_CONSUMER); with permessage-deflate negotiated, shared
  frames go uncompressed (RFC 7692 allows it per message), and any other extension keeps the stock path;
- an operation the client completed (its frames must stop at once);
- servers other than uvicorn's sans-I/O WebSocket protocol (the default with `websockets` installed):
  there is no transport to write to, and every frame takes the stock path.

Everything that touches the server's internals (uvicorn's protocol, the websockets connection, strawberry's
operations and its `next` message bytes) is in streaming.transport, behind `DirectSocket`; this module
works with that interface and with the shared results of streaming.fanout.

Per-result schema extensions would add `extensions` to each stock frame; the served schema has none
that do for WebSocket operations (`sqlStatements` is HTTP only, and the lane refuses a context that
counts statements). tests/test_streaming_direct.py checks that both paths send the same bytes for
every event type.
"""

from __future__ import annotations

import asyncio
import sys
import weakref
from collections.abc import Generator
from copy import copy
from inspect import isawaitable, iscoroutine
from typing import Any

import orjson
from graphql import ExecutionResult as GraphQLExecutionResult

from threadline.events.kinds import EventType
from threadline.events.log import LoggedEvent
from threadline.events.payloads import UnreadUpdate
from threadline.streaming.fanout import (
    SUBSCRIPTION_EXECUTOR,
    FanoutExecutionContext,
    SharedEvents,
    viewer_class,
)
from threadline.streaming.transport import DirectSocket, next_frame

MEMBERSHIP_CHANGED = EventType.MEMBERSHIP_CHANGED.value
THREAD_NEW = EventType.THREAD_NEW.value
UNREAD_UPDATE = EventType.UNREAD_UPDATE.value
_MISSING = object()
# unread.update payloads by (query key, tenant, conversation, thread, time, count): `Lane._unread_payload`.
UNREAD_TEMPLATES = 1024
_UNREAD_TEMPLATES: dict[tuple[Any, ...], tuple[bytes, bytes]] = {}

# (query text, operation name, event type) whose execution for a subscriber of its own (a query selecting a field of
# the viewer's own: streaming.fanout.per_viewer, never shared) did not finish at once: its stock path executes it.
# The lanes decline such events from then on without executing them (each execution was started and dropped
# unfinished: its resolvers' coroutines never ran, the work was wasted and Python warned on every event).
OWN_AWAITED = 4096
_OWN_AWAITED: set[tuple[str, str | None, str]] = set()

# Parked subscriptions' executors, one per (schema, query text, operation name, variables): `Lane.share_executor`.
_SHARED_EXECUTORS: weakref.WeakValueDictionary[tuple[Any, ...], FanoutExecutionContext] = (
    weakref.WeakValueDictionary()
)


class Lane:
    """One subscription's direct delivery: which operation, socket, executor and viewer it is."""

    __slots__ = (
        "context",
        "dirty",
        "executor",
        "frame_key",
        "key",
        "operation_id",
        "pending",
        "shared_events",
        "socket",
        "viewer",
    )

    def __init__(
        self,
        socket: DirectSocket,
        executor: FanoutExecutionContext,
        context: Any,
        shared_events: SharedEvents,
        viewer: Any,
        dirty: list[Lane],
    ) -> None:
        self.pending: list[bytes] = []  # frames of this routing pass, written together by flush()
        self.dirty = dirty  # the hub's lanes with pending frames
        self.socket = socket  # the operation on its socket (streaming.transport)
        self.operation_id = socket.operation_id
        self.executor = executor
        self.context = context
        self.shared_events = shared_events
        self.viewer = viewer
        self.key = executor.fanout_key()
        # One string (its hash is cached): looked up once per subscriber and event. Interned: it holds the query
        # text, and the subscriptions of a conversation mostly share it (~400 bytes a socket otherwise).
        self.frame_key = sys.intern(
            "\x00".join((self.operation_id, self.key[0], self.key[1] or "", self.key[2]))
        )

    def deliver(self, event: LoggedEvent, frames: dict[Any, Any]) -> bool:
        """Take `event`'s frame for the socket (written by `flush` at the end of the hub's routing pass, before
        any task runs); False when the stock path must take it. `frames` caches this event's payloads and
        frames for every lane it is routed to."""
        kind = event.type
        if kind == MEMBERSHIP_CHANGED:
            return False
        return self.take(event, frames, kind == THREAD_NEW)

    def take(self, event: LoggedEvent, frames: dict[Any, Any], by_viewer: bool) -> bool:
        """`deliver` for an event known not to be membership.changed; `by_viewer`: it is thread.new."""
        if not self.socket.is_open():
            return False
        frame_key = self.frame_key
        if by_viewer:
            frame_key = frame_key + "\x00" + viewer_class(event, self.viewer)
        frame = frames.get(frame_key, _MISSING)
        if frame is _MISSING:
            frame = frames[frame_key] = self.frame(event, frames)
        if frame is None:
            return False
        if not self.pending:
            self.dirty.append(self)
        self.pending.append(frame)
        return True

    def flush(self) -> None:
        """Writes this pass's frames in one go: one system call per socket for however many events the hub
        read at once (under load it reads several, so the cost per frame falls as the rate rises). Nothing once
        the client completed the operation or the socket is closing (frames a group spilled here while the hub let
        the loop run between write slices may find it so): no `next` after `complete`."""
        if self.pending and self.socket.accepts():
            self.socket.write_frames(self.pending)
        self.pending.clear()

    def frame(self, event: LoggedEvent, frames: dict[Any, Any], viewer: Any = None) -> bytes | None:
        """`event`'s `next` frame for this lane's operation (its payload shared through `frames` with every lane
        of the same query and variables), or None when the stock path must send it. `viewer`: as that user sees
        it (a lane group renders `thread.new` for its author's members and its readers' with one lane)."""
        if event.type == UNREAD_UPDATE:
            payload = self._unread_payload(event, frames)
            return None if payload is None else next_frame(self.operation_id, payload)
        if (self.key[0], self.key[1], event.type) in _OWN_AWAITED:
            return None  # a selection of the viewer's own that loads: the stock path executes it (`_payload`)
        shared = self.shared_events.get(event, self.viewer if viewer is None else viewer)
        payload_key = (id(shared), self.key)
        payload = frames.get(payload_key, _MISSING)
        if payload is _MISSING:
            payload = frames[payload_key] = self._payload(shared)
        if payload is None:
            return None
        return next_frame(self.operation_id, payload)

    def _unread_payload(self, event: LoggedEvent, frames: dict[Any, Any]) -> bytes | None:
        """An unread.update's payload. A reply announces one per participant, in one transaction: same thread, same
        time, often the same count, so their results differ only in the cursor (the event type has no other field
        that depends on the event: streaming.render). The first is executed; the others with the same (query,
        tenant, conversation, thread, time, count) are its bytes with the cursor string swapped (a cursor is
        "c1." and 24 hex digits: it cannot occur in the other fields of this type)."""
        payload_key = ("unread", self.key)
        payload = frames.get(payload_key, _MISSING)
        if payload is not _MISSING:
            return payload  # type: ignore[no-any-return]
        codec = self.shared_events.cursors
        data = event.data
        assert isinstance(data, UnreadUpdate)
        key = (
            self.key,
            event.tenant_id,
            event.conversation_id,
            event.root_id,
            event.created_at,
            data.unread_count,
        )
        template = _UNREAD_TEMPLATES.get(key)
        found: bytes | None
        if template is not None and codec is not None:
            old, body = template
            found = body.replace(old, b'"' + codec.encode(event.tenant_id, event.id).encode() + b'"')
        else:
            shared = self.shared_events.get(event, self.viewer)
            found = self._payload(shared)
            if found is not None:
                if len(_UNREAD_TEMPLATES) >= UNREAD_TEMPLATES:
                    _UNREAD_TEMPLATES.clear()
                _UNREAD_TEMPLATES[key] = (b'"' + shared.cursor.encode() + b'"', found)
        frames[payload_key] = found
        return found

    def share_executor(self) -> None:
        """When the subscription parks (its task and the stream using its executor are gone): the lane keeps the
        executor of its (schema, query, operation, variables) that every parked lane of the same key shares,
        without a context (each use gets its lane's), and the subscription's own is freed (~2.5 KB: graphql-core's
        per-operation state, variables, caches). Not with resolver middleware (they may hold per-operation state)."""
        executor = self.executor
        if executor.context_value is None or getattr(executor.middleware_manager, "middlewares", None):
            return
        key = (id(executor.schema), *self.key)
        shared = _SHARED_EXECUTORS.get(key)
        if shared is None:
            executor.context_value = None
            executor.forget_bound_selections()
            shared = _SHARED_EXECUTORS[key] = executor
        self.executor = shared

    def own_executor(self) -> FanoutExecutionContext:
        """The subscription's executor with this lane's context, for its stream when it wakes: a shallow copy, as
        graphql-core makes its per-event executors (they share the operation's validated arguments)."""
        executor = copy(self.executor)
        executor.context_value = self.context
        return executor

    def start_shared(self, event: LoggedEvent, viewer: Any = None) -> asyncio.Future[Any] | None:
        """Executes `event`'s selection for this lane's query ahead of the hub's pass (as `viewer` sees it, by
        default the lane's own user): when the result is still being worked out (a field whose resolver loads
        through the socket's loaders), the future every subscriber of the query shares, for the hub to await once;
        the pass then finds it done and the lanes write it. None when there is nothing to wait for, or the query's
        results are not shared (a field of the viewer's own: each subscriber executes it)."""
        if not self.executor.shares_results or self.context.known_principal is None:
            return None
        result = self._execute(self.shared_events.get(event, self.viewer if viewer is None else viewer))
        if isinstance(result, asyncio.Future) and not result.done():
            return result
        return None

    def _execute(self, shared: Any) -> Any:
        # As before each stock execution: the socket's loaders must not serve one event's data to the next.
        self.context.forget_loaders()
        executor = self.executor.build_per_event_executor(shared)
        executor.context_value = self.context  # a shared executor has none (share_executor)
        return executor.execute_operation(False)

    def _payload(self, shared: Any) -> bytes | None:
        if self.context.known_principal is None:
            # Authenticating again (or refused: its socket is closing): its own stock path answers it, and its
            # execution is not shared (streaming.fanout).
            return None
        result = self._execute(shared)
        if isinstance(result, asyncio.Future):  # shared by the query's subscribers (streaming.fanout)
            if not result.done() or result.cancelled() or result.exception() is not None:
                return None
            result = result.result()
        elif isawaitable(result):  # this subscriber's own (never shared): its stock path executes the event
            if not self.executor.shares_results:
                _OWN_AWAITED.add(_own_awaited_key(self.key, shared))
            if iscoroutine(result):
                result.close()
            return None
        if not isinstance(result, GraphQLExecutionResult) or result.errors:
            return None
        try:
            return orjson.dumps({"data": result.data})
        except TypeError:  # the stock path's encoder falls back to json for these
            return None


def _own_awaited_key(key: tuple[str, str | None, str], shared: Any) -> tuple[str, str | None, str]:
    if len(_OWN_AWAITED) >= OWN_AWAITED:
        _OWN_AWAITED.clear()
    return (key[0], key[1], str(shared.type))


def lane_for(info: Any, hub: Any, viewer: Any) -> Lane | None:
    """The lane of the subscription whose resolver is running, or None when it must use the stock path."""
    context = info.context
    if not context.settings.stream_direct_frames or getattr(context, "sql_statements", None) is not None:
        return None
    executor = SUBSCRIPTION_EXECUTOR.get(None)
    # It comes from this task's context; make sure it is this subscription's.
    if executor is None or executor.operation is not info.operation or executor.context_value is not context:
        return None
    socket = DirectSocket.of_running_operation(context.request)
    if socket is None:
        return None
    return Lane(socket, executor, context, hub.shared_events, viewer, hub.dirty_lanes)


class _PerUser:
    """A group's frame for some of its members only: an addressed event (`unread.update`: its recipient's frame,
    nothing for the others) or one rendered per viewer (`thread.new`: the author's frame, the readers' `default`)."""

    __slots__ = ("default", "frames")

    def __init__(self, frames: dict[Any, bytes], default: bytes | None) -> None:
        self.frames = frames
        self.default = default


class LaneGroup:
    """The idle subscriptions of one conversation (and thread filter) whose lanes share a frame key (query,
    variables, operation id): an event's frame is appended once for the whole group during the routing
    pass, and the pass's frames are written to every member's socket at its end. Per event the hub does
    no work per member; per pass, one write each.

    Addressed events (a recipient: `unread.update`) and events rendered per viewer (`thread.new`: author and
    reader) are taken by the group too, as one frame per (recipient or viewer class): `_PerUser` entries. A
    pass with such entries joins its frames once per user of the group that has its own (the others share the
    common join), so 1,000 sockets of 100 users cost at most 100 joins and still one write per socket.

    Frames wait here only during the hub's synchronous routing pass. Before a member takes an event by
    itself (an event the group does not take: a frame the lane cannot build), the
    group hands its pending frames to the members' own lanes (`spill`), so order holds."""

    __slots__ = (
        "events",
        "frame_key",
        "key",
        "members",
        "pending",
        "per_user",
        "registry",
        "root_id",
        "selected_only",
        "taken",
        "tenant_int",
        "users",
    )

    def __init__(
        self,
        key: str,
        frame_key: str,
        tenant_int: int,
        root_id: Any,
        registry: dict[str, LaneGroup],
        selected_only: frozenset[str] = frozenset(),
    ) -> None:
        self.key = key
        # The SELECTED_ONLY types its members' selection names: one query (the frame key), so one set for all.
        self.selected_only = selected_only
        self.frame_key = frame_key
        self.tenant_int = tenant_int
        self.root_id = root_id
        self.registry = registry  # the conversation's groups (this one leaves it when its last member does)
        self.members: set[Any] = set()  # Subscriber
        self.users: dict[Any, int] = {}  # the members' user ids: how many members each
        self.pending: list[bytes | _PerUser] = []
        self.per_user = False  # some pending entry is a _PerUser
        self.events: list[LoggedEvent] = []
        self.taken = 0  # the id of the last event the group took (members skip it in the hub's loop)

    def join(self, sub: Any) -> None:
        if sub not in self.members:
            self.members.add(sub)
            self.users[sub.user_id] = self.users.get(sub.user_id, 0) + 1

    def _left(self, sub: Any) -> None:
        if sub in self.members:
            self.members.discard(sub)
            count = self.users[sub.user_id] - 1
            if count:
                self.users[sub.user_id] = count
            else:
                del self.users[sub.user_id]

    def lane(self) -> Lane:
        """The member lane that executes the group's events, for all of them: one whose caller is authenticated. A
        member whose credential the socket's re-check just refused stays in the group until its socket closes
        (which waits on a paused transport for as long as its client reads nothing), and its context answers
        every load with UNAUTHENTICATED: that error went to every subscriber of the query, other users included."""
        first: Lane | None = None
        for sub in self.members:
            lane: Lane = sub.lane
            if lane.context.known_principal is not None:
                return lane
            if first is None:
                first = lane
        assert first is not None, "a group without members executes nothing"
        return first

    def take(self, event: LoggedEvent, frames: dict[Any, Any], dirty: list[Any]) -> bool:
        """An event every member receives alike (one frame for all)."""
        frame = frames.get(self.frame_key, _MISSING)
        if frame is _MISSING:
            lane = self.lane()
            frame = frames[self.frame_key] = lane.frame(event, frames)
        if frame is None:
            return False
        self._append(frame, event, dirty)
        return True

    def take_addressed(self, event: LoggedEvent, frames: dict[Any, Any], dirty: list[Any]) -> int:
        """An event for its recipient's members only: how many members that is, or -1 when the lane cannot build
        its frame (the group spills; the recipient's members take it one by one). Members of other users never
        see it, and a group without the recipient does nothing at all."""
        recipient = event.recipient_id
        count = self.users.get(recipient, 0)
        if not count:
            self.taken = event.id
            return 0
        frame = frames.get(self.frame_key, _MISSING)
        if frame is _MISSING:
            lane = self.lane()
            frame = frames[self.frame_key] = lane.frame(event, frames)
        if frame is None:
            return -1
        self._append(_PerUser({recipient: frame}, None), event, dirty)
        return count

    def take_by_viewer(self, event: LoggedEvent, frames: dict[Any, Any], dirty: list[Any]) -> bool:
        """`thread.new`: the author's members get the author's rendering, every other member the reader's."""
        data = event.data
        author = data.message.author_id  # type: ignore[union-attr]
        lane = self.lane()
        reader: bytes | None = None
        if len(self.users) > (author in self.users):
            reader = frames.get(self.frame_key + "\x00reader", _MISSING)
            if reader is _MISSING:
                viewer = next(u for u in self.users if u != author)
                reader = frames[self.frame_key + "\x00reader"] = lane.frame(event, frames, viewer)
            if reader is None:
                return False
        own: dict[Any, bytes] = {}
        if author in self.users:
            frame = frames.get(self.frame_key + "\x00author", _MISSING)
            if frame is _MISSING:
                frame = frames[self.frame_key + "\x00author"] = lane.frame(event, frames, author)
            if frame is None:
                return False
            own[author] = frame
        self._append(_PerUser(own, reader), event, dirty)
        return True

    def start_shared(self, event: LoggedEvent) -> list[asyncio.Future[Any]]:
        """`Lane.start_shared` for the renderings this group's `take`s will ask for (thread.new: the author's and
        a reader's, as `take_by_viewer` does)."""
        lane = self.lane()
        viewers: list[Any] = [None]
        if event.type == THREAD_NEW:
            author = event.data.message.author_id  # type: ignore[union-attr]
            readers = (u for u in self.users if u != author)
            viewers = [
                v for v in (next(readers, None), author if author in self.users else None) if v is not None
            ]
        found = (lane.start_shared(event, viewer) for viewer in viewers)
        return [f for f in found if f is not None]

    def _append(self, entry: bytes | _PerUser, event: LoggedEvent, dirty: list[Any]) -> None:
        if not self.pending:
            dirty.append(self)
        if type(entry) is _PerUser:
            self.per_user = True
        self.pending.append(entry)
        self.events.append(event)
        self.taken = event.id

    def _frames_for(self, user: Any) -> list[bytes]:
        """The pending frames one user's members receive, in order."""
        out: list[bytes] = []
        for entry in self.pending:
            if type(entry) is _PerUser:
                frame = entry.frames.get(user, entry.default)
                if frame is not None:
                    out.append(frame)
            else:
                out.append(entry)  # type: ignore[arg-type]
        return out

    def _batches(self) -> dict[Any, list[bytes]]:
        """Each user's pending frames (computed once per user, not per member)."""
        return {user: self._frames_for(user) for user in self.users}

    def _clear(self) -> None:
        self.pending.clear()
        self.events.clear()
        self.per_user = False

    def spill(self) -> None:
        """Moves the pending frames to every member's own lane (they are written there, in order, first)."""
        if not self.pending:
            return
        batches = self._batches()
        for sub in list(self.members):
            if sub.lane.socket.is_open():
                self._spill_to(sub, batches[sub.user_id])
            else:  # leaves the group (close_lane) and takes the pending events through the stock path
                sub.close_lane()
        self._clear()
        if not self.members:
            self.registry.pop(self.key, None)

    def _spill_to(self, sub: Any, frames: list[bytes]) -> None:
        lane = sub.lane
        if frames:
            if not lane.pending:
                lane.dirty.append(lane)
            lane.pending.extend(frames)
        sub.last = self.events[-1].id

    def _offer_taken(self, sub: Any, events: list[LoggedEvent]) -> int:
        """The stock path takes the pass's events the group took for `sub` (not those addressed to other users)."""
        offered = 0
        for event in events:
            recipient = event.recipient_id
            if event.id > sub.last and (recipient is None or recipient == sub.user_id):
                sub.offer(event, {})
                offered += 1
        return offered

    def leave(self, sub: Any) -> None:
        """`sub` leaves (Subscriber.close_lane: its lane is closed already). The pass's frames the group took for
        it go to its lane while its socket can take them; otherwise (paused, closing: the group took them without
        asking) their events go to its queue and the stock path, in order, before whatever it is offered next."""
        self._left(sub)
        if self.pending and not sub.ended:
            if sub.lane.socket.is_open():
                self._spill_to(sub, self._frames_for(sub.user_id))
            else:
                self._offer_taken(sub, self.events)
        if not self.members and not self.pending:
            self.registry.pop(self.key, None)

    def flush(self) -> int:
        """Writes the pass's frames to every member that can take them now; the others leave the group and
        get the pass's events through the stock path. Returns how many deliveries went that way."""
        steps = self.flushing(0)
        while True:
            try:
                next(steps)  # in one slice: never reached
            except StopIteration as done:
                return int(done.value)

    def flushing(self, slice_size: int) -> Generator[int, None, int]:
        """`flush` in slices of `slice_size` members (0: all at once): between slices it yields how many
        deliveries of the slice went to the stock path (the last slice's is its return value), and the hub lets the loop run other callbacks before the
        next (`StreamHub._flush`), so a writer's transaction waiting on its database answer (holding row locks
        every other writer of the thread waits for) is not held up by the whole pass's socket writes.

        Between slices a member may leave (its operation completed, its subscription ended, its stream woke):
        such a member gets nothing written here; if its subscription goes on, it takes the pass's events it has
        not had through the stock path, in order (nothing else was routed meanwhile: the hub's next pass waits
        for this one). A member that left and came back to this group (its stream drained and idled again) is
        written to as before: it had none of the pass's events."""
        if not self.pending:
            return 0
        shared: list[bytes] | None = None
        joined: dict[Any, list[bytes]] = {}
        if self.per_user:
            # One join per user with frames of its own; the users without share the common one.
            common: list[bytes] | None = None
            own: set[Any] = set()
            for entry in self.pending:
                if type(entry) is _PerUser:
                    own.update(entry.frames)
            for user in self.users:
                if user in own:
                    frames = self._frames_for(user)
                    joined[user] = [b"".join(frames)] if frames else []
                elif common is None:
                    frames = self._frames_for(None)
                    common = joined[user] = [b"".join(frames)] if frames else []
                else:
                    joined[user] = common
        else:
            shared = [self.pending[0] if len(self.pending) == 1 else b"".join(self.pending)]  # type: ignore[list-item, arg-type]
        last = self.events[-1].id
        events = list(self.events)
        self._clear()
        fallen = 0
        members = list(self.members)
        first = events[0].id
        end = len(members)
        step = slice_size if slice_size > 0 else max(end, 1)
        for start in range(0, end, step):
            if start:
                yield fallen
                fallen = 0
            for sub in members[start : start + step]:
                if sub.group is not self or sub.last >= first:
                    # Left since the pass began (only possible after a yield), or has some of the pass's events
                    # already (no path should allow it: open_lane keeps newcomers out of a group being written).
                    if not sub.ended:  # queued, or taken by its lane if it opened one in another group
                        fallen += self._offer_taken(sub, events)
                    continue
                socket = sub.lane.socket
                if socket.is_open():
                    batch = shared if shared is not None else joined[sub.user_id]
                    if batch:
                        socket.write_frames(batch)
                    sub.last = last
                    continue
                sub.close_lane()
                fallen += self._offer_taken(sub, events)
        if not self.members and self.registry.get(self.key) is self:
            self.registry.pop(self.key, None)
        return fallen
