"""The Schema subclass: error codes on streamed (subscription) results too, and quiet expected errors."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry.extensions import SchemaExtension
from strawberry.extensions.runner import SchemaExtensionsRunner
from strawberry.schema.exceptions import InvalidOperationTypeError
from strawberry.schema.schema import _coerce_error
from strawberry.types import ExecutionContext
from strawberry.types.execution import ExecutionResult, PreExecutionError
from strawberry.types.graphql import OperationType

from threadline.graphql.errors import answer_unavailable, format_error, format_escaped
from threadline.graphql.extension_hooks import CachedHooksRunner


class SubscriptionNeedsStream(InvalidOperationTypeError):
    """A subscription sent as a plain HTTP request (POST, GET or in a batch): strawberry would run it as a
    query and fail on its event generator with INTERNAL; it is the client's mistake, so a 400 saying how."""

    def as_http_error_reason(self, method: str) -> str:
        return (
            f"Subscriptions do not run as a plain {method}: use a WebSocket (graphql-transport-ws) or HTTP "
            'with Accept: multipart/mixed;subscriptionSpec="1.0"'
        )


class ThreadlineSchema(strawberry.Schema):
    def create_extensions_runner(
        self, execution_context: ExecutionContext, extensions: list[SchemaExtension]
    ) -> SchemaExtensionsRunner:
        # Each extension's hooks are looked up once per class, not with `inspect` on every request.
        return CachedHooksRunner(execution_context=execution_context, extensions=extensions)

    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        # Only HTTP's plain (non-streamed) operations come here; WebSocket and multipart ones use `stream`.
        allowed = kwargs.get("allowed_operation_types")
        if allowed is not None:
            kwargs["allowed_operation_types"] = set(allowed) - {OperationType.SUBSCRIPTION}
        try:
            result = await super().execute(*args, **kwargs)
        except InvalidOperationTypeError as exc:
            if exc.operation_type is OperationType.SUBSCRIPTION:
                raise SubscriptionNeedsStream(exc.operation_type) from exc
            raise
        errors = getattr(result, "errors", None)
        if errors:
            # An exception out of an extension's hook (a rate-limit draw that lost the database) comes back
            # uncoded, with its own text: strawberry answers it outside the hooks, where ErrorCodes cannot see it.
            result.errors = format_escaped(errors, _context(args, kwargs))
        return result

    async def stream(self, *args: Any, **kwargs: Any) -> Any:
        results = await super().stream(*args, **kwargs)
        context = kwargs.get("context_value")
        request_id = getattr(context, "request_id", None)

        async def formatted() -> AsyncGenerator[Any, None]:
            first = True
            try:
                async for result in results:
                    errors = getattr(result, "errors", None)
                    if errors:
                        result.errors = [format_error(e, request_id) for e in errors]  # type: ignore[union-attr]
                    first = False
                    yield result
            except Exception as exc:  # noqa: BLE001 - answered, as `execute` answers it
                # Out of an extension's hook that strawberry's stream does not catch (on_operation, on_parse,
                # on_validate): the stream's last result, coded, rather than a socket's bare `complete`.
                # (Parked and cancellation are BaseExceptions: they pass.)
                errors = [format_error(_coerce_error(exc), request_id)]
                answer_unavailable(context, errors)
                yield PreExecutionError(data=None, errors=errors) if first else ExecutionResult(None, errors)

        return formatted()

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        # Expected errors (our codes, validation) are the client's business; format_error logs the rest.
        return None


def _context(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """`Schema.execute`'s context_value (its third parameter), however it was passed."""
    return kwargs["context_value"] if "context_value" in kwargs else (args[2] if len(args) > 2 else None)
