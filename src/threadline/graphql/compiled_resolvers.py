"""Calling a strawberry resolver the way strawberry's own wrapper does, without the wrapper's layers.

For a resolver field strawberry installs `_resolver` (or `_async_resolver`), which per call builds the
strawberry `Info`, converts arguments, chains field extensions and exception handlers, and calls the
function through `field.get_result` and `StrawberryResolver.__call__`; graphql-core then awaits it through
`complete_awaitable_value` and `with_abort_signal`. For a field without arguments, field extensions or
exception handlers all of that comes down to `function(source, info=Info(...))` (with the reserved
parameters the function asks for), which is what `direct_call` returns, or None when the field is not
that simple. The result is the same object, created at the same moment: an `async def` resolver's body
still runs only once awaited, a plain one's runs at the call.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from graphql import GraphQLField
from strawberry.schema.schema_converter import GraphQLCoreConverter
from strawberry.types.field import StrawberryField
from strawberry.types.fields.resolver import StrawberryResolver

from threadline.graphql.ready import ready_of

_WRAPPERS = ("from_resolver.<locals>._resolver", "from_resolver.<locals>._async_resolver")


def _closure(function: Any) -> dict[str, Any]:
    code = getattr(function, "__code__", None)
    cells = getattr(function, "__closure__", None) or ()
    if code is None:
        return {}
    return {name: cell.cell_contents for name, cell in zip(code.co_freevars, cells, strict=False)}


def direct_call(field_def: GraphQLField) -> Callable[[Any, Any], Any] | None:
    """`call(source, resolve_info)` giving what `field_def.resolve(source, resolve_info)` gives, or None."""
    resolve = field_def.resolve
    if resolve is None or field_def.args or not getattr(resolve, "__qualname__", "").endswith(_WRAPPERS):
        return None
    closure = _closure(resolve)
    found = field_def.extensions.get(GraphQLCoreConverter.DEFINITION_BACKREF)
    make_info = closure.get("_strawberry_info_from_graphql")
    if not isinstance(found, StrawberryField) or make_info is None:
        return None
    field = found
    if (
        _closure(make_info).get("field") is not field  # the wrapper was made for this very field
        or closure.get("field_exception_handlers")
        or field.extensions
        or field.arguments
        or type(field).get_result is not StrawberryField.get_result
    ):
        return None
    resolver = field.base_resolver
    if resolver is None or type(resolver).__call__ is not StrawberryResolver.__call__:
        return None
    function = resolver.wrapped_func
    if not callable(function):
        return None
    is_async = resolve.__qualname__.endswith("_async_resolver")
    if is_async != inspect.iscoroutinefunction(function):
        return None  # an awaitable from a plain function, or the reverse: left to strawberry's wrapper
    with_self = resolver.self_parameter is not None
    sources = [p.name for p in (resolver.parent_parameter, resolver.root_parameter) if p is not None]
    info_name = resolver.info_parameter.name if resolver.info_parameter is not None else None

    def call(source: Any, resolve_info: Any) -> Any:
        kwargs = dict.fromkeys(sources, source)
        if info_name is not None:
            kwargs[info_name] = make_info(resolve_info)
        return function(source, **kwargs) if with_self else function(**kwargs)

    return call


def ready_twin(field_def: GraphQLField) -> Callable[[Any, Any], Any] | None:
    """The synchronous twin (graphql.ready) of a resolver `direct_call` can call, or None."""
    if direct_call(field_def) is None:
        return None
    field = field_def.extensions.get(GraphQLCoreConverter.DEFINITION_BACKREF)
    resolver = field.base_resolver if isinstance(field, StrawberryField) else None
    return None if resolver is None else ready_of(resolver.wrapped_func)
