"""The thin strawberry GraphQL app: context creation, transport errors as GraphQL errors, WS auth."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import json
import sys
import time
from collections.abc import AsyncGenerator
from datetime import timedelta
from json import JSONDecodeError
from typing import Any, cast

import orjson
from cross_web import HTTPException
from graphql import GraphQLError
from graphql.execution.execute import map_source_to_response_event
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Message, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState
from strawberry.asgi import ASGIWebSocketAdapter, GraphQL
from strawberry.extensions import SchemaExtension
from strawberry.http.exceptions import NonJsonMessageReceived, NonTextMessageReceived
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
    Operation,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import ConnectionInitMessage, ErrorMessage
from strawberry.subscriptions.protocols.graphql_transport_ws.types import Message as WsMessage
from strawberry.types.execution import ExecutionResult

from threadline.auth.tokens import token_expiry
from threadline.db import count_request_statements
from threadline.db.database import database_unavailable
from threadline.errors import UNAVAILABLE_RETRY_AFTER_SECONDS, ErrorCode, ThreadlineError
from threadline.graphql import batching, graphiql, http_subscriptions, over_http, persisted, request_json
from threadline.graphql.base_schema import ThreadlineSchema
from threadline.graphql.context import Context
from threadline.graphql.errors import SqlStatementCount, format_error
from threadline.graphql.socket_auth import (
    TOO_MANY_CLOSE_CODE,
    PendingSockets,
    SocketRefused,
    check_open_sockets,
    connection_authorization,
)
from threadline.ratelimits import addresses
from threadline.ratelimits import service as ratelimits
from threadline.streaming.fanout import SUBSCRIPTION_EXECUTOR
from threadline.streaming.schema import SETTLED, Parked, finish, live
from threadline.streaming.sessions import SocketSession
from threadline.streaming.subscriber import Subscriber
from threadline.streaming.transport import enter_operation, share_keepalive


def error_response(
    message: str, code: ErrorCode, status: int, request_id: str | None = None, **extensions: Any
) -> JSONResponse:
    """A refusal before any GraphQL work: no `data` entry (nothing executed), in the negotiated media type."""
    if request_id:
        extensions["requestId"] = request_id
    return JSONResponse(
        {"errors": [{"message": message, "extensions": {"code": code.value, **extensions}}]},
        status_code=status,
        media_type=over_http.content_type(),
        headers={"Vary": "Accept"},
    )


def unavailable_response(message: str, request_id: str | None) -> JSONResponse:
    """503 UNAVAILABLE with retryAfter (and Retry-After): the database is down, or the server is stopping."""
    response = error_response(
        message, ErrorCode.UNAVAILABLE, 503, request_id, retryAfter=UNAVAILABLE_RETRY_AFTER_SECONDS
    )
    response.headers["Retry-After"] = str(UNAVAILABLE_RETRY_AFTER_SECONDS)
    return response


def response_too_large(limit: int, actual: int) -> dict[str, Any]:
    message = f"The response would be {actual} bytes; the limit is {limit} (ask for less, or page through it)"
    extensions = {
        "code": ErrorCode.BAD_USER_INPUT.value,
        "limitName": "responseBytes",
        "limit": limit,
        "actual": actual,
    }
    return {"data": None, "errors": [{"message": message, "extensions": extensions}]}


class BodyTooLarge(Exception):
    pass


def body_too_large(limit: int, request_id: str | None) -> JSONResponse:
    return error_response(
        f"The request body is larger than {limit} bytes (the limit)",
        ErrorCode.BAD_USER_INPUT,
        413,
        request_id,
        limitName="requestBytes",
        limit=limit,
    )


def json_too_deep(request_id: str | None) -> JSONResponse:
    return error_response(
        f"The request's JSON is nested deeper than {request_json.JSON_MAX_DEPTH} levels (the limit)",
        ErrorCode.BAD_USER_INPUT,
        400,
        request_id,
        limitName="jsonDepth",
        limit=request_json.JSON_MAX_DEPTH,
    )


def over_limit(declared: str, limit: int) -> bool:
    """Whether a Content-Length of digits says more than `limit` bytes. The server takes thousands of leading
    zeros, and `int()` refuses more than 4,300 digits (it raised here: a 500 outside the app's error handling)."""
    significant = declared.lstrip("0")
    return len(significant) > 18 or int(significant or "0") > limit


def body_size_guard(receive: Receive, limit: int) -> Receive:
    """`receive` that stops a body (chunked, or longer than its Content-Length says) past `limit` bytes."""
    seen = 0

    async def guarded() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge
        return message

    return guarded


GUARD_KEY = "threadline.ws_guard"
PENDING_KEY = (
    "threadline.ws_pending"  # the address a socket not authenticated yet is counted by (PendingSockets)
)


class MessageSizeGuard:
    """Closes a WebSocket with 1009 (message too big) on a message over `limit` bytes, whatever the server's
    own frame limit (uvicorn's ws_max_size is set from the same setting by `threadline serve`); drops sends
    once the socket is closed. One per socket, for its life: slots, not closures (idle sockets' memory)."""

    __slots__ = ("_send", "closed", "limit", "server_receive")

    def __init__(self, receive: Receive, send: Send, limit: int) -> None:
        self.server_receive = receive  # the server's own (LeanWebSocketAdapter waits on it directly)
        self._send = send
        self.limit = limit
        self.closed = False

    async def receive(self) -> Message:
        return await self.checked(await self.server_receive())

    async def checked(self, message: Message) -> Message:
        """`message` as `receive` returns it: a message over the limit closes the socket (a disconnect)."""
        if message["type"] == "websocket.disconnect":
            self.closed = True
        elif message["type"] == "websocket.receive":
            text = message.get("text")
            size = len(text.encode()) if text is not None else len(message.get("bytes") or b"")
            if size > self.limit:
                self.closed = True
                await self._send(
                    {"type": "websocket.close", "code": 1009, "reason": f"message over {self.limit} bytes"}
                )
                return {"type": "websocket.disconnect", "code": 1009}
        return message

    async def send(self, message: Message) -> None:
        if self.closed:
            # The socket is closing or gone; subscriptions still winding down would make the server raise
            # "websocket.send after websocket.close" for every event in flight.
            return
        if message["type"] == "websocket.close":
            self.closed = True
        try:
            await self._send(message)
        except (RuntimeError, OSError):
            # The peer went away while events were in flight (uvicorn: ClientDisconnected, or "send after
            # close" once it answered the client's close frame). The receive side ends the operations; a
            # frame for a gone peer is dropped here instead of failing (and logging) every operation.
            if message["type"] != "websocket.send":
                raise
            self.closed = True


_PLAIN_STREAMS: dict[int, bool] = {}


def streams_plainly(schema: Any) -> bool:
    """Whether strawberry's `stream` sends a subscription's results as `TransportWSHandler.run_parked` does: the
    schema is ThreadlineSchema (its `stream` only formats errors) and no extension adds to a socket's stream
    results (no `on_stream_result`; `get_results` only SqlStatementCount's, empty on a socket: direct lanes
    refuse a context that counts statements). Otherwise subscriptions never park."""
    known = _PLAIN_STREAMS.get(id(schema))
    if known is None:
        extensions: list[type[SchemaExtension]] = [
            e if isinstance(e, type) else type(e) for e in getattr(schema, "extensions", ())
        ]
        known = _PLAIN_STREAMS[id(schema)] = type(schema).stream is ThreadlineSchema.stream and all(
            e.on_stream_result is SchemaExtension.on_stream_result
            and (e.get_results is SchemaExtension.get_results or e is SqlStatementCount)
            for e in extensions
        )
    return known


SETUPS_AT_ONCE = 64
SETUP_SLOT_SECONDS = 5.0
_SETUP_GATES: dict[asyncio.AbstractEventLoop, asyncio.Semaphore] = {}


def _setup_gate() -> asyncio.Semaphore:
    loop = asyncio.get_running_loop()
    gate = _SETUP_GATES.get(loop)
    if gate is None:
        for old in [k for k in _SETUP_GATES if k.is_closed()]:
            del _SETUP_GATES[old]
        gate = _SETUP_GATES[loop] = asyncio.Semaphore(SETUPS_AT_ONCE)
    return gate


class TransportWSHandler(BaseGraphQLTransportWSHandler[Context, None]):
    """strawberry's graphql-transport-ws handler; each operation's task knows its operation (for the
    subscription's direct lane: streaming.transport, streaming.direct).

    Parked subscriptions (idle sockets' memory, bench/RESULTS.md): once a subscription is idle and its lane takes
    its events, its stream parks (streaming.schema `Parked`): the operation's task and everything strawberry and
    graphql-core built for it are freed, and the operation stays in `operations` (duplicate ids, the operation
    limit, `complete` act as before) with its subscriber in `parked`. When the subscriber wakes (an event its
    lane declines, an overflow, its end), `run_parked` runs the rest of the stream in a new task: graphql-core's
    own per-event mapping with the subscription's executor, errors formatted as ThreadlineSchema does, and
    strawberry's `Operation` sending `next`, `complete` (tests/test_streaming_direct.py compares its frames with
    a socket that never parks)."""

    parked: dict[str, Subscriber] | None = None  # per socket, made on its first park

    def on_request_accepted(self) -> None:
        super().on_request_accepted()
        share_keepalive(self.context.request)  # one timer a second for every socket's pings (Keepalive)

    async def run_operation(self, operation: Operation[Context, None]) -> None:
        enter_operation(operation)  # this task's own context
        # At most SETUPS_AT_ONCE operations per process are being set up at a time (until a subscription's
        # stream first idles, or the operation ends): a burst of thousands of sockets subscribing at once would
        # otherwise hold every one's transient objects together, and their memory, freed later, stays behind as
        # holes in the allocator's pools (bench/RESULTS.md, "Idle sockets").
        # A slot is held SETUP_SLOT_SECONDS at most: a stream stuck before its first idle point (a replay to a
        # client that does not read) must not keep others from starting.
        gate = _setup_gate()
        await gate.acquire()
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                timer.cancel()
                gate.release()

        timer = asyncio.get_running_loop().call_later(SETUP_SLOT_SECONDS, release)

        SETTLED.set(release)
        try:
            # Each operation authenticates again: a socket never runs one under a principal cached at connect
            # (credentials are live; streaming.sessions closes the socket when they stop holding).
            self.context.forget_principal()
            self.context.forget_loaders()  # nor with what an earlier operation on the socket loaded
            with contextlib.suppress(Parked):
                await super().run_operation(operation)
        finally:
            release()

    def park(self, operation: Operation[Context, None], sub: Subscriber) -> bool:
        """Called by a subscription's stream at an idle point (streaming.transport `DirectSocket.park`, in the
        operation's task): True when the stream may end its task, to go on in `run_parked` when `sub` wakes."""
        if self.operations.get(operation.id) is not operation or not streams_plainly(self.schema):
            return False
        parked = self.parked
        if parked is None:
            parked = self.parked = {}
        parked[operation.id] = sub
        operation.task = None  # the task ends now (the subscription lives on in the hub)
        if sub.lane is not None:
            sub.lane.share_executor()
        SUBSCRIPTION_EXECUTOR.set(None)  # its next task uses the lane's executor (Lane.own_executor)
        SETTLED.set(None)
        # The task's context variables (the socket's read scope, its request id) for the stream's next task.
        sub.resume = functools.partial(self._resume, operation, sub, contextvars.copy_context())
        return True

    def _resume(
        self, operation: Operation[Context, None], sub: Subscriber, context: contextvars.Context
    ) -> None:
        # Synchronous (the hub's routing pass wakes the subscriber): the operation has a task again at once.
        if self.parked is None or self.parked.pop(operation.id, None) is not sub:
            return  # completed or closed meanwhile (cleanup_operation finished it)
        task = asyncio.create_task(self.run_parked(operation, sub), context=context.copy())
        operation.task = task
        task.add_done_callback(self._task_done)

    async def run_parked(self, operation: Operation[Context, None], sub: Subscriber) -> None:
        """The stream of a parked subscription from where it parked, until it parks again or ends. What strawberry's
        `run_operation` and `Schema.stream` do for each result, without their per-operation objects."""
        enter_operation(operation)
        lane = sub.lane
        assert lane is not None
        request_id = getattr(self.context, "request_id", None)
        try:
            try:
                results = map_source_to_response_event(lane.own_executor(), live(self.context, sub))
                async with contextlib.aclosing(results):
                    async for result in results:
                        await operation.send_next(_stream_result(result.data, result.errors, request_id))
            except Parked:
                return
            except Exception as exc:  # as strawberry's Schema.stream: the error as the stream's last result
                error = exc if isinstance(exc, GraphQLError) else GraphQLError(str(exc), original_error=exc)
                await operation.send_next(_stream_result(None, [error], request_id))
            await operation.send_operation_message({"id": operation.id, "type": "complete"})
        except Exception as error:  # as strawberry's run_operation
            await self.handle_task_exception(error)
            with contextlib.suppress(Exception):
                await operation.send_operation_message({"id": operation.id, "type": "complete"})
            self.operations.pop(operation.id, None)
            raise

    async def cleanup_operation(self, operation_id: str) -> None:
        sub = self.parked.pop(operation_id, None) if self.parked else None
        if sub is None:
            await super().cleanup_operation(operation_id)
            return
        # A parked subscription has no task to cancel: it ends here (`complete`, or its socket closed).
        self.operations.pop(operation_id, None)
        finish(self.context, sub)

    async def handle_message(self, message: WsMessage) -> None:
        payload = message.get("payload") if isinstance(message, dict) else None
        if isinstance(payload, dict) and type(payload.get("query")) is str:
            # The operation keeps its query text as long as it runs: sockets sending the same one share it.
            payload["query"] = sys.intern(payload["query"])
        try:
            await self._handle_message(message)
        finally:
            if isinstance(message, dict):
                # strawberry's reader loop holds the message until the next one comes (for an idle socket,
                # indefinitely): what the operation needs of it, it has taken.
                cast("dict[str, Any]", message).clear()

    async def _handle_message(self, message: WsMessage) -> None:
        # A lone surrogate cannot be stored or sent as UTF-8: an operation carrying one fails alone
        # (BAD_USER_INPUT), any other message closes the socket (4400) like any malformed message.
        if not request_json.holds_lone_surrogate(message):
            await super().handle_message(message)
            return
        fields: dict[str, Any] = dict(message) if isinstance(message, dict) else {}
        op_id = fields.get("id")
        if (
            fields.get("type") != "subscribe"
            or not isinstance(op_id, str)
            or not self.connection_acknowledged
        ):
            await self.handle_invalid_message(request_json.LONE_SURROGATE_MESSAGE)
            return
        extensions: dict[str, Any] = {"code": ErrorCode.BAD_USER_INPUT.value}
        request_id = getattr(self.context, "request_id", None)
        if request_id:
            extensions["requestId"] = request_id
        refusal: ErrorMessage = {
            "id": op_id,
            "type": "error",
            "payload": [{"message": request_json.LONE_SURROGATE_MESSAGE, "extensions": extensions}],
        }
        await self.send_message(refusal)

    async def handle_invalid_message(self, error_message: str) -> None:
        # Called while strawberry handles NonJsonMessageReceived: a message refused for its depth says so.
        cause = getattr(sys.exc_info()[1], "__cause__", None)
        if isinstance(cause, request_json.JsonTooDeep):
            error_message = cause.msg
        await super().handle_invalid_message(error_message)

    async def handle_connection_init(self, message: ConnectionInitMessage) -> None:
        try:
            await super().handle_connection_init(message)
        except SocketRefused as exc:
            await self.websocket.close(code=exc.code, reason=exc.reason)
        except Exception as exc:
            if not database_unavailable(exc):
                raise
            # Authentication needs the database: 1013 (try again later) tells the client to come back,
            # where an unhandled error would drop the socket without a reason.
            await self.websocket.close(code=1013, reason="database unavailable; retry later")


class LeanWebSocketAdapter(ASGIWebSocketAdapter):
    """strawberry's ASGI WebSocket adapter, whose `iter_json` does not keep the last message's text while it waits
    for the next (an idle socket's last message is its `subscribe`), and, behind our `MessageSizeGuard`, waits on
    the server's `receive` through one coroutine of its own where starlette's `receive_text` and `receive` and the
    guard's `receive` were three: two fewer suspended on every idle socket, for the same checks (`_receive_text`)."""

    async def iter_json(self, *, ignore_parsing_errors: bool = False) -> AsyncGenerator[object, None]:
        ws = self.ws
        guard = ws.scope.get("state", {}).get(GUARD_KEY)
        receive_text = self._receive_text if type(guard) is MessageSizeGuard else ws.receive_text
        try:
            while ws.application_state != WebSocketState.DISCONNECTED:
                try:
                    message = self.view.decode_json(await receive_text())
                except JSONDecodeError as e:
                    if not ignore_parsing_errors:
                        raise NonJsonMessageReceived from e
                    continue
                yield message
                del message
        except KeyError as e:
            raise NonTextMessageReceived from e
        except WebSocketDisconnect:
            pass

    def _receive_text(self) -> Any:
        """starlette's `WebSocket.receive_text` on a connected socket behind our `MessageSizeGuard`, in one
        coroutine less deep: the same state checks and transitions, the guard's check on the message."""
        ws = self.ws
        if ws.application_state != WebSocketState.CONNECTED or ws.client_state != WebSocketState.CONNECTED:
            return ws.receive_text()  # starlette's own errors and transitions
        guard: MessageSizeGuard = ws.scope["state"][GUARD_KEY]
        return _guarded_text(ws, guard, guard.server_receive())


async def _guarded_text(ws: WebSocket, guard: MessageSizeGuard, received: Any) -> str:
    message = await guard.checked(await received)
    kind = message["type"]
    if kind == "websocket.disconnect":
        ws.client_state = WebSocketState.DISCONNECTED
        raise WebSocketDisconnect(message["code"], message.get("reason"))
    if kind != "websocket.receive":
        raise RuntimeError(
            f'Expected ASGI message "websocket.receive" or "websocket.disconnect", but got {kind!r}'
        )
    return cast(str, message["text"])


class ThreadlineGraphQL(GraphQL[Context, None]):
    graphql_transport_ws_handler_class = TransportWSHandler
    websocket_adapter_class = LeanWebSocketAdapter

    def __init__(self, schema: Any, services: Any, *, graphiql: bool) -> None:
        super().__init__(
            schema,
            graphql_ide="graphiql" if graphiql else None,
            # Only graphql-transport-ws: the legacy graphql-ws protocol had an auth bypass. Over HTTP, the
            # multipart subscription protocol (graphql.http_subscriptions).
            subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL, http_subscriptions.PROTOCOL),
            keep_alive=True,
            keep_alive_interval=15,
            connection_init_wait_timeout=timedelta(seconds=services.settings.ws_init_timeout_seconds),
            max_subscriptions_per_connection=services.settings.ws_max_operations,
            # Browsers' cross-origin handshakes are refused (HTTP 403) unless listed; clients without an Origin
            # header (not browsers) and same-origin pages are always accepted.
            allowed_origins=services.settings.ws_allowed_origins,
        )
        self.services = services
        self.pending_sockets = PendingSockets()  # sockets not authenticated yet, per address

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        settings = self.services.settings
        if scope["type"] != "http":
            guard = MessageSizeGuard(receive, send, settings.ws_max_message_bytes)
            receive, send = guard.receive, guard.send
            scope.setdefault("state", {})[GUARD_KEY] = guard  # the socket's receive (LeanWebSocketAdapter)
            pending = None
            if scope["type"] == "websocket":
                pending = addresses.counted(WebSocket(scope, receive=receive, send=send))
                if not self.pending_sockets.enter(pending, settings.ws_max_sockets_per_user):
                    await receive()  # websocket.connect
                    await send({"type": "websocket.close", "code": 1008})  # before accept: HTTP 403
                    return
                scope.setdefault("state", {})[PENDING_KEY] = pending
            try:
                if scope["type"] == "websocket":
                    # What strawberry's __call__ does for a socket, one coroutine less deep for its whole life.
                    await self.run(WebSocket(scope, receive=receive, send=send))
                else:
                    await super().__call__(scope, receive, send)
            finally:
                if scope.get("state", {}).pop(PENDING_KEY, None) is not None:
                    assert pending is not None
                    self.pending_sockets.leave(pending)
                expiry = scope.get("state", {}).get("token_expiry")
                if expiry is not None:
                    expiry.cancel()
                session = scope.get("state", {}).get("live_session")
                if session is not None:
                    self.services.hub.sessions.remove(session)
            return
        limit = settings.request_max_bytes
        request_id = scope.get("state", {}).get("request_id")  # set by observability.RequestIds
        headers = Headers(scope=scope)
        media_type = over_http.negotiate(headers.get("accept"))
        over_http.use(media_type or over_http.APPLICATION_JSON)
        declared = headers.get("content-length", "")
        if declared.isdigit() and over_limit(declared, limit):
            await body_too_large(limit, request_id)(scope, receive, send)
            return
        request = Request(scope=scope, receive=body_size_guard(receive, limit))
        refusal = self.refuse_media_types(request, media_type, request_id)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        try:
            response = await self.run(request)
        except HTTPException as exc:
            code = ErrorCode.NOT_FOUND if exc.status_code == 404 else ErrorCode.BAD_USER_INPUT
            status = over_http.refusal_status(exc, exc.status_code)
            response = error_response(exc.reason, code, status, request_id, **batching.error_extensions(exc))
            if isinstance(exc.__cause__, request_json.JsonTooDeep):  # strawberry wraps JSONDecodeErrors
                response = json_too_deep(request_id)
            elif over_http.is_mutation_over_get(exc, request.method):
                response.status_code = 405  # GraphQL over HTTP: MUST, and say which method works
                response.headers["Allow"] = "POST"
        except BodyTooLarge:
            response = body_too_large(limit, request_id)
        except request_json.JsonTooDeep:
            response = json_too_deep(request_id)
        except asyncio.CancelledError:
            # uvicorn cancels the requests still running when the shutdown grace ends; they get the same JSON
            # answer as an outage instead of uvicorn's plain-text 500.
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            response = unavailable_response("The server is shutting down; retry later", request_id)
        except Exception as exc:
            if not database_unavailable(exc):
                raise
            response = unavailable_response("The database is unavailable; retry later", request_id)
        await response(scope, receive, send)

    def refuse_media_types(
        self, request: Request, media_type: str | None, request_id: str | None
    ) -> Response | None:
        """406 for an Accept header that admits no JSON type (a GraphiQL visit or a streaming transport
        negotiates elsewhere); 415 for a POST body that is not application/json."""
        accept = request.headers.get("accept")
        visit = self.should_render_graphql_ide(self.request_adapter_class(request))
        if media_type is None and not visit and not over_http.streams(accept):
            message = f"Not acceptable: responses are {over_http.GRAPHQL_RESPONSE_JSON} or {over_http.APPLICATION_JSON}"
            return error_response(message, ErrorCode.BAD_USER_INPUT, 406, request_id)
        if request.method == "POST" and not over_http.is_json_body(request.headers.get("content-type")):
            message = f"Unsupported Content-Type: send the request as {over_http.APPLICATION_JSON}"
            return error_response(message, ErrorCode.BAD_USER_INPUT, 415, request_id)
        return None

    async def process_result(self, request: Request, result: Any) -> Any:
        body = await super().process_result(request, result)
        if over_http.is_request_error(result.data, result.errors):
            body.pop("data", None)
        return body

    def create_response(self, response_data: Any, sub_response: Response) -> Response:
        response = super().create_response(response_data, sub_response)
        response.headers["content-type"] = over_http.content_type()
        response.headers.add_vary_header("Accept")  # the media type follows it: caches must key on it (GET)
        if isinstance(
            response_data, dict
        ):  # a batch's status was merged from its operations' (graphql.batching)
            response.status_code = over_http.result_status(response_data, sub_response.status_code)
        if response.status_code == 401:
            response.headers["WWW-Authenticate"] = "Bearer"
        return response

    def _validate_batch_request(self, request_data: list[Any], protocol: Any) -> None:
        # strawberry's check reads the schema's batching_config; ours reads THREADLINE_BATCH_MAX.
        batching.check(request_data, self.services.settings.batch_max)
        transport = self._get_stream_transport(protocol)
        if transport is not None:
            raise HTTPException(400, transport.batching_error)

    async def execute_operation(  # noqa: PLR0917 - strawberry's signature
        self,
        request: Request,
        request_adapter: Any,
        request_data: Any,
        context: Context,
        root_value: None,
        sub_response: Response,
    ) -> Any:
        if isinstance(request_data, list):
            return await batching.execute(
                self, request, request_adapter, request_data, root_value, sub_response
            )
        if request_data.protocol == http_subscriptions.PROTOCOL:
            # A multipart subscription authenticates before it streams (401, not a stream of one error).
            refusal = await http_subscriptions.authenticate(
                context,
                request,
                sub_response,
                self.services.hub.sessions,
                self.services.settings.ws_max_operations,
            )
            if refusal is not None:
                return refusal
        return await super().execute_operation(
            request, request_adapter, request_data, context, root_value, sub_response
        )

    async def create_streaming_response(
        self, request: Request | WebSocket, stream: Any, sub_response: Response, headers: Any
    ) -> Response:
        context = http_subscriptions.stream_context(request)
        if context is not None:  # a multipart subscription: live credentials, as a socket's
            stream = http_subscriptions.guarded(
                stream,
                context,
                self.services.hub.sessions,
                self.encode_json_string,
                self.services.settings.ws_max_operations,
            )
            headers = {**headers, **http_subscriptions.STREAM_HEADERS}
        return await super().create_streaming_response(request, stream, sub_response, headers)

    def encode_json(self, data: object) -> str:
        if isinstance(data, list):
            return self._encode_batch(data)
        return self._encode_one(data)

    def _encode_batch(self, results: list[Any]) -> str:
        # A batch's response is bounded as a whole, not at THREADLINE_BATCH_MAX times the limit: each result
        # gets the single-operation backstop, and once the batch's bytes pass the limit, the results after
        # that are the responseBytes refusal (their operations ran; resend them alone or ask for less).
        limit = self.services.settings.response_max_bytes
        parts: list[str] = []
        total = 2
        for result in results:
            part = self._encode_one(result)
            total += len(part) + 1
            if total > limit:
                part = orjson.dumps(response_too_large(limit, total)).decode()
            parts.append(part)
        return "[" + ",".join(parts) + "]"

    def _encode_one(self, data: object) -> str:
        # orjson is ~8x faster than json.dumps on big results (a 10,000-node threadTree is ~7 MB); str, not
        # bytes, so WebSocket messages stay text frames. Non-ASCII is sent as UTF-8 rather than \u escapes.
        try:
            encoded = orjson.dumps(data).decode()
        except TypeError:  # values orjson rejects (ints beyond 64 bits, ...) that json may still encode
            encoded = json.dumps(data, separators=(",", ":"))
        limit = self.services.settings.response_max_bytes
        if len(encoded) > limit and isinstance(data, dict):
            # The operation's output budget (graphql.budget) estimates as it resolves; this is the backstop
            # for what it cannot see. A WebSocket `next` keeps its envelope, with the error as its payload.
            refusal = response_too_large(limit, len(encoded))
            encoded = orjson.dumps({**data, "payload": refusal} if "payload" in data else refusal).decode()
        return encoded

    def parse_json(self, data: str | bytes) -> Any:
        # HTTP only (WebSocket messages go through decode_json). Strawberry expects an object (or a list,
        # for batches): any other JSON value, or bytes that are not text, would fail deep inside it as a
        # 500. They are the client's error.
        try:
            value = self.decode_json(data)
        except request_json.JsonTooDeep:
            raise
        except (ValueError, UnicodeDecodeError) as exc:
            raise HTTPException(400, "Unable to parse request body as JSON") from exc
        if not isinstance(value, dict | list):
            raise HTTPException(400, "A GraphQL request must be a JSON object")
        if request_json.may_hold_lone_surrogate(data) and request_json.holds_lone_surrogate(value):
            raise HTTPException(400, request_json.LONE_SURROGATE_MESSAGE)
        return value

    async def render_graphql_ide(self, request: Request) -> Response:
        # Our page: its assets come from the package, not a CDN, and it asks for the key (graphql.graphiql).
        return graphiql.page_response(request.url.path)

    def should_render_graphql_ide(self, request: Any) -> bool:
        # A GET naming a persisted document (hash or id, no query text) is an operation, not a GraphiQL visit.
        params = request.query_params
        return (
            super().should_render_graphql_ide(request)
            and "extensions" not in params
            and "documentId" not in params
        )

    async def parse_http_body(self, request: Any) -> Any:
        # A top-level `documentId` (persisted documents) travels on in the extensions (graphql.persisted).
        return await persisted.lift_document_ids(await super().parse_http_body(request), request)

    def decode_json(self, data: str | bytes) -> object:
        # HTTP bodies, GET variables and WebSocket messages: nesting is bounded (request_json).
        return request_json.decode(data)

    async def get_context(self, request: Request | WebSocket, response: Response | WebSocket) -> Context:
        authorization = request.headers.get("authorization") if isinstance(request, Request) else None
        counting = self.services.settings.expose_sql_count and isinstance(request, Request)
        request_id = request.scope.get("state", {}).get("request_id")  # set by observability.RequestIds
        context = Context(
            db=self.services.db,
            settings=self.services.settings,
            authorization=authorization,
            services=self.services,
            request=request,
            response=response,
            sql_statements=count_request_statements() if counting else None,
            # Given, not made: the default makes a uuid4 (~3 us) that the request's id would replace.
            **({"request_id": request_id} if request_id else {}),
        )
        return context

    async def on_ws_connect(self, context: Context) -> dict[str, object] | None:
        """Authenticate the socket from `connection_init` ({"authorization": "Bearer ..."} and the other names
        graphql.socket_auth accepts); otherwise closed with 4403 and a reason naming the cause."""
        context.authorization = connection_authorization(context.connection_params)
        try:
            principal = await context.principal()
            if isinstance(context.request, WebSocket):
                # Opening a socket is a request (the caller's `requests` budget) and holds memory until it
                # closes: a user holds at most `ws_max_sockets_per_user` in a process. Before, sockets were free
                # to open, so one key could open them by the thousand. A socket refused at the cap costs nothing (a
                # client reconnecting in a loop at its cap spent the user's whole budget, HTTP too): checked before
                # the budget is drawn, and again after (other sockets may have opened meanwhile).
                check_open_sockets(self.services.hub.sessions, principal.user_id, self.services.settings)
                if self.services.settings.rate_limit_enabled:
                    await ratelimits.spend(context.db, self.services.settings, principal, {"requests": 1})
                check_open_sockets(self.services.hub.sessions, principal.user_id, self.services.settings)
                # Registered before authenticating once more: a revocation committed after that second check
                # reaches the socket through the hub; one committed before it fails the check.
                session = SocketSession(context, context.request, principal.tenant_id, principal.user_id)
                context.request.scope.setdefault("state", {})["live_session"] = session
                self.services.hub.sessions.add(session)
                context.forget_principal()
                await context.principal()
                # Authenticated: counted by its user from now on, no longer as pending by its address.
                pending = context.request.scope.get("state", {}).pop(PENDING_KEY, None)
                if pending is not None:
                    self.pending_sockets.leave(pending)
        except ThreadlineError as exc:
            if exc.code is ErrorCode.RATE_LIMITED:
                raise SocketRefused(exc.message, TOO_MANY_CLOSE_CODE) from exc
            raise SocketRefused(exc.message) from exc
        expires = token_expiry(context.authorization)
        if expires is not None and isinstance(context.request, WebSocket):
            context.request.scope.setdefault("state", {})["token_expiry"] = asyncio.create_task(
                close_at_expiry(context.request, expires), name="threadline-ws-token-expiry"
            )
        return None


def _stream_result(data: Any, errors: list[GraphQLError] | None, request_id: str | None) -> ExecutionResult:
    """A stream's result as strawberry hands it to `Operation.send_next` (errors formatted, no extensions)."""
    formatted = [format_error(e, request_id) for e in errors] if errors else errors
    return ExecutionResult(data=data, errors=formatted)


async def close_at_expiry(websocket: WebSocket, expires: float) -> None:
    """Ends the session when its token expires: 4401, as for a connection_init with an expired token. Closed as a
    revoked socket is (streaming.sessions `SocketSession.shut`): at once, and cut off when its client does not
    answer, for a client that stopped reading would otherwise hold it open for good."""
    await asyncio.sleep(max(expires - time.time(), 0))
    session = websocket.scope.get("state", {}).get("live_session")
    if isinstance(session, SocketSession):
        closing = session.shut(4401, "token expired")
    else:
        closing = websocket.close(code=4401, reason="token expired")
    if closing is not None:
        with contextlib.suppress(Exception):  # the socket may be closing already
            await closing
