"""The per-process StreamHub: one LISTEN, one reader of the log, in-process fan-out.

Publishers write an event row and NOTIFY inside their transaction. The hub holds a single
broadcaster subscription; a notification (or a resync after a reconnect, or a periodic poll) wakes
the reader, which reads the log after its cursor once and routes each event to the matching
subscribers' bounded queues.

Ids come from a sequence, so they become visible out of commit order. The reader never moves its
cursor past an id that may still commit: every publishing transaction holds, from before it draws its
first id until it ends, a shared advisory lock keyed by its *floor* (the sequence position just before
that id) and one per bucket of the conversations it publishes to (events.publish). Each read returns
the committed events after the cursor and, read just after their snapshot, the sequence position and
those locks (events.log.read_tail). With the previous read's publishers (read before this read's
snapshot), every id at or below `min(position, floors)` is committed and visible, or gone: the cursor
moves up to it, and, between gaps, one id at a time. A new hub starts at that same bound, so an event
committed after it started is never behind its cursor, and `streamCursor` returns it too.

Order is per conversation bucket, not global, for conversation subscriptions: when an open writer holds
the cursor back, the events after it whose bucket (and bucket 0, presence) no open writer holds are
routed "early" to the conversationEvents subscriptions of their conversation, and `_early` remembers
how far each conversation got, so the cursor's own pass later skips them there. viewerEvents streams,
membership changes and principal changes keep the global order (they span conversations). So every
committed event is delivered exactly once to each subscriber, in id order per conversation.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable

from broadcaster import Broadcast

from threadline.conversations import repository as conversation_repo
from threadline.db import Database
from threadline.events import log as event_log
from threadline.events.kinds import EventType
from threadline.events.log import LoggedEvent
from threadline.events.payloads import MembershipChanged
from threadline.events.publish import CHANNEL, bucket_of
from threadline.observability.metrics import METRICS
from threadline.settings import Settings
from threadline.streaming.cursors import CursorCodec, load_codec
from threadline.streaming.direct import Lane, LaneGroup
from threadline.streaming.fanout import SharedEvents
from threadline.streaming.listener import SupervisedPostgresBackend
from threadline.streaming.redis_channel import SupervisedRedisBackend, is_redis_url
from threadline.streaming.sessions import SocketSessions
from threadline.streaming.subscriber import SELECTED_ONLY, Subscriber, subject_of

log = logging.getLogger(__name__)
STREAM_FRAMES = METRICS.stream_frames

READ_BATCH = 2000
EARLY_READS = 5  # batches read past a held-back cursor for early routing, per pass (bounds the work)
IDLE_POLL_SECONDS = 1.0
GAP_POLL_SECONDS = 0.02
# Pacing under load: after a pass that held the loop for `busy` seconds (routing, rendering, writing), the next read
# waits until `busy * PACE_FACTOR` has passed (at most PACE_MAX_SECONDS), so the events committed meanwhile are read
# together and each socket gets one write for all of them. A socket write is the cost that does not shrink with
# sharing (~20 us each on loopback here, bench/RESULTS.md "Publish cost"): without pacing a writer committing 40
# replies a second made 40 writes a second to each of 1,000 sockets, and the hub took most of the loop from the
# writers. The hub then holds the loop at most about 1 / (1 + PACE_FACTOR) of the time, and an event waits at most
# PACE_MAX_SECONDS more; a quiet hub (the last pass long ago, or cheap) reads at once.
PACE_FACTOR = 3.0
PACE_MAX_SECONDS = 0.1
# A lane group writes to this many members at a time, then lets the loop run what is ready (`_write_out`): ~2 ms of
# socket writes. Under write load the pass's writes (1,000 sockets: ~25 ms) otherwise delay every database answer
# that arrives meanwhile, and a writer's transaction holds its thread's row locks, and so every other writer of
# the thread, for as long (bench/RESULTS.md, "Publish cost ... sliced writes").
WRITE_SLICE = 100
# At most this long a pass lets other work run between its slices (the pass's later sockets wait meanwhile: issue
# 4's latency from commit to receipt).
YIELD_BUDGET_SECONDS = 0.01
# How long a pass waits for results shared by a query's subscribers that a resolver is still loading
# (`_await_shared`); what is not ready by then takes the stock path, as it did before. The wait holds the whole
# batch (every conversation's events), so it is short: a load takes 1-15 ms here; a database slower than this
# delays each batch by at most this much.
SHARED_WAIT_SECONDS = 0.1
# Types the lanes never execute ahead: unread.update is built from templates, the others are not theirs.
_NOT_AHEAD = frozenset({EventType.MEMBERSHIP_CHANGED, EventType.PRESENCE_UPDATE, EventType.UNREAD_UPDATE})


class StreamHub:
    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        self.cursor = 0  # every event at or below it was routed; no id at or below it may still commit
        self._publishers = event_log.NO_PUBLISHERS  # read with the previous read, before this one's snapshot
        self._held = False  # the last read left committed events behind an open writer
        # conversation -> the highest id routed early to its conversation subscriptions (above the cursor)
        self._early: dict[uuid.UUID, int] = {}
        self._wake = asyncio.Event()
        self._paced_until = 0.0  # loop time before which the next read waits (PACE_FACTOR)
        self._yielded = 0.0  # seconds this pass's writes left the loop to others (between WRITE_SLICE slices)
        self._waited = 0.0  # seconds this pass waited for shared results (`_await_shared`)
        self._by_conversation: dict[uuid.UUID, set[Subscriber]] = defaultdict(set)
        self._viewers: dict[uuid.UUID, set[Subscriber]] = defaultdict(set)
        self._participants: dict[uuid.UUID, set[uuid.UUID]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._broadcast: Broadcast | None = None
        self.backend: SupervisedPostgresBackend | SupervisedRedisBackend | None = None
        self.delivered = 0
        self.shared_events = SharedEvents(max_bytes=settings.event_memo_max_bytes)
        self._cursors: CursorCodec | None = None  # loaded by start(): the key of every cursor the API shows
        self.dirty_lanes: list[Lane] = []  # direct lanes holding frames of the current routing pass
        self.dirty_groups: list[LaneGroup] = []  # lane groups holding frames of the current routing pass
        self._groups: dict[uuid.UUID, dict[str, LaneGroup]] = {}  # per conversation, by group key
        self.sessions = SocketSessions(db)  # open sockets by user: principal.changed re-checks them

    # lifecycle -----------------------------------------------------------------------------------

    async def start(self) -> None:
        assert self.settings.database_url, "the hub needs the resolved database URL"
        self._cursors = self.shared_events.cursors = await load_codec(self.db, self.settings)
        # Not the sequence position: it counts ids drawn by transactions still open, whose events would
        # then be behind the cursor when they commit.
        self._publishers = await event_log.open_publishers(self.db)
        self.cursor = self._publishers.safe
        # The LISTEN connection may go elsewhere than the pool (e.g. straight to the primary when the pool goes
        # through a transaction-mode pooler, where LISTEN does not work); or the wake-ups come from Redis, published
        # after each commit instead of a NOTIFY in it (streaming.redis_channel; the app wires the publishing side).
        listen_url = self.settings.broadcast_url or self.settings.database_url
        if is_redis_url(listen_url):
            self.backend = SupervisedRedisBackend(listen_url)
        elif listen_url.startswith(("postgres://", "postgresql://")):
            self.backend = SupervisedPostgresBackend(listen_url)
        else:
            raise ValueError(
                f"THREADLINE_BROADCAST_URL must be a PostgreSQL or Redis URL, not {listen_url.split(':')[0]}://"
            )
        self._broadcast = Broadcast(backend=self.backend)
        await self._broadcast.connect()
        ready = asyncio.Event()
        self._tasks = [
            asyncio.create_task(self._listen(ready), name="threadline-hub-listen"),
            asyncio.create_task(self._read_loop(), name="threadline-hub-reader"),
        ]
        await ready.wait()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        if self._broadcast is not None:
            with contextlib.suppress(Exception):
                await self._broadcast.disconnect()
        for subs in list(self._by_conversation.values()) + list(self._viewers.values()):
            for sub in subs:
                sub.end("server shutting down")

    async def _listen(self, ready: asyncio.Event) -> None:
        assert self._broadcast is not None
        # One subscription for the whole process (broadcaster's per-channel subscribe races).
        async with self._broadcast.subscribe(CHANNEL) as subscription:
            ready.set()
            async for _ in subscription:  # type: ignore[union-attr]
                self._wake.set()

    @property
    def cursors(self) -> CursorCodec:
        """Positions as each tenant's opaque cursors and back (streaming.cursors); the hub itself, the replay and
        SLOW_CONSUMER work with the plain positions."""
        assert self._cursors is not None, "the hub is not started"
        return self._cursors

    # subscribers ---------------------------------------------------------------------------------

    async def subscribe(self, sub: Subscriber) -> Subscriber:
        """Register `sub`; from now on it receives every event after `sub.start`."""
        sub.start = self.cursor if sub.follows_viewer else self.position(next(iter(sub.conversations)))
        if sub.follows_viewer:
            self._viewers[sub.user_id].add(sub)
        for conversation_id in sub.conversations:
            self._by_conversation[conversation_id].add(sub)
        if not sub.follows_viewer:
            await self._load_participants(sub.tenant_id, sub.conversations)
        return sub

    def open_lane(self, sub: Subscriber) -> None:
        """The subscription is idle with nothing queued: events may go straight to its socket, shared with the
        other subscriptions of its conversation that have the same frame key (`LaneGroup`)."""
        lane = sub.lane
        if lane is None or sub.ended or sub.overflowed:
            return
        sub.lane_open = True
        if sub.follows_viewer:
            return  # a viewer stream spans conversations
        (conversation,) = sub.conversations
        if sub.last > self.position(conversation):
            return  # a cursor ahead of the hub's needs the per-event check
        groups = self._groups.setdefault(conversation, {})
        key = lane.frame_key + "\x00" + (sub.root_id.hex if sub.root_id else "")
        group = groups.get(key)
        if group is not None and group.pending:
            # A pass is being written (`_write_out` lets the loop run between slices) and this group's frames are
            # still to go: they are for its members as of the pass, not for a subscription whose replay or start
            # already covers them. The lane stays alone for now (each event checked against `sub.last`).
            return
        if group is None:
            group = groups[key] = LaneGroup(
                key, lane.frame_key, sub.tenant_int, sub.root_id, groups, sub.selected_only
            )
        group.join(sub)
        sub.group = group

    def unsubscribe(self, sub: Subscriber) -> None:
        if sub.follows_viewer:
            self._discard(self._viewers, sub.user_id, sub)
        for conversation_id in list(sub.conversations):
            self._discard(self._by_conversation, conversation_id, sub)
            if conversation_id not in self._by_conversation:
                self._participants.pop(conversation_id, None)
                if not self._groups.get(conversation_id, True):
                    del self._groups[conversation_id]

    def local_subscriptions(self, user_id: uuid.UUID) -> int:
        """How many live subscriptions this process holds for a user (for presence on close)."""
        count = len(self._viewers.get(user_id, ()))
        for subs in self._by_conversation.values():
            count += sum(1 for s in subs if s.user_id == user_id and not s.follows_viewer)
        return count

    @property
    def subscriber_count(self) -> int:
        return len(
            {s for subs in self._by_conversation.values() for s in subs}
            | {s for subs in self._viewers.values() for s in subs}
        )

    @staticmethod
    def _discard(index: dict[uuid.UUID, set[Subscriber]], key: uuid.UUID, sub: Subscriber) -> None:
        subs = index.get(key)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del index[key]

    async def _load_participants(self, tenant_id: uuid.UUID, conversation_ids: set[uuid.UUID]) -> None:
        """Who takes part in these conversations of the tenant (presence goes to their subscriptions)."""
        missing = [c for c in conversation_ids if c not in self._participants]
        if not missing:
            return
        rows = await conversation_repo.participants_of(self.db, tenant_id, missing)
        for c in missing:
            self._participants.setdefault(c, set())
        for row in rows:
            self._participants[row["conversation_id"]].add(row["user_id"])

    # reading and routing -------------------------------------------------------------------------

    def position(self, conversation: uuid.UUID) -> int:
        """How far a conversation's subscriptions got: the cursor, or beyond it if routed early."""
        return max(self.cursor, self._early.get(conversation, 0))

    async def settled_cursor(self, timeout: float = 1.0) -> int:
        """A cursor covering everything committed before this call, that no open transaction can still
        commit below (events.log.safe_position). Waits a little for the reader to get there, so that a
        subscription with it usually starts live at once; a cursor ahead of the hub's is fine too."""
        safe = await event_log.safe_position(self.db)
        deadline = asyncio.get_running_loop().time() + timeout
        while self.cursor < safe and asyncio.get_running_loop().time() < deadline:
            self._wake.set()
            await asyncio.sleep(0.005)
        return safe

    async def _read_loop(self) -> None:
        while True:
            timeout = GAP_POLL_SECONDS if self._held else IDLE_POLL_SECONDS
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=timeout)
            delay = self._paced_until - asyncio.get_running_loop().time()
            if delay > 0:
                await asyncio.sleep(delay)  # what commits meanwhile is read with it (PACE_FACTOR)
            self._wake.clear()
            try:
                while await self._read_once():
                    pass
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the database may be restarting; retry after a pause
                log.exception("stream hub: reading the event log failed; retrying")
                await asyncio.sleep(0.5)

    async def _read_once(self) -> bool:
        """One pass; True if the batch was full and the cursor moved (read on at once)."""
        before = self._publishers  # read before this read's snapshot
        tail = await event_log.read_tail(self.db, self.cursor, READ_BATCH)
        began = time.perf_counter()
        self._yielded = self._waited = 0.0
        self._publishers = tail.publishers
        events = tail.events
        safe = before.safe
        start = self.cursor
        held: list[LoggedEvent] = []
        try:
            await self._await_shared(events, before)
        except Exception:  # noqa: BLE001 - only a head start: the pass routes these events all the same
            log.exception("stream hub: executing events ahead of the pass failed; the stock path takes them")
        try:
            for i, event in enumerate(events):
                if event.id != self.cursor + 1 and event.id > safe:
                    held = events[i:]  # an id below it may still commit
                    break
                self.cursor = event.id
                self._route(event)
            if held:
                await self._route_early(held, before, full=len(events) >= READ_BATCH)
        finally:
            await self._write_out()
        if events:
            # The loop's turns between slices, and the wait for shared results, are not the hub's.
            busy = time.perf_counter() - began - self._yielded - self._waited
            self._paced_until = asyncio.get_running_loop().time() + min(busy * PACE_FACTOR, PACE_MAX_SECONDS)
        self._held = bool(held)
        if self._early:
            self._early = {c: i for c, i in self._early.items() if i > self.cursor}
        return len(events) >= READ_BATCH and self.cursor > start

    async def _await_shared(self, events: list[LoggedEvent], before: event_log.OpenPublishers) -> None:
        """Before the pass routes anything: each event's selection is executed for every lane group of its
        conversation, and the results still being loaded (fields whose resolvers read through a loader, e.g.
        `Message.author`) are awaited here, once for all the subscribers of a query, for at most
        SHARED_WAIT_SECONDS. The pass then finds them done and the groups write them as frames, where each member
        used to wake its own stock path for them. Nothing of the batch is routed yet, so waiting changes no
        order; a result not ready in time takes the stock path as before.

        Only the events this pass routes to the groups, as `_read_once` and `_route_early` will: not those routed
        early by an earlier pass (while a writer holds the cursor back the hub reads them again every
        GAP_POLL_SECONDS), nor those held back that cannot go early yet."""
        waiting: list[asyncio.Future[object]] = []
        cursor, safe, early = self.cursor, before.safe, self._early
        in_order = True
        for event in events:
            if in_order and event.id != cursor + 1 and event.id > safe:
                in_order = False  # held from here on (`_read_once`): only what `_route_early` takes
            if in_order:
                cursor = event.id
            elif event.type == EventType.MEMBERSHIP_CHANGED:
                break  # `_route_early` stops at it
            conversation = event.conversation_id
            if conversation is None or event.type in _NOT_AHEAD:
                continue
            if early and event.id <= early.get(conversation, 0):
                continue  # routed early already: only viewer streams still take it, never a group
            if not in_order and event.id > before.safe_for(bucket_of(conversation)):
                continue  # held back: not routed in this pass
            groups = self._groups.get(conversation)
            if not groups:
                continue
            tenant, root, recipient = event.tenant_id.int, event.root_id, event.recipient_id
            opt_in = event.type in SELECTED_ONLY
            for group in groups.values():
                if (
                    group.members
                    and group.tenant_int == tenant
                    and (root is None or group.root_id is None or root == group.root_id)
                    # As `_offer_in_conversation`: a type its query does not select, an event for another user.
                    and (not opt_in or event.type in group.selected_only)
                    and (recipient is None or recipient in group.users)
                ):
                    waiting.extend(group.start_shared(event))
        if waiting:
            began = time.perf_counter()
            await asyncio.wait(waiting, timeout=SHARED_WAIT_SECONDS)
            # The loop ran other work meanwhile: not the hub's busy time, and no turn between write slices either
            # (`_yielded` is their budget: spent here, the pass wrote to every socket at once).
            self._waited += time.perf_counter() - began

    async def _route_early(
        self, held: list[LoggedEvent], before: event_log.OpenPublishers, *, full: bool
    ) -> None:
        """Routes the events the cursor is held back from to their conversation subscriptions when no open
        writer may still commit an id of their bucket (or of bucket 0) below them: `before` was read before
        these events' snapshots, so such an id was committed and is among them, or is gone. Later batches
        (read when `full`) have later snapshots: the same holds."""
        reads = 1
        while True:
            for event in held:
                if event.type == EventType.MEMBERSHIP_CHANGED:
                    return  # it changes who follows what (viewer streams, presence): everything after waits
                if event.type == EventType.PRESENCE_UPDATE:
                    self._route_presence(event, early=before)
                    continue
                conversation = event.conversation_id
                if conversation is None or event.id <= self._early.get(conversation, 0):
                    continue  # events of no conversation (principal changes) keep the cursor's order
                if event.id > before.safe_for(bucket_of(conversation)):
                    continue
                self._early[conversation] = event.id
                subs = self._by_conversation.get(conversation)
                if subs:
                    self._offer_in_conversation(event, [s for s in subs if not s.follows_viewer])
            if not full or reads >= EARLY_READS:
                return
            await self._write_out()  # frames of this batch go out before the next read's await
            more = await event_log.read_tail(self.db, held[-1].id, READ_BATCH)
            held, full = more.events, len(more.events) >= READ_BATCH
            reads += 1

    def _route(self, event: LoggedEvent) -> None:
        """Hands `event` to every subscriber that wants it, in one pass. (Slicing the pass with loop turns in
        between, to let other work in, cut the hub's throughput by two thirds at 1,000 subscribers: measured.)"""
        if event.type == EventType.PRESENCE_UPDATE:
            self._route_presence(event)
            return
        if event.type != EventType.MEMBERSHIP_CHANGED and event.conversation_id is not None:
            subs = self._by_conversation.get(event.conversation_id, ())
            if self._early and event.id <= self._early.get(event.conversation_id, 0):
                # Routed early to the conversation's own subscriptions: only viewer streams still need it.
                self._offer(event, [s for s in subs if s.follows_viewer and s.wants(event)])
                return
            self._offer_in_conversation(event, subs)
            return
        if event.type == EventType.PRINCIPAL_CHANGED:
            self.sessions.principal_changed(event, self._subscriptions_of)
            return
        targets: set[Subscriber] = set()
        if event.conversation_id is not None:
            targets |= self._by_conversation.get(event.conversation_id, set())
        if event.type == EventType.MEMBERSHIP_CHANGED:
            self._membership_changed(event, targets)
        self._offer(event, [sub for sub in targets if sub.wants(event)])

    def _offer_in_conversation(self, event: LoggedEvent, subscribers: Iterable[Subscriber]) -> None:
        """The hot path: `Subscriber.wants` for subscribers indexed under the event's conversation (so it is
        theirs), comparing the tenant as an int and the recipient and thread only where the event has one."""
        frames: dict[object, object] = {}  # the event's frames, built once for all (streaming.direct)
        tenant = event.tenant_id.int
        recipient = event.recipient_id
        root = event.root_id
        event_id = event.id
        by_viewer = event.type == EventType.THREAD_NEW  # the one type whose rendering depends on the viewer
        offered = direct = 0
        groups = self._groups.get(event.conversation_id)  # type: ignore[arg-type]
        opt_in = event.type in SELECTED_ONLY  # taken only by subscriptions that select it
        covered = 0  # members of the groups that took the event (the loop below skips them)
        if groups:
            dirty = self.dirty_groups
            for group in list(groups.values()):
                if (
                    group.members
                    and group.tenant_int == tenant
                    and (root is None or group.root_id is None or root == group.root_id)
                ):
                    if opt_in and event.type not in group.selected_only:
                        group.taken = event_id  # its query does not select the type: nothing to send
                        covered += len(group.members)
                        continue
                    if recipient is not None:  # addressed: its recipient's members, whatever the type
                        taking = group.take_addressed(event, frames, dirty)
                        if taking >= 0:
                            covered += len(group.members)
                            offered += taking
                            continue
                    elif by_viewer:
                        if group.take_by_viewer(event, frames, dirty):
                            covered += len(group.members)
                            offered += len(group.members)
                            continue
                    elif group.take(event, frames, dirty):
                        covered += len(group.members)
                        offered += len(group.members)
                        continue
                group.spill()  # its members take this event one by one: their earlier frames go first
        direct = offered
        if covered and covered == len(subscribers):  # type: ignore[arg-type]
            self._count(offered, direct)  # every subscription is in a group that took it
            return
        for sub in subscribers:
            joined = sub.group
            if joined is not None and joined.taken == event_id:
                continue  # counted with its group
            if sub.tenant_int != tenant:
                continue
            if recipient is not None and recipient != sub.user_id:
                continue
            if root is not None and sub.root_id is not None and root != sub.root_id:
                continue
            if opt_in and event.type not in sub.selected_only:
                continue
            offered += 1
            # Inlined Subscriber.offer for an idle subscription with its lane open (the common case).
            if sub.lane_open and event_id > sub.last and sub.lane.take(event, frames, by_viewer):  # type: ignore[union-attr]
                sub.last = event_id
                direct += 1
            else:
                direct += sub.offer(event, frames)
        self._count(offered, direct)

    def _offer(self, event: LoggedEvent, subscribers: list[Subscriber]) -> None:
        frames: dict[object, object] = {}  # the event's frames, built once for all (streaming.direct)
        for sub in subscribers:
            if sub.group is not None:
                sub.group.spill()  # the group's earlier frames go before this one
        direct = 0
        for sub in subscribers:
            direct += sub.offer(event, frames)
        self._count(len(subscribers), direct)

    def _count(self, offered: int, direct: int) -> None:
        self.delivered += offered
        STREAM_FRAMES["direct"] += direct
        STREAM_FRAMES["queued"] += offered - direct

    async def _write_out(self) -> None:
        """Writes the pass's direct frames: the lanes' own frames first (a group spills into them before a later
        event of the pass; no await since routing began, so nothing else wrote meanwhile), then the groups', each
        in slices of WRITE_SLICE members with a turn of the loop between them while the database pool has a
        connection out (`_database_in_use`), for at most YIELD_BUDGET_SECONDS a pass (`LaneGroup.flushing`: a
        member that leaves meanwhile takes the pass's events through the stock path). The hub reads nothing until
        this returns, so no later event overtakes them; lanes that took such late events are written by `_flush`
        at the end."""
        self._flush_lanes()
        groups, self.dirty_groups = self.dirty_groups, []
        for group in groups:
            steps = group.flushing(WRITE_SLICE)
            while True:
                more = True
                try:
                    fallen = next(steps)
                except StopIteration as done:
                    fallen, more = done.value, False
                except Exception:  # noqa: BLE001 - one broken socket must not keep frames from the others
                    log.exception("stream hub: writing to a socket failed")
                    break
                STREAM_FRAMES["direct"] -= fallen
                STREAM_FRAMES["queued"] += fallen
                if not more:
                    break
                if self._yielded >= YIELD_BUDGET_SECONDS or not self._database_in_use():
                    continue  # the next slice at once
                paused = time.perf_counter()
                await asyncio.sleep(0)
                self._yielded += time.perf_counter() - paused
        self._flush()

    def _database_in_use(self) -> bool:
        """Some connection of the pool is taken: a request may be waiting on the database's answer (a writer's
        transaction holding locks other writers wait on). Otherwise a turn of the loop between slices only lets
        other work delay the pass's later sockets."""
        pool = getattr(self.db, "pool", None)
        try:
            return bool(pool.get_size() > pool.get_idle_size())  # type: ignore[union-attr]
        except AttributeError:
            return True

    def _flush(self) -> None:
        """Writes the direct frames still pending, at once (at the end of `_write_out`, normally none): the lanes'
        own frames first, then the groups'."""
        self._flush_lanes()
        for group in self.dirty_groups:
            try:
                fallen = group.flush()
            except Exception:  # noqa: BLE001
                log.exception("stream hub: writing to a socket failed")
                continue
            STREAM_FRAMES["direct"] -= fallen
            STREAM_FRAMES["queued"] += fallen
        self.dirty_groups.clear()

    def _flush_lanes(self) -> None:
        dirty = self.dirty_lanes
        for lane in dirty:
            try:
                lane.flush()
            except Exception:  # noqa: BLE001 - one broken socket must not keep frames from the others
                log.exception("stream hub: writing to a socket failed")
        dirty.clear()

    def _membership_changed(self, event: LoggedEvent, targets: set[Subscriber]) -> None:
        data = event.data
        conversation = event.conversation_id
        if not isinstance(data, MembershipChanged) or conversation is None:
            return
        user, change = data.user_id, data.change
        members = self._participants.get(conversation)
        if members is not None:
            if change == "REMOVED":
                members.discard(user)
            else:
                members.add(user)
        for sub in self._viewers.get(user, set()):
            targets.add(sub)
            if change == "REMOVED":
                sub.conversations.discard(conversation)
                self._discard(self._by_conversation, conversation, sub)
            elif conversation not in sub.conversations:
                sub.conversations.add(conversation)
                self._by_conversation[conversation].add(sub)

    def _subscriptions_of(self, tenant: uuid.UUID, user: uuid.UUID | None) -> list[Subscriber]:
        """Every subscription in this process of a user, or (None: an erasure, which names nobody in the log) of
        the whole tenant. Rare (a credential change): a scan is fine."""
        found: set[Subscriber] = set()
        for subs in list(self._by_conversation.values()) + list(self._viewers.values()):
            found.update(s for s in subs if s.tenant_id == tenant and (user is None or s.user_id == user))
        return list(found)

    def _route_presence(self, event: LoggedEvent, early: event_log.OpenPublishers | None = None) -> None:
        """To the conversation subscriptions of the user's conversations; `early` (the publishers read before
        the event's snapshot) routes it only where it is safe ahead of the cursor (see _route_early)."""
        user = subject_of(event)
        if user is None:
            return
        for conversation, members in self._participants.items():
            if user not in members:
                continue
            routed = self._early.get(conversation, 0)
            if event.id <= routed:
                continue  # already routed early there
            if early is not None:
                if event.id > early.safe_for(bucket_of(conversation)):
                    continue
                self._early[conversation] = event.id
            scoped = dataclasses.replace(event, conversation_id=conversation)
            subs = self._by_conversation.get(conversation, set())
            self._offer(scoped, [s for s in subs if s.tenant_id == event.tenant_id and not s.follows_viewer])
