"""What one operation may return, counted while it executes: messages and an estimate of response bytes.

The static cost model (graphql/limits.py) cannot price tree fields: `replies`, `threadTree.nodes` and `path`
are as long as the data makes them, and aliases and fragments repeat them. So resolvers that return tree data
charge this budget with what they are about to return, across every alias and fragment of the operation; past
either limit the field fails with BAD_USER_INPUT (`limitName` `messages` or `responseBytes`) and so does every
later charge, whatever part of the tree it is in. The budget also tells resolvers when to hand the event loop back
to other requests (every few thousand messages), so a big response is built in slices rather than one block.

The budget lives in a context variable set per query or mutation (`OutputBudgets` extension); the tasks
graphql-core starts for async fields share the same budget object. Subscriptions carry no budget: each event
is its own small execution.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from typing import Any

from strawberry.extensions import SchemaExtension
from strawberry.types.graphql import OperationType

from threadline.errors import ErrorCode, ThreadlineError
from threadline.graphql.selections import field_names
from threadline.settings import Settings

# Bytes a message costs in a response before its content and path: ids, role, timestamps and JSON syntax.
MESSAGE_OVERHEAD_BYTES = 200
# Bytes one id costs in a `path` list (an encoded id, its quotes and comma).
PATH_ID_BYTES = 30
# Messages charged between two hand-overs of the event loop to other requests.
YIELD_EVERY_MESSAGES = 2_000


class OutputLimitExceeded(ThreadlineError):
    def __init__(self, name: str, limit: int, actual: int, what: str) -> None:
        super().__init__(
            ErrorCode.BAD_USER_INPUT,
            f"The operation would return {actual} {what}; the limit is {limit} "
            "(ask for a subtree with `threadTree(fromId:, maxDepth:)`, or use fewer aliases)",
            limitName=name,
            limit=limit,
            actual=actual,
        )


@dataclass
class OutputBudget:
    max_messages: int
    max_bytes: int
    messages: int = 0
    bytes: int = 0
    exceeded: OutputLimitExceeded | None = None
    _since_yield: int = 0
    _selections: dict[int, frozenset[str]] = field(default_factory=dict)

    def charge(self, messages: int, size: int) -> None:
        """Counts what a field is about to return; raises once over a limit (and for every later charge)."""
        if self.exceeded is not None:
            raise self.exceeded
        self.messages += messages
        self.bytes += size
        self._since_yield += messages
        if self.messages > self.max_messages:
            self.exceeded = OutputLimitExceeded("messages", self.max_messages, self.messages, "messages")
        elif self.bytes > self.max_bytes:
            self.exceeded = OutputLimitExceeded(
                "responseBytes", self.max_bytes, self.bytes, "bytes (estimated)"
            )
        if self.exceeded is not None:
            raise self.exceeded

    def due(self) -> bool:
        """True once per YIELD_EVERY_MESSAGES charged: time to let other requests run."""
        if self._since_yield >= YIELD_EVERY_MESSAGES:
            self._since_yield = 0
            return True
        return False

    def selected(self, info: Any) -> frozenset[str]:
        """Every field name selected anywhere below the current field (through fragments), once per field node."""
        raw = getattr(info, "_raw_info", info)
        key = id(raw.field_nodes[0])
        names = self._selections.get(key)
        if names is None:
            selection_sets = [n.selection_set for n in raw.field_nodes if n.selection_set is not None]
            names = field_names(selection_sets, raw.fragments, deep=True)
            self._selections[key] = names
        return names


_BUDGET: ContextVar[OutputBudget | None] = ContextVar("threadline_output_budget", default=None)


def current() -> OutputBudget | None:
    return _BUDGET.get()


def snapshot() -> tuple[Any, ...] | None:
    """The current budget's counts, to `restore` before an operation is executed again (graphql.fast_execution)."""
    found = _BUDGET.get()
    if found is None:
        return None
    return (found, found.messages, found.bytes, found.exceeded, found._since_yield)


def restore(saved: tuple[Any, ...] | None) -> None:
    if saved is not None:
        found, found.messages, found.bytes, found.exceeded, found._since_yield = saved


def charge_messages(info: Any, count: int, content_bytes: int, path_ids: int) -> bool:
    """Charges `count` messages about to be returned under the current field (content and path bytes count
    only if `content` or `path` is selected somewhere below it). True when the caller should hand the event
    loop to other requests (`await hand_over()`) before going on."""
    budget = _BUDGET.get()
    if budget is None:
        return False
    selected = budget.selected(info)
    size = count * MESSAGE_OVERHEAD_BYTES
    if "content" in selected:
        size += content_bytes
    if "path" in selected:
        size += path_ids * PATH_ID_BYTES
    budget.charge(count, size)
    return budget.due()


async def hand_over() -> None:
    """Lets the other requests' ready work run before this operation goes on."""
    await asyncio.sleep(0)


def charge_bytes(size: int) -> None:
    """Charges text about to be returned that is not a message (chunks, edits, exports)."""
    budget = _BUDGET.get()
    if budget is not None:
        budget.charge(0, size)


class OutputBudgets(SchemaExtension):
    """Gives each query and mutation its own budget, from the request's settings."""

    def on_execute(self) -> Iterator[None]:
        execution = self.execution_context
        settings = getattr(execution.context, "settings", None)
        # strawberry's own OperationType: graphql-core's SUBSCRIPTION is another enum and never matched.
        if execution.operation_type is OperationType.SUBSCRIPTION or not isinstance(settings, Settings):
            yield
            return
        token = open_budget(settings)
        try:
            yield
        finally:
            _BUDGET.reset(token)


def open_budget(settings: Settings) -> Token[OutputBudget | None]:
    """A fresh budget for the operation about to execute (`_BUDGET.reset(token)` when it is done)."""
    return _BUDGET.set(OutputBudget(settings.query_max_messages, settings.response_max_bytes))


def close_budget(token: Token[OutputBudget | None]) -> None:
    _BUDGET.reset(token)
