"""Subscriptions over HTTP, for networks and proxies that block WebSockets: the multipart subscription
protocol that Apollo Client and urql speak (Apollo's "multipart HTTP protocol for GraphQL subscriptions").

A client sends the subscription as an ordinary POST (or GET) with
`Accept: multipart/mixed;subscriptionSpec="1.0", application/json`. strawberry's view answers
`multipart/mixed;boundary=graphql;subscriptionSpec=1.0` and writes each result as a part `{"payload": ...}`,
a `{}` part as a heartbeat at once and every 5 seconds (the spec's keep-alive: proxies keep an idle stream),
and the closing boundary when the subscription ends. The resolvers are those a WebSocket runs
(streaming.schema), so `since` resume, the subscription rate-limit draw, the query limits and the metrics are
the same; a refusal once the stream has started (RATE_LIMITED, CURSOR_EXPIRED, NOT_FOUND) is a part whose
payload carries the error, then the closing boundary.

What the WebSocket path does around the resolvers is done here:

- Authentication from the Authorization header, before any stream starts: a caller who is not
  authenticated gets 401 with the error body (and `WWW-Authenticate: Bearer`), never a stream.
- Credentials are live (ARCHITECTURE.md, Trust): each open stream is registered in the hub's sessions
  (streaming.sessions) exactly like a socket, so a revoked key, an erased user or a changed role reaches it
  in every process. A stream whose credential no longer holds ends with a last part carrying the error as a
  transport error (`{"payload": null, "errors": [...]}`, UNAUTHENTICATED, or UNAVAILABLE when the credential
  could not be checked), then the closing boundary. A JWT's stream ends at the token's expiry the same way.
- Bounded: a socket runs at most THREADLINE_WS_MAX_OPERATIONS subscriptions, and one user holds at most as
  many open HTTP streams in a process (each holds a subscriber queue and a connection); one more is
  RATE_LIMITED (429, `limit`, `retryAfter`) before it streams, or a last error part if it raced another.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Callable
from typing import Any

from graphql import GraphQLError
from starlette.requests import Request
from starlette.responses import Response
from strawberry.http.streaming import MultipartSubscriptionTransport
from strawberry.subscriptions import MULTIPART_SUBSCRIPTION_PROTOCOL
from strawberry.types import ExecutionResult

from threadline.auth.tokens import token_expiry
from threadline.errors import ErrorCode, ThreadlineError
from threadline.graphql.context import Context
from threadline.streaming.sessions import REVOKED_CLOSE_CODE, SocketSession, SocketSessions

PROTOCOL = MULTIPART_SUBSCRIPTION_PROTOCOL
_CONTEXT_KEY = "threadline.http_subscription_context"
EXPIRED_CLOSE_CODE = 4401  # as for a socket whose token expires (graphql.view.close_at_expiry)
# Proxies must neither cache nor buffer a stream (nginx buffers unless told).
STREAM_HEADERS = {"Cache-Control": "no-cache, no-transform", "X-Accel-Buffering": "no"}

TextStream = Callable[[], AsyncGenerator[str, None]]
Encode = Callable[[object], str]


def _check_open_streams(sessions: SocketSessions, user_id: Any, max_streams: int) -> None:
    """RATE_LIMITED when the user already holds `max_streams` open HTTP subscription streams here."""
    open_streams = sum(1 for s in sessions.of_user(user_id) if isinstance(s.websocket, StreamEnd))
    if open_streams >= max_streams:
        raise ThreadlineError(
            ErrorCode.RATE_LIMITED,
            f"You have {open_streams} open subscription streams; the limit is {max_streams}. "
            "End one, or run several subscriptions over one WebSocket.",
            retryAfter=1,
            limit=max_streams,
        )


async def authenticate(
    context: Context, request: Request, sub_response: Response, sessions: SocketSessions, max_streams: int
) -> ExecutionResult | None:
    """Before a multipart subscription streams: None when the caller is authenticated and within the open
    streams cap (the context is kept for `guarded`); otherwise the refusal, answered as an ordinary response
    (401, 429, or 400)."""
    try:
        principal = await context.principal()
        _check_open_streams(sessions, principal.user_id, max_streams)
    except ThreadlineError as exc:
        statuses = {ErrorCode.UNAUTHENTICATED: 401, ErrorCode.RATE_LIMITED: 429}
        sub_response.status_code = statuses.get(exc.code, 400)
        if exc.code is ErrorCode.RATE_LIMITED:
            sub_response.headers["Retry-After"] = "1"
        error = GraphQLError(
            exc.message, extensions={"code": exc.code.value, **exc.extensions}, original_error=exc
        )
        return ExecutionResult(data=None, errors=[error])
    request.scope.setdefault("state", {})[_CONTEXT_KEY] = context
    return None


def stream_context(request: Any) -> Context | None:
    """The context of an authenticated multipart subscription (set by `authenticate`), else None."""
    state = getattr(request, "scope", {}).get("state") or {}
    context = state.get(_CONTEXT_KEY)
    return context if isinstance(context, Context) else None


class StreamEnd:
    """What streaming.sessions closes for an HTTP stream (a socket's `close(code, reason)`): it ends the stream."""

    def __init__(self) -> None:
        self.closed = asyncio.Event()
        self.code = 0
        self.reason = ""

    async def close(self, code: int, reason: str) -> None:
        if not self.closed.is_set():
            self.code, self.reason = code, reason
            self.closed.set()

    def error(self) -> dict[str, Any]:
        denied = self.code in (REVOKED_CLOSE_CODE, EXPIRED_CLOSE_CODE)
        code = ErrorCode.UNAUTHENTICATED if denied else ErrorCode.UNAVAILABLE
        return {"message": f"The stream ended: {self.reason}", "extensions": {"code": code.value}}


def guarded(
    stream: TextStream, context: Context, sessions: SocketSessions, encode: Encode, max_streams: int
) -> TextStream:
    """`stream` (strawberry's multipart chunks, heartbeats included) registered as a live session while it
    runs, and cut short with a transport error when its credential stops holding or its token expires."""
    transport = MultipartSubscriptionTransport()

    async def run() -> AsyncGenerator[str, None]:
        principal = await context.principal()  # cached by `authenticate`
        end = StreamEnd()
        session = SocketSession(context, end, principal.tenant_id, principal.user_id)
        chunks = stream()
        try:
            # Checked again with no await before `add`: streams started together all passed `authenticate`.
            _check_open_streams(sessions, principal.user_id, max_streams)
        except ThreadlineError as exc:
            error = {"message": exc.message, "extensions": {"code": exc.code.value, **exc.extensions}}
            yield transport.encode_multipart_data({"payload": None, "errors": [error]}, encode)
            yield transport.encode_complete()
            await chunks.aclose()
            return
        sessions.add(session)
        expiry = _close_at_expiry(end, context.authorization)
        try:
            # Registered before authenticating once more (as a socket, graphql.view.on_ws_connect): a revocation
            # committed after this check reaches the stream through the hub; one committed before fails it.
            if await session.recheck():
                async for chunk in _until(chunks, end.closed):
                    yield chunk
            if end.closed.is_set():
                yield transport.encode_multipart_data({"payload": None, "errors": [end.error()]}, encode)
                yield transport.encode_complete()
        finally:
            sessions.remove(session)
            if expiry is not None:
                expiry.cancel()
            await chunks.aclose()  # ends the subscription (the hub forgets it) when cut short

    return run


async def _until(chunks: AsyncGenerator[str, None], closed: asyncio.Event) -> AsyncGenerator[str, None]:
    """The chunks until the stream ends by itself or `closed` is set (then at once, even while it waits)."""
    closing = asyncio.ensure_future(closed.wait())
    step: asyncio.Future[str] | None = None
    try:
        while not closed.is_set():
            step = asyncio.ensure_future(anext(chunks))
            await asyncio.wait((step, closing), return_when=asyncio.FIRST_COMPLETED)
            if not step.done():
                return  # closed: the pending step is cancelled below
            try:
                chunk = step.result()
            except StopAsyncIteration:
                return
            yield chunk
    finally:
        closing.cancel()
        if step is not None and not step.done():
            # Also when the client went away meanwhile: the generator must not be running when it is closed.
            step.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await step


def _close_at_expiry(end: StreamEnd, authorization: str | None) -> asyncio.Task[None] | None:
    expires = token_expiry(authorization)
    if expires is None:
        return None

    async def wait() -> None:
        await asyncio.sleep(max(expires - time.time(), 0))
        await end.close(EXPIRED_CLOSE_CODE, "token expired")

    return asyncio.create_task(wait(), name="threadline-http-stream-token-expiry")
