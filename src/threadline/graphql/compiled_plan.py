"""Compile one object selection (the fields asked of one object type at one place in a document) to Python.

graphql-core spends several microseconds on every field of every object: resolve info, a path, the resolver
call through strawberry's wrapper, completion dispatch. Most fields of a response compute nothing: they read
an attribute of an object a resolver already built (`title`, `edges`, `node`, `pageInfo`, `role`). A compiled
selection is straight-line code that, per object,

- reads plain fields inline and serializes leaves in place (a str for a String is itself, an enum member's
  name is looked up once);
- completes plain object and list-of-object fields through the child selection's own compiled code;
- calls the stock `execute_field` for everything else (resolvers, arguments, abstract types, `__schema`),
  so that batched loads (DataLoaders), resolve info and error handling are the stock executor's own.

Whenever a plain field meets anything unusual (null where non-null is required, an exception, an awaitable,
a value its serializer rejects, an object `is_type_of` refuses) the field is executed again by the stock
`execute_field`: a plain attribute read is repeatable, so the data, the errors and their paths and order
are the stock executor's. Fields run in document order, so resolvers start (and DataLoaders batch) in the
stock order too.

The code depends only on the parent type and the selection's shape (response keys, field names, and
whether a field carries `@defer` or a directive other than `@skip`/`@include`), so it is compiled once
and bound per request to that request's field nodes (`bind(executor, fields)`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from graphql import GraphQLBoolean, GraphQLID, GraphQLInt, GraphQLObjectType, GraphQLSchema, GraphQLString
from graphql.execution.collect_fields import FieldDetailsList
from graphql.pyutils import Path, Undefined
from graphql.type import GraphQLOutputType, is_list_type, is_non_null_type, is_object_type
from strawberry.schema.schema_converter import GraphQLCoreConverter
from strawberry.types.cast import TYPE_CAST_ATTRIBUTE

from threadline.graphql.compiled_errors import gather_settled
from threadline.graphql.compiled_leaves import FAILED, complete_leaf_list, leaf_of, plain_reader, serializer
from threadline.graphql.compiled_resolvers import direct_call, ready_twin
from threadline.graphql.ready import NOT_READY

__all__ = ["Bind", "Shape", "compile_selection", "object_type_check", "selection_shape"]

COLLECTED_DIRECTIVES = frozenset({"skip", "include"})  # applied by field collection already
_OBJECT = object()  # a plain field's value is an object to complete with the child selection

# (response key, field name, unusual): what the compiled code of a selection depends on.
Shape = tuple[tuple[str, str, bool], ...]
# Binds compiled code to an executor and the request's field details (one list per response key).
Bind = Callable[[Any, Sequence[FieldDetailsList]], Callable[[Any, Path | None], Any]]


def _unusual(details_list: FieldDetailsList) -> bool:
    """A field the compiled code must leave to the stock executor whatever its definition."""
    for details in details_list:
        if details.defer_usage is not None or details.fragment_variable_values is not None:
            return True
        if any(d.name.value not in COLLECTED_DIRECTIVES for d in details.node.directives or ()):
            return True
    return False


def selection_shape(grouped_field_set: dict[str, FieldDetailsList]) -> Shape:
    return tuple(
        (key, details[0].node.name.value, _unusual(details)) for key, details in grouped_field_set.items()
    )


def object_type_check(object_type: GraphQLObjectType) -> tuple[bool, Any]:
    """(usable, is_type_of to call as `is_type_of(value, None)`) for completing values of `object_type`.

    Strawberry's own `is_type_of` (isinstance against the type and its interfaces) never reads the resolve
    info; a hand-written one might, so such types are completed by the stock executor only.
    """
    known = _CHECKS.get(object_type)
    if known is not None and known[1] is object_type.is_type_of:  # asked per list completed: kept per type
        return known[0]
    is_type_of = object_type.is_type_of
    if is_type_of is None:
        found: tuple[bool, Any] = (True, None)
    else:
        qualname = getattr(is_type_of, "__qualname__", "")
        if getattr(
            is_type_of, "__module__", ""
        ) == "strawberry.schema.schema_converter" and qualname.endswith(
            "_get_is_type_of.<locals>.is_type_of"
        ):
            found = (True, is_type_of)
        else:
            found = (False, None)
    _CHECKS[object_type] = (found, is_type_of)
    return found


_CHECKS: dict[GraphQLObjectType, tuple[tuple[bool, Any], Any]] = {}


def exact_class(object_type: GraphQLObjectType) -> type | None:
    """The Python class of a strawberry object type whose uncast instances (no `strawberry.cast` attribute in
    their `__dict__`) its `is_type_of` accepts, and which are neither awaitable nor exceptions; or None."""
    found = _EXACT.get(object_type, _EXACT)
    if found is not _EXACT:
        return found  # type: ignore[no-any-return]
    definition = object_type.extensions.get(GraphQLCoreConverter.DEFINITION_BACKREF)
    origin = getattr(definition, "origin", None)
    exact = (
        origin
        if isinstance(origin, type)
        and getattr(definition, "concrete_of", None) is None
        and not hasattr(origin, "__await__")
        and not issubclass(origin, BaseException)
        and not hasattr(origin, "__slots__")
        and object_type_check(object_type)[0]  # no hand-written is_type_of
        else None
    )
    _EXACT[object_type] = exact
    return exact


_EXACT: dict[GraphQLObjectType, Any] = {}


def _object_field(field_type: GraphQLOutputType) -> tuple[GraphQLObjectType, bool, bool, bool] | None:
    """(object type, non-null, is a list, items non-null) of `T`, `T!`, `[T]`, `[T!]`, `[T]!`, `[T!]!`."""
    non_null = is_non_null_type(field_type)
    inner: Any = field_type.of_type if non_null else field_type  # type: ignore[union-attr]
    is_list = is_list_type(inner)
    items_non_null = False
    if is_list:
        inner = inner.of_type
        items_non_null = is_non_null_type(inner)
        inner = inner.of_type if items_non_null else inner
    if not is_object_type(inner) or not object_type_check(inner)[0]:
        return None
    return inner, non_null, is_list, items_non_null


class _Writer:
    """Collects the generated lines and the names they refer to."""

    def __init__(self) -> None:
        self.names: dict[str, Any] = {
            "_FAILED": FAILED,
            "_OBJECT": _OBJECT,
            "Undefined": Undefined,
            # Path(prev, key, typename) without the NamedTuple's generated __new__ (a Python frame per call,
            # ~0.1 us of the ~500 paths a page of 50 makes): the same Path, built by tuple.__new__.
            "new_tuple": tuple.__new__,
            "Path": Path,
            "complete_list": complete_leaf_list,
            "gather_fields": gather_fields,
            "NOT_READY": NOT_READY,
            "_CAST": TYPE_CAST_ATTRIBUTE,
        }
        self.lines: list[str] = []
        self.nodes: list[int] = []  # fields whose resolve info needs their field nodes
        self.children: list[str] = []  # cells holding child selections' code, bound on first use

    def add(self, indent: int, *lines: str) -> None:
        self.lines.extend("    " * indent + line for line in lines)


def _stock(w: _Writer, i: int, indent: int) -> None:
    """The stock executor runs field i (a resolver, or a plain field that met something unusual)."""
    w.add(
        indent,
        f"o{i} = execute_field(P, source, F{i}, new_tuple(Path, (path, K{i}, PN)), None)",
        f"if o{i} is not None and is_awaitable(o{i}):",
        f"    pend = add_pending(pend, K{i}, o{i})",
    )


def _leaf(w: _Writer, i: int, field_type: GraphQLOutputType, attribute: str | None) -> bool:
    leaf = leaf_of(field_type)
    if leaf is None:
        return False
    leaf_type, non_null, is_list, items_non_null = leaf
    serialize, inert = serializer(leaf_type)
    w.names[f"ser{i}"], w.names[f"inert{i}"] = serialize, inert
    is_string = leaf_type is GraphQLString or leaf_type is GraphQLID  # a str serializes to itself
    read = f"source.{attribute}" if attribute else f"get{i}(source)"
    w.add(
        3,
        "try:",
        f"    v = {read}",
        "    if v is None or v is Undefined:",
        f"        o{i} = {'_FAILED' if non_null else 'None'}",
    )
    if is_list:
        w.add(
            3,
            "    else:",
            f"        o{i} = complete_list(v, ser{i}, {items_non_null}, inert{i}, {is_string}, is_awaitable)",
        )
    else:
        if is_string:
            w.add(3, "    elif type(v) is str:", f"        o{i} = v")
        elif leaf_type is GraphQLInt:
            w.add(3, "    elif type(v) is int and -2147483648 <= v <= 2147483647:", f"        o{i} = v")
        elif leaf_type is GraphQLBoolean:
            w.add(3, "    elif type(v) is bool:", f"        o{i} = v")
        w.add(
            3,
            # What complete_value checks before serializing; skipped for types that cannot be either.
            f"    elif type(v) not in inert{i} and (isinstance(v, Exception) or is_awaitable(v)):",
            f"        o{i} = _FAILED",
            "    else:",
            f"        o{i} = ser{i}(v)",
            f"        if o{i} is None or o{i} is Undefined:",
            f"            o{i} = _FAILED",
        )
    w.add(3, "except Exception:  # the stock executor reports it, identically", f"    o{i} = _FAILED")
    w.add(3, f"if o{i} is _FAILED:")
    _stock(w, i, 4)
    return True


def _object(w: _Writer, i: int, field_def: Any, attribute: str | None) -> bool:
    found = _object_field(field_def.type)
    if found is None:
        return False
    _complete_object(w, i, field_def, found, 3, f"source.{attribute}" if attribute else f"get{i}(source)")
    return True


def _complete_object(
    w: _Writer,
    i: int,
    field_def: Any,
    found: tuple[GraphQLObjectType, bool, bool, bool],
    indent: int,
    read: str,
) -> None:
    """Field i's value (`read`) completed as a plain object or list-of-object field: by the child selection's
    compiled code, or by the stock `execute_field` when it meets anything unusual."""
    object_type, non_null, is_list, _ = found
    w.names[f"OT{i}"], w.names[f"RT{i}"], w.names[f"FD{i}"] = object_type, field_def.type, field_def
    w.names[f"oito{i}"] = object_type_check(object_type)[1]
    w.add(
        indent,
        "try:",
        f"    v = {read}",
        "    if v is None or v is Undefined:",
        f"        o{i} = {'_FAILED' if non_null else 'None'}",
    )
    if is_list:
        # Any other iterable (a generator, a set) is the stock execute_field's to complete, as anything unusual.
        w.add(
            indent,
            "    elif type(v) is list or type(v) is tuple:",
            f"        o{i} = _OBJECT",
            "    else:",
            f"        o{i} = _FAILED",
        )
    else:
        check = "" if w.names[f"oito{i}"] is None else f" or not oito{i}(v, None)"
        w.names[f"CLS{i}"] = exact_class(object_type)
        if w.names[f"CLS{i}"] is not None:  # what is_type_of accepts at once: an uncast instance of the type
            w.add(
                indent, f"    elif type(v) is CLS{i} and _CAST not in v.__dict__:", f"        o{i} = _OBJECT"
            )
        w.add(
            indent,
            f"    elif isinstance(v, Exception) or is_awaitable(v){check}:",
            f"        o{i} = _FAILED",
            "    else:",
            f"        o{i} = _OBJECT",
        )
    w.add(indent, "except Exception:", f"    o{i} = _FAILED")
    w.add(indent, f"if o{i} is _OBJECT:", f"    fp = new_tuple(Path, (path, K{i}, PN))", "    try:")
    if is_list:
        w.add(indent + 2, f"o{i} = complete_objects(v, RT{i}, F{i}, fp, None, FD{i}, P)")
    else:
        w.add(indent + 2, f"if sub{i} is None:", f"    sub{i} = child(OT{i}, F{i})", f"o{i} = sub{i}(v, fp)")
        w.children.append(f"sub{i}")
    w.add(
        indent + 1,
        "except Exception as raw_error:  # as execute_field does",
        f"    handle_field_error(raw_error, RT{i}, F{i}, fp)",
        f"    o{i} = None",
        "else:",
        f"    if type(o{i}) is not {'list' if is_list else 'dict'} and is_awaitable(o{i}):",
        f"        o{i} = await_field(o{i}, RT{i}, F{i}, fp)",
        f"        pend = add_pending(pend, K{i}, o{i})",
    )
    w.add(indent, f"elif o{i} is _FAILED:")
    _stock(w, i, indent + 1)


def _resolver(w: _Writer, i: int, field_def: Any) -> bool:
    """A resolver called directly (compiled_resolvers.py) with `execute_field`'s resolve info and error
    handling; its value completed by `complete_resolved` (awaited by `resolved_field` if awaitable).
    With an abort signal the stock `execute_field` runs it (its awaits race the signal)."""
    call = direct_call(field_def)
    if call is None:
        return False
    found = _object_field(field_def.type)
    object_type = found[0] if found is not None and not found[2] else None
    w.names[f"call{i}"], w.names[f"RT{i}"], w.names[f"FD{i}"] = call, field_def.type, field_def
    w.names[f"T{i}"] = object_type
    w.names[f"ito{i}"] = None if object_type is None else object_type_check(object_type)[1]
    w.add(3, "if abort_signal is None:")
    indent = 4
    ready = ready_twin(field_def) if found is not None else None
    if ready is not None and found is not None:
        # The resolver's synchronous twin (graphql.ready): its value, when it has one, is completed as a plain
        # field's; anything unusual about it runs the field through the stock execute_field.
        w.names[f"ready{i}"] = ready
        w.add(
            4,
            "try:",
            f"    v = ready{i}(source, ctx) if twins[0] else NOT_READY",
            "except Exception:  # the resolver runs and reports it",
            "    v = NOT_READY",
            "if v is not NOT_READY:",
            "    twins[1] = True",
        )
        _complete_object(w, i, field_def, found, 5, "v")
        w.add(4, "else:")
        indent = 5
    w.add(
        indent,
        f"fp = new_tuple(Path, (path, K{i}, PN))",
        f"info = build_info(FD{i}, N{i}, P, fp)",
        "try:  # as execute_field does",
        f"    o{i} = call{i}(source, info)",
        f"    if is_awaitable(o{i}):",
        f"        o{i} = resolved_field(o{i}, RT{i}, T{i}, ito{i}, F{i}, info, fp)",
        f"        pend = add_pending(pend, K{i}, o{i})",
        "    else:",
        f"        o{i} = complete_resolved(o{i}, RT{i}, T{i}, ito{i}, F{i}, info, fp)",
        f"        if is_awaitable(o{i}):",
        f"            o{i} = await_field(o{i}, RT{i}, F{i}, fp)",
        f"            pend = add_pending(pend, K{i}, o{i})",
        "except Exception as raw_error:",
        f"    handle_field_error(raw_error, RT{i}, F{i}, fp)",
        f"    o{i} = None",
    )
    w.add(3, "else:")
    _stock(w, i, 4)
    w.nodes.append(i)
    return True


def compile_selection(schema: GraphQLSchema, parent_type: GraphQLObjectType, shape: Shape) -> Bind:
    w = _Writer()
    w.names["P"], w.names["PN"] = parent_type, parent_type.name
    entries: list[str] = []
    bound: list[str] = []
    for i, (key, name, unusual) in enumerate(shape):
        w.names[f"K{i}"] = key
        bound.append(f"F{i}")
        if name == "__typename" and not unusual:
            w.names[f"o{i}"] = parent_type.name
            entries.append(f"K{i}: o{i}")
            continue
        field_def = None if name.startswith("__") else schema.get_field(parent_type, name)
        if field_def is None and not name.startswith("__"):
            continue  # the stock executor leaves it out as well
        entries.append(f"K{i}: o{i}")
        reader = None if unusual or field_def is None else plain_reader(field_def)
        if reader is not None:
            attribute, w.names[f"get{i}"] = reader
            if _leaf(w, i, field_def.type, attribute):  # type: ignore[union-attr]
                continue
            if _object(w, i, field_def, attribute):
                continue
        elif not unusual and field_def is not None and _resolver(w, i, field_def):
            continue
        _stock(w, i, 3)
    header = [
        "def bind(ex, fields):",
        "    execute_field = ex.execute_field",
        "    handle_field_error = ex.handle_field_error",
        "    is_awaitable = ex.is_awaitable",
        "    child = ex.child_selection",
        "    complete_objects = ex.complete_objects",
        "    await_field = ex.await_field",
        "    settle = ex.settle_in_background",
        "    build_info = ex.build_resolve_info",
        "    resolved_field = ex.resolved_field",
        "    complete_resolved = ex.complete_resolved",
        "    abort_signal = ex.abort_signal",
        "    ctx = ex.context_value",
        "    twins = ex.twins",
        "    " + ", ".join([*bound, ""]) + " = fields" if bound else "    pass",
        *(f"    N{i} = [details.node for details in F{i}]" for i in w.nodes),
        *(f"    {name} = None" for name in w.children),
        "    def run(source, path):",
        *([f"        nonlocal {', '.join(w.children)}"] if w.children else []),
        "        pend = None",
        "        try:",
        "            pass",
    ]
    footer = [
        "        except Exception:",
        "            if pend:  # as execute_fields does: awaitables already started are settled",
        "                settle([a for _, a in pend])",
        "            raise",
        "        result = {" + ", ".join(entries) + "}",
        "        if pend is None:",
        "            return result",
        "        return gather_fields(result, pend)",
        "    return run",
    ]
    w.names["add_pending"] = add_pending
    source = "\n".join([*header, *w.lines, *footer])
    # Named after the type, so that profiles and tracebacks say whose selection a line belongs to.
    code = compile(source, f"<compiled {parent_type.name}>", "exec")
    exec(code, w.names)  # noqa: S102 - code built from the schema's own names, keys bound as constants
    return w.names["bind"]  # type: ignore[no-any-return]


def add_pending(pending: list[tuple[str, Any]] | None, key: str, value: Any) -> list[tuple[str, Any]]:
    if pending is None:
        return [(key, value)]
    pending.append((key, value))
    return pending


async def gather_fields(result: dict[str, Any], pending: list[tuple[str, Any]]) -> dict[str, Any]:
    """`execute_fields`' `get_results`: the awaitable fields settled in parallel, in their places (with
    graphql-core's gathers replaced by `gather_settled`, as graphql/fast_execution.py does)."""
    if len(pending) == 1:
        key, value = pending[0]
        result[key] = await value
    else:
        awaited = await gather_settled(*(value for _, value in pending))
        for (key, _), value in zip(pending, awaited, strict=True):
            result[key] = value
    return result
