"""The lean POST /graphql: one JSON operation answered without strawberry's generic HTTP view (issue 14).

Most requests are a POST whose body is `{"query", "variables", "operationName"}` as `application/json`. For
those, strawberry's view builds a request adapter, parses the content type, looks for multipart uploads and
stream transports, checks batching and persisted document ids, and runs each step through several layers of
awaits. `LeanGraphQL` answers them in one straight pass: it reads the headers it needs from the raw ASGI
list, reads the body, decodes it with the view's own `parse_json`, and then calls the same pieces the view
calls (`get_context`, strawberry's `execute_single` with all schema extensions, or for a plain query whose
document is known graphql.lean_operation's one pass over the extensions' work, `process_result`, and the
headers `create_response` sets), so the status, the headers and the body bytes are the stock ones:
tests/test_http_lean.py sends the same requests both ways and compares them. The body is orjson's bytes as they
are, where the view decodes them to text for its Response to encode back (the same bytes; a 7 MB threadTree
copied twice). The app (threadline.app `ThreadlineApp`) hands it a POST to /graphql before Starlette's router
(`front`): an admitted request passes only the app's error handling and middleware.

Everything else goes to the view untouched, before anything is executed: other methods, an Accept header
that negotiates no JSON type or asks for a stream, another Content-Type, a body without a Content-Length or
over the limit, a body that does not decode to a plain object, batches, `extensions` and `documentId`
(persisted documents), and any document that mentions `subscription`, `defer` or `stream` (the operation
could be streamed). A body already read is replayed to the view, so its refusals are its own.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from cross_web import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from strawberry.asgi import GraphQL
from strawberry.http import GraphQLRequestData
from strawberry.http.parse_content_type import parse_content_type
from strawberry.types import ExecutionResult
from strawberry.types.graphql import OperationType

from threadline.db.database import database_unavailable
from threadline.errors import ErrorCode
from threadline.graphql import batching, over_http, request_json
from threadline.graphql.lean_operation import LeanOperations
from threadline.graphql.view import ThreadlineGraphQL, error_response, json_too_deep, unavailable_response

__all__ = ["LeanGraphQL"]

_POST = OperationType.from_http("POST")
_PLAIN_KEYS = frozenset({"query", "variables", "operationName"})
# Words after which a document may stream (a subscription, @defer, @stream): such requests take the view.
_STREAMING_WORDS = ("subscription", "defer", "stream")


class _Method:
    """What strawberry's `execute_single` reads of its request adapter."""

    method = "POST"


_ADAPTER = _Method()
_LENGTH_DIGITS = 18  # a Content-Length read here (int() refuses more than 4,300 digits; 18 fit in 63 bits)
_ADMITTED = "threadline.lean_request"  # the scope key `front` hands the admitted request on in
_DECLINED = "threadline.lean_declined"  # the scope key of a request `front` left to the view
_Admitted = tuple[bytes, GraphQLRequestData, str]  # the body, its operation, the response's media type
_NEGOTIATED: dict[str | None, str | None] = {}  # over_http.negotiate by Accept header (clients send few)


# `_json_body` by Content-Type header (clients send few; the usual ones known before any request fills it).
_JSON_BODIES: dict[str | None, bool] = {
    "application/json": True,
    "application/json; charset=utf-8": True,
    "application/json;charset=utf-8": True,
    "application/json; charset=UTF-8": True,
}


def _json_body(content_type: str | None) -> bool:
    """Whether the view takes a body of this Content-Type as JSON: our media type check (its 415) and
    strawberry's own, which is case-sensitive (`APPLICATION/JSON` is its 400 "Unsupported content type")."""
    known = _JSON_BODIES.get(content_type)
    if known is None:
        known = over_http.is_json_body(content_type) and (
            over_http.APPLICATION_JSON in parse_content_type(content_type or "")[0]
        )
        if len(_JSON_BODIES) < 256:
            _JSON_BODIES[content_type] = known
    return known


def _negotiate(accept: str | None) -> str | None:
    known = _NEGOTIATED.get(accept, _ADMITTED)
    if known is not _ADMITTED:
        return known
    media_type = over_http.negotiate(accept)
    if len(_NEGOTIATED) < 256:
        _NEGOTIATED[accept] = media_type
    return media_type


class LeanGraphQL:
    """The /graphql HTTP endpoint: plain JSON POSTs answered here, everything else by `view`."""

    def __init__(self, view: ThreadlineGraphQL, *, enabled: bool = True) -> None:
        self.view = view
        self.enabled = enabled  # tests compare both paths on one server
        self.served = 0  # requests answered here (tests check that the lean path ran)
        self.fronted = 0  # of those, requests that came in before Starlette's router (`front`)
        self.operations = LeanOperations(view.schema)
        self._stock_sub_response = type(view).get_sub_response is GraphQL.get_sub_response

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.enabled or scope["type"] != "http" or scope["method"] != "POST" or _DECLINED in scope:
            await self.view(scope, receive, send)
            return
        admitted, receive = await self.admit(scope, receive)
        if admitted is None:
            await self.view(scope, receive, send)
            return
        await self.answer(scope, receive, send, admitted)

    async def front(self, scope: Scope, receive: Receive, send: Send, stack: ASGIApp, front: ASGIApp) -> None:
        """A POST to /graphql as the app receives it (threadline.app `ThreadlineApp`): a plain operation goes
        through `front` (the app's error handling and its own middleware: request ids, CORS) straight to
        `answer_admitted`, without Starlette's exception middleware, router and route, which have nothing to do
        for it; anything else, its body replayed, through the app's whole `stack` (and so to this endpoint's
        `__call__`, which sends it straight to the view)."""
        if not self.enabled:
            await stack(scope, receive, send)
            return
        admitted, receive = await self.admit(scope, receive)
        if admitted is None:
            scope[_DECLINED] = True  # `__call__` sends it to the view without reading and decoding it again
            await stack(scope, receive, send)
            return
        scope[_ADMITTED] = admitted
        await front(scope, receive, send)

    async def answer_admitted(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The endpoint at the end of `front`'s middleware."""
        self.fronted += 1
        await self.answer(scope, receive, send, scope.pop(_ADMITTED))

    async def admit(self, scope: Scope, receive: Receive) -> tuple[_Admitted | None, Receive]:
        """The request's body, operation and response media type when this path answers it, and the `receive`
        to go on with (for a request left to the view, one that gives back what was read first)."""
        accept = content_type = length = None
        for name, value in scope["headers"]:
            if name == b"accept":
                if accept is None:
                    accept = value.decode("latin-1")
            elif name == b"content-type":
                if content_type is None:
                    content_type = value.decode("latin-1")
            elif name == b"content-length" and length is None:
                length = value
        limit = self.view.services.settings.request_max_bytes
        media_type = _negotiate(accept)
        if (
            media_type is None
            or length is None
            or not length.isdigit()
            # Past 18 digits (leading zeros: the server takes 4,400 of them) int() may raise here, before the
            # app's error handling: such a request is the view's.
            or len(length) > _LENGTH_DIGITS
            or int(length) > limit
            or not _json_body(content_type)
            # strawberry's stream transports accept only these media types (its own check builds them anew)
            or over_http.streams(accept)
        ):
            return None, receive
        messages: list[Message] = []
        try:
            body = await _read_body(receive, limit, messages)
        except asyncio.CancelledError:
            # Cancelled while the body comes in (uvicorn, when the shutdown grace ends): the view, reading the
            # same messages, is cancelled where the stock path was and answers as it does (503, through the
            # app's middleware), where this would have ended the request before them with no answer.
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            return None, _replay(messages, _cancelled)
        if body is None:  # over the limit, or the client left: the view says so
            return None, _replay(messages, receive)
        request = self._plain_request(body)
        if request is None:
            return None, _replay(messages, receive)
        # Admitted: the body is its Request's (`_answer`), so the server's own `receive` goes on (a disconnect
        # reads as one) and the messages read are not kept for the request's life (a second copy of the body).
        return (body, request, media_type), receive

    async def answer(self, scope: Scope, receive: Receive, send: Send, admitted: _Admitted) -> None:
        self.served += 1
        await self._answer(scope, receive, send, *admitted)

    def _plain_request(self, body: bytes) -> GraphQLRequestData | None:
        """The body's operation when it is one plain operation this path answers as the view would."""
        try:
            data = self.view.parse_json(body)
        except Exception:  # noqa: BLE001 - the view refuses it, with its own status and message
            return None
        if type(data) is not dict or not data.keys() <= _PLAIN_KEYS:
            return None
        query, variables, operation_name = data.get("query"), data.get("variables"), data.get("operationName")
        if (
            type(query) is not str
            or not (variables is None or type(variables) is dict)
            or not (operation_name is None or type(operation_name) is str)
        ):
            return None
        # The document's own words, as decoded (JSON escapes hide them in the body), not the variables' (a
        # message's text that says "stream" streams nothing).
        lowered = query.lower()
        if any(word in lowered for word in _STREAMING_WORDS):
            return None
        return GraphQLRequestData(
            query=query, variables=variables, operation_name=operation_name, extensions=None, protocol="http"
        )

    async def _answer(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        body: bytes,
        data: GraphQLRequestData,
        media_type: str,
    ) -> None:
        """What `ThreadlineGraphQL.__call__` and strawberry's `run` do for one plain JSON operation."""
        view = self.view
        over_http.use(media_type)
        request_id = scope.get("state", {}).get("request_id")  # set by observability.RequestIds
        request = Request(scope=scope, receive=receive)
        request._body = body  # read already: request.body() answers from it
        response: Response | _Answer
        try:
            sub_response = (
                _sub_response() if self._stock_sub_response else await view.get_sub_response(request)
            )
            context = await view.get_context(request, response=sub_response)
            # A plain query runs with the extensions' work in one pass (graphql.lean_operation); else strawberry's.
            query = data.query or ""  # a str: _plain_request checked it
            result = await self.operations.run(query, data.variables, data.operation_name, context)
            if result is None:
                result = await view.execute_single(
                    request=request,
                    request_adapter=_ADAPTER,  # type: ignore[arg-type]
                    sub_response=sub_response,
                    context=context,
                    root_value=None,  # the view's get_root_value: GraphQL[Context, None]
                    request_data=data,
                )
            if not isinstance(result, ExecutionResult):  # not streamed: see the words checked above
                raise RuntimeError(f"the lean POST path cannot answer a {type(result).__name__}")
            response_data = await view.process_result(request=request, result=result)
            if result.errors:
                view._handle_errors(result.errors, response_data)
            encoded = _encoded(response_data, view.services.settings.response_max_bytes)
            if encoded is None:  # the view's encoder decides (another encoder, or the responseBytes refusal)
                response = view.create_response(response_data=response_data, sub_response=sub_response)
            else:
                response = _json_response(encoded, response_data, sub_response)
        except HTTPException as exc:  # as ThreadlineGraphQL.__call__ answers them
            code = ErrorCode.NOT_FOUND if exc.status_code == 404 else ErrorCode.BAD_USER_INPUT
            status = over_http.refusal_status(exc, exc.status_code)
            response = error_response(exc.reason, code, status, request_id, **batching.error_extensions(exc))
            if isinstance(exc.__cause__, request_json.JsonTooDeep):
                response = json_too_deep(request_id)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            response = unavailable_response("The server is shutting down; retry later", request_id)
        except Exception as exc:
            if not database_unavailable(exc):
                raise
            response = unavailable_response("The database is unavailable; retry later", request_id)
        await response(scope, receive, send)


def _sub_response() -> Response:
    """What strawberry's `GraphQL.get_sub_response` makes (a Response with no status and no headers, for the
    extensions and resolvers to set them), without rendering an empty body and listing then deleting its
    Content-Length."""
    response = Response.__new__(Response)
    response.status_code = None  # type: ignore[assignment]
    response.background = None
    response.body = b""
    response.raw_headers = []
    return response


def _encoded(response_data: dict[str, Any], limit: int) -> bytes | None:
    """The body `ThreadlineGraphQL._encode_one` sends, as orjson's bytes (it decodes them to text, which the
    response encodes back to the same UTF-8: a 7 MB tree was copied twice), when it would send exactly them:
    orjson encodes the data and it is within `limit` (counted in bytes here, at least its characters there)."""
    try:
        body = orjson.dumps(response_data)
    except TypeError:
        return None
    return body if len(body) <= limit else None


def _json_response(body: bytes, response_data: dict[str, Any], sub_response: Response) -> Response | _Answer:
    """What strawberry's `GraphQL.create_response` and `ThreadlineGraphQL.create_response` build around an
    encoded body (tests/test_http_lean.py compares the headers and status with theirs): its headers listed
    straight away when the extensions set none of those it sets (the usual case: only rate-limit headers)."""
    added = sub_response.raw_headers  # what `sub_response.headers` writes to
    if sub_response.background or any(name in _SET_HERE for name, _ in added):
        return _built_response(body, response_data, sub_response)
    status = over_http.result_status(response_data, sub_response.status_code)
    # Response's own two headers, the extensions', then create_response's: its content type, Vary.
    headers = [
        (b"content-length", str(len(body)).encode("latin-1")),
        (b"content-type", over_http.content_type().encode("latin-1")),
        *added,
        _VARY_ACCEPT,
    ]
    if status == 401:
        headers.append(_BEARER_CHALLENGE)
    return _Answer(status, headers, body)


def _built_response(body: bytes, response_data: dict[str, Any], sub_response: Response) -> Response:
    response = Response(body, status_code=200, media_type="application/json")
    response.headers.raw.extend(sub_response.headers.raw)
    if sub_response.background:
        response.background = sub_response.background
    response.headers["content-type"] = over_http.content_type()
    response.headers.add_vary_header("Accept")
    response.status_code = over_http.result_status(response_data, sub_response.status_code)
    if response.status_code == 401:
        response.headers["WWW-Authenticate"] = "Bearer"
    return response


# Headers `_built_response` sets or merges (and so would change where the extensions set them too).
_SET_HERE = frozenset({b"content-length", b"content-type", b"vary", b"www-authenticate"})
_VARY_ACCEPT = (b"vary", b"Accept")
_BEARER_CHALLENGE = (b"www-authenticate", b"Bearer")


class _Answer:
    """A response already listed: what starlette's Response sends for it."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        await send({"type": "http.response.body", "body": self.body})


async def _read_body(receive: Receive, limit: int, messages: list[Message]) -> bytes | None:
    """The request body (None if it passes `limit` bytes or the client disconnects); the messages read are
    added to `messages`."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _cancelled() -> Message:
    """The `receive` of a request cancelled while its body was read: cancelled again where the view reads on."""
    raise asyncio.CancelledError


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """`receive` that gives back the messages already read, then the server's own."""
    pending = list(messages)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay
