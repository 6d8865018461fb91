"""How a compiled selection reads and serializes a plain field: the attribute, and the leaf type's serializer.

A "plain" field is a strawberry field without resolver, arguments, field extensions or exception handlers:
strawberry resolves it with `getattr(source, name)`. Compiled plans (graphql/compiled_plan.py) read such a
field inline and serialize leaves without graphql-core's per-field dispatch; anything these helpers do not
recognise is left to the stock executor.

A list of objects whose selection asks only for plain leaf fields (`threadTree { nodes { id path content
... } }`: 10,000 messages) is completed in one loop by `leaf_rows` code: no call, path or pending list per
object; the first object or value it does not take plainly hands the whole list back to the per-object code.
"""

from __future__ import annotations

import contextlib
import keyword
from collections import OrderedDict
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, time
from decimal import Decimal
from enum import Enum
from operator import attrgetter
from typing import Any

import orjson
from graphql import (
    GraphQLBoolean,
    GraphQLEnumType,
    GraphQLField,
    GraphQLID,
    GraphQLInt,
    GraphQLObjectType,
    GraphQLSchema,
    GraphQLString,
)
from graphql.pyutils import Undefined
from graphql.type import GraphQLLeafType, GraphQLOutputType, is_leaf_type, is_list_type, is_non_null_type
from strawberry.schema.schema_converter import GraphQLCoreConverter
from strawberry.schema.types.base_scalars import isoformat as strawberry_isoformat
from strawberry.types.cast import TYPE_CAST_ATTRIBUTE
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


def utc_isoformat(value: Any) -> Any:
    """Strawberry's Date/DateTime/Time serializer (`value.isoformat()`), by orjson for a UTC datetime (what the
    database driver gives): the same text in a third of the time (tests/test_compiled_execution.py compares
    them from year 1 to 9999, with and without microseconds)."""
    if type(value) is datetime and value.tzinfo is UTC:
        return orjson.dumps(value)[1:-1].decode()
    return strawberry_isoformat(value)


def _enum_names(leaf_type: GraphQLLeafType) -> tuple[type, dict[int, Any]] | None:
    """(enum class, each member's serialized name by the member's id) of a strawberry enum whose members
    serialize plainly. By id: an Enum's `__hash__` is Python code, a call per look-up."""
    serialize = leaf_type.coerce_output_value
    members = getattr(leaf_type, "wrapped_cls", None)
    if not isinstance(leaf_type, GraphQLEnumType) or not (
        isinstance(members, type) and issubclass(members, Enum)
    ):
        return None
    names: dict[int, Any] = {}
    for member in members:
        if hasattr(member, "__await__"):  # would be awaited, not serialized
            return None
        try:
            name = serialize(member)
        except Exception:  # noqa: BLE001, S112 - left to the serializer at completion time
            continue
        if name is not None and name is not Undefined:
            names[id(member)] = name
    return members, names


def serializer(leaf_type: GraphQLLeafType) -> tuple[Callable[[Any], Any], frozenset[type]]:
    """The leaf type's serializer, with its results for a strawberry enum's members computed up front.

    Strawberry serializes an enum member by scanning every value of the enum; the members are a closed
    set of singletons, so each member's name is worked out once, by that same serializer. Dates and times
    in UTC are written by orjson (`utc_isoformat`).
    """
    serialize = leaf_type.coerce_output_value
    if serialize is strawberry_isoformat:
        return utc_isoformat, INERT_TYPES
    enum = _enum_names(leaf_type)
    if enum is None:
        return serialize, INERT_TYPES
    members, names = enum

    def serialize_member(value: Any) -> Any:
        if type(value) is members:
            name = names.get(id(value))
            if name is not None:
                return name
        return serialize(value)

    # Exact members of the enum are neither awaitable (checked by _enum_names) nor exceptions.
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


# Compiled `leaf_rows` code by (object type, selection shape); a document cannot grow it past this.
LEAF_ROWS_CACHED = 512
_LEAF_ROWS: OrderedDict[tuple[GraphQLObjectType, Any], Callable[..., Any] | None] = OrderedDict()
_STRINGS = frozenset({str})


def _always(_: Any) -> bool:
    return True


# run(items, exact class, executor): the completed list, or None (completed object by object).
LeafRows = Callable[[Sequence[Any], type, Any], list[dict[str, Any]] | None]


def leaf_rows(
    schema: GraphQLSchema, parent_type: GraphQLObjectType, shape: tuple[tuple[str, str, bool], ...]
) -> LeafRows | None:
    """Code completing a list of objects of `parent_type` for a selection (compiled_plan.Shape) of plain leaf
    fields only, cached; None for any other selection.

    `run(items, cls, executor)` gives the list of completed objects, each the dict the compiled selection gives it, when
    every item is an uncast instance of `cls` (compiled_plan.exact_class) and every value is one it takes
    plainly (a str for a String or ID, an int in range for an Int, a member of the enum, a list of str, a
    value of an inert type its serializer accepts; null where null is allowed); else None, and the caller
    completes the list object by object (a plain attribute read is repeatable), errors and all."""
    return compiled_once(
        _LEAF_ROWS,
        LEAF_ROWS_CACHED,
        (parent_type, shape),
        lambda: _compile_leaf_rows(schema, parent_type, shape),
    )


_UNSEEN = object()


def compiled_once(
    cache: OrderedDict[Any, Any], limit: int, key: Any, make: Callable[[], Callable[..., Any] | None]
) -> Callable[..., Any] | None:
    """`make()`'s code for `key`, kept in `cache` (least recently used out past `limit`); None when it cannot be
    compiled (such a list is completed object by object)."""
    # Each step is one operation on the dict: servers running in threads of one process (the tests') may evict
    # a key between a lookup and a move (a KeyError there failed a request).
    found = cache.get(key, _UNSEEN)
    if found is not _UNSEEN:
        with contextlib.suppress(KeyError):
            cache.move_to_end(key)
        return found  # type: ignore[no-any-return]
    try:
        run = make()
    except Exception:  # noqa: BLE001 - completed object by object
        run = None
    cache[key] = run
    while len(cache) > limit:
        try:
            cache.popitem(last=False)
        except KeyError:
            break
    return run


def _compile_leaf_rows(
    schema: GraphQLSchema, parent_type: GraphQLObjectType, shape: tuple[tuple[str, str, bool], ...]
) -> LeafRows | None:
    names: dict[str, Any] = {
        "Undefined": Undefined,
        "_CAST": TYPE_CAST_ATTRIBUTE,
        "_FAILED": FAILED,
        "complete_list": complete_leaf_list,
        "_always": _always,
        "datetime": datetime,
        "UTC": UTC,
        "dumps": orjson.dumps,
    }
    lines: list[str] = []
    entries: list[str] = []
    for i, (key, name, unusual) in enumerate(shape):
        if unusual or not key.isidentifier():
            return None
        if name == "__typename":
            entries.append(f"{key!r}: {parent_type.name!r}")
            continue
        if name.startswith("__"):
            return None
        field_def = schema.get_field(parent_type, name)
        if field_def is None:
            continue  # the stock executor and the compiled selection leave it out as well
        reader = plain_reader(field_def)
        leaf = leaf_of(field_def.type)
        if reader is None or leaf is None:
            return None
        attribute, names[f"get{i}"] = reader
        entries.append(f"{key!r}: o{i}")
        lines += leaf_lines(names, f"{i}", f"o{i}", attribute, leaf, "return None")
    body = "\n".join("            " + line for line in lines)
    source = "\n".join(
        [
            "def run(items, cls, ex=None):",
            "    out = []",
            "    append = out.append",
            "    try:",
            "        for source in items:",
            # An uncast instance (strawberry reads the mark the same way; asking for the `__dict__` would
            # build one for an instance that keeps its values inline).
            "            if type(source) is not cls or getattr(source, _CAST, None) is not None:",
            "                return None",
            body,
            "            append({" + ", ".join(entries) + "})",
            "    except Exception:  # completed object by object, where the stock executor reports it",
            "        return None",
            "    return out",
        ]
    )
    code = compile(source, f"<leaf rows {parent_type.name}>", "exec")
    exec(code, names)  # noqa: S102 - code built from the schema's own names and validated response keys
    return names["run"]  # type: ignore[no-any-return]


def leaf_lines(
    names: dict[str, Any],
    tag: str,
    out: str,
    attribute: str | None,
    leaf: tuple[GraphQLLeafType, bool, bool, bool],
    bail: str,
) -> list[str]:
    """The lines reading a plain leaf field of `source` into the local `out`, serialized as the compiled
    selection would: its plain value inline, else its serializer; `bail` (a statement) for anything else.
    The names the lines use are added to `names`, suffixed with `tag` (unique within one compiled unit)."""
    leaf_type, non_null, is_list, items_non_null = leaf
    serialize, inert = serializer(leaf_type)
    names[f"ser{tag}"], names[f"inert{tag}"] = serialize, inert
    is_string = leaf_type is GraphQLString or leaf_type is GraphQLID
    read = f"source.{attribute}" if attribute else f"get{tag}(source)"
    null = ["elif v is None or v is Undefined:", f"    {bail}" if non_null else f"    {out} = None"]
    lines = [f"v = {read}"]
    # The plain value first (the type checks fail for null), then null, then the serializer's way.
    if is_list:
        generic = [
            f"{out} = complete_list(v, ser{tag}, {items_non_null}, inert{tag}, {is_string}, _always)",
            f"if {out} is _FAILED:",
            f"    {bail}",
        ]
        if is_string:  # a list of str is copied as it is (as complete_leaf_list does), checked inline
            lines += [
                "if type(v) is list:",
                "    for x in v:",
                "        if type(x) is not str:",
                *("            " + line for line in generic),
                "            break",
                "    else:",
                f"        {out} = v[:]",
                *null,
            ]
        else:
            lines += ["if False:", "    pass", *null]
        lines += ["else:", *("    " + line for line in generic)]
        return lines
    if is_string:
        lines += ["if type(v) is str:", f"    {out} = v"]
    elif leaf_type is GraphQLInt:
        lines += ["if type(v) is int and -2147483648 <= v <= 2147483647:", f"    {out} = v"]
    elif leaf_type is GraphQLBoolean:
        lines += ["if type(v) is bool:", f"    {out} = v"]
    elif serialize is utc_isoformat:
        lines += ["if type(v) is datetime and v.tzinfo is UTC:", f"    {out} = dumps(v)[1:-1].decode()"]
    else:
        enum = _enum_names(leaf_type)
        if enum is not None and not issubclass(enum[0], Exception):
            names[f"E{tag}"], names[f"names{tag}"] = enum
            lines += [f"if type(v) is E{tag} and ({out} := names{tag}.get(id(v))) is not None:", "    pass"]
        else:
            lines += ["if False:", "    pass"]
    lines += [
        *null,
        f"elif type(v) in inert{tag}:",
        f"    {out} = ser{tag}(v)",
        f"    if {out} is None or {out} is Undefined:",
        f"        {bail}",
        "else:",
        f"    {bail}",
    ]
    return lines
