"""Turns exceptions into GraphQL errors with `extensions.code`, and masks the unexpected ones."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import strawberry
from graphql import GraphQLError
from strawberry.extensions import SchemaExtension

from threadline.errors import ErrorCode, ThreadlineError

log = logging.getLogger("threadline.graphql")

ErrorCodeEnum = strawberry.enum(
    ErrorCode, name="ErrorCode", description="Machine-readable error codes, sent as `extensions.code`."
)


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


def _client_error(error: GraphQLError, request_id: str | None) -> GraphQLError:
    original = error.original_error
    if isinstance(original, ThreadlineError):
        extensions = {"code": original.code.value, **original.extensions}
        return GraphQLError(
            original.message, error.nodes, error.source, error.positions, error.path, None, extensions
        )
    if original is None:
        # Parse and validation errors from graphql-core (unknown fields, bad enum values, ...).
        extensions = dict(error.extensions or {})
        extensions.setdefault("code", ErrorCode.BAD_USER_INPUT.value)
        return GraphQLError(
            error.message, error.nodes, error.source, error.positions, error.path, None, extensions
        )
    if isinstance(original, GraphQLError) and original.original_error is None:
        # Coercion errors of variables and arguments are the client's.
        return GraphQLError(
            error.message,
            error.nodes,
            error.source,
            error.positions,
            error.path,
            None,
            {"code": ErrorCode.BAD_USER_INPUT.value},
        )
    if getattr(original, "sqlstate", None) in _UNSTORABLE_TEXT:
        # PostgreSQL text cannot hold NUL: whichever string field carried it, the input is the client's error
        # (and the statement failed, so nothing was written).
        return GraphQLError(
            "Text must not contain NUL (\\u0000) characters",
            error.nodes,
            error.source,
            error.positions,
            error.path,
            None,
            {"code": ErrorCode.BAD_USER_INPUT.value},
        )
    log.error(
        "internal error (request %s) at %s", request_id, error.path, exc_info=original
    )
    return GraphQLError(
        "Internal server error",
        error.nodes,
        error.source,
        error.positions,
        error.path,
        None,
        {"code": ErrorCode.INTERNAL.value, "requestId": request_id},
    )


class ErrorCodes(SchemaExtension):
    """Gives every error an `extensions.code`; masks internal errors (logged with the request id)."""

    def on_operation(self) -> Iterator[None]:
        yield
        result = self.execution_context.result
        errors = getattr(result, "errors", None)
        if result is not None and errors:
            request_id = _request_id(self)
            result.errors = [format_error(e, request_id) for e in errors]


class SqlStatementCount(SchemaExtension):
    """Adds `extensions.sqlStatements` (this request's SQL statements) when the setting enables it."""

    def get_results(self) -> dict[str, object]:
        cell = getattr(self.execution_context.context, "sql_statements", None)
        return {"sqlStatements": cell[0]} if cell is not None else {}
