"""Query limits, checked after parsing and before execution: tokens, depth, aliases, list sizes, cost.
Also per-request schema policy from settings: introspection on or off, no field suggestions in production.

Each refusal is a GraphQL error with `extensions.code` BAD_USER_INPUT, `limitName` (which limit),
`limit` (its configured value, as `first` caps report it) and `actual` (what the document asked for).

Depth counts nested field selections, the top-level field being 1. Two exemptions keep legitimate
documents legal: `Message.replies` adds no depth (a nested-replies tree is served from one load of the
thread, and its size is bounded by the token limit), and introspection (`__schema`, `__type`) is not
counted for depth or cost (it is bounded by the schema, and tools send deep `ofType` chains).

Cost estimates the objects an operation can return: every object (or list of objects) field costs 1,
plus its children's cost multiplied by the list size it asks for (`first`, `last` or `limit`, the
argument's default when absent, `page_size_default` when that is null too). Leaf fields are free.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
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


@dataclass
class _Measure:
    depth: int = 0
    aliases: int = 0
    cost: int = 0


class _Walker:
    """Measures one operation: depth, aliases and cost, following fragments (each spread once per path)."""

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
        self.measure = _Measure()
        self.list_errors: list[GraphQLError] = []

    def selections(
        self, parent: Any, selection_set: SelectionSetNode, depth: int, seen: frozenset[str]
    ) -> int:
        """The cost of `selection_set` under type `parent` at `depth`; records depth and aliases as it goes."""
        cost = 0
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                cost += self.field(parent, selection, depth, seen)
            elif isinstance(selection, InlineFragmentNode):
                inner = parent
                if selection.type_condition is not None:
                    inner = self.context.schema.get_type(selection.type_condition.name.value) or parent
                cost += self.selections(inner, selection.selection_set, depth, seen)
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                fragment = self.context.get_fragment(name)
                if fragment is None or name in seen:
                    continue  # unknown fragments and cycles are other rules' errors
                inner = self.context.schema.get_type(fragment.type_condition.name.value) or parent
                cost += self.selections(inner, fragment.selection_set, depth, seen | {name})
        return cost

    def field(self, parent: Any, node: FieldNode, depth: int, seen: frozenset[str]) -> int:
        name = node.name.value
        if node.alias is not None:
            self.measure.aliases += 1
        if name.startswith("__"):
            if node.selection_set is not None:
                self.introspection(node.selection_set, seen)
            return 0
        parent_name = getattr(parent, "name", "")
        level = depth if (parent_name, name) in _DEPTH_FREE else depth + 1
        self.measure.depth = max(self.measure.depth, level)
        if node.selection_set is None:
            return 0
        definition = None
        if isinstance(parent, GraphQLObjectType | GraphQLInterfaceType):
            definition = parent.fields.get(name)
        child_type = get_named_type(definition.type) if definition is not None else None
        size = self.list_size(parent_name, node, definition)
        return 1 + size * self.selections(child_type, node.selection_set, level, seen)

    def introspection(self, selection_set: SelectionSetNode, seen: frozenset[str]) -> None:
        """Aliases still count inside introspection; depth and cost do not."""
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                if selection.alias is not None:
                    self.measure.aliases += 1
                inner = selection.selection_set
            elif isinstance(selection, InlineFragmentNode):
                inner = selection.selection_set
            elif isinstance(selection, FragmentSpreadNode):
                fragment = self.context.get_fragment(selection.name.value)
                if fragment is None or selection.name.value in seen:
                    continue
                seen = seen | {selection.name.value}
                inner = fragment.selection_set
            else:
                continue
            if inner is not None:
                self.introspection(inner, seen)

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
                self.list_errors.append(
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
            cost = walker.selections(root, node.selection_set, 0, frozenset())
            measure = walker.measure
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
            for error in walker.list_errors:
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

    def on_validate(self) -> Iterator[None]:
        """The schema's rules, whose verdict depends only on the document (cached per query text), then the
        limit rule, which also depends on the variables and settings (run every time, on its own)."""
        execution = self.execution_context
        document = execution.graphql_document
        if document is not None and execution.pre_execution_errors is None:
            schema = execution.schema._schema
            standard = _validate_standard(schema, execution.query, document, execution.validation_rules)
            limits = validate(schema, document, (self.limit_rule,))
            execution.pre_execution_errors = [*limits, *standard]
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
