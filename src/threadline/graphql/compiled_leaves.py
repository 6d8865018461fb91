"""How a compiled selection reads and serializes a plain field: the attribute, and the leaf type's serializer.

A "plain" field is a strawberry field without resolver, arguments, field extensions or exception handlers:
strawberry resolves it with `getattr(source, name)`. Compiled plans (graphql/compiled_plan.py) read such a
field inline and serialize leaves without graphql-core's per-field dispatch; anything these helpers do not
recognise is left to the stock executor.
"""

from __future__ import annotations

import keyword
from collections.abc import Callable
from datetime import date, datetime, time
from decimal import Decimal
from enum import Enum
from operator import attrgetter
from typing import Any

from graphql import GraphQLEnumType, GraphQLField
from graphql.pyutils import Undefined
from graphql.type import GraphQLLeafType, GraphQLOutputType, is_leaf_type, is_list_type, is_non_null_type
from strawberry.schema.schema_converter import GraphQLCoreConverter
from strawberry.types.field import StrawberryField

FAILED = object()  # a value the compiled code hands back to the stock executor
_STR = frozenset({str})
# Exact types that are never awaitable nor exceptions (no instance __dict__ to grow an __await__).
INERT_TYPES = frozenset({str, int, float, bool, datetime, date, time, Decimal})


def complete_leaf_list(
    value: Any,
    serialize: Callable[[Any], Any],
    items_non_null: bool,
    inert: frozenset[type],
    strings: bool,
    is_awaitable: Callable[[Any], bool],
) -> Any:
    """A list of leaves completed as `complete_list_value` would, or `FAILED`."""
    if type(value) is not list and type(value) is not tuple:
        return FAILED
    if strings and _STR.issuperset(map(type, value)):
        return list(value)
    completed: list[Any] = []
    for element in value:
        if element is None or element is Undefined:
            if items_non_null:
                return FAILED
            completed.append(None)
            continue
        if type(element) not in inert and (isinstance(element, Exception) or is_awaitable(element)):
            return FAILED
        serialized = serialize(element)
        if serialized is None or serialized is Undefined:
            return FAILED
        completed.append(serialized)
    return completed


def serializer(leaf_type: GraphQLLeafType) -> tuple[Callable[[Any], Any], frozenset[type]]:
    """The leaf type's serializer, with its results for a strawberry enum's members computed up front.

    Strawberry serializes an enum member by scanning every value of the enum; the members are a closed
    set of singletons, so each member's name is worked out once, by that same serializer.
    """
    serialize = leaf_type.coerce_output_value
    members = getattr(leaf_type, "wrapped_cls", None)
    if not isinstance(leaf_type, GraphQLEnumType) or not (
        isinstance(members, type) and issubclass(members, Enum)
    ):
        return serialize, INERT_TYPES
    names: dict[int, Any] = {}
    for member in members:
        if hasattr(member, "__await__"):  # would be awaited, not serialized
            return serialize, INERT_TYPES
        try:
            names[id(member)] = serialize(member)
        except Exception:  # noqa: BLE001, S112 - left to the serializer at completion time
            continue

    def serialize_member(value: Any) -> Any:
        if type(value) is members:
            name = names.get(id(value))
            if name is not None:
                return name
        return serialize(value)

    # Exact members of the enum are neither awaitable (checked above) nor exceptions.
    inert = INERT_TYPES if issubclass(members, Exception) else INERT_TYPES | {members}
    return serialize_member, inert


def leaf_of(field_type: GraphQLOutputType) -> tuple[GraphQLLeafType, bool, bool, bool] | None:
    """(leaf type, non-null, is a list, list items non-null) of a leaf or list-of-leaf type."""
    non_null = is_non_null_type(field_type)
    inner = field_type.of_type if non_null else field_type  # type: ignore[union-attr]
    if is_leaf_type(inner):
        return inner, non_null, False, False
    if is_list_type(inner):
        element = inner.of_type
        items_non_null = is_non_null_type(element)
        element = element.of_type if items_non_null else element
        if is_leaf_type(element):
            return element, non_null, True, items_non_null
    return None


def plain_reader(field_def: GraphQLField) -> tuple[str | None, Callable[[Any], Any]] | None:
    """(attribute name to read inline or None, getter) of a plain field, or None if it computes something."""
    if field_def.args or field_def.resolve is None:
        return None
    if getattr(field_def.resolve, "__name__", "") != "_get_basic_result":
        return None  # a resolver, field extensions or exception handlers
    field = field_def.extensions.get(GraphQLCoreConverter.DEFINITION_BACKREF)
    if not isinstance(field, StrawberryField) or not field.is_basic_field:
        return None
    if type(field).get_result is not StrawberryField.get_result:
        return None
    default_resolver = field.default_resolver
    name = field.python_name
    if default_resolver is getattr:
        if name.isidentifier() and not keyword.iskeyword(name) and not name.startswith("__"):
            return name, attrgetter(name)
        return None, attrgetter(name)
    return None, lambda source: default_resolver(source, name)
