"""Query limits, checked after parsing and before execution: tokens, depth, aliases, list sizes, cost.
Also per-request schema policy from settings: introspection on or off, no field suggestions in production.

Each refusal is a GraphQL error with `extensions.code` BAD_USER_INPUT, `limitName` (which limit),
`limit` (its configured value, as `first` caps report it) and `actual` (what the document asked for).

Depth counts nested field selections, the top-level field being 1. Two exemptions keep legitimate
documents legal: `Message.replies` adds no depth (a nested-replies tree is served from one load of the
thread, and its size is bounded by the token limit), and introspection (`__schema`, `__type`) is not
counted for depth (tools send deep `ofType` chains), and its fields cost nothing but `__schema`, which is
priced at half the cost limit plus one: an operation may read the whole schema once, not thirty times.

Two more limits keep graphql-core's field-merging rule (quadratic in same-named selections) cheap: the
selections sharing one response key in one selection set, and the distinct fragments spread in one. The
limit rule runs first, then authentication (for anything but the public root fields), then the schema's
own rules: an anonymous caller's document costs a linear walk, never more.

Cost estimates the objects an operation can return: every object (or list of objects) field costs 1,
plus its children's cost multiplied by the list size it asks for (`first`, `last` or `limit`, the
argument's default when absent, `page_size_default` when that is null too). Leaf fields are free.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLInterfaceType,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    VariableNode,
    get_named_type,
    validate,
)
from graphql.validation import ASTValidationRule, NoSchemaIntrospectionCustomRule, ValidationContext
from strawberry.extensions import SchemaExtension
from strawberry.schema.schema import validate_document

from threadline.errors import ErrorCode
from threadline.graphql.selections import field_names
from threadline.settings import Settings

_LIST_SIZE_ARGUMENTS = ("first", "last", "limit")
_DEPTH_FREE = frozenset({("Message", "replies")})
_TOKEN_ERROR = "tokens. Parsing aborted."
_SUGGESTION = " Did you mean"


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
            max(self.depth, other.depth), _saturated(self.aliases + other.aliases), _saturated(self.cost + other.cost)
        )


_EMPTY = _Measure()
# Counts are only compared with limits: saturating keeps the arithmetic on small ints whatever a document of
# doubling fragments multiplies up to.
_SATURATION = 2**62


def _saturated(value: int) -> int:
    return min(value, _SATURATION)


class _Walker:
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
        if duplicates > self.settings.query_max_duplicate_fields and "duplicateFields" not in self.merge_errors:
            key = max(keys, key=keys.__getitem__)
            limit = self.settings.query_max_duplicate_fields
            self.merge_errors["duplicateFields"] = limit_error(
                "duplicateFields",
                limit,
                duplicates,
                f"`{key}` is selected {duplicates} times in one selection set; the limit is {limit}",
                [selection_set],
            )
        if len(spreads) > self.settings.query_max_fragment_spreads and "fragmentSpreads" not in self.merge_errors:
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
        return _Measure(level + child.depth, _saturated(alias + child.aliases), _saturated(1 + size * child.cost))

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
                self.list_errors[id(node)] = (
                    limit_error(
                        "listSize",
                        cap,
                        value,
                        f"`{argument}` of `{node.name.value}` is limited to {cap} (asked for {value})",
                        [node],
                    )
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


def limit_rule(
    settings: Settings, variables: Mapping[str, Any], list_caps: Mapping[str, int]
) -> type[ASTValidationRule]:
    """A validation rule bound to one request's settings and variables."""

    class QueryLimitRule(ASTValidationRule):
        context: ValidationContext  # the rule runs with a schema

        def enter_operation_definition(self, node: OperationDefinitionNode, *_: Any) -> None:
            root = self.context.schema.get_root_type(node.operation)
            walker = _Walker(self.context, settings, variables, list_caps)
            measure = walker.selections(root, node.selection_set)
            cost = measure.cost
            if measure.depth > settings.query_max_depth:
                self.report_error(
                    limit_error(
                        "depth",
                        settings.query_max_depth,
                        measure.depth,
                        f"Query depth {measure.depth} exceeds the limit of {settings.query_max_depth} "
                        "(nested `replies` of a Message do not count)",
                        [node],
                    )
                )
            if measure.aliases > settings.query_max_aliases:
                self.report_error(
                    limit_error(
                        "aliases",
                        settings.query_max_aliases,
                        measure.aliases,
                        f"The operation uses {measure.aliases} aliases; the limit is {settings.query_max_aliases}",
                        [node],
                    )
                )
            for error in walker.merge_errors.values():
                self.report_error(error)
            for error in walker.list_errors.values():
                self.report_error(error)
            if not walker.list_errors and cost > settings.query_max_cost:
                self.report_error(
                    limit_error(
                        "cost",
                        settings.query_max_cost,
                        cost,
                        f"The operation's estimated cost {cost} exceeds the limit of {settings.query_max_cost} "
                        "(each object costs 1, multiplied by the list sizes above it; ask for smaller pages)",
                        [node],
                    )
                )

    return QueryLimitRule


class QueryLimits(SchemaExtension):
    """Adds the limit rule to validation and the token limit to parsing, from the request's settings."""

    list_caps: Mapping[str, int] = {}

    def on_operation(self) -> Iterator[None]:
        execution = self.execution_context
        settings = getattr(execution.context, "settings", None)
        if not isinstance(settings, Settings):
            settings = Settings()
        self.max_tokens = settings.query_max_tokens
        # graphql-core counts the end-of-document token too.
        execution.parse_options["max_tokens"] = settings.query_max_tokens + 1
        self.limit_rule = limit_rule(settings, execution.variables or {}, self.list_caps)
        if not settings.introspection:
            execution.validation_rules = (*execution.validation_rules, NoSchemaIntrospectionCustomRule)
        yield
        if settings.production:
            # No "Did you mean ...?" in production: suggestions map out a schema whose introspection may be off.
            result = execution.result
            for error in [*(execution.pre_execution_errors or ()), *(getattr(result, "errors", None) or ())]:
                if _SUGGESTION in error.message:
                    error.message = error.message.split(_SUGGESTION)[0].rstrip()

    async def on_validate(self) -> AsyncIterator[None]:
        """Cheapest and most decisive first, each step only if the previous one passed: the limit rule (linear
        in the document, no I/O), then the caller's credentials for anything but introspection (an anonymous
        caller gets no further), then the schema's rules (cached per query text; graphql-core's overlapping-
        fields rule is quadratic in same-named fields, so it only sees documents within the limits)."""
        execution = self.execution_context
        document = execution.graphql_document
        if document is not None and execution.pre_execution_errors is None:
            schema = execution.schema._schema
            errors = validate(schema, document, (self.limit_rule,))
            if not errors:
                errors = await _refuse_anonymous(execution.context, document)
            if not errors:
                errors = _validate_standard(schema, execution.query, document, execution.validation_rules)
            execution.pre_execution_errors = errors
        yield

    def on_parse(self) -> Iterator[None]:
        yield
        for error in self.execution_context.pre_execution_errors or ():
            if error.message.endswith(_TOKEN_ERROR):
                # graphql-core stops lexing past the limit: `actual` is where it stopped, not the whole count.
                error.message = f"The document has more than {self.max_tokens} tokens (the limit)"
                error.extensions = {
                    "code": ErrorCode.BAD_USER_INPUT.value,
                    "limitName": "tokens",
                    "limit": self.max_tokens,
                    "actual": self.max_tokens + 1,
                }


# Root fields anyone may ask for: the schema itself (third parties introspect before they have a key).
_PUBLIC_ROOT_FIELDS = frozenset({"__schema", "__type", "__typename", "errorCodes"})


async def _refuse_anonymous(context: Any, document: DocumentNode) -> list[GraphQLError]:
    """UNAUTHENTICATED before any further work when a document asks for more than the public root fields
    and the caller's credentials do not hold (the principal is then cached for the resolvers)."""
    principal = getattr(context, "principal", None)
    operations = [d.selection_set for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    if principal is None or field_names(operations, fragments, deep=False) <= _PUBLIC_ROOT_FIELDS:
        return []
    try:
        await principal()
    except Exception as exc:  # ThreadlineError (UNAUTHENTICATED), or the database being unreachable
        return [GraphQLError(str(getattr(exc, "message", "")) or "Authentication failed", original_error=exc)]
    return []


_VALIDATED: OrderedDict[tuple[Any, ...], list[GraphQLError]] = OrderedDict()
_VALIDATED_SIZE = 512


def _validate_standard(
    schema: GraphQLSchema,
    query: str | None,
    document: DocumentNode,
    rules: tuple[type[ASTValidationRule], ...],
) -> list[GraphQLError]:
    """Strawberry's document validation, remembered per (schema, query text, rules) for the most recent
    documents: ~30 rules cost ~1 ms per request even for `{ viewer { id } }`, and clients repeat queries."""
    if query is None:
        return validate_document(schema, document, rules)
    key = (id(schema), query, rules)
    errors = _VALIDATED.get(key)
    if errors is None:
        errors = validate_document(schema, document, rules)
        _VALIDATED[key] = errors
        if len(_VALIDATED) > _VALIDATED_SIZE:
            _VALIDATED.popitem(last=False)
    else:
        _VALIDATED.move_to_end(key)
    # Fresh error objects: later extensions rewrite messages and extensions in place.
    return [
        GraphQLError(
            e.message,
            nodes=e.nodes,
            source=e.source,
            positions=e.positions,
            path=e.path,
            original_error=e.original_error,
            extensions=dict(e.extensions) if e.extensions else None,
        )
        for e in errors
    ]


def query_limits(list_caps: Mapping[str, int]) -> type[QueryLimits]:
    """The extension class with per-field list-size caps (`"Query.tags": 1000`) beyond `page_size_max`."""
    return type("QueryLimits", (QueryLimits,), {"list_caps": dict(list_caps)})
