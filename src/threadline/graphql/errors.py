"""Turns exceptions into GraphQL errors with `extensions.code`, and masks the unexpected ones."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import strawberry
from graphql import GraphQLError
from starlette.responses import Response
from strawberry.extensions import SchemaExtension
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError

from threadline.db.database import database_unavailable
from threadline.errors import UNAVAILABLE_RETRY_AFTER_SECONDS, ErrorCode, ThreadlineError

log = logging.getLogger("threadline.graphql")

ErrorCodeEnum = strawberry.enum(
    ErrorCode, name="ErrorCode", description="Machine-readable error codes, sent as `extensions.code`."
)
_VALUE_DESCRIPTIONS = {
    ErrorCode.UNAUTHENTICATED: "No credentials, or ones that are unknown, expired or revoked. Send "
    "`Authorization: Bearer <API key or JWT>` (a WebSocket: in the `connection_init` payload; refused with 4403).",
    ErrorCode.FORBIDDEN: "The caller is known but its role does not allow this operation (a MEMBER calling an "
    "admin mutation, a VIEWER writing). Retrying does not help.",
    ErrorCode.NOT_FOUND: "No such object, or one the caller may not see (another tenant's objects are never "
    "distinguished from missing ones). `extensions.argument` names the argument when there is one.",
    ErrorCode.BAD_USER_INPUT: "An argument is malformed or out of range (a cursor of another tenant, `first` over "
    "its cap, an unknown id kind), or the operation exceeds a query limit (`extensions.limitName`). "
    "`extensions.argument` names the argument; `extensions.limit` gives a cap when one was hit.",
    ErrorCode.CONFLICT: "The object is not in a state that allows this change (a run already finished, a duplicate "
    "name), or an idempotency key was reused with other arguments. Refetch before retrying.",
    ErrorCode.RATE_LIMITED: "A rate-limit budget (requests, mutations, runs, subscriptions) or the "
    "active-runs cap is used up; retry after `extensions.retryAfter` seconds.",
    ErrorCode.INTERNAL: "An unexpected server error; the message is masked. `extensions.requestId` identifies it "
    "in the server's logs.",
    ErrorCode.CURSOR_EXPIRED: "A `since` cursor older than the retained event log (events are kept "
    "THREADLINE_EVENT_RETENTION_DAYS, 7 by default). Refetch the state, then subscribe afresh from `streamCursor`.",
    ErrorCode.SLOW_CONSUMER: "A subscriber did not read its events fast enough and its queue overflowed; the "
    "stream ends with an `error` event carrying the cursor to resume from (`since`).",
    ErrorCode.UNAVAILABLE: "The database cannot be reached (an outage or a restart), or the server is shutting "
    "down. HTTP 503 (a new WebSocket closes with 1013); retry after `extensions.retryAfter` seconds. A mutation "
    "cut off this way may or may not have taken effect.",
    ErrorCode.PERSISTED_QUERY_NOT_FOUND: "The persisted document named by `extensions.persistedQuery.sha256Hash` "
    "or `documentId` is not known (message `PersistedQueryNotFound`, HTTP 200): send the query text with the "
    "hash once (Apollo's and urql's persisted-query links do), or, in trusted-documents mode, register it.",
    ErrorCode.CONTENT_UNAVAILABLE: "Content encrypted at rest whose key was erased (crypto-shredding: `threadline "
    "keys shred`, userErase): it can no longer be read by anyone (HTTP 410 for a file's bytes). Text fields of "
    "such content read as `[unavailable: this content's key was erased]` instead of failing the response.",
}
for _value in ErrorCodeEnum.__strawberry_definition__.values:  # type: ignore[attr-defined]
    _value.description = _VALUE_DESCRIPTIONS.get(_value.value, _value.description)


# character_not_in_repertoire (a NUL in a text value) and untranslatable_character.
_UNSTORABLE_TEXT = frozenset({"22021", "22P05"})


def _request_id(extension: SchemaExtension) -> str | None:
    context = extension.execution_context.context
    return getattr(context, "request_id", None)


def format_error(error: GraphQLError, request_id: str | None) -> GraphQLError:
    """The client-facing version of `error` with the request's id in `extensions.requestId` (also in the
    X-Request-Id header and the logs): our codes pass through; anything unexpected is masked."""
    formatted = _client_error(error, request_id)
    if request_id and formatted.extensions is not None:
        formatted.extensions["requestId"] = request_id
    return formatted


def _at(error: GraphQLError, message: str, extensions: dict[str, object]) -> GraphQLError:
    """The client's error in place of `error`: the same nodes, source, positions and path, no original error
    (what the client sees is the message and the extensions, never the exception behind them)."""
    return GraphQLError(message, error.nodes, error.source, error.positions, error.path, None, extensions)


def _client_error(error: GraphQLError, request_id: str | None) -> GraphQLError:
    original = error.original_error
    if isinstance(original, ThreadlineError):
        return _at(error, original.message, {"code": original.code.value, **original.extensions})
    if original is None:
        # Parse and validation errors from graphql-core (unknown fields, bad enum values, ...).
        extensions = dict(error.extensions or {})
        extensions.setdefault("code", ErrorCode.BAD_USER_INPUT.value)
        return _at(error, error.message, extensions)
    if isinstance(original, InvalidOperationTypeError | CannotGetOperationTypeError):
        # An operation the transport does not carry (a query or mutation sent as a multipart subscription
        # stream) or an unknown operationName: the client's.
        return _at(error, error.message, {"code": ErrorCode.BAD_USER_INPUT.value})
    if isinstance(original, GraphQLError) and original.original_error is None:
        # Coercion errors of variables and arguments are the client's.
        return _at(error, error.message, {"code": ErrorCode.BAD_USER_INPUT.value})
    if getattr(original, "sqlstate", None) in _UNSTORABLE_TEXT:
        # PostgreSQL text cannot hold NUL: whichever string field carried it, the input is the client's error
        # (and the statement failed, so nothing was written).
        return _at(
            error, "Text must not contain NUL (\\u0000) characters", {"code": ErrorCode.BAD_USER_INPUT.value}
        )
    if database_unavailable(original):
        log.warning("database unavailable (request %s) at %s: %r", request_id, error.path, original)
        return _at(
            error,
            "The database is unavailable; retry later",
            {"code": ErrorCode.UNAVAILABLE.value, "retryAfter": UNAVAILABLE_RETRY_AFTER_SECONDS},
        )
    log.error("internal error (request %s) at %s", request_id, error.path, exc_info=original)
    return _at(error, "Internal server error", {"code": ErrorCode.INTERNAL.value, "requestId": request_id})


class ErrorCodes(SchemaExtension):
    """Gives every error an `extensions.code`; masks internal errors (logged with the request id)."""

    def on_operation(self) -> Iterator[None]:
        yield
        result = self.execution_context.result
        errors = getattr(result, "errors", None)
        if result is not None and errors:
            request_id = _request_id(self)
            result.errors = [format_error(e, request_id) for e in errors]
            answer_unavailable(self.execution_context.context, result.errors)


def format_escaped(errors: list[GraphQLError], context: object) -> list[GraphQLError]:
    """`errors` with those that lack an `extensions.code` formatted (`format_error`; 503 for an outage): what
    escaped an extension's hook, which strawberry answers outside the operation's hooks (`Schema.execute`,
    `Schema.stream`), so ErrorCodes never saw it, as the exception's own text. Coded errors stay as they are."""
    if all(_coded(e) for e in errors):
        return errors
    request_id = getattr(context, "request_id", None)
    formatted = [e if _coded(e) else format_error(e, request_id) for e in errors]
    answer_unavailable(context, formatted)
    return formatted


def _coded(error: GraphQLError) -> bool:
    return "code" in (error.extensions or {})


def answer_unavailable(context: object, errors: list[GraphQLError]) -> None:
    """An outage is HTTP 503 with Retry-After, not a 200 (WebSocket operations just carry the error)."""
    if not any((e.extensions or {}).get("code") == ErrorCode.UNAVAILABLE.value for e in errors):
        return
    response = getattr(context, "response", None)
    if isinstance(response, Response):
        response.status_code = 503
        response.headers["Retry-After"] = str(UNAVAILABLE_RETRY_AFTER_SECONDS)


class SqlStatementCount(SchemaExtension):
    """Adds `extensions.sqlStatements` (this request's SQL statements) when the setting enables it."""

    def get_results(self) -> dict[str, object]:
        cell = getattr(self.execution_context.context, "sql_statements", None)
        return {"sqlStatements": cell[0]} if cell is not None else {}
