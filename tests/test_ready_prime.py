"""`graphql.ready.prime` leaves a request's loader as strawberry's `prime_many` would (issue 14: a page primes its
participants and users loaders with what its own statement read)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from strawberry.dataloader import DataLoader

from threadline.graphql.ready import NOT_READY, loaded, prime


def _state(loader: DataLoader[Any, Any]) -> dict[Any, Any]:
    """Each cached key's outcome: its value, or "pending"."""
    return {
        key: future.result() if future.done() else "pending"
        for key, future in loader.cache_map.cache_map.items()  # type: ignore[attr-defined]
    }


def _both(scenario: Callable[[DataLoader[Any, Any], Callable[..., None]], Any]) -> tuple[Any, Any]:
    """The scenario's outcome with `prime` and with `prime_many`, each on a fresh loader."""
    calls: list[list[Any]] = []

    async def load(keys: list[Any]) -> list[Any]:
        calls.append(list(keys))
        return [f"loaded {key}" for key in keys]

    async def run(primer: Callable[..., None]) -> Any:
        calls.clear()
        loader: DataLoader[Any, Any] = DataLoader(load_fn=load)
        outcome = await scenario(loader, primer)
        return outcome, _state(loader), list(calls)

    ours = asyncio.run(run(prime))
    theirs = asyncio.run(run(lambda loader, values: loader.prime_many(values)))
    return ours, theirs


def test_fresh_keys_are_loaded_values_without_a_load() -> None:
    async def scenario(loader: DataLoader[Any, Any], primer: Callable[..., None]) -> Any:
        primer(loader, {"a": 1, "b": None})
        return [await loader.load("a"), await loader.load("b")]

    ours, theirs = _both(scenario)
    assert ours == theirs
    assert ours[0] == [1, None] and ours[2] == []  # no load function call


def test_a_key_already_loaded_keeps_its_value() -> None:
    async def scenario(loader: DataLoader[Any, Any], primer: Callable[..., None]) -> Any:
        first = await loader.load("a")
        primer(loader, {"a": "primed", "b": "primed"})
        return [first, await loader.load("a"), await loader.load("b")]

    ours, theirs = _both(scenario)
    assert ours == theirs
    assert ours[0] == ["loaded a", "loaded a", "primed"]


def test_a_batch_not_yet_sent_is_answered_by_the_primed_values() -> None:
    async def scenario(loader: DataLoader[Any, Any], primer: Callable[..., None]) -> Any:
        pending = loader.load("a")  # queued in a batch that has not been sent yet
        other = loader.load("c")
        primer(loader, {"a": "primed"})
        return [await pending, await other]

    ours, theirs = _both(scenario)
    assert ours == theirs
    assert ours[0] == ["primed", "loaded c"] and ours[2] == [["c"]]


def test_primed_values_are_what_the_synchronous_twins_read() -> None:
    class Context:
        _principal = object()

        def __init__(self, loader: DataLoader[Any, Any]) -> None:
            self._loader = loader

        def loaded(self, name: str) -> DataLoader[Any, Any]:
            return self._loader

    async def run() -> list[Any]:
        async def load(keys: list[Any]) -> list[Any]:
            raise AssertionError("not loaded")

        loader: DataLoader[Any, Any] = DataLoader(load_fn=load)
        prime(loader, {"a": [1, 2]})
        context = Context(loader)
        return [loaded(context, "x", "a"), loaded(context, "x", "b")]

    assert asyncio.run(run()) == [[1, 2], NOT_READY]
