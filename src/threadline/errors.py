"""The one error type. Services raise it with a code; the GraphQL layer maps it to extensions.code."""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    UNAUTHENTICATED = "UNAUTHENTICATED"
    FORBIDDEN = "FORBIDDEN"
    NOT_FOUND = "NOT_FOUND"
    BAD_USER_INPUT = "BAD_USER_INPUT"
    CONFLICT = "CONFLICT"
    RATE_LIMITED = "RATE_LIMITED"
    INTERNAL = "INTERNAL"
    CURSOR_EXPIRED = "CURSOR_EXPIRED"
    SLOW_CONSUMER = "SLOW_CONSUMER"
    UNAVAILABLE = "UNAVAILABLE"
    PERSISTED_QUERY_NOT_FOUND = "PERSISTED_QUERY_NOT_FOUND"
    CONTENT_UNAVAILABLE = "CONTENT_UNAVAILABLE"


# What `extensions.retryAfter` (and the Retry-After header) of an UNAVAILABLE answer says: a PostgreSQL
# restart or failover typically takes a few seconds.
UNAVAILABLE_RETRY_AFTER_SECONDS = 5


class ThreadlineError(Exception):
    def __init__(self, code: ErrorCode, message: str, **extensions: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.extensions = extensions


def not_found(kind: str) -> ThreadlineError:
    """Unknown, another tenant's, or invisible to the caller: all look the same from outside."""
    return ThreadlineError(ErrorCode.NOT_FOUND, f"{kind} not found")


def bad_input(message: str, **extensions: Any) -> ThreadlineError:
    return ThreadlineError(ErrorCode.BAD_USER_INPUT, message, **extensions)


def content_unavailable(message: str) -> ThreadlineError:
    return ThreadlineError(ErrorCode.CONTENT_UNAVAILABLE, message)


def forbidden(message: str) -> ThreadlineError:
    return ThreadlineError(ErrorCode.FORBIDDEN, message)


def conflict(message: str) -> ThreadlineError:
    return ThreadlineError(ErrorCode.CONFLICT, message)
