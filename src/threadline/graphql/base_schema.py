"""The Schema subclass: error codes on streamed (subscription) results too, and quiet expected errors."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry.extensions import SchemaExtension
from strawberry.extensions.runner import SchemaExtensionsRunner
from strawberry.schema.exceptions import InvalidOperationTypeError
from strawberry.types import ExecutionContext
from strawberry.types.graphql import OperationType

from threadline.graphql.errors import format_error
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
            return await super().execute(*args, **kwargs)
        except InvalidOperationTypeError as exc:
            if exc.operation_type is OperationType.SUBSCRIPTION:
                raise SubscriptionNeedsStream(exc.operation_type) from exc
            raise

    async def stream(self, *args: Any, **kwargs: Any) -> Any:
        results = await super().stream(*args, **kwargs)
        context = kwargs.get("context_value")
        request_id = getattr(context, "request_id", None)

        async def formatted() -> AsyncGenerator[Any, None]:
            async for result in results:
                errors = getattr(result, "errors", None)
                if errors:
                    result.errors = [format_error(e, request_id) for e in errors]  # type: ignore[union-attr]
                yield result

        return formatted()

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        # Expected errors (our codes, validation) are the client's business; format_error logs the rest.
        return None
