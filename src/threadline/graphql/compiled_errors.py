"""The same errors, in the same order, whatever order concurrent fields finish in.

graphql-core completes the awaitable fields of an object, and the awaitable items of a list, concurrently
(`gather_with_cancel`), so its response depends on which finishes first, that is on the database's timing:

- field errors are listed in the order they happen, not in the order of the document;
- when a non-null error nulls a parent, the error reported is the first sibling's to *finish failing*
  (after cancelling and settling the others), and errors the cancelled siblings had recorded before stay.

Two runs of one query on the same data could so give two responses, and compiled execution
(graphql/compiled_plan.py), which starts the same work in the same order, could not be compared byte for byte
with the stock executor. The GraphQL specification leaves the order of `errors` open; Threadline fixes it,
in both executors (graphql/fast_execution.py installs these):

- `gather_settled` replaces graphql-core's `gather_with_cancel`: the awaitables all run to their end, and
  the error raised is the first failure in document order (field order, list index). Every field then runs
  exactly as it does without the failure, so the errors recorded are the same on every run. It costs
  nothing when nothing fails; after a failure the siblings finish instead of being cancelled (bounded like
  any request by its limits and output budget).
- `in_path_order` sorts a response's errors by their paths in the order of the response's data: document
  order of response keys, then list index (errors without a path first; under a nulled position, where the
  data no longer says the order, indices then keys by name).
"""

from __future__ import annotations

from asyncio import ensure_future, gather, wait
from collections.abc import Awaitable
from typing import Any

from graphql import GraphQLError

__all__ = ["gather_settled", "in_path_order"]


async def gather_settled(*awaitables: Awaitable[Any]) -> list[Any]:
    """The awaitables' results in order; if any fails, all run to their end and the first failure in order
    (not in time) is raised. Cancelling the caller cancels them all."""
    futures = [ensure_future(awaitable) for awaitable in awaitables]
    try:
        return await gather(*futures)
    except Exception:  # noqa: BLE001, S110 - the others still run; the first in order is raised below
        pass
    try:
        await wait(futures)
    except BaseException:  # the caller is cancelled: so is its work
        for future in futures:
            future.cancel()
        raise
    for future in futures:
        error = future.exception()  # a cancelled one raises CancelledError here, in its place in the order
        if error is not None:
            raise error
    raise AssertionError("gather failed without a failed awaitable")  # pragma: no cover


# The sort key of one path element: (0, position) where the data shows it, else (1, index) or (2, 0, key).
_Element = tuple[int, int] | tuple[int, int, str]


def in_path_order(errors: list[GraphQLError], data: Any) -> None:
    """Sorts `errors` in place by their paths in the order of `data` (see the module's docstring)."""
    if len(errors) < 2:
        return
    positions: dict[int, dict[Any, int]] = {}  # a dict of the data's key positions, by the dict's id

    def key(error: GraphQLError) -> tuple[int, tuple[_Element, ...], str]:
        path = error.path
        if path is None:
            return (0, (), error.message)
        elements: list[_Element] = []
        node = data
        for element in path:
            if type(node) is dict:
                found = positions.get(id(node))
                if found is None:
                    found = positions[id(node)] = {name: i for i, name in enumerate(node)}
                position = found.get(element)
                if position is not None:
                    elements.append((0, position))
                    node = node[element]
                    continue
            elif type(node) is list and type(element) is int and 0 <= element < len(node):
                elements.append((0, element))
                node = node[element]
                continue
            node = None  # a nulled position: the data no longer says the order below it
            elements.append((1, element) if type(element) is int else (2, 0, str(element)))
        return (1, tuple(elements), error.message)

    errors.sort(key=key)
