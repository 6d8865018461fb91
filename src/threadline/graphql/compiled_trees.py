"""Lists of objects whose selection reaches into nested objects, completed in one pass (issue 14).

`compiled_leaves.leaf_rows` completes a list of objects in one loop when the selection asks for plain leaf
fields only. A page of conversations asks for more: `edges { cursor node { id title ... owner { id email }
participants { role user { id } } } }`. Per-object compiled code (compiled_plan.py) completes each object
with a call, a path, a pending list and a try block per field, and each nested list through
`complete_objects`; on a page that is most of the completion's cost, for values that are all plain.

A tree is such a selection followed down: at each level the fields are plain leaves, plain object fields or
object fields whose resolver has a synchronous twin (graphql.ready), and for each object field the child
selection as collected for this request (so `@skip`/`@include` with variables are applied). Its code
completes the whole list in straight-line nested functions, with the same serializers as the compiled
selections. The first value it does not take plainly (null where non-null is required, an object of another
class or cast, a twin without its value, an exception, a refused leaf) abandons the pass and hands the whole
list back to the per-object code, which then reads everything again (plain reads and twins are repeatable)
and reports errors as the stock executor does. Twins answer only where compiled code asks them: queries of
one root field without an abort signal (`FastExecutionContext.execute_collected_root_fields`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from graphql import GraphQLObjectType, GraphQLSchema
from graphql.pyutils import Undefined
from strawberry.schema.schema_converter import GraphQLCoreConverter
from strawberry.types.cast import TYPE_CAST_ATTRIBUTE

from threadline.graphql.compiled_leaves import (
    FAILED,
    _always,
    compiled_once,
    complete_leaf_list,
    leaf_lines,
    leaf_of,
    plain_reader,
)
from threadline.graphql.compiled_plan import Shape, _object_field, exact_class
from threadline.graphql.compiled_resolvers import ready_twin
from threadline.graphql.ready import NOT_READY

__all__ = ["TREE_DEPTH_MAX", "Tree", "row_class", "tree_fields", "tree_rows"]

# A tree: the selection's shape and, for each object field (by its index in the shape), the child's tree.
Tree = tuple[Shape, tuple[tuple[int, Any], ...]]
# Object levels below the list's items a tree follows; deeper selections complete object by object.
TREE_DEPTH_MAX = 6
# Compiled trees by (object type, tree), and object fields by (object type, shape): bounded like leaf rows.
TREES_CACHED = 512
_TREES: OrderedDict[tuple[GraphQLObjectType, Tree], Callable[..., Any] | None] = OrderedDict()
_FIELDS: OrderedDict[tuple[GraphQLObjectType, Shape], list[tuple[int, GraphQLObjectType]] | None] = (
    OrderedDict()
)


def row_class(object_type: GraphQLObjectType) -> type | None:
    """The class whose uncast instances a one-pass completion takes as objects of `object_type`: its exact
    class (compiled_plan.exact_class), or, for a specialization of a generic type (`Edge[Conversation]`)
    without any `is_type_of` (the stock executor then takes any object that is neither an exception nor
    awaitable), the generic class itself, whose instances its resolvers build; or None."""
    found = _ROW_CLASSES.get(object_type, _ROW_CLASSES)
    if found is not _ROW_CLASSES:
        return found  # type: ignore[no-any-return]
    cls = exact_class(object_type)
    if cls is None and object_type.is_type_of is None:
        definition = object_type.extensions.get(GraphQLCoreConverter.DEFINITION_BACKREF)
        generic = getattr(getattr(definition, "concrete_of", None), "origin", None)
        if (
            isinstance(generic, type)
            and not hasattr(generic, "__await__")
            and not issubclass(generic, BaseException)
        ):
            cls = generic
    _ROW_CLASSES[object_type] = cls
    return cls


_ROW_CLASSES: dict[GraphQLObjectType, Any] = {}


class _Bail(Exception):
    """A value the tree does not take plainly: the list is completed object by object."""


def _remember(cache: OrderedDict[Any, Any], key: Any, value: Any) -> None:
    cache[key] = value
    if len(cache) > TREES_CACHED:
        cache.popitem(last=False)


def tree_fields(
    schema: GraphQLSchema, parent_type: GraphQLObjectType, shape: Shape
) -> list[tuple[int, GraphQLObjectType]] | None:
    """The object fields of a selection a tree descends into, as (index in the shape, object type); None when
    the selection has a field a tree cannot complete (a resolver without a twin, arguments, an abstract type,
    an introspection field, a directive other than `@skip`/`@include`)."""
    key = (parent_type, shape)
    if key in _FIELDS:
        _FIELDS.move_to_end(key)
        return _FIELDS[key]
    found: list[tuple[int, GraphQLObjectType]] | None = []
    for i, (response_key, name, unusual) in enumerate(shape):
        if unusual or not response_key.isidentifier():
            found = None
            break
        if name == "__typename":
            continue
        if name.startswith("__"):
            found = None
            break
        field_def = schema.get_field(parent_type, name)
        if field_def is None:
            continue  # left out by every executor
        reader = plain_reader(field_def)
        if reader is not None and leaf_of(field_def.type) is not None:
            continue
        object_field = _object_field(field_def.type)
        if (
            object_field is None
            or row_class(object_field[0]) is None
            or (reader is None and ready_twin(field_def) is None)
        ):
            found = None
            break
        assert found is not None
        found.append((i, object_field[0]))
    _remember(_FIELDS, key, found)
    return found


def tree_rows(schema: GraphQLSchema, parent_type: GraphQLObjectType, tree: Tree) -> Callable[..., Any] | None:
    """`run(items, cls, executor)`: the completed list of a tree's objects (each the dict the compiled
    selections give), or None (completed object by object); cached. None if the tree cannot be compiled."""
    return compiled_once(
        _TREES, TREES_CACHED, (parent_type, tree), lambda: _compile(schema, parent_type, tree)
    )


class _Unit:
    """One compiled tree: its functions' lines and the names they use."""

    def __init__(self) -> None:
        self.names: dict[str, Any] = {
            "Undefined": Undefined,
            "_CAST": TYPE_CAST_ATTRIBUTE,
            "_FAILED": FAILED,
            "_BAIL": _Bail,
            "NOT_READY": NOT_READY,
            "complete_list": complete_leaf_list,
            "_always": _always,
            "datetime": datetime,
            "UTC": UTC,
            "dumps": orjson.dumps,
        }
        self.lines: list[str] = []
        self.levels = 0
        self.twins = False


def _level(unit: _Unit, schema: GraphQLSchema, parent_type: GraphQLObjectType, tree: Tree) -> str:
    """Adds the function completing one object of `parent_type` for `tree`; returns its name."""
    shape, children = tree
    below = dict(children)
    n = unit.levels
    unit.levels += 1
    body: list[str] = []
    entries: list[str] = []
    for i, (key, name, unusual) in enumerate(shape):
        if unusual:
            raise ValueError("an unusual field")
        if name == "__typename":
            entries.append(f"{key!r}: {parent_type.name!r}")
            continue
        field_def = schema.get_field(parent_type, name)
        if field_def is None:
            continue
        tag, out = f"{n}_{i}", f"o{i}"
        entries.append(f"{key!r}: {out}")
        reader = plain_reader(field_def)
        leaf = leaf_of(field_def.type)
        if reader is not None and leaf is not None:
            attribute, unit.names[f"get{tag}"] = reader
            body += leaf_lines(unit.names, tag, out, attribute, leaf, "raise _BAIL")
            continue
        found = _object_field(field_def.type)
        if found is None or i not in below:
            raise ValueError("not a field a tree completes")
        object_type, non_null, is_list, items_non_null = found
        child = _level(unit, schema, object_type, below[i])
        unit.names[f"CLS{tag}"] = row_class(object_type)
        if reader is not None:
            attribute, unit.names[f"get{tag}"] = reader
            body.append(f"v = source.{attribute}" if attribute else f"v = get{tag}(source)")
        else:
            ready = ready_twin(field_def)
            if ready is None:
                raise ValueError("a resolver without a twin")
            unit.names[f"ready{tag}"] = ready
            unit.twins = True
            # As compiled_plan._resolver: the twin's value, when it has one, is completed as a plain field's.
            body += [
                f"v = ready{tag}(source, ctx)",
                "if v is NOT_READY:",
                "    raise _BAIL",
                "twins[1] = True",
            ]
        null = "raise _BAIL" if non_null else f"{out} = None"
        if is_list:
            item_null = "raise _BAIL" if items_non_null else "append(None)"
            body += [
                "if type(v) is list or type(v) is tuple:",
                f"    {out} = []",
                f"    append = {out}.append",
                "    for x in v:",
                f"        if type(x) is CLS{tag} and getattr(x, _CAST, None) is None:",
                f"            append({child}(x, ctx, twins))",
                "        elif x is None:",
                f"            {item_null}",
                "        else:",
                "            raise _BAIL",
                "elif v is None:",
                f"    {null}",
                "else:",
                "    raise _BAIL",
            ]
        else:
            body += [
                f"if type(v) is CLS{tag} and getattr(v, _CAST, None) is None:",
                f"    {out} = {child}(v, ctx, twins)",
                "elif v is None:",
                f"    {null}",
                "else:",
                "    raise _BAIL",
            ]
    unit.lines += [
        f"def t{n}(source, ctx, twins):",
        *("    " + line for line in body),
        "    return {" + ", ".join(entries) + "}",
        "",
    ]
    return f"t{n}"


def _compile(schema: GraphQLSchema, parent_type: GraphQLObjectType, tree: Tree) -> Callable[..., Any]:
    unit = _Unit()
    top = _level(unit, schema, parent_type, tree)
    ready = "ex.abort_signal is None and ex.twins[0]" if unit.twins else "True"
    source = "\n".join(
        [
            *unit.lines,
            "def run(items, cls, ex=None):",
            f"    if ex is None or not ({ready}):",
            "        return None",
            "    ctx, twins = ex.context_value, ex.twins",
            "    out = []",
            "    append = out.append",
            "    try:",
            "        for x in items:",
            "            if type(x) is not cls or getattr(x, _CAST, None) is not None:",
            "                return None",
            f"            append({top}(x, ctx, twins))",
            "    except Exception:  # completed object by object, where the stock executor reports it",
            "        return None",
            "    return out",
        ]
    )
    code = compile(source, f"<tree rows {parent_type.name}>", "exec")
    exec(code, unit.names)  # noqa: S102 - code built from the schema's own names and validated response keys
    return unit.names["run"]  # type: ignore[no-any-return]
