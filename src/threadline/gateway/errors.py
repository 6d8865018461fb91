"""Errors as OpenAI's clients expect them: `{"error": {"message", "type", "param", "code"}}` with the HTTP
status the official SDKs turn into their exception classes (401 AuthenticationError, 404 NotFoundError, ...).

Services raise the project's ThreadlineError; this module is the one place that turns its ErrorCode into an
OpenAI error body. An `openaiCode` / `param` extension names OpenAI's own `code` / `param` when there is one
(`model_not_found`, `context_length_exceeded`).
"""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse

from threadline.errors import UNAVAILABLE_RETRY_AFTER_SECONDS, ErrorCode, ThreadlineError

# ErrorCode -> (HTTP status, OpenAI error type, OpenAI error code when the extension gives none)
_MAPPING: dict[ErrorCode, tuple[int, str, str | None]] = {
    ErrorCode.UNAUTHENTICATED: (401, "invalid_request_error", "invalid_api_key"),
    ErrorCode.FORBIDDEN: (403, "permission_error", "permission_denied"),
    ErrorCode.NOT_FOUND: (404, "invalid_request_error", "not_found"),
    ErrorCode.BAD_USER_INPUT: (400, "invalid_request_error", None),
    ErrorCode.CONFLICT: (409, "invalid_request_error", "conflict"),
    ErrorCode.RATE_LIMITED: (429, "rate_limit_error", "rate_limit_exceeded"),
    ErrorCode.UNAVAILABLE: (503, "server_error", "service_unavailable"),
}


def error_body(message: str, kind: str, code: str | None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def error_response(exc: ThreadlineError) -> JSONResponse:
    status, kind, default_code = _MAPPING.get(exc.code, (500, "server_error", "internal_error"))
    message = exc.message if status != 500 else "The server had an error processing your request"
    code = exc.extensions.get("openaiCode", default_code)
    param = exc.extensions.get("param", exc.extensions.get("argument"))
    response = JSONResponse(error_body(message, kind, code, param), status_code=status)
    retry_after = exc.extensions.get("retryAfter")
    if exc.code is ErrorCode.UNAVAILABLE:
        retry_after = retry_after or UNAVAILABLE_RETRY_AFTER_SECONDS
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


def internal_error() -> JSONResponse:
    return JSONResponse(
        error_body("The server had an error processing your request", "server_error", "internal_error"),
        status_code=500,
    )


def unavailable() -> JSONResponse:
    return error_response(ThreadlineError(ErrorCode.UNAVAILABLE, "The database is unavailable; retry later"))


class UpstreamRefused(Exception):
    """The model's endpoint answered with an error before streaming: its status and OpenAI error object are
    passed on (a 4xx is the caller's request; anything else is a 502 from here)."""

    def __init__(self, status: int, error: dict[str, Any]) -> None:
        super().__init__(error.get("message"))
        self.status = status
        self.error = error

    def response(self) -> JSONResponse:
        return JSONResponse({"error": self.error}, status_code=self.status)
