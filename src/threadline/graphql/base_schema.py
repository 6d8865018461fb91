"""The Schema subclass: error codes on streamed (subscription) results too, and quiet expected errors."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry.types import ExecutionContext

from threadline.graphql.errors import format_error


class ThreadlineSchema(strawberry.Schema):
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
