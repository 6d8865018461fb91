"""Query limits, checked after parsing and before execution: tokens, depth, aliases, list sizes, cost, and
the selections graphql-core's field-merging rule compares pairwise (measured by graphql/measure.py). Also
per-request schema policy from settings: introspection on or off, no field suggestions in production.

Each refusal is a GraphQL error with `extensions.code` BAD_USER_INPUT, `limitName` (which limit),
`limit` (its configured value, as `first` caps report it) and `actual` (what the document asked for).

Order of work, cheapest and most decisive first: the limit rule (a linear walk, no I/O), then authentication
for anything but the public root fields, then the schema's own rules (cached per query text): an anonymous
caller's document costs a linear walk, never more.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    GraphQLError,
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLSchema,
    IntValueNode,
    ObjectValueNode,
    OperationDefinitionNode,
    VariableNode,
    is_input_type,
    type_from_ast,
    validate,
)
from graphql.validation import ASTValidationRule, NoSchemaIntrospectionCustomRule, ValidationContext
from strawberry.extensions import SchemaExtension
from strawberry.schema.schema import validate_document

from threadline.errors import ErrorCode
from threadline.graphql import limit_cache, parse_cache
from threadline.graphql.measure import Walker, limit_error
from threadline.graphql.selections import field_names
from threadline.settings import Settings

_TOKEN_ERROR = "tokens. Parsing aborted."
_SUGGESTION = " Did you mean"


class _Walker(Walker):
    """The measure, also reading a list size given inside the field's `input` object: `search(input: {first:})`
    (deprecated, still served) returns as many items as `search(first:)`, so it is priced the same."""

    def argument_value(self, node: FieldNode, name: str) -> int | None:
        value = super().argument_value(node, name)
        if value is not None:
            return value
        given = next((a.value for a in node.arguments or () if a.name.value == "input"), None)
        if isinstance(given, VariableNode):
            fields = self.variables.get(given.name.value)
            inner = fields.get(name) if isinstance(fields, Mapping) else None
            return inner if isinstance(inner, int) and not isinstance(inner, bool) else None
        if isinstance(given, ObjectValueNode):
            for field in given.fields:
                if field.name.value != name:
                    continue
                if isinstance(field.value, IntValueNode):
                    return int(field.value.value)
                if isinstance(field.value, VariableNode):
                    inner = self.variables.get(field.value.name.value)
                    return inner if isinstance(inner, int) and not isinstance(inner, bool) else None
        return None


def _variable_values(
    schema: GraphQLSchema, node: OperationDefinitionNode, variables: Mapping[str, Any], limit: int
) -> int:
    """How many values graphql-core coerces for the operation's variables before anything runs (~20 us each: 200,000
    filter objects in 10 MB took 4.6 s): each variable, list item and input-object field (a scalar is one value, a
    JSON one too: its content is not coerced). Counting stops once past `limit`; a value of the wrong shape counts
    as one (coercion refuses it)."""
    count = 0
    stack: list[tuple[GraphQLInputType, Any]] = []
    for definition in node.variable_definitions or ():
        declared = type_from_ast(schema, definition.type)
        name = definition.variable.name.value
        if declared is not None and is_input_type(declared) and name in variables:
            stack.append((declared, variables[name]))
    while stack:
        kind, value = stack.pop()
        count += 1
        if count > limit:
            return count
        if isinstance(kind, GraphQLNonNull):
            kind = kind.of_type
        if isinstance(kind, GraphQLList):
            # graphql-core coerces a value that is not a list as a list of that one value: its items are walked too.
            items = value if isinstance(value, list) else [value]
            if count + len(items) > limit:  # each item is counted when it is taken: stop before holding them
                return count + len(items)
            stack.extend((kind.of_type, item) for item in items)
        elif isinstance(kind, GraphQLInputObjectType) and isinstance(value, Mapping):
            # Every key counts, a field's or not: coercion looks each unknown one up (with suggestions).
            fields = kind.fields
            if count + len(value) > limit:
                return count + len(value)
            count += sum(1 for key in value if key not in fields)
            stack.extend((fields[key].type, item) for key, item in value.items() if key in fields)
    return count


def limit_rule(
    settings: Settings, variables: Mapping[str, Any], list_caps: Mapping[str, int]
) -> type[ASTValidationRule]:
    """A validation rule bound to one request's settings and variables."""

    class QueryLimitRule(ASTValidationRule):
        context: ValidationContext  # the rule runs with a schema

        def enter_operation_definition(self, node: OperationDefinitionNode, *_: Any) -> None:
            given = _variable_values(self.context.schema, node, variables, settings.query_max_input_values)
            if given > settings.query_max_input_values:
                self.report_error(
                    limit_error(
                        "inputValues",
                        settings.query_max_input_values,
                        given,
                        f"The variables hold more than {settings.query_max_input_values} values (list items and "
                        "input fields; the limit)",
                        [node],
                    )
                )
                return  # nothing else is worth measuring: the request stops here
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
        self.settings = settings
        if not settings.introspection:
            execution.validation_rules = (*execution.validation_rules, NoSchemaIntrospectionCustomRule)
        yield
        if settings.production:
            result = execution.result
            strip_suggestions(
                [*(execution.pre_execution_errors or ()), *(getattr(result, "errors", None) or ())]
            )

    async def on_validate(self) -> AsyncIterator[None]:
        """Cheapest and most decisive first, each step only if the previous one passed: the limit rule (linear
        in the document, no I/O), then the caller's credentials for anything but introspection (an anonymous
        caller gets no further), then the schema's rules (cached per query text; graphql-core's overlapping-
        fields rule is quadratic in same-named fields, so it only sees documents within the limits)."""
        execution = self.execution_context
        document = execution.graphql_document
        if document is not None and execution.pre_execution_errors is None:
            execution.pre_execution_errors = await check_document(
                execution.schema._schema,
                document,
                execution.query,
                execution.variables,
                execution.context,
                self.settings,
                self.list_caps,
                execution.validation_rules,
            )
        yield

    def on_parse(self) -> Iterator[None]:
        execution = self.execution_context
        query = execution.query if parse_cache.cacheable(execution.query) else None
        known = parse_cache.cached(query, self.max_tokens) if query else None
        if known is not None and execution.graphql_document is None:
            execution.graphql_document = known  # strawberry then skips parsing
        yield
        parsed = execution.graphql_document
        if query and known is None and parsed is not None and not execution.pre_execution_errors:
            parse_cache.remember(query, self.max_tokens, parsed)
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


async def check_document(
    schema: GraphQLSchema,
    document: DocumentNode,
    query: str | None,
    variables: Mapping[str, Any] | None,
    context: Any,
    settings: Settings,
    list_caps: Mapping[str, int],
    rules: tuple[type[ASTValidationRule], ...],
) -> list[GraphQLError]:
    """`QueryLimits.on_validate`'s checks of a parsed document (also run by graphql.lean_operation)."""
    variables = variables or {}
    known = limit_cache.key(query, variables, settings, list_caps, schema)
    errors: list[GraphQLError] = []
    if known is None or not limit_cache.passed(known):
        errors = validate(schema, document, (limit_rule(settings, variables, list_caps),))
        if not errors and known is not None:
            limit_cache.remember(known, settings, list_caps, schema)
    if not errors:
        errors = await _refuse_anonymous(context, document, remember=parse_cache.cacheable(query))
    if not errors:
        errors = _validate_standard(schema, query, document, rules)
    return errors


def strip_suggestions(errors: Iterable[GraphQLError]) -> None:
    """No "Did you mean ...?" in production: suggestions map out a schema whose introspection may be off."""
    for error in errors:
        if _SUGGESTION in error.message:
            error.message = error.message.split(_SUGGESTION)[0].rstrip()


def validated_cleanly(schema: GraphQLSchema, query: str, rules: tuple[type[ASTValidationRule], ...]) -> bool:
    """Whether the schema's rules are remembered to pass `query` (graphql.lean_operation runs only those)."""
    return _VALIDATED.get((id(schema), query, rules)) == []


# Root fields anyone may ask for: the schema itself (third parties introspect before they have a key), and a
# conversation shared by link (its token is the credential; sharing/schema.py rate-limits it per token and address).
_PUBLIC_ROOT_FIELDS = frozenset({"__schema", "__type", "__typename", "errorCodes", "sharedConversation"})


# Whether a document asks only for public root fields, by document: only the parse cache's (it hands out the
# same objects; those with string literals, maybe caller content, are kept nowhere). Each entry holds its
# document, so an id is not reused while it is here.
_PUBLIC: dict[int, tuple[DocumentNode, bool]] = {}
_PUBLIC_SIZE = 512


def _public_only(document: DocumentNode, remember: bool) -> bool:
    known = _PUBLIC.get(id(document))
    if known is not None and known[0] is document:
        return known[1]
    operations = [d.selection_set for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    public = field_names(operations, fragments, deep=False) <= _PUBLIC_ROOT_FIELDS
    if not remember:
        return public
    if len(_PUBLIC) >= _PUBLIC_SIZE:
        with contextlib.suppress(
            KeyError, StopIteration, RuntimeError
        ):  # test servers share it across threads
            del _PUBLIC[next(iter(_PUBLIC))]
    _PUBLIC[id(document)] = (document, public)
    return public


async def _refuse_anonymous(context: Any, document: DocumentNode, *, remember: bool) -> list[GraphQLError]:
    """UNAUTHENTICATED before any further work when a document asks for more than the public root fields
    and the caller's credentials do not hold (the principal is then cached for the resolvers)."""
    principal = getattr(context, "principal", None)
    if principal is None or _public_only(document, remember):
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
