"""What a document asks for, measured before it runs: depth, aliases, cost, list sizes, and the selections
graphql-core's field-merging rule compares pairwise. `graphql/limits.py` compares the measure with the limits.

Depth counts nested field selections, the top-level field being 1; `Message.replies` adds no depth (a
nested-replies tree is served from one load of the thread, and what it returns is charged by the output
budget, graphql/budget.py). Introspection is not counted for depth (tools send deep `ofType` chains), and its
fields cost nothing but `__schema`, priced at half the cost limit plus one: the schema once per operation.

Cost estimates the objects an operation can return: every object (or list of objects) field costs 1, plus its
children's cost multiplied by the list size it asks for (`first`, `last` or `limit`, the argument's default when
absent, `page_size_default` when that is null too). Leaf fields are free.

Each fragment is measured once per parent type and reused at every spread, so measuring is linear in the
document whatever its spreads multiply up to (the measure saturates instead of growing without bound).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from graphql import (
    FieldNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLInterfaceType,
    GraphQLObjectType,
    InlineFragmentNode,
    IntValueNode,
    SelectionSetNode,
    VariableNode,
    get_named_type,
)
from graphql.validation import ValidationContext

from threadline.errors import ErrorCode
from threadline.settings import Settings

_LIST_SIZE_ARGUMENTS = ("first", "last", "limit")
_DEPTH_FREE = frozenset({("Message", "replies")})


def limit_error(name: str, limit: int, actual: int, message: str, nodes: Any = None) -> GraphQLError:
    return GraphQLError(
        message,
        nodes,
        extensions={
            "code": ErrorCode.BAD_USER_INPUT.value,
            "limitName": name,
            "limit": limit,
            "actual": actual,
        },
    )


@dataclass(frozen=True)
class _Measure:
    """What a selection set adds below the level it sits at: depth levels, aliases and cost."""

    depth: int = 0
    aliases: int = 0
    cost: int = 0

    def __add__(self, other: _Measure) -> _Measure:
        return _Measure(
            max(self.depth, other.depth),
            _saturated(self.aliases + other.aliases),
            _saturated(self.cost + other.cost),
        )


_EMPTY = _Measure()
# Counts are only compared with limits: saturating keeps the arithmetic on small ints whatever a document of
# doubling fragments multiplies up to.
_SATURATION = 2**62


def _saturated(value: int) -> int:
    return min(value, _SATURATION)


class Walker:
    """Measures one operation: depth, aliases and cost.

    Each fragment is measured once per parent type and the result reused at every further spread, so the walk
    costs time linear in the document's size: a chain of fragments that each spread the previous one twice
    doubles the *measure* (and is refused for it), never the work of measuring.
    """

    def __init__(
        self,
        context: ValidationContext,
        settings: Settings,
        variables: Mapping[str, Any],
        list_caps: Mapping[str, int],
    ) -> None:
        self.context = context
        self.settings = settings
        self.variables = variables
        self.list_caps = list_caps
        self.list_errors: dict[int, GraphQLError] = {}  # by field node: a fragment's error is reported once
        self.merge_errors: dict[str, GraphQLError] = {}  # by limit name: the first selection set over it
        self._fragments: dict[tuple[str, str], _Measure | None] = {}  # None while being measured (cycles)
        self._introspection_fragments: dict[str, int | None] = {}

    def selections(self, parent: Any, selection_set: SelectionSetNode, flattened: bool = False) -> _Measure:
        if not flattened:
            self.merging(selection_set)
        total = _EMPTY
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                total += self.field(parent, selection)
            elif isinstance(selection, InlineFragmentNode):
                inner = parent
                if selection.type_condition is not None:
                    inner = self.context.schema.get_type(selection.type_condition.name.value) or parent
                total += self.selections(inner, selection.selection_set, flattened=True)
            elif isinstance(selection, FragmentSpreadNode):
                total += self.fragment(parent, selection.name.value)
        return total

    def merging(self, selection_set: SelectionSetNode) -> None:
        """Bounds what graphql-core's field-merging rule compares pairwise in one selection set (inline fragments
        flattened into it): selections sharing a response key, and distinct fragments spread."""
        keys: dict[str, int] = {}
        spreads: set[str] = set()
        pending = [selection_set]
        while pending:
            for selection in pending.pop().selections:
                if isinstance(selection, FieldNode):
                    key = (selection.alias or selection.name).value
                    keys[key] = keys.get(key, 0) + 1
                elif isinstance(selection, InlineFragmentNode):
                    pending.append(selection.selection_set)
                elif isinstance(selection, FragmentSpreadNode):
                    spreads.add(selection.name.value)
        duplicates = max(keys.values(), default=0)
        if (
            duplicates > self.settings.query_max_duplicate_fields
            and "duplicateFields" not in self.merge_errors
        ):
            key = max(keys, key=keys.__getitem__)
            limit = self.settings.query_max_duplicate_fields
            self.merge_errors["duplicateFields"] = limit_error(
                "duplicateFields",
                limit,
                duplicates,
                f"`{key}` is selected {duplicates} times in one selection set; the limit is {limit}",
                [selection_set],
            )
        if (
            len(spreads) > self.settings.query_max_fragment_spreads
            and "fragmentSpreads" not in self.merge_errors
        ):
            limit = self.settings.query_max_fragment_spreads
            self.merge_errors["fragmentSpreads"] = limit_error(
                "fragmentSpreads",
                limit,
                len(spreads),
                f"{len(spreads)} different fragments are spread in one selection set; the limit is {limit}",
                [selection_set],
            )

    def fragment(self, parent: Any, name: str) -> _Measure:
        key = (name, getattr(parent, "name", ""))
        if key in self._fragments:
            return self._fragments[key] or _EMPTY  # measured already, or a cycle (another rule's error)
        definition = self.context.get_fragment(name)
        if definition is None:
            return _EMPTY  # unknown fragments are another rule's error
        self._fragments[key] = None
        inner = self.context.schema.get_type(definition.type_condition.name.value) or parent
        measure = self.selections(inner, definition.selection_set)
        self._fragments[key] = measure
        return measure

    def field(self, parent: Any, node: FieldNode) -> _Measure:
        name = node.name.value
        alias = 1 if node.alias is not None else 0
        if name.startswith("__"):
            inner = self.introspection(node.selection_set) if node.selection_set is not None else 0
            # The whole schema is one bounded but sizeable answer (~25 ms here): once per operation.
            price = self.settings.query_max_cost // 2 + 1 if name == "__schema" else 0
            return _Measure(0, _saturated(alias + inner), price)
        parent_name = getattr(parent, "name", "")
        level = 0 if (parent_name, name) in _DEPTH_FREE else 1
        if node.selection_set is None:
            return _Measure(level, alias, 0)
        definition = None
        if isinstance(parent, GraphQLObjectType | GraphQLInterfaceType):
            definition = parent.fields.get(name)
        child_type = get_named_type(definition.type) if definition is not None else None
        size = self.list_size(parent_name, node, definition)
        child = self.selections(child_type, node.selection_set)
        return _Measure(
            level + child.depth, _saturated(alias + child.aliases), _saturated(1 + size * child.cost)
        )

    def introspection(self, selection_set: SelectionSetNode, flattened: bool = False) -> int:
        """The aliases under an introspection field (they still count; depth and cost do not)."""
        if not flattened:
            self.merging(selection_set)
        aliases = 0
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                if selection.alias is not None:
                    aliases += 1
                if selection.selection_set is not None:
                    aliases += self.introspection(selection.selection_set)
            elif isinstance(selection, InlineFragmentNode):
                aliases += self.introspection(selection.selection_set, flattened=True)
            elif isinstance(selection, FragmentSpreadNode):
                aliases += self.introspection_fragment(selection.name.value)
        return _saturated(aliases)

    def introspection_fragment(self, name: str) -> int:
        if name in self._introspection_fragments:
            return self._introspection_fragments[name] or 0
        definition = self.context.get_fragment(name)
        if definition is None:
            return 0
        self._introspection_fragments[name] = None
        aliases = self.introspection(definition.selection_set)
        self._introspection_fragments[name] = aliases
        return aliases

    def list_size(self, parent_name: str, node: FieldNode, definition: Any) -> int:
        if definition is None:
            return 1
        for argument in _LIST_SIZE_ARGUMENTS:
            if argument not in definition.args:
                continue
            value = self.argument_value(node, argument)
            if value is None:
                default = definition.args[argument].default_value
                value = default if isinstance(default, int) else None
            if value is None:
                continue
            cap = self.list_caps.get(f"{parent_name}.{node.name.value}", self.settings.page_size_max)
            if value > cap:
                self.list_errors[id(node)] = limit_error(
                    "listSize",
                    cap,
                    value,
                    f"`{argument}` of `{node.name.value}` is limited to {cap} (asked for {value})",
                    [node],
                )
            return max(min(value, cap), 1)
        if any(argument in definition.args for argument in _LIST_SIZE_ARGUMENTS):
            return max(self.settings.page_size_default, 1)
        return 1

    def argument_value(self, node: FieldNode, name: str) -> int | None:
        for argument in node.arguments or ():
            if argument.name.value != name:
                continue
            value = argument.value
            if isinstance(value, IntValueNode):
                return int(value.value)
            if isinstance(value, VariableNode):
                given = self.variables.get(value.name.value)
                return given if isinstance(given, int) and not isinstance(given, bool) else None
        return None
