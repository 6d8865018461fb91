"""GraphQL over HTTP (https://graphql.github.io/graphql-over-http/draft/): the response's media type, chosen
from the request's Accept header, and the status code a GraphQL response gets in that media type.

- `application/graphql-response+json` (what Apollo Client 4, urql and GraphiQL ask for first): a request error
  (unparsable JSON, no query, a parse or validation error, a refused variable, a query limit) is 400 (401 when
  the caller is not authenticated) and has no `data` entry; an executed operation is 200, field errors or not.
  Clients read the body of a non-2xx response in this type, so a 429 still carries RATE_LIMITED and
  `retryAfter`.
- `application/json` (legacy clients, and `Accept: */*`): a well-formed request is answered 200 whatever its
  GraphQL errors; a malformed one is 400. Request errors have no `data` entry here either.
- No Accept header: `application/graphql-response+json` (the spec's rule since its legacy watershed,
  2025-01-01). An Accept header that admits neither type is 406.
- In both types the server's own refusals keep their status and carry a GraphQL error body: 413 (request
  too large), 429 (rate limited), 503 (database unavailable or stopping); a persisted query the server does
  not know is 200 (Apollo's and urql's persisted-query links expect that); POST bodies other than
  `application/json` are 415; a mutation over GET is 405 with `Allow: POST`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from typing import Any

from graphql import GraphQLError
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.types.graphql import OperationType

from threadline.errors import ErrorCode

GRAPHQL_RESPONSE_JSON = "application/graphql-response+json"
APPLICATION_JSON = "application/json"
# The Content-Type sent for each media type (application/json stays as it always was).
CONTENT_TYPES = {
    GRAPHQL_RESPONSE_JSON: f"{GRAPHQL_RESPONSE_JSON}; charset=utf-8",
    APPLICATION_JSON: APPLICATION_JSON,
}
# Streaming transports (multipart subscriptions, SSE) negotiate for themselves.
_STREAMING_TYPES = ("multipart/mixed", "text/event-stream")

# The media type of the HTTP request being answered: set by the view as the request arrives, read where the
# response is built (strawberry's create_response does not see the request).
_media_type: ContextVar[str] = ContextVar("threadline_response_media_type", default=APPLICATION_JSON)


def use(media_type: str) -> None:
    _media_type.set(media_type)


def media_type() -> str:
    return _media_type.get()


def content_type() -> str:
    return CONTENT_TYPES[_media_type.get()]


def negotiate(accept: str | None) -> str | None:
    """The response media type for an Accept header; None when it admits neither (406).

    Each type takes the quality of the most specific range that matches it (`application/json;q=0, */*`
    excludes application/json). The higher quality wins; on a tie, a type named exactly beats one matched by a
    wildcard, and between two named ones application/graphql-response+json wins, so `*/*` alone still gets
    application/json as legacy clients (and the spec's audit) expect.
    """
    if accept is None or not accept.strip():
        return GRAPHQL_RESPONSE_JSON
    grj_q, grj_exact = _quality(accept, GRAPHQL_RESPONSE_JSON)
    json_q, _ = _quality(accept, APPLICATION_JSON)
    if max(grj_q, json_q) <= 0:
        return None
    if grj_q != json_q:
        return GRAPHQL_RESPONSE_JSON if grj_q > json_q else APPLICATION_JSON
    return GRAPHQL_RESPONSE_JSON if grj_exact else APPLICATION_JSON


def _quality(accept: str, media: str) -> tuple[float, bool]:
    """(q, named exactly) of `media` under `accept`: the most specific matching range decides."""
    main = media.split("/")[0]
    best: tuple[int, float] = (-1, 0.0)
    for part in accept.split(","):
        name, *params = (p.strip() for p in part.split(";"))
        name = name.lower()
        specificity = 2 if name == media else 1 if name == f"{main}/*" else 0 if name == "*/*" else -1
        if specificity < best[0] or specificity < 0:
            continue
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = max(0.0, min(float(value), 1.0))
                except ValueError:
                    q = 0.0
        if specificity > best[0]:
            best = (specificity, q)
    return best[1], best[0] == 2


def streams(accept: str | None) -> bool:
    """The client asks for a streaming transport (left to strawberry's negotiation)."""
    lowered = (accept or "").lower()
    return any(t in lowered for t in _STREAMING_TYPES)


def is_json_body(content_type: str | None) -> bool:
    return (content_type or "").split(";")[0].strip().lower() == APPLICATION_JSON


def is_mutation_over_get(refusal: Exception, method: str) -> bool:
    """strawberry's refusal of a mutation sent with GET (the spec wants 405 where strawberry says 400)."""
    cause = refusal.__cause__
    return (
        method == "GET"
        and isinstance(cause, InvalidOperationTypeError)
        and cause.operation_type is OperationType.MUTATION
    )


def refusal_status(refusal: Exception, status: int) -> int:
    """The status of strawberry's HTTP refusal: an operation name that matches no operation is a GraphQL
    request error (200 in application/json, like a validation error); the rest are malformed requests."""
    if isinstance(refusal.__cause__, CannotGetOperationTypeError) and media_type() == APPLICATION_JSON:
        return 200
    return status


def is_request_error(data: object, errors: Iterable[GraphQLError] | None) -> bool:
    """Nothing was executed: no data and only errors without a path (field errors always have one). Such a
    response has no `data` entry (GraphQL spec: "if an error was raised before execution begins, the data
    entry should not be present")."""
    listed = list(errors or ())
    return data is None and bool(listed) and all(e.path is None for e in listed)


def result_status(body: Mapping[str, Any], set_status: int | None) -> int:
    """The status of one GraphQL response (`set_status`: what the server's own refusals set: 429, 503)."""
    if "data" in body:
        # The spec: a response with non-null data is 200 in either media type (field errors are a partial
        # success). Null data after execution started keeps a refusal's status.
        return 200 if body["data"] is not None else (set_status or 200)
    if set_status:
        return set_status
    codes = {
        (e.get("extensions") or {}).get("code") for e in body.get("errors") or () if isinstance(e, Mapping)
    }
    if codes == {ErrorCode.PERSISTED_QUERY_NOT_FOUND.value}:
        return 200
    if media_type() == APPLICATION_JSON:
        return 200
    return 401 if ErrorCode.UNAUTHENTICATED.value in codes else 400


def execution_status(result: Any, set_status: int | None) -> int:
    """`result_status` of an operation before strawberry turns it into a response body."""
    errors = list(result.errors or ())
    if is_request_error(result.data, errors):
        return result_status({"errors": [e.formatted for e in errors]}, set_status)
    return result_status({"data": result.data}, set_status)


def batch_status(statuses: list[int]) -> int:
    """A batch's status: its operations' common status, else 200 (each carries its own errors)."""
    return statuses[0] if statuses and len(set(statuses)) == 1 else 200
