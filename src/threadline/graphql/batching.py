"""Batched operations: a JSON array of GraphQL requests in one HTTP POST (Apollo's BatchHttpLink), answered
with an array of responses in the same order. Off unless THREADLINE_BATCH_MAX is above 0.

strawberry's own batching runs the operations concurrently with one shared context and response, so one
operation's refusal (a 429) would set the status of the whole batch, and loaders would be shared. Here each
operation runs after the previous one with its own context: its own limits, output budget, rate-limit draw
and loaders, exactly as if it had come alone; mutations keep the order the client sent them in. The batch's
status is its operations' common status, else 200 (graphql.over_http).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cross_web import HTTPException
from graphql import GraphQLError
from starlette.responses import Response
from strawberry.http import GraphQLRequestData
from strawberry.types import ExecutionResult

from threadline.errors import ErrorCode
from threadline.graphql import over_http
from threadline.idempotency.schema import HEADER as IDEMPOTENCY_HEADER

_RETRY_STATUSES = frozenset({429, 503})


class BatchRefused(HTTPException):
    """A batch refused whole (400), with the limit it broke in the error's extensions."""

    def __init__(self, reason: str, **extensions: Any) -> None:
        super().__init__(400, reason)
        self.extensions = extensions


def check(operations: list[Any], batch_max: int) -> None:
    """A batch the server accepts: enabled, not empty, within the limit, each entry a GraphQL request."""
    if batch_max <= 0:
        raise BatchRefused("Batching is not enabled")
    if not operations:
        raise BatchRefused("A batch must hold at least one operation")
    if len(operations) > batch_max:
        raise BatchRefused(
            f"The batch holds {len(operations)} operations; the limit is {batch_max} (THREADLINE_BATCH_MAX)",
            limitName="batchOperations",
            limit=batch_max,
            actual=len(operations),
        )
    for index, operation in enumerate(operations):
        problem = _malformed(operation)
        if problem:
            raise BatchRefused(f"Operation {index} of the batch: {problem}")


def _malformed(operation: object) -> str | None:
    if not isinstance(operation, Mapping):
        return "a GraphQL request must be a JSON object"
    expected = {"query": str, "operationName": str, "variables": Mapping, "extensions": Mapping}
    for key, kind in expected.items():
        value = operation.get(key)
        if value is not None and not isinstance(value, kind):
            what = "a string" if kind is str else "an object"
            return f"`{key}` must be {what} or null, if provided"
    return None


def error_extensions(refusal: Exception) -> dict[str, Any]:
    return dict(refusal.extensions) if isinstance(refusal, BatchRefused) else {}


async def execute(
    view: Any,
    request: Any,
    request_adapter: Any,
    operations: list[GraphQLRequestData],
    root_value: Any,
    sub_response: Response,
) -> list[ExecutionResult]:
    """Runs each operation alone (own context and sub-response) and gives the batch's response the merged
    status and headers."""
    if request.headers.get(IDEMPOTENCY_HEADER) is not None:
        # The header names one write; every mutation of a batch would replay (or conflict with) the first.
        raise BatchRefused(
            f"The {IDEMPOTENCY_HEADER} header covers one operation, not a batch: give each mutation its own "
            "`clientMutationId`",
            argument=IDEMPOTENCY_HEADER,
        )
    results: list[ExecutionResult] = []
    statuses: list[int] = []
    for operation in operations:
        own_response = await view.get_sub_response(request)
        context = await view.get_context(request, own_response)
        try:
            result = await view.execute_single(
                request=request,
                request_adapter=request_adapter,
                sub_response=own_response,
                context=context,
                root_value=root_value,
                request_data=operation,
            )
        except HTTPException as exc:  # an operation strawberry refuses (no query, unknown operation name)
            extensions: dict[str, Any] = {"code": ErrorCode.BAD_USER_INPUT.value}
            request_id = getattr(context, "request_id", None)
            if request_id:
                extensions["requestId"] = request_id
            result = ExecutionResult(data=None, errors=[GraphQLError(exc.reason, extensions=extensions)])
            own_response.status_code = over_http.refusal_status(exc, exc.status_code)
        results.append(result)
        statuses.append(over_http.execution_status(result, own_response.status_code))
        _merge_headers(sub_response, own_response)
    status = over_http.batch_status(statuses)
    sub_response.status_code = status
    if status not in _RETRY_STATUSES and "retry-after" in sub_response.headers:
        del sub_response.headers["retry-after"]
    return results


def _merge_headers(batch: Response, operation: Response) -> None:
    """The operation's headers on the batch's response: later operations' RateLimit-* values (the budget as the
    batch left it) replace earlier ones; the longest Retry-After wins."""
    for name, value in operation.headers.items():
        earlier = batch.headers.get(name, "")
        if name == "retry-after" and value.isdigit() and earlier.isdigit():
            value = str(max(int(value), int(earlier)))
        batch.headers[name] = value
