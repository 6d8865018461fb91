"""ASGI middleware: a request id per HTTP request or WebSocket (X-Request-Id in and out), counted in metrics."""

from __future__ import annotations

import random
import re
import time

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from threadline.observability import logs
from threadline.observability.metrics import METRICS

_ACCEPTABLE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def request_id_of(scope: Scope) -> str | None:
    state = scope.get("state")
    return state.get("request_id") if isinstance(state, dict) else None


def new_request_id() -> str:
    """16 hex digits, as `uuid.uuid4().hex[:16]` (the 13th is the version, 4), without building a UUID or a
    system call for random bytes (a request's fixed cost: py-spy found the call at ~3% of a `viewer` request).
    An id need not be unpredictable (a client may choose its own); `random` is reseeded in each forked process."""
    digits = f"{random.getrandbits(64):016x}"
    return f"{digits[:12]}4{digits[13:]}"


class RequestIds:
    """Takes the client's X-Request-Id when it is a plain token (else makes one), puts it in the scope state,
    the logging context and the response headers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        given = Headers(scope=scope).get("x-request-id", "")
        rid = given if _ACCEPTABLE_ID.fullmatch(given) else new_request_id()
        scope.setdefault("state", {})["request_id"] = rid
        token = logs.request_id.set(rid)
        outcome: int | str = 500 if scope["type"] == "http" else "closed"
        started = time.perf_counter()
        streamed = False  # a subscription over HTTP (graphql.http_subscriptions): counted apart, like sockets

        async def observed_send(message: Message) -> None:
            nonlocal outcome, streamed
            kind = message["type"]
            if kind == "http.response.start":
                outcome = message["status"]
                response_headers = MutableHeaders(scope=message)
                response_headers["X-Request-Id"] = rid
                streamed = "subscriptionspec" in response_headers.get("content-type", "").lower()
            elif kind == "websocket.accept":
                headers = list(message.get("headers") or [])
                headers.append((b"x-request-id", rid.encode()))
                message = {**message, "headers": headers}
            elif kind == "websocket.close":
                outcome = message.get("code", 1000)
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        finally:
            if streamed:
                # A stream's lifetime is not a request's latency: kept out of the request seconds.
                METRICS.observe_request("multipart", outcome, 0.0)
            elif scope["type"] == "http" and scope.get("path") != "/metrics":
                elapsed = time.perf_counter() - started
                METRICS.observe_request("http", outcome, elapsed)
                operation = scope["state"].get("operation_name")
                if operation is not None:  # a GraphQL request that reached execution
                    METRICS.child(METRICS.request_duration, operation).observe(elapsed)
            elif scope["type"] == "websocket":
                METRICS.observe_request("websocket", outcome, 0.0)
            logs.request_id.reset(token)
