"""The one module that knows the server's internals: the seam between direct frames and uvicorn, websockets
and strawberry.

streaming.direct writes a subscription's events straight to its socket (see its docstring for why and when).
No public API offers what that needs, so this module reaches into:

- uvicorn's sans-I/O WebSocket protocol (`uvicorn.protocols.websockets.websockets_sansio_impl`, the default
  with `websockets` installed): its ASGI `send` is a bound method of the protocol object, which holds the
  asyncio transport (to write whole frames in order with uvicorn's own writes), the `writable` event
  (cleared while the transport's buffer is over the high-water mark) and `close_sent`;
- the `websockets` connection inside it: its state, and the extensions negotiated;
- strawberry's graphql-transport-ws operations: the handler's `operations` (a completed operation leaves it),
  and the exact bytes of its `next` message (orjson of `{"id", "type", "payload"}`, in a text frame);
- for idle sockets' memory (`slim`): uvicorn's handshake request and response, the deques inside its receive
  queue and `writable` event (asyncio's Queue and Event), websockets' handshake parser (`_restart_frame_parser`),
  strawberry's connection-init timeout task, and uvicorn's keep-alive timers (`Keepalive`: its ping and pong
  deadlines, `pending_ping_payload`, `ping_sent_at`, and `handle_pong`, which chains no ping without a pong timer).

Closing a socket whose client stopped reading (`close_at_once`, for streaming.sessions) also goes through it:
uvicorn's own close waits until the socket's buffer drains, possibly forever, where this one writes the close
frame at once, as uvicorn's `send` does once the buffer drained (`queue`, `conn.send_close`, `close_sent`,
`read_paused`), and aborts the transport when the client has not answered after a grace (uvicorn's own
`close_timer`, which `transport.close()`s: a close that also waits for the buffer to drain).

Everything else goes through the narrow interface below: `CaptureDirectSockets` (the outermost ASGI
middleware, app.py), `enter_operation` (graphql.view's handler, in each operation's task), `DirectSocket`
(one running operation on one socket: `is_open`, `write_frames`), `next_frame` and `close_at_once`.
pyproject.toml bounds uvicorn, websockets and strawberry-graphql to the releases this was written against.
Anything unexpected (another server or protocol implementation, a missing attribute, another extension) yields
no `DirectSocket`, and every frame of that subscription takes the stock path.
"""

from __future__ import annotations

import asyncio
import contextvars
import math
import random
import struct
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocketState
from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.protocol import Protocol, State
from websockets.server import ServerProtocol
from websockets.streams import StreamReader

if TYPE_CHECKING:
    # Typed against the pinned releases: mypy sees an attribute this module relies on that a release renames.
    from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import Operation
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

STATE_KEY = "threadline.direct_socket"
_SANSIO_MODULE = "uvicorn.protocols.websockets.websockets_sansio_impl"
_PROTOCOL_ATTRIBUTES = ("transport", "conn", "writable", "close_sent", "handshake_complete")

# How long a socket the server closes has for its client to answer the close before the connection is cut (a
# client that stopped reading never does, and the server's buffers for it stay allocated until then).
CLOSE_GRACE_SECONDS = 5.0

# The strawberry operation (graphql-transport-ws) whose task is running: set by `enter_operation`.
_CURRENT_OPERATION: contextvars.ContextVar[Operation[Any, Any]] = contextvars.ContextVar(
    "threadline_ws_operation"
)


def text_frame(payload: bytes) -> bytes:
    """An unmasked, unfragmented WebSocket text frame (RFC 6455 5.2), as a server sends it."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return struct.pack("!BBH", 0x81, 126, n) + payload
    return struct.pack("!BBQ", 0x81, 127, n) + payload


def next_frame(operation_id: str, payload: bytes) -> bytes:
    """The frame of a graphql-transport-ws `next` message for an operation, `payload` being the JSON of its
    execution result: byte for byte what strawberry sends, orjson.dumps({"id": ..., "type": "next", "payload": ...})."""
    return text_frame(b'{"id":' + orjson.dumps(operation_id) + b',"type":"next","payload":' + payload + b"}")


def _server_protocol(send: Send) -> WebSocketsSansIOProtocol | None:
    """uvicorn's sans-I/O protocol object behind its ASGI `send`, or None for any other server."""
    protocol: WebSocketsSansIOProtocol | None = getattr(send, "__self__", None)
    if protocol is None or type(protocol).__module__ != _SANSIO_MODULE:
        return None
    if not all(hasattr(protocol, a) for a in _PROTOCOL_ATTRIBUTES):
        return None
    return protocol


class CaptureDirectSockets:
    """ASGI middleware (outermost, where `send` is still the server's own) that keeps each WebSocket's server
    protocol in its scope state, for the socket's `DirectSocket`s."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            protocol = _server_protocol(send)
            if protocol is not None:
                scope.setdefault("state", {})[STATE_KEY] = protocol
        await self.app(scope, receive, send)


def share_keepalive(request: Any) -> None:
    """Called by the graphql-transport-ws handler once the socket is accepted: its keep-alive pings move to the
    loop's `Keepalive` wheel from the start (before its first subscription, whose setup may take a while in a
    burst)."""
    state = getattr(request, "scope", {}).get("state") or {}
    protocol = state.get(STATE_KEY)
    if protocol is not None and protocol.handshake_complete and not protocol.close_sent:
        Keepalive.take_over(protocol)


def enter_operation(operation: Operation[Any, Any]) -> None:
    """Called by the graphql-transport-ws handler in each operation's own task, before it runs: a subscription
    resolving in that task finds its socket through `DirectSocket.of_running_operation`."""
    _CURRENT_OPERATION.set(operation)


class DirectSocket:
    """One running graphql-transport-ws operation on one WebSocket, written to directly: whole frames go to the
    socket's transport, in order with uvicorn's own writes."""

    __slots__ = ("_operation", "_operations", "_protocol", "_transport", "_writable", "operation_id")

    def __init__(self, protocol: WebSocketsSansIOProtocol, operation: Operation[Any, Any]) -> None:
        self._protocol = protocol
        self._transport = protocol.transport
        self._writable = protocol.writable
        self._operation = operation
        self._operations = operation.handler.operations
        self.operation_id: str = operation.id

    @classmethod
    def of_running_operation(cls, request: Any) -> DirectSocket | None:
        """The socket of `request` (the operation's starlette WebSocket) for the operation whose task is running,
        or None: another server, no operation, or a socket that cannot take direct frames (`_usable`)."""
        state = getattr(request, "scope", {}).get("state") or {}
        protocol = state.get(STATE_KEY)
        operation = _CURRENT_OPERATION.get(None)
        if protocol is None or operation is None or not _usable(protocol):
            return None
        slim(protocol, operation)
        return cls(protocol, operation)

    def is_open(self) -> bool:
        """The operation is still running (the client did not complete it), the socket is not closing (uvicorn
        answers a client's close at once, setting close_sent) and its transport is not asking writers to wait
        (its buffer is over the high-water mark)."""
        return (
            self._operations.get(self.operation_id) is self._operation
            and self._writable.is_set()
            and not self._protocol.close_sent
            and not self._transport.is_closing()
        )

    def accepts(self) -> bool:
        """The operation is still running and the socket is not closing (its buffer may be full: `is_open`)."""
        return (
            self._operations.get(self.operation_id) is self._operation
            and not self._protocol.close_sent
            and not self._transport.is_closing()
        )

    def write_frames(self, frames: Sequence[bytes]) -> None:
        """Writes whole frames in one go (one system call for however many there are)."""
        self._transport.write(frames[0] if len(frames) == 1 else b"".join(frames))

    def park(self, subscriber: Any) -> bool:
        """Asks the operation's handler (graphql.view's) to park the subscription: True when it took it, and the
        stream may end its task (streaming.schema `Parked`); False: the stream idles in its task as before."""
        park = getattr(self._operation.handler, "park", None)
        return bool(park is not None and park(self._operation, subscriber))


def close_at_once(websocket: Any, code: int, reason: str, grace: float) -> bool:
    """Closes a WebSocket (a starlette WebSocket) without waiting for its client to read what is buffered: the
    close frame goes after it, nothing more is written (uvicorn refuses later writes: `close_sent`; starlette
    too, as after its own close; direct lanes close: `DirectSocket.accepts`), the app reads a disconnect at once,
    and the connection is aborted if it is still there `grace` seconds later (a client that stopped reading
    never answers the close). A socket closing already gets the same bound. False, having done nothing, for
    anything but an open socket of uvicorn's sans-I/O protocol: the caller closes it the stock way."""
    state = getattr(websocket, "scope", {}).get("state") or {}
    protocol: WebSocketsSansIOProtocol | None = state.get(STATE_KEY)
    if protocol is None or not protocol.handshake_complete or protocol.initial_response is not None:
        return False
    transport = protocol.transport
    if not protocol.close_sent and not transport.is_closing():
        if protocol.conn.state is not State.OPEN:
            return False
        # uvicorn's `send` of a `websocket.close`, without its wait for the buffer to drain (`writable`).
        protocol.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        protocol.conn.send_close(code, reason)
        transport.write(b"".join(protocol.conn.data_to_send()))
        protocol.close_sent = True
        if protocol.read_paused:  # the client's answer to the close must be read
            protocol.read_paused = False
            transport.resume_reading()
    if getattr(websocket, "application_state", None) is WebSocketState.CONNECTED:
        websocket.application_state = WebSocketState.DISCONNECTED
    _cut_off_later(protocol, grace)
    return True


def _cut_off_later(protocol: WebSocketsSansIOProtocol, grace: float) -> None:
    """Aborts the connection of a socket whose close was sent, unless it is gone within `grace` seconds: uvicorn's
    own close (`transport.close()`) waits for the buffer to drain, which a client that stopped reading never lets
    happen. uvicorn's `close_timer`, which it cancels when the client answers the close or the connection is lost."""
    if protocol.disconnected:
        return
    if protocol.close_timer is not None:
        protocol.close_timer.cancel()
    protocol.close_timer = protocol.loop.call_later(grace, protocol.transport.abort)


class _SlimDeque(list[Any]):
    """What asyncio's Queue and Event use of a deque (append, popleft, remove, len, iteration), in a list: an empty
    deque holds a 64-slot block (~770 bytes), an empty list ~65. For the queues of idle sockets, which hold at
    most a message or a waiter at a time (popleft of a short list is as cheap)."""

    __slots__ = ()

    def popleft(self) -> Any:
        return self.pop(0)


def slim(protocol: WebSocketsSansIOProtocol, operation: Operation[Any, Any]) -> None:
    """Lets go of what an open socket keeps but no longer needs once its handshake is done, and gives its idle
    queues lighter containers (bench/RESULTS.md, "Idle sockets": ~4.5 KB a socket). Synchronous, so nothing waits
    on a container while it is swapped (their contents move over); idempotent (each operation calls it).

    - uvicorn's handshake request and response (their headers; the ASGI scope keeps its own copy): read only
      while accepting;
    - uvicorn's receive queue (an asyncio.Queue: three deques and an Event's) and its `writable` event (one deque);
    - websockets' parser generator, which holds the handshake request (`_restart_frame_parser`);
    - strawberry's connection-init timeout task, done once `connection_init` came;
    - uvicorn's keep-alive timer (`Keepalive`);
    - the handshake's headers (`_drop_headers`)."""
    if not protocol.handshake_complete or protocol.close_sent:
        return
    attributes = vars(protocol)
    if attributes.get("request") is not None:
        attributes["request"] = None
        attributes["response"] = None
    queue = protocol.queue
    if type(queue) is asyncio.Queue:
        for name in ("_queue", "_getters", "_putters"):
            _slim_attribute(queue, name)
        finished = getattr(queue, "_finished", None)
        if type(finished) is asyncio.Event:
            _slim_attribute(finished, "_waiters")
    if type(protocol.writable) is asyncio.Event:
        _slim_attribute(protocol.writable, "_waiters")
    _restart_frame_parser(protocol.conn)
    Keepalive.take_over(protocol)
    handler = operation.handler
    _drop_headers(protocol, handler)
    task = handler.connection_init_timeout_task
    if task is not None and task.done():
        handler.connection_init_timeout_task = None


class Keepalive:
    """uvicorn's keep-alive pings for the sockets that hold a subscription, with one timer a second for all of
    them instead of a timer object (asyncio TimerHandle and libuv timer, ~0.5 KB) per socket: each socket is in
    the bucket of the second it is due in. Same behaviour as uvicorn's (`ws_ping_interval`, `ws_ping_timeout`):
    a ping every interval after the previous one was sent, answered within the timeout or the socket fails
    with 1011 "keepalive ping timeout"; deadlines are met within a second (uvicorn's within its loop's timer
    resolution). One difference: while uvicorn itself has paused reading the socket (its app has not taken the
    messages before), the pong deadline waits, where uvicorn's timer failed sockets whose pong it had not read
    (bench/RESULTS.md, "the lost sockets"). Another: a failed socket's connection is aborted if it is still there
    CLOSE_GRACE_SECONDS later (uvicorn's close waits for a client that may have stopped reading). One per event
    loop."""

    __slots__ = ("_buckets", "_loop", "_timer")

    _by_loop: dict[asyncio.AbstractEventLoop, Keepalive] = {}

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._buckets: dict[int, list[WebSocketsSansIOProtocol]] = {}
        self._timer: asyncio.TimerHandle | None = None

    @classmethod
    def take_over(cls, protocol: WebSocketsSansIOProtocol) -> None:
        """Moves `protocol`'s pings from its own timer to the loop's wheel: only while it waits for its next ping
        (no ping in flight), with both uvicorn settings on. Idempotent."""
        # Waiting for its next ping (ping_timer), or a ping in flight (pong_timer: its deadline moves here too).
        timer = protocol.ping_timer or protocol.pong_timer
        if timer is None or not protocol.ping_interval or protocol.ping_timeout is None:
            return
        if (protocol.pong_timer is None) != (protocol.pending_ping_payload is None):
            return  # not a state uvicorn leaves it in between two of its callbacks
        loop = protocol.loop
        wheel = cls._by_loop.get(loop)
        if wheel is None or wheel._loop.is_closed():
            cls._by_loop = {k: v for k, v in cls._by_loop.items() if not k.is_closed()}
            wheel = cls._by_loop[loop] = cls(loop)
        timer.cancel()
        protocol.ping_timer = protocol.pong_timer = None  # handle_pong chains no ping without its pong timer
        wheel._add(protocol, timer.when())

    def _add(self, protocol: WebSocketsSansIOProtocol, due: float) -> None:
        second = math.ceil(due)
        bucket = self._buckets.get(second)
        if bucket is None:
            bucket = self._buckets[second] = []
            if self._timer is None or self._timer.when() > second:
                self._schedule(second)
        bucket.append(protocol)

    def _schedule(self, second: int) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_at(second, self._tick)

    def _tick(self) -> None:
        self._timer = None
        now = self._loop.time()
        for second in sorted(s for s in self._buckets if s <= now):
            for protocol in self._buckets.pop(second):
                self._visit(protocol, now)
        if self._buckets:
            self._schedule(min(self._buckets))

    def _visit(self, protocol: WebSocketsSansIOProtocol, now: float) -> None:
        if protocol.close_sent or protocol.disconnected or protocol.transport.is_closing():
            return  # gone: it leaves the wheel
        assert protocol.ping_interval is not None and protocol.ping_timeout is not None
        if protocol.pending_ping_payload is not None:  # a ping in flight, unanswered
            deadline = protocol.ping_sent_at + protocol.ping_timeout
            if now < deadline or protocol.read_paused:
                # uvicorn stops reading a socket while its app has not taken its previous messages (say, a
                # connection_init waiting for a database connection in a burst): an unread pong is no dead peer.
                self._add(protocol, max(deadline, now + 1))
            else:
                protocol.keepalive_timeout()  # as uvicorn's pong timer: 1011, closed
                # A peer that does not answer may not read either: its close must not wait for it.
                _cut_off_later(protocol, CLOSE_GRACE_SECONDS)
            return
        due = protocol.ping_sent_at + protocol.ping_interval if protocol.ping_sent_at else now
        if now < due:
            self._add(protocol, due)
            return
        # uvicorn's send_keepalive_ping, without its pong timer (this wheel is the deadline).
        protocol.pending_ping_payload = struct.pack("!I", random.getrandbits(32))
        protocol.ping_sent_at = now
        protocol.conn.send_ping(protocol.pending_ping_payload)
        protocol.transport.write(b"".join(protocol.conn.data_to_send()))
        self._add(protocol, now + min(protocol.ping_timeout, protocol.ping_interval))


_NO_HEADERS: tuple[tuple[bytes, bytes], ...] = ()
# Scope entries every socket of this server has alike, read only while it opens: one copy for all of them.
_ALIKE: dict[str, dict[str, Any]] = {}


def _drop_headers(protocol: WebSocketsSansIOProtocol, handler: Any) -> None:
    """The handshake request's headers in the socket's ASGI scope, and starlette's `Headers` made of them: read
    while the socket opens (Origin, X-Request-Id, X-Forwarded-*), never again once connection_init is
    acknowledged (the socket authenticates from its connection_init payload); a browser's (cookies, user agent,
    languages) are a kilobyte or more a socket. Afterwards the socket's `headers` are empty. The scope's `asgi`
    and `extensions` dicts (the same in every socket's scope, ~0.4 KB) become one shared copy."""
    if not handler.connection_acknowledged:
        return
    sockets = [getattr(handler.websocket, "ws", None), getattr(handler.context, "request", None)]
    scopes = [protocol.scope, *(getattr(ws, "scope", None) for ws in sockets)]
    for scope in scopes:
        if not isinstance(scope, dict):
            continue
        if scope.get("headers"):
            scope["headers"] = _NO_HEADERS
        for name in ("asgi", "extensions"):
            value = scope.get(name)
            if type(value) is dict:
                shared = _ALIKE.setdefault(name, value)
                if shared is not value and shared == value:
                    scope[name] = shared
    for ws in sockets:
        attributes = getattr(ws, "__dict__", None)
        if attributes is not None:
            attributes.pop("_headers", None)


def _restart_frame_parser(conn: Any) -> None:
    """websockets' server parser is a generator that parsed the handshake request and then parses frames (`yield
    from` the base protocol's parser): its frame keeps that request, headers and all (~2.3 KB), for the
    connection's life. Between frames (the base parser waits in `at_eof` on an empty buffer) a fresh base parser
    is in exactly the same state: it takes over, and the old one is closed."""
    parser = conn.parser
    inner = getattr(parser, "gi_yieldfrom", None)
    waiting = getattr(inner, "gi_yieldfrom", None)
    reader = conn.reader
    if (
        type(conn) is not ServerProtocol
        or getattr(parser, "gi_code", None) is not ServerProtocol.parse.__code__
        or getattr(inner, "gi_code", None) is not Protocol.parse.__code__
        or getattr(waiting, "gi_code", None) is not StreamReader.at_eof.__code__
        or reader.buffer
        or reader.eof
        or conn.state is not State.OPEN
    ):
        return
    fresh = Protocol.parse(conn)
    next(fresh)  # runs to the same point: at_eof, waiting for data
    conn.parser = fresh
    parser.close()


def _slim_attribute(owner: object, name: str) -> None:
    current = getattr(owner, name, None)
    if type(current) is deque:
        setattr(owner, name, _SlimDeque(current))


def _usable(protocol: WebSocketsSansIOProtocol) -> bool:
    """Open, and no extension other than compression (permessage-deflate) negotiated: a sender may leave any
    message uncompressed (RFC 7692 section 6), which leaves both sides' compression contexts alone."""
    return bool(
        protocol.handshake_complete
        and protocol.conn.state is State.OPEN
        and all(type(e) is PerMessageDeflate for e in protocol.conn.extensions)
    )
