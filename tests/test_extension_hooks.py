"""Schema extension hooks looked up once per class (graphql/extension_hooks.py) run as strawberry runs them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import strawberry
from strawberry.extensions import SchemaExtension
from strawberry.extensions.context import (
    ExecutingContextManager,
    OperationContextManager,
    ParsingContextManager,
    ValidationContextManager,
)
from strawberry.extensions.runner import SchemaExtensionsRunner

from threadline.graphql.base_schema import ThreadlineSchema
from threadline.graphql.extension_hooks import CachedHooksRunner
from threadline.schema import schema as served

EVENTS: list[str] = []


class Generators(SchemaExtension):
    def on_operation(self) -> Iterator[None]:
        EVENTS.append("generator operation in")
        yield
        EVENTS.append("generator operation out")

    async def on_execute(self) -> AsyncIterator[None]:
        EVENTS.append("async generator execute in")
        yield
        EVENTS.append("async generator execute out")


class Callables(SchemaExtension):
    def on_parse(self) -> None:  # type: ignore[override]
        EVENTS.append("callable parse")

    async def on_validate(self) -> None:  # type: ignore[override]
        EVENTS.append("async callable validate")

    def on_execute(self) -> Iterator[None]:
        EVENTS.append("generator execute in")
        yield
        EVENTS.append("generator execute out")


class Nothing(SchemaExtension):
    pass


@strawberry.type
class Query:
    @strawberry.field(description="Always 1.")
    def one(self) -> int:
        EVENTS.append("resolver")
        return 1


def test_the_cached_hooks_are_strawberrys_for_every_kind_of_hook() -> None:
    custom = [Generators(), Callables(), Nothing(), Generators()]
    for extensions in (served.get_extensions(), custom):
        cached = CachedHooksRunner(None, extensions)  # type: ignore[arg-type]
        stock = SchemaExtensionsRunner(None, extensions)  # type: ignore[arg-type]
        for phase, kind in (
            ("operation", OperationContextManager),
            ("validation", ValidationContextManager),
            ("parsing", ParsingContextManager),
            ("executing", ExecutingContextManager),
        ):
            ours, theirs = getattr(cached, phase)(), getattr(stock, phase)()
            assert isinstance(ours, kind)
            assert [(h.extension, h.is_async) for h in ours.hooks] == [
                (h.extension, h.is_async) for h in theirs.hooks
            ]
    assert any(CachedHooksRunner(None, custom).executing().hooks)  # type: ignore[arg-type]


def test_hooks_run_in_strawberrys_order() -> None:
    def run(schema: strawberry.Schema) -> list[str]:
        EVENTS.clear()
        result = asyncio.run(schema.execute("{ one }"))
        assert result.errors is None and result.data == {"one": 1}
        return list(EVENTS)

    extensions = [Generators, Callables, Nothing]
    ours = run(ThreadlineSchema(Query, extensions=extensions))
    stock = run(strawberry.Schema(Query, extensions=extensions))
    assert ours == stock
    assert ours[0] == "generator operation in" and ours[-1] == "generator operation out"
    assert "resolver" in ours and "callable parse" in ours and "async callable validate" in ours
