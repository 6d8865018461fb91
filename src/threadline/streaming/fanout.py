"""Execute a subscription's selection once per event per group of identical subscribers.

With 1,000 subscribers on one conversation, graphql-core would resolve the same selection 1,000 times
per event. Instead each event becomes one shared root object per *viewer class* (the only thing a
viewer can change in an event's fields, e.g. `thread.unreadCount` for the author), and its execution
result is cached on that object per (query text, variables). Subscribers with the same query and
variables then share one result; only the JSON framing is per socket.

This is sound because the fields of event types depend only on the event, the tenant (every
subscriber of an event is in its tenant) and the viewer class; per-viewer data must not be added to
event types without adding it to `viewer_class`.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import uuid
from collections import OrderedDict
from typing import Any

import orjson
from graphql import OperationType

from threadline.events.kinds import EventType
from threadline.events.log import LoggedEvent
from threadline.events.payloads import ThreadNew
from threadline.graphql.fast_execution import FastExecutionContext
from threadline.streaming.cursors import CursorCodec
from threadline.streaming.render import to_graphql
from threadline.streaming.types import ConversationStreamEvent

THREAD_NEW = EventType.THREAD_NEW.value
MEMO_SIZE = 4096
MEMO_BYTES = 64 * 1024 * 1024
ENTRY_OVERHEAD = 2048  # the event object, its key, and the shared results of a small event

# The subscription's executor, set when it is built (in the operation's task): its direct lane uses it. Unset
# (None) when the subscription parks: its task's context variables go on in its next task, its executor not.
SUBSCRIPTION_EXECUTOR: contextvars.ContextVar[FanoutExecutionContext | None] = contextvars.ContextVar(
    "threadline_subscription_executor"
)


def viewer_class(event: LoggedEvent, viewer_id: uuid.UUID) -> str:
    """What distinguishes one viewer's rendering of `event` from another's (see `to_graphql`)."""
    if event.type != THREAD_NEW:
        return "any"  # (checked first: an event found in the memo is not decoded again)
    data = event.data
    assert isinstance(data, ThreadNew)
    return "author" if data.message.author_id == viewer_id else "reader"


class SharedEvents:
    """A bounded memo of GraphQL event objects, one per (event, viewer class): at most `size` entries and
    about `max_bytes` (an entry counts its payload's JSON size twice: the event object and the shared
    execution results each hold the content), so memory follows the bound, not the events' size.

    Each entry keeps the payload it was rendered from: an event read again (a replay) after its payload was
    rewritten (events.scrub: an edit, a delete, an erasure) is rendered afresh, never from the old text.

    The event's opaque cursor is encoded here, with the rendering: once per entry, shared by every subscriber
    and by both delivery paths (streaming.direct frames carry the same string as the stock path's)."""

    def __init__(
        self, cursors: CursorCodec | None = None, size: int = MEMO_SIZE, max_bytes: int = MEMO_BYTES
    ) -> None:
        self.cursors = cursors  # set by the hub once it has loaded the key (before any subscription starts)
        self._size = size
        self._max_bytes = max_bytes
        self._memo: OrderedDict[
            tuple[int, str, uuid.UUID | None], tuple[dict[str, Any], ConversationStreamEvent, int]
        ] = OrderedDict()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._memo)

    def get(self, event: LoggedEvent, viewer_id: uuid.UUID) -> ConversationStreamEvent:
        key = (event.id, viewer_class(event, viewer_id), event.conversation_id)
        entry = self._memo.get(key)
        # Live routing hands every subscriber the same LoggedEvent (an identity check); a replay reads its own.
        if entry is not None and (entry[0] is event.payload or entry[0] == event.payload):
            return entry[1]
        cursors = self.cursors
        assert cursors is not None, "SharedEvents used before the hub loaded the cursor key"
        found = to_graphql(event, viewer_id, cursors.encode(event.tenant_id, event.id))
        found.shared_results = {}  # type: ignore[attr-defined]
        cost = ENTRY_OVERHEAD + 2 * len(orjson.dumps(event.payload))
        if entry is not None:
            self.bytes -= entry[2]
        self._memo[key] = (event.payload, found, cost)
        self.bytes += cost
        # The newest entry stays even if it alone is over the bound: the subscribers being served need it.
        while len(self._memo) > 1 and (len(self._memo) > self._size or self.bytes > self._max_bytes):
            self.bytes -= self._memo.popitem(last=False)[1][2]
        return found


def _variables_key(values: object) -> str:
    return json.dumps(values or {}, sort_keys=True, default=str)


class FanoutExecutionContext(FastExecutionContext):
    """Reuses a subscription event's execution result across subscribers with the same query."""

    _fanout_key: tuple[str, str | None, str] | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.operation.operation is OperationType.SUBSCRIPTION:
            # The subscription's resolver runs in this task next; its direct lane needs this executor.
            SUBSCRIPTION_EXECUTOR.set(self)

    def fanout_key(self) -> tuple[str, str | None, str]:
        """(query text, operation name, variables): subscriptions with equal keys share results."""
        if self._fanout_key is None:
            self._fanout_key = self._subscription_key()
        return self._fanout_key

    def _subscription_key(self) -> tuple[str, str | None, str]:
        loc = self.operation.loc
        source = loc.source.body if loc is not None else str(id(self.operation))
        return (
            source,
            self.operation.name.value if self.operation.name else None,
            _variables_key(self.variable_values),
        )

    def build_per_event_executor(self, payload: Any) -> Any:
        # The key is the subscription's own (query text, operation, variables): worked out once per
        # subscription, not once per event (serialising the variables cost ~10 us per frame).
        if self.operation.operation is OperationType.SUBSCRIPTION:
            self.fanout_key()
        return super().build_per_event_executor(payload)

    def execute_operation(self, serially: bool | None = None) -> Any:
        shared: dict[Any, Any] | None = getattr(self.root_value, "shared_results", None)
        if shared is None or self.operation.operation is not OperationType.SUBSCRIPTION:
            return super().execute_operation(serially)
        key = self.fanout_key()
        hit = shared.get(key)
        if hit is not None:
            return hit
        result = super().execute_operation(serially)
        if self.is_awaitable(result):
            result = asyncio.ensure_future(result)
        shared[key] = result
        return result
