"""An executor that completes lists of leaf-only objects in one pass per item.

graphql-core spends a few microseconds on every resolved field (resolve info, path, completion
dispatch); a threadTree of 10,000 nodes with 7 fields is 70,000 of them. When a list of objects
asks only for plain leaf fields, every item is completed the same way: read the attribute, run the
leaf type's serializer. `FastExecutionContext` works that out once per selection (a plan) and then
runs it per item.

Everything else goes through the stock executor: custom resolvers, arguments, field extensions,
schema extensions that wrap resolvers, nested objects, abstract types, `@defer`/`@stream`, and any
directive other than `@skip`/`@include` (which field collection has already applied). An item whose
fast completion meets anything unusual (null where non-null is required, an awaitable, an exception,
a value its serializer rejects) is completed again by the stock code, so data and errors stay
byte-identical; plain attribute reads are repeatable, which is what makes the retry safe.
"""

from __future__ import annotations

import keyword
from collections.abc import Callable, Iterable
from datetime import date, datetime, time
from decimal import Decimal
from enum import Enum
from operator import attrgetter
from typing import Any

from graphql import GraphQLBoolean, GraphQLEnumType, GraphQLID, GraphQLInt, GraphQLObjectType, GraphQLString
from graphql.execution.collect_fields import FieldDetailsList
from graphql.execution.executor import collect_iterator_awaitables
from graphql.pyutils import Path, Undefined, gather_with_cancel
from graphql.type import (
    GraphQLLeafType,
    GraphQLList,
    GraphQLOutputType,
    GraphQLResolveInfo,
    is_leaf_type,
    is_list_type,
    is_non_null_type,
    is_object_type,
)
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.schema.schema_converter import GraphQLCoreConverter
from strawberry.types.field import StrawberryField

__all__ = ["FastExecutionContext"]

_FAILED = object()  # an item the fast path hands back to the stock executor
_COLLECTED_DIRECTIVES = frozenset({"skip", "include"})  # applied by field collection already
_STR = frozenset({str})
# Exact types that are never awaitable nor exceptions (no instance __dict__ to grow an __await__).
_INERT_TYPES = frozenset({str, int, float, bool, datetime, date, time, Decimal})

# Kinds of planned fields.
_TYPENAME, _LEAF, _STRING, _LEAF_LIST, _STRING_LIST, _INT, _BOOLEAN = range(7)

# One planned field: (response key, kind, attribute getter or constant, serializer, non-null,
# list items non-null, exact value types that need no awaitable/exception check).
_Step = tuple[str, int, Any, Callable[[Any], Any] | None, bool, bool, frozenset[type]]


class _Plan:
    """How to complete one item of a leaf-only selection, with the stock executor's semantics.

    The steps are compiled into one Python function per selection (straight-line code, attribute reads
    inlined, a dict display for the result): the per-item cost is then a few bytecodes per field rather
    than a loop over step tuples.
    """

    __slots__ = ("complete", "steps")

    def __init__(
        self,
        steps: list[_Step],
        is_type_of: Callable[[Any, GraphQLResolveInfo[Any]], Any] | None,
        is_awaitable: Callable[[Any], bool],
    ) -> None:
        self.steps = steps
        self.complete: Callable[[Any, GraphQLResolveInfo[Any]], Any] = _compile(
            steps, is_type_of, is_awaitable
        )


def _complete_leaf_list(
    value: Any,
    serialize: Callable[[Any], Any],
    items_non_null: bool,
    inert: frozenset[type],
    strings: bool,
    is_awaitable: Callable[[Any], bool],
) -> Any:
    """A list of leaves completed as `complete_list_value` would, or `_FAILED`."""
    if type(value) is not list and type(value) is not tuple:
        return _FAILED
    if strings and _STR.issuperset(map(type, value)):
        return list(value)
    completed: list[Any] = []
    for element in value:
        if element is None or element is Undefined:
            if items_non_null:
                return _FAILED
            completed.append(None)
            continue
        if type(element) not in inert and (isinstance(element, Exception) or is_awaitable(element)):
            return _FAILED
        serialized = serialize(element)
        if serialized is None or serialized is Undefined:
            return _FAILED
        completed.append(serialized)
    return completed


def _compile(
    steps: list[_Step],
    is_type_of: Callable[[Any, GraphQLResolveInfo[Any]], Any] | None,
    is_awaitable: Callable[[Any], bool],
) -> Callable[[Any, GraphQLResolveInfo[Any]], Any]:
    """Straight-line code for `steps`: returns the completed dict of an item, or `_FAILED` when the stock
    executor must complete it (null in a non-null field, an awaitable, an exception, a rejected value)."""
    names: dict[str, Any] = {
        "_FAILED": _FAILED,
        "Undefined": Undefined,
        "is_awaitable": is_awaitable,
        "is_type_of": is_type_of,
        "complete_list": _complete_leaf_list,
    }
    body = [
        "def complete(item, info):",
        "    if item is None or item is Undefined or isinstance(item, Exception):",
        "        return _FAILED",
        "    try:",
    ]
    if is_type_of is not None:
        body += ["        if is_type_of(item, info) is not True:", "            return _FAILED"]
    entries: list[str] = []
    for i, (key, kind, get, serialize, non_null, items_non_null, inert) in enumerate(steps):
        names[f"key{i}"] = key
        if kind == _TYPENAME:
            names[f"out{i}"] = get
            entries.append(f"key{i}: out{i}")
            continue
        names[f"get{i}"], names[f"ser{i}"], names[f"inert{i}"] = get, serialize, inert
        attribute = getattr(get, "_threadline_attribute", None)
        read = f"item.{attribute}" if attribute else f"get{i}(item)"
        body += [
            f"        v = {read}",
            "        if v is None or v is Undefined:",
            "            return _FAILED" if non_null else f"            o{i} = None",
        ]
        if kind in (_LEAF_LIST, _STRING_LIST):
            strings = kind == _STRING_LIST
            body += [
                "        else:",
                f"            o{i} = complete_list(v, ser{i}, {items_non_null}, inert{i}, {strings}, is_awaitable)",
                f"            if o{i} is _FAILED:",
                "                return _FAILED",
            ]
        else:
            # Values the leaf's serializer would return unchanged, without the call.
            if kind == _STRING:
                body += ["        elif type(v) is str:", f"            o{i} = v"]
            elif kind == _INT:
                body += [
                    "        elif type(v) is int and -2147483648 <= v <= 2147483647:",
                    f"            o{i} = v",
                ]
            elif kind == _BOOLEAN:
                body += ["        elif type(v) is bool:", f"            o{i} = v"]
            body += [
                "        else:",
                # What complete_value checks before serializing; skipped for types that cannot be either.
                f"            if type(v) not in inert{i} and (isinstance(v, Exception) or is_awaitable(v)):",
                "                return _FAILED",
                f"            o{i} = ser{i}(v)",
                f"            if o{i} is None or o{i} is Undefined:",
                "                return _FAILED",
            ]
        entries.append(f"key{i}: o{i}")
    body += [
        "    except Exception:  # the stock executor reports it, identically",
        "        return _FAILED",
        "    return {" + ", ".join(entries) + "}",
    ]
    exec("\n".join(body), names)  # noqa: S102 - code built from the schema's own field names above
    return names["complete"]  # type: ignore[no-any-return]


def _serializer(leaf_type: GraphQLLeafType) -> tuple[Callable[[Any], Any], frozenset[type]]:
    """The leaf type's serializer, with its results for a strawberry enum's members computed up front.

    Strawberry serializes an enum member by scanning every value of the enum; the members are a closed
    set of singletons, so each member's name is worked out once, by that same serializer.
    """
    serialize = leaf_type.coerce_output_value
    members = getattr(leaf_type, "wrapped_cls", None)
    if not isinstance(leaf_type, GraphQLEnumType) or not (
        isinstance(members, type) and issubclass(members, Enum)
    ):
        return serialize, _INERT_TYPES
    names: dict[int, Any] = {}
    for member in members:
        if hasattr(member, "__await__"):  # would be awaited, not serialized
            return serialize, _INERT_TYPES
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
    inert = _INERT_TYPES if issubclass(members, Exception) else _INERT_TYPES | {members}
    return serialize_member, inert


def _leaf_of(field_type: GraphQLOutputType) -> tuple[GraphQLLeafType, bool, bool, bool] | None:
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


def _plain_attribute_getter(field: Any) -> Callable[[Any], Any] | None:
    """The getter a strawberry field without resolver, extensions or exception handlers uses."""
    if not isinstance(field, StrawberryField) or not field.is_basic_field:
        return None
    if type(field).get_result is not StrawberryField.get_result:
        return None
    default_resolver = field.default_resolver
    name = field.python_name
    if default_resolver is getattr:
        if name.isidentifier() and not keyword.iskeyword(name) and not name.startswith("__"):
            return _AttributeGetter(name)
        return attrgetter(name)
    return lambda source: default_resolver(source, name)


class _AttributeGetter:
    """`attrgetter(name)` that compiled plans read inline as `item.<name>` (same lookup, no call)."""

    __slots__ = ("_threadline_attribute", "_get")

    def __init__(self, name: str) -> None:
        self._threadline_attribute = name
        self._get = attrgetter(name)

    def __call__(self, source: Any) -> Any:
        return self._get(source)


class FastExecutionContext(StrawberryGraphQLCoreExecutionContext):
    """The stock strawberry executor, plus one-pass completion of lists of leaf-only objects."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        manager = self.middleware_manager
        # Schema extensions that implement `resolve` wrap every field: only the stock path runs them.
        self._fast = manager is None or not manager.middlewares
        self._plans: dict[tuple[GraphQLObjectType, int], tuple[FieldDetailsList, _Plan | None]] = {}

    def complete_list_value(
        self,
        return_type: GraphQLList[GraphQLOutputType],
        field_details_list: FieldDetailsList,
        info: GraphQLResolveInfo[Any],
        path: Path,
        result: Any,
        position_context: Any,
    ) -> Any:
        if self._fast and position_context is None and type(result) in (list, tuple):
            plan = self._plan(return_type.of_type, field_details_list)
            if plan is not None:
                return self._complete_items(plan, return_type.of_type, field_details_list, info, path, result)
        return super().complete_list_value(
            return_type, field_details_list, info, path, result, position_context
        )

    def _plan(self, item_type: GraphQLOutputType, field_details_list: FieldDetailsList) -> _Plan | None:
        object_type = item_type.of_type if is_non_null_type(item_type) else item_type
        if not is_object_type(object_type):
            return None
        key = (object_type, id(field_details_list))
        cached = self._plans.get(key)
        if cached is None:
            try:
                plan = self._build_plan(object_type, field_details_list)
            except Exception:  # noqa: BLE001 - the stock path raises it per item, where stock would
                plan = None
            # Keep the list alive with its plan so its id cannot be reused (as collect_subfields does).
            cached = (field_details_list, plan)
            self._plans[key] = cached
        return cached[1]

    def _build_plan(
        self, object_type: GraphQLObjectType, field_details_list: FieldDetailsList
    ) -> _Plan | None:
        for details in field_details_list:  # the list field itself: no @stream or custom directive
            if any(d.name.value not in _COLLECTED_DIRECTIVES for d in details.node.directives or ()):
                return None
        grouped_field_set, new_defer_usages, _ = self.collect_subfields(object_type, field_details_list)
        if new_defer_usages:
            return None
        steps: list[_Step] = []
        for response_key, sub_details in grouped_field_set.items():
            for details in sub_details:
                node = details.node
                if details.defer_usage is not None or details.fragment_variable_values is not None:
                    return None
                if node.arguments or node.selection_set is not None:
                    return None
                if any(d.name.value not in _COLLECTED_DIRECTIVES for d in node.directives or ()):
                    return None
            name = sub_details[0].node.name.value
            if name == "__typename":
                steps.append((response_key, _TYPENAME, object_type.name, None, True, False, _INERT_TYPES))
                continue
            field_def = self.schema.get_field(object_type, name)
            if field_def is None:
                continue  # the stock executor leaves it out as well
            if field_def.args or field_def.resolve is None:
                return None
            if getattr(field_def.resolve, "__name__", "") != "_get_basic_result":
                return None  # a resolver, field extensions or exception handlers
            getter = _plain_attribute_getter(
                field_def.extensions.get(GraphQLCoreConverter.DEFINITION_BACKREF)
            )
            leaf = _leaf_of(field_def.type)
            if getter is None or leaf is None:
                return None
            leaf_type, non_null, is_list, items_non_null = leaf
            is_string = leaf_type is GraphQLString or leaf_type is GraphQLID  # a str serializes to itself
            if is_list:
                kind = _STRING_LIST if is_string else _LEAF_LIST
            elif is_string:
                kind = _STRING
            elif leaf_type is GraphQLInt:
                kind = _INT
            elif leaf_type is GraphQLBoolean:
                kind = _BOOLEAN
            else:
                kind = _LEAF
            serialize, inert = _serializer(leaf_type)
            steps.append((response_key, kind, getter, serialize, non_null, items_non_null, inert))
        return _Plan(steps, object_type.is_type_of, self.is_awaitable)

    def _complete_items(
        self,
        plan: _Plan,
        item_type: GraphQLOutputType,
        field_details_list: FieldDetailsList,
        info: GraphQLResolveInfo[Any],
        path: Path,
        items: Iterable[Any],
    ) -> Any:
        """`complete_iterable_value` with the plan in place of per-field completion."""
        is_awaitable = self.is_awaitable
        complete = plan.complete
        completed_results: list[Any] = []
        append = completed_results.append
        awaitable_indices: list[int] = []
        iterator = iter(items)
        index = 0
        try:
            for item in iterator:
                if is_awaitable(item):
                    append(
                        self.complete_awaitable_list_item_value(
                            item, item_type, field_details_list, info, path.add_key(index, None), None
                        )
                    )
                    awaitable_indices.append(index)
                else:
                    value = complete(item, info)
                    if value is not _FAILED:
                        append(value)
                    elif self.complete_list_item_value(
                        item,
                        completed_results,
                        item_type,
                        field_details_list,
                        info,
                        path.add_key(index, None),
                        None,
                    ):
                        awaitable_indices.append(index)
                index += 1
        except Exception:
            pending = [completed_results[i] for i in awaitable_indices]
            pending.extend(collect_iterator_awaitables(iterator, is_awaitable))
            if pending:
                self.settle_in_background(pending)
            raise

        if not awaitable_indices:
            return completed_results

        async def get_completed_results() -> list[Any]:
            if len(awaitable_indices) == 1:
                only = awaitable_indices[0]
                completed_results[only] = await completed_results[only]
            else:
                awaited = await gather_with_cancel(*(completed_results[i] for i in awaitable_indices))
                for i, value in zip(awaitable_indices, awaited, strict=True):
                    completed_results[i] = value
            return completed_results

        return get_completed_results()
