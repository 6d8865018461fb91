"""Request-wide DataLoaders: the keys a response asks for are fetched by one statement, not one each (N+1).

Each domain's `loaders.py` names its loaders and supplies the fetch; this module only batches and groups.
A loader is created once per operation under its name (`Context.loader`): the name must carry every value
its fetch closes over besides the caller (a page size, a cursor), so that fields asking for different pages
get different loaders. On a WebSocket the context lives as long as the socket, so the subscription paths
(streaming/schema.py, streaming/direct.py) drop the loaders before each event: nothing is cached across
operations or events.

Loaders hand back rows; the `types.py` modules turn them into GraphQL objects (so a loader module never
imports the types that resolve through it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable, Iterable
from typing import Any, TypeVar, cast

from strawberry.dataloader import DataLoader

from threadline.graphql.context import Info

__all__ = ["DataLoader", "counting_loader", "grouped_loader", "single_loader"]

K = TypeVar("K", bound=Hashable)
R = TypeVar("R")


def grouped_loader(
    info: Info, name: str, fetch: Callable[[list[K]], Awaitable[Iterable[R]]], *, key: Callable[[R], K]
) -> DataLoader[K, list[R]]:
    """Rows for many keys at once: `fetch(keys)` returns them all, `key(row)` says whose each is. Every key
    gets its rows in fetch order (an empty list if none)."""

    def factory() -> DataLoader[K, list[R]]:
        async def load(keys: list[K]) -> list[list[R]]:
            grouped: dict[K, list[R]] = {k: [] for k in keys}
            for row in await fetch(list(keys)):
                grouped[key(row)].append(row)
            return [grouped[k] for k in keys]

        return DataLoader(load_fn=load)

    return cast(DataLoader[K, list[R]], info.context.loader(name, factory))


def single_loader(
    info: Info, name: str, fetch: Callable[[list[K]], Awaitable[Iterable[R]]], *, key: Callable[[R], K]
) -> DataLoader[K, R | None]:
    """At most one row per key (a row by its id): None for a key `fetch` did not return."""

    def factory() -> DataLoader[K, R | None]:
        async def load(keys: list[K]) -> list[R | None]:
            found = {key(row): row for row in await fetch(list(keys))}
            return [found.get(k) for k in keys]

        return DataLoader(load_fn=load)

    return cast(DataLoader[K, R | None], info.context.loader(name, factory))


def counting_loader(
    info: Info,
    name: str,
    fetch: Callable[[list[K]], Awaitable[Iterable[Any]]],
    *,
    key: Callable[[Any], K],
    count: Callable[[Any], int],
) -> DataLoader[K, int]:
    """A count per key from one grouped statement (`fetch` gives a row per key that has any; 0 otherwise)."""

    def factory() -> DataLoader[K, int]:
        async def load(keys: list[K]) -> list[int]:
            counts = {key(row): count(row) for row in await fetch(list(keys))}
            return [counts.get(k, 0) for k in keys]

        return DataLoader(load_fn=load)

    return cast(DataLoader[K, int], info.context.loader(name, factory))
