"""A small graphql-transport-ws client for tests (real WebSocket, real server)."""

from __future__ import annotations

import json
import socket
import time
from typing import Any
from urllib.parse import urlparse

from websockets.sync.client import ClientConnection, connect

PROTOCOL = "graphql-transport-ws"


class WsClient:
    def __init__(
        self,
        url: str,
        token: str | None,
        *,
        init: bool = True,
        max_queue: int = 16,
        rcvbuf: int | None = None,
    ) -> None:
        sock = None
        if rcvbuf is not None:
            # A small fixed receive buffer (no autotuning) makes a non-reading client fill up quickly.
            host, port = urlparse(url).hostname, urlparse(url).port
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.connect((host, port))
        # Entered as a context (left by close()): websockets 17.1 deprecates using connect() directly.
        self.ws: ClientConnection = connect(
            url,
            sock=sock,
            subprotocols=[PROTOCOL],
            open_timeout=10,
            max_size=8 * 1024 * 1024,
            max_queue=max_queue,
        ).__enter__()
        self.pending: list[dict[str, Any]] = []
        if init:
            payload = {"authorization": f"Bearer {token}"} if token else {}
            self.send({"type": "connection_init", "payload": payload})
            ack = self.receive(timeout=10)
            assert ack["type"] == "connection_ack", ack

    def send(self, message: dict[str, Any]) -> None:
        self.ws.send(json.dumps(message))

    def receive(self, timeout: float = 10.0) -> dict[str, Any]:
        """The next protocol message other than ping/pong (pings are answered)."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no message in time")
            message: dict[str, Any] = json.loads(self.ws.recv(timeout=remaining))
            if message["type"] == "ping":
                self.send({"type": "pong"})
                continue
            if message["type"] == "pong":
                continue
            return message

    def subscribe(self, query: str, variables: dict[str, Any] | None = None, op_id: str = "1") -> str:
        self.send(
            {"id": op_id, "type": "subscribe", "payload": {"query": query, "variables": variables or {}}}
        )
        return op_id

    def next_event(self, op_id: str = "1", timeout: float = 10.0) -> dict[str, Any]:
        """The `data` of the next `next` message for `op_id` (fails on errors or completion)."""
        while True:
            message = self.receive(timeout)
            if message.get("id") != op_id:
                self.pending.append(message)
                continue
            assert message["type"] == "next", message
            assert not message["payload"].get("errors"), message
            data: dict[str, Any] = message["payload"]["data"]
            return data

    def events(
        self,
        count: int,
        op_id: str = "1",
        timeout: float = 10.0,
        ignore: tuple[str, ...] = ("presence.update",),
    ) -> list[dict[str, Any]]:
        """The next `count` events of `op_id`, skipping types in `ignore` (presence by default)."""
        out: list[dict[str, Any]] = []
        while len(out) < count:
            event = next(iter(self.next_event(op_id, timeout).values()))
            if event["type"] not in ignore:
                out.append(event)
        return out

    def expect_quiet(self, seconds: float = 0.5, ignore: tuple[str, ...] = ("presence.update",)) -> None:
        """Nothing but keep-alives (and ignored event types) arrives for `seconds`."""
        deadline = time.monotonic() + seconds
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            try:
                message = self.receive(timeout=remaining)
            except TimeoutError:
                return
            payload = message.get("payload") or {}
            data = payload.get("data") if isinstance(payload, dict) else None
            if data and next(iter(data.values()))["type"] in ignore:
                continue
            raise AssertionError(f"unexpected message {message}")

    def close(self) -> None:
        self.ws.close()


EVENT_FIELDS = """
  cursor type conversationId rootId occurredAt
  ... on ThreadNewEvent { thread { id replyCount unreadCount root { id content author { id } } } }
  ... on ThreadActivityEvent { replyCount action changedMessage { id content parentId isDeleted path } }
  ... on MessageDeltaEvent { messageId runId index delta }
  ... on MessageDoneEvent { messageId runId usage { promptTokens completionTokens totalTokens } }
  ... on PresenceUpdateEvent { userId status }
  ... on TypingUpdateEvent { userId isTyping }
  ... on UnreadUpdateEvent { unreadCount }
  ... on MembershipChangedEvent { userId change role }
  ... on StreamErrorEvent { code message }
"""

CONVERSATION_EVENTS = (
    "subscription($c: ID!, $r: ID, $s: String) { conversationEvents(conversationId: $c, rootId: $r, since: $s) {"
    + EVENT_FIELDS
    + "} }"
)
VIEWER_EVENTS = "subscription($s: String) { viewerEvents(since: $s) {" + EVENT_FIELDS + "} }"


class StalledWsClient:
    """A client that subscribes and then stops reading its socket (a slow consumer).

    Built on websockets' sans-I/O protocol over a plain socket with a small receive buffer, so that
    nothing reads frames in the background and the server's writes back up for real.
    """

    def __init__(self, url: str, token: str, query: str, variables: dict[str, Any]) -> None:
        from websockets.client import ClientProtocol
        from websockets.uri import parse_uri

        parsed = urlparse(url)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        self.sock.connect((parsed.hostname, parsed.port))
        self.protocol = ClientProtocol(parse_uri(url), subprotocols=[PROTOCOL], max_size=None)
        request = self.protocol.connect()
        self.protocol.send_request(request)
        self._flush()
        self._read_until(lambda e: True)  # the handshake response
        self._send({"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}})
        self._read_until(lambda e: getattr(e, "data", None) is not None)  # connection_ack
        self._send({"id": "1", "type": "subscribe", "payload": {"query": query, "variables": variables}})

    def _send(self, message: dict[str, Any]) -> None:
        self.protocol.send_text(json.dumps(message).encode())
        self._flush()

    def _flush(self) -> None:
        for chunk in self.protocol.data_to_send():
            self.sock.sendall(chunk)

    def _read_until(self, done: Any, timeout: float = 30.0) -> None:
        self.sock.settimeout(timeout)
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:  # the server closed the connection: recv would return b"" forever
                    raise ConnectionError("the server closed the connection")
                self.protocol.receive_data(data)
                events = self.protocol.events_received()
                if any(done(e) for e in events):
                    return
        finally:
            self.sock.settimeout(None)

    def read_until_complete(self, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Start reading again: every protocol message up to the subscription's `complete`."""
        self.sock.settimeout(timeout)
        messages: list[dict[str, Any]] = []
        while True:
            data = self.sock.recv(1 << 20)
            if not data:
                raise ConnectionError(f"the server closed the connection after {len(messages)} messages")
            self.protocol.receive_data(data)
            for event in self.protocol.events_received():
                data = getattr(event, "data", None)
                if data is None:
                    continue
                message = json.loads(data)
                if message["type"] == "ping":
                    self._send({"type": "pong"})
                    continue
                messages.append(message)
                if message["type"] == "complete":
                    return messages

    def close(self) -> None:
        self.sock.close()


def position(server: Any, tenant_id: str, cursor: str) -> int:
    """The log position a stream cursor names (cursors are opaque, per tenant): decoded by the in-process
    test server's own codec (`server` is a tests.harness.ServerThread; `tenant_id` a public tenant id)."""
    from threadline.ids import Kind, decode_id

    return int(server.app.state.services.hub.cursors.decode(decode_id(tenant_id, Kind.TENANT), cursor))


def read_frames(
    client: WsClient, done: Any, *, timeout: float = 15.0, stop_at_complete: bool = False
) -> tuple[list[str], bool]:
    """Raw text of every `next` frame (any operation) up to and including the one `done` (a function of the
    message) accepts, and False; with `stop_at_complete`, up to an operation's `complete`, and True. Pings are
    answered; other messages skipped."""
    out: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        raw = client.ws.recv(timeout=max(deadline - time.monotonic(), 0.01))
        assert isinstance(raw, str)
        message = json.loads(raw)
        if message["type"] == "ping":
            client.send({"type": "pong"})
        elif message["type"] == "complete" and stop_at_complete:
            return out, True
        elif message["type"] == "next":
            out.append(raw)
            if done(message):
                return out, False
