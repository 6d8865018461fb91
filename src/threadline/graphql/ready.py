"""Resolvers that answer synchronously when what they would load is already loaded (issue 14).

A field such as `Conversation.owner` is an `async def` resolver around a DataLoader: under graphql-core each
call is a coroutine awaited in a task of its own (`gather_with_cancel`), ~10 us of Python per field before the
loader's future even resolves. When the response's rows were already batch-loaded (a connection's resolver
loads its page's owners and participants while it is running, `prefetch`), the value is sitting in the
request's loader as a completed future; `@when_ready(ready)` gives the resolver a synchronous twin,
`ready(source, context)`, that returns that value or `NOT_READY`.

Compiled execution (graphql/compiled_plan.py) calls the twin first, in queries, and completes its value
inline; on `NOT_READY`, or if the twin raises, the async resolver runs as before. The twin must give what the
resolver would (the same object, built the same way), so the data is the same; since a value completed at
once can change the order in which errors of different branches arrive, a query that ends with an error after
a twin answered is executed once more without twins (graphql/fast_execution.py), and its response is the
stock executor's. The stock executor never calls twins; tests/test_compiled_execution.py compares both byte
for byte.
"""

from __future__ import annotations

from asyncio import CancelledError
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from graphql import FieldNode, FragmentSpreadNode, GraphQLResolveInfo, InlineFragmentNode, SelectionSetNode
from strawberry.dataloader import DefaultCache

from threadline.graphql import parse_cache

__all__ = ["NOT_READY", "asks_for", "loaded", "prime", "ready_of", "when_ready"]

_IDENTITY_KEY = "DefaultCache.__init__.<locals>.<lambda>"  # DefaultCache's key function when none is given
NOT_READY: Any = object()  # the synchronous twin has no value: the resolver runs
_ATTRIBUTE = "__threadline_ready__"

F = TypeVar("F", bound=Callable[..., Any])


def when_ready(ready: Callable[[Any, Any], Any]) -> Callable[[F], F]:
    """Marks a resolver (put it below `@strawberry.field`) with its synchronous twin `ready(self, context)`."""

    def mark(function: F) -> F:
        setattr(function, _ATTRIBUTE, ready)
        return function

    return mark


def ready_of(function: Any) -> Callable[[Any, Any], Any] | None:
    return getattr(function, _ATTRIBUTE, None)


def loaded(context: Any, name: str, key: Any) -> Any:
    """What the request's loader `name` already holds for `key` (a completed, successful load), or NOT_READY.

    Only once the caller is authenticated in this context: the resolvers ask for the principal first."""
    if getattr(context, "_principal", None) is None:
        return NOT_READY
    loader = context.loaded(name)
    if loader is None:
        return NOT_READY
    cache = loader.cache_map
    # The loaders of graphql/loaders.py keep strawberry's DefaultCache with keys as given: read its dict.
    if type(cache) is DefaultCache and cache.cache_key_fn.__qualname__ == _IDENTITY_KEY:
        future = cache.cache_map.get(key)
    else:
        future = cache.get(key)
    if future is None:
        return NOT_READY
    try:  # one call where done(), cancelled() and exception() were three: pending, cancelled or failed raise
        return future.result()
    except (Exception, CancelledError):
        return NOT_READY


def prime(loader: Any, values: Mapping[Any, Any]) -> None:
    """`loader.prime_many(values)`, cheaper for a page's worth of keys: strawberry builds each key's future with
    a keyword constructor and looks the key up twice through the cache's key function (~2.5 us a key, a tenth of
    a page request's CPU with its ~50 participants' rows); here the completed futures go into the cache's dict
    directly. Same outcome: keys already cached keep their value; while the loader has a batch not yet sent
    (whose keys the primed values would answer) strawberry's own `prime_many` runs."""
    cache = loader.cache_map
    batch = loader.batch
    if (
        not loader.cache
        or type(cache) is not DefaultCache
        or cache.cache_key_fn.__qualname__ != _IDENTITY_KEY
        or (batch is not None and not batch.dispatched)
    ):
        loader.prime_many(values)
        return
    futures = cache.cache_map
    create_future = loader.loop.create_future
    for key, value in values.items():
        if not futures.get(key):  # strawberry's test: a cached future is kept
            future = create_future()
            future.set_result(value)
            futures[key] = future


def asks_for(info: Any, *path: str) -> bool:
    """Whether the field's selection reaches `path` (field names, through fragments and inline fragments;
    `@skip`/`@include` are not evaluated, so a skipped field counts: this only decides what to prefetch).
    `info` is strawberry's `Info` or graphql-core's resolve info."""
    raw: GraphQLResolveInfo[Any] = getattr(info, "_raw_info", info)
    nodes = raw.field_nodes
    # The answer depends only on the document's nodes, and a cached document's nodes serve all its requests: the
    # answer is kept per field nodes and path, the entry holding the nodes (so that their ids stay theirs). Only
    # for documents the parse cache keeps too (no string literal: no caller content held here).
    key = (*map(id, nodes), path)
    known = _ASKED.get(key)
    if known is not None:
        return known[1]
    sets = [node.selection_set for node in nodes if node.selection_set is not None]
    answer = _reaches(sets, path, raw.fragments)
    loc = nodes[0].loc if nodes else None
    if loc is not None and parse_cache.cacheable(loc.source.body):
        if len(_ASKED) >= _ASKED_MAX:
            _ASKED.clear()
        _ASKED[key] = (list(nodes), answer)
    return answer


_ASKED: dict[tuple[Any, ...], tuple[list[FieldNode], bool]] = {}
_ASKED_MAX = 2048


def _reaches(sets: Iterable[SelectionSetNode], path: tuple[str, ...], fragments: Mapping[str, Any]) -> bool:
    if not path:
        return True
    name, rest = path[0], path[1:]
    below: list[SelectionSetNode] = []
    pending = list(sets)
    visited: set[str] = set()
    while pending:
        for selection in pending.pop().selections:
            if isinstance(selection, FieldNode):
                if selection.name.value == name:
                    if not rest:
                        return True
                    if selection.selection_set is not None:
                        below.append(selection.selection_set)
            elif isinstance(selection, InlineFragmentNode):
                pending.append(selection.selection_set)
            elif isinstance(selection, FragmentSpreadNode) and selection.name.value not in visited:
                visited.add(selection.name.value)
                fragment = fragments.get(selection.name.value)
                if fragment is not None:
                    pending.append(fragment.selection_set)
    return bool(below) and _reaches(below, rest, fragments)
