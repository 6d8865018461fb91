"""A plain query run with the schema extensions' work done in one pass (issue 14: the fixed cost per request).

For every operation strawberry's `Schema.execute` builds an ExecutionContext, an instance of each of the eight
extensions, four hook stacks (an AsyncExitStack each, a generator context manager per hook), a middleware
manager, and then converts the result. For a query whose document is already parsed (graphql.parse_cache) and
known to pass the schema's rules (graphql.limits' validation cache), what the extensions do is a short list of
calls. `LeanOperations.run` makes those calls, with the functions the hooks themselves call, in the order
strawberry runs the hooks (entered in the schema's extension order, left in reverse), and returns the same
result, errors and extensions:

- operation: PersistedDocuments (a plain query: nothing), OperationMetrics, ErrorCodes, QueryLimits;
- parsing: the cached document; validation: `limits.check_document` (limit rule, authentication, the rules);
- executing: OperationMetrics' label, RateLimits' draw, OutputBudgets' budget, IdempotencyKeys (a query:
  nothing), graphql-core's execute as strawberry calls it; then, leaving: the budget, a late rate-limit
  refusal, the execution's duration; the production suggestions, the error codes, the operation counts;
- SqlStatementCount's `extensions.sqlStatements`.

Anything else answers None before doing any of it, and strawberry runs it: a schema that is not exactly the
served one (other extensions, as with tracing; directives; incremental execution), a context that is not a
threadline Context, trusted documents, a document not in the caches or that did not validate, an operation
name that names no operation, a mutation or a subscription. tests/test_http_lean.py compares the answers with
strawberry's, byte for byte.
"""

from __future__ import annotations

import time
from inspect import isawaitable
from typing import Any

from graphql import GraphQLSchema, NoSchemaIntrospectionCustomRule, OperationDefinitionNode, specified_rules
from graphql.execution.middleware import MiddlewareManager
from graphql.language import OperationType
from strawberry.execution import optimized_is_awaitable
from strawberry.schema._graphql_core import GraphQLExecutionResult, execution_context_class_kwargs
from strawberry.schema.schema import _coerce_error
from strawberry.types.execution import ExecutionResult, PreExecutionError

from threadline.graphql import limits, parse_cache
from threadline.graphql.base_schema import ThreadlineSchema
from threadline.graphql.budget import OutputBudgets, close_budget, open_budget
from threadline.graphql.context import Context
from threadline.graphql.errors import (
    ErrorCodes,
    SqlStatementCount,
    answer_unavailable,
    format_error,
    format_escaped,
)
from threadline.graphql.persisted import PersistedDocuments
from threadline.idempotency.schema import IdempotencyKeys
from threadline.observability.metrics import METRICS
from threadline.observability.schema import OperationMetrics, count_errors, execution_label
from threadline.ratelimits.schema import RateLimits, answer_late_refusal, draw, operation_costs
from threadline.settings import Settings

__all__ = ["LeanOperations"]

# The served schema's extensions, in its order (threadline.schema.build_schema); QueryLimits' place holds the
# class `limits.query_limits` makes (its list caps only).
SERVED_EXTENSIONS: tuple[type, ...] = (
    PersistedDocuments,
    OperationMetrics,
    ErrorCodes,
    SqlStatementCount,
    limits.QueryLimits,
    RateLimits,
    OutputBudgets,
    IdempotencyKeys,
)
_QUERY_LIMITS_HOOKS = ("on_operation", "on_parse", "on_validate", "on_execute", "resolve", "get_results")
_RULES = tuple(specified_rules)  # strawberry's ExecutionContext.validation_rules
_RULES_NO_INTROSPECTION = (*_RULES, NoSchemaIntrospectionCustomRule)  # as QueryLimits adds it


def _served_extensions(extensions: list[Any]) -> type[limits.QueryLimits] | None:
    """The QueryLimits class of `extensions` when they are exactly the served ones, else None."""
    if len(extensions) != len(SERVED_EXTENSIONS):
        return None
    for given, served in zip(extensions, SERVED_EXTENSIONS, strict=True):
        if given is served:
            continue
        if served is not limits.QueryLimits or not isinstance(given, type) or not issubclass(given, served):
            return None
        if any(getattr(given, hook) is not getattr(served, hook) for hook in _QUERY_LIMITS_HOOKS):
            return None
    limit_class: type[limits.QueryLimits] = extensions[4]
    return limit_class


def _operation(document: Any, operation_name: str | None) -> OperationDefinitionNode | None:
    """The operation strawberry's `get_operation_type` looks at (the first one when no name is given)."""
    for definition in document.definitions:
        if isinstance(definition, OperationDefinitionNode) and (
            operation_name is None
            or (definition.name is not None and definition.name.value == operation_name)
        ):
            return definition
    return None


class LeanOperations:
    """Plain queries of `schema` run in one pass (`run`); `ran` counts them (tests check the path was taken)."""

    def __init__(self, schema: Any) -> None:
        self.schema = schema
        self.ran = 0
        self._extensions: list[Any] | None = None
        self._length = -1
        self._limits: type[limits.QueryLimits] | None = None
        self._middleware = MiddlewareManager()  # no extension resolves: strawberry's is empty too
        self._execute: Any = None
        self._executor_kwargs: dict[str, Any] = {}

    def _limits_class(self) -> type[limits.QueryLimits] | None:
        schema = self.schema
        extensions: list[Any] = schema.extensions
        if extensions is not self._extensions or len(extensions) != self._length:  # traced() replaces them
            usable = (
                type(schema) is ThreadlineSchema
                and not schema.directives
                and not schema.config.enable_experimental_incremental_execution
            )
            self._limits = _served_extensions(extensions) if usable else None
            self._execute = schema._get_execute_function()
            self._executor_kwargs = execution_context_class_kwargs(schema.execution_context_class)
            self._extensions, self._length = extensions, len(extensions)
        return self._limits

    async def run(
        self, query: str, variables: dict[str, Any] | None, operation_name: str | None, context: Any
    ) -> ExecutionResult | None:
        """What `schema.execute(query, ...)` answers for a plain query over POST; None (nothing done) when the
        operation is not one this path runs."""
        limit_class = self._limits_class()
        if limit_class is None or type(context) is not Context:
            return None
        settings = context.settings
        if (
            not isinstance(settings, Settings)
            or settings.trusted_documents
            or not parse_cache.cacheable(query)
        ):
            return None
        document = parse_cache.cached(query, settings.query_max_tokens)
        if document is None:
            return None
        definition = _operation(document, operation_name)
        if definition is None or definition.operation is not OperationType.QUERY:
            return None
        if operation_name is None and definition.name is not None:
            operation_name = definition.name.value  # strawberry's ExecutionContext.operation_name
        schema: GraphQLSchema = self.schema._schema
        rules = _RULES if settings.introspection else _RULES_NO_INTROSPECTION
        if not limits.validated_cleanly(schema, query, rules):
            return None
        self.ran += 1
        try:
            errors = await limits.check_document(
                schema, document, query, variables, context, settings, limit_class.list_caps, rules
            )
            if errors:  # strawberry's pre-execution result, made before the operation's hooks are left
                result: Any = PreExecutionError(data=None, errors=errors)
                result.extensions = _extension_results(context)
            else:
                result = await self._execute_query(document, variables, operation_name, context, settings)
            if settings.production:
                limits.strip_suggestions(result.errors or ())
            if result.errors:  # ErrorCodes
                result.errors = [format_error(e, context.request_id) for e in result.errors]
                answer_unavailable(context, result.errors)
        except BaseException as exc:
            METRICS.child(
                METRICS.operations_total, "query"
            ).inc()  # OperationMetrics counts it, whatever ended it
            if not isinstance(exc, Exception):
                raise
            # strawberry's answer to an exception out of the operation's hooks, coded as ThreadlineSchema.execute
            # codes it (format_escaped).
            failed = PreExecutionError(data=None, errors=format_escaped([_coerce_error(exc)], context))
            failed.extensions = _extension_results(context)
            return failed
        METRICS.child(METRICS.operations_total, "query").inc()
        count_errors(result.errors)
        if isinstance(result, GraphQLExecutionResult):
            executed = ExecutionResult(data=result.data, errors=result.errors)
            executed.extensions = _extension_results(context)
            return executed
        return result  # type: ignore[no-any-return]

    async def _execute_query(
        self,
        document: Any,
        variables: dict[str, Any] | None,
        operation_name: str | None,
        context: Context,
        settings: Settings,
    ) -> GraphQLExecutionResult:
        """strawberry's executing stage with OperationMetrics', RateLimits' and OutputBudgets' hooks."""
        started = time.perf_counter()
        label = execution_label(context, operation_name)
        costs = operation_costs(document, operation_name)  # RateLimits' own rule (a query: one request)
        refused = await draw(context, costs) if settings.rate_limit_enabled else None
        token = open_budget(settings)
        try:
            if refused is None:
                result = self._execute(
                    self.schema._schema,
                    document,
                    root_value=None,
                    middleware=self._middleware,
                    variable_values=variables,
                    operation_name=operation_name,
                    context_value=context,
                    is_awaitable=optimized_is_awaitable,
                    **self._executor_kwargs,
                    operation_extensions=None,
                )
                if isawaitable(result):
                    result = await result
            else:
                result = refused
        finally:
            close_budget(token)
        answer_late_refusal(context, result.errors)
        METRICS.child(METRICS.resolver_duration, label, "query").observe(time.perf_counter() - started)
        return result  # type: ignore[no-any-return]


def _extension_results(context: Context) -> dict[str, Any]:
    """The result's extensions: SqlStatementCount's (the other extensions add none)."""
    cell = context.sql_statements
    return {"sqlStatements": cell[0]} if cell is not None else {}
