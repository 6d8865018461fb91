"""Execute a subscription's selection once per event per group of identical subscribers.

With 1,000 subscribers on one conversation, graphql-core would resolve the same selection 1,000 times
per event. Instead each event becomes one shared root object per *viewer class* (the only thing a
viewer can change in an event's fields, e.g. `thread.unreadCount` for the author), and its execution
result is cached on that object per (query text, variables). Subscribers with the same query and
variables then share one result; only the JSON framing is per socket.

This is sound for the fields rendered from the event (streaming.render): they depend only on the event, the
tenant (every subscriber of an event is in its tenant) and the viewer class. A field with a resolver may
depend on who asks (`Message.feedback` is the viewer's own, `parts` are masked for some readers, a thread's
`currentLeaf` is the viewer's): a subscription whose document selects any such field, other than those in
`SHARED_RESOLVERS`, shares nothing with other subscribers. Its key names the viewer (so its direct frames are
never another user's either) and each of its events is executed with its own context.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import uuid
from collections import OrderedDict
from typing import Any

import orjson
from graphql import (
    DocumentNode,
    FieldNode,
    GraphQLSchema,
    OperationType,
    TypeInfo,
    TypeInfoVisitor,
    Visitor,
    visit,
)

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


# Fields with resolvers whose values depend only on the event's data and the tenant, never on the viewer: a
# subscription selecting them still shares its results. Every other field with a resolver or a field extension
# (permissions) is taken to depend on the viewer. Adding a field here is a claim about its resolver and every
# loader it reads: tests/test_streaming_viewer_fields.py compares what two viewers receive.
SHARED_RESOLVERS = frozenset(
    {
        "Message.author",  # users of the tenant by id (auth.loaders.users)
        "Message.siblingIndex",  # the message's path (threads.branch_loaders.sibling_info)
        "Message.siblingCount",
        "Message.feedbackSummary",  # counts of every reader's ratings (feedback.loaders.summary)
        "Message.metadata",  # the message's key/value strings (metadata.loaders.message_metadata)
    }
)
_PER_VIEWER_DOCUMENTS: OrderedDict[tuple[int, str, str | None], bool] = OrderedDict()
PER_VIEWER_DOCUMENTS = 1024  # documents remembered (an LRU: the walk costs ~0.1 ms a document)


def per_viewer(schema: GraphQLSchema, document: DocumentNode, key: tuple[str, str | None]) -> bool:
    """Whether `document` (an operation and every fragment of its source) selects a field whose value may depend
    on the viewer: one with a resolver or field extensions that is not in SHARED_RESOLVERS. `key`: the source
    and the operation's name, under which the answer is remembered."""
    memo_key = (id(schema), *key)
    found = _PER_VIEWER_DOCUMENTS.get(memo_key)
    if found is not None:
        _PER_VIEWER_DOCUMENTS.move_to_end(memo_key)
        return found
    type_info = TypeInfo(schema)
    dependent: list[str] = []

    class _Fields(Visitor):
        def enter_field(self, node: FieldNode, *_: Any) -> None:
            parent, field = type_info.get_parent_type(), type_info.get_field_def()
            if parent is None or field is None or parent is schema.subscription_type:
                return  # the subscription's own field makes the stream, not an event's value
            definition = field.extensions.get("strawberry-definition")
            if definition is None:
                return  # graphql-core's own (introspection): not the viewer's
            if definition.base_resolver is None and not definition.extensions:
                return  # read from the rendered event object
            coordinate = f"{parent.name}.{node.name.value}"  # the field's name (an alias is node.alias)
            if coordinate not in SHARED_RESOLVERS:
                dependent.append(coordinate)

    visit(document, TypeInfoVisitor(type_info, _Fields()))
    found = bool(dependent)
    _PER_VIEWER_DOCUMENTS[memo_key] = found
    if len(_PER_VIEWER_DOCUMENTS) > PER_VIEWER_DOCUMENTS:
        _PER_VIEWER_DOCUMENTS.popitem(last=False)
    return found


def _viewer_key(context: object) -> str:
    """Who the subscriber is, as far as any field can tell: the principal (tenant, user, role, team, privacy
    policy). Before authentication (not expected here: the resolver authenticates first) a key no one shares."""
    principal = getattr(context, "known_principal", None)
    if principal is None:
        return f"unshared:{id(context)}"
    return (
        f"{principal.tenant_id}:{principal.user_id}:{principal.role}:{principal.team}:{principal.pii_policy}"
    )


_UNKNOWN = object()  # a context without `known_principal` (not the app's): shares as before


def _variables_key(values: object) -> str:
    return json.dumps(values or {}, sort_keys=True, default=str)


class FanoutExecutionContext(FastExecutionContext):
    """Reuses a subscription event's execution result across subscribers with the same query."""

    _fanout_key: tuple[str, str | None, str] | None = None
    _per_viewer = False  # set with the key: its results are the viewer's own (`per_viewer`), never shared

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.operation.operation is OperationType.SUBSCRIPTION:
            # The subscription's resolver runs in this task next; its direct lane needs this executor.
            SUBSCRIPTION_EXECUTOR.set(self)

    @property
    def shares_results(self) -> bool:
        """Whether subscribers with this key share each event's result (not when it selects a field of the
        viewer's own: `per_viewer`)."""
        self.fanout_key()
        return not self._per_viewer

    def fanout_key(self) -> tuple[str, str | None, str]:
        """(query text, operation name, variables): subscriptions with equal keys share results."""
        if self._fanout_key is None:
            self._fanout_key = self._subscription_key()
        return self._fanout_key

    def _subscription_key(self) -> tuple[str, str | None, str]:
        loc = self.operation.loc
        source = loc.source.body if loc is not None else str(id(self.operation))
        name = self.operation.name.value if self.operation.name else None
        variables = _variables_key(self.variable_values)
        document = DocumentNode(
            definitions=(self.operation, *(f.definition for f in self.fragments.values()))
        )
        if per_viewer(self.schema, document, (source, name)):
            self._per_viewer = True
            variables += "\x00" + _viewer_key(self.context_value)
        return (source, name, variables)

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
        if self._per_viewer or getattr(self.context_value, "known_principal", _UNKNOWN) is None:
            # With this subscriber's own context: a field of the viewer's own, or a caller not authenticated now (its
            # socket authenticating again, or refused and closing: its loads fail, for it alone).
            return super().execute_operation(serially)
        hit = shared.get(key)
        if hit is not None:
            return hit
        result = super().execute_operation(serially)
        if self.is_awaitable(result):
            result = asyncio.ensure_future(result)
        shared[key] = result
        return result
